"""`vc adapt`: fine-tune a trained converter on new speakers, by default only the parts that carry identity.

The content encoder (what is said) stays frozen; the speaker encoder and the decoder's AdaIN layers (where the speaker
enters) learn the new voices from their reconstruction, the reference being another clip of the same speaker, as in
training. A few minutes of speech per speaker and a few minutes of CPU suffice; the result is an inference checkpoint
with the original's vocoder, used like any other (`vc convert --checkpoint`).
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import build_model, export_inference, load_checkpoint, save_checkpoint
from ..config import PARTS, AdaptConfig
from .data import SegmentSampler, list_utterances, load_features
from .distributed import StopRequest
from ..runtime import fast_bf16, resolve_device
from ..errors import VCError
from ..model import VoiceConverterNet
from .monitor import Monitor, sample_conversions
from .converter import freq_warp, warmup_cosine
from ..vocoder import load_vocoder


def learning_rate(cfg: AdaptConfig, step: int, time_used: float = 0.0, floor: float = 0.05) -> float:
    """Warm-up, then the cosine of `warmup_cosine` down to `floor * lr` at `steps` or at the end of the time budget
    (`time_used` is its spent fraction), whichever comes first."""
    if step >= cfg.warmup_steps:
        step = max(step, cfg.warmup_steps + time_used * (cfg.steps - cfg.warmup_steps))
    return warmup_cosine(step, cfg.lr, cfg.warmup_steps, cfg.steps, floor)


def trainable(net: VoiceConverterNet, parts: tuple[str, ...] | list[str]) -> list[torch.nn.Parameter]:
    """Freeze everything but `parts` (names from PARTS) and return the parameters left to train."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise VCError(f"unknown part(s) to adapt: {', '.join(unknown) or 'none given'} "
                      f"(choose from {', '.join(PARTS)})")
    modules = {"speaker": [net.speaker_encoder], "adain": [net.decoder.norms], "decoder": [net.decoder],
               "content": [net.content_encoder],
               "pitch": [net.decoder.pitch] if net.decoder.pitch is not None else []}
    net.requires_grad_(False)
    for part in parts:
        for m in modules[part]:
            m.requires_grad_(True)
    return [p for p in net.parameters() if p.requires_grad]


def adapt(checkpoint: str | Path, data: str | Path, out: str | Path, cfg: AdaptConfig | None = None,
          run: str | Path | None = None, device: str = "cpu") -> Path:
    """Fine-tune `checkpoint` (an inference checkpoint, e.g. the shipped one) on the speakers of `data` and export
    `out`. Work files (feature cache, `last.pt` to resume from, `log.jsonl`, TensorBoard) go to `run`, by default
    OUT without its suffix plus `.adapt`. A killed or time-limited run resumes when the same command is run again."""
    entered = time.time()
    cfg = cfg or AdaptConfig()
    out = Path(out)
    run = Path(run) if run else out.with_suffix(".adapt")
    run.mkdir(parents=True, exist_ok=True)
    last = run / "last.pt"
    dev = resolve_device(device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("kind") == "training":
        raise VCError(f"{checkpoint}: a training checkpoint; adapt an exported one (vc export, or checkpoints/*.pt)")
    net, model_cfg = build_model(ckpt, checkpoint)
    net.to(dev)

    utts, mels, f0s = load_features(list_utterances(data), model_cfg.audio, run / "features.pt")
    speakers = sorted({u.speaker for u in utts})
    seconds = {s: sum(m.shape[1] for u, m in zip(utts, mels) if u.speaker == s) / 80 for s in speakers}
    print(f"adapting to {len(speakers)} speaker(s): " + ", ".join(f"{s} {v / 60:.1f} min" for s, v in seconds.items()))
    params = trainable(net, cfg.parts)
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    step, spent = 0, 0.0
    if last.is_file():
        state = load_checkpoint(last)
        if state.get("speakers") != speakers or state.get("parts") != list(cfg.parts):
            raise VCError(f"{last}: an adaptation to other speakers or parts; remove {run} to start afresh")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, spent = state["step"], state["seconds"]
        print(f"resuming {last} at step {step}")

    spk_index = {s: i for i, s in enumerate(speakers)}
    sampler = SegmentSampler(mels, [spk_index[u.speaker] for u in utts], cfg.segment_frames, cfg.seed,
                             f0s if model_cfg.model.pitch else None)
    bf16 = fast_bf16(dev)
    vocoder = load_vocoder("vocos", model_cfg, ckpt["vocoder"]) if ckpt.get("vocoder") is not None else None
    monitor = Monitor(run, cfg.steps, step, desc="adapt")
    started = entered - spent  # the budget counts from the call, features included, and across resumes
    budget = None if cfg.minutes is None else cfg.minutes * 60

    def save() -> None:
        save_checkpoint(last, {"kind": "adaptation", "step": step, "seconds": time.time() - started,
                               "speakers": speakers, "parts": list(cfg.parts), "config": model_cfg.to_dict(),
                               "settings": asdict(cfg),
                               "model": net.state_dict(), "opt": opt.state_dict()})

    def listen() -> None:
        monitor.audio(step, sample_conversions(net, model_cfg, utts, mels, f0s, vocoder=vocoder),
                      model_cfg.audio.sample_rate)

    if step == 0:
        listen()  # the unadapted model, to compare with
    last_save = time.time()
    net.train()
    try:
        with StopRequest(cfg.minutes, started) as stop:
            while step < cfg.steps and not stop.signalled:
                rng = np.random.default_rng([cfg.seed, step, 1])
                mel, ref, _, pitch = sampler.batch(step, cfg.batch_size)
                mel, ref = net.normalize(mel.to(dev)), net.normalize(ref.to(dev))
                pitch = pitch.to(dev) if pitch is not None else None
                lr = learning_rate(cfg, step, (time.time() - started) / budget if budget else 0.0)
                for group in opt.param_groups:
                    group["lr"] = lr
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                    with torch.set_grad_enabled("content" in cfg.parts):
                        content = net.content_encoder(freq_warp(mel, model_cfg.train.freq_warp, rng))
                    rec = net.decoder(content, net.speaker_encoder(ref), mel.shape[2], pitch)
                    loss = (rec.float() - mel).abs().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, model_cfg.train.grad_clip)
                opt.step()
                step += 1
                monitor.update(recon_l1=loss.item())
                if step % cfg.log_every == 0:
                    monitor.scalars(step, {"recon_l1": loss.item(), "lr": lr})
                if cfg.sample_every and step % cfg.sample_every == 0:
                    listen()
                if time.time() - last_save > cfg.checkpoint_minutes * 60:
                    save()
                    last_save = time.time()
                if stop.out_of_time():
                    monitor.write(f"time budget of {cfg.minutes} min reached at step {step}")
                    break
        save()
        if stop.signalled:
            print(f"interrupted at step {step}; saved {last}; run the same command again to resume")
            raise KeyboardInterrupt
        listen()
    finally:
        monitor.close()
    meta = {**ckpt.get("meta", {}), "adapted_from": str(checkpoint), "adapt_steps": step,
            "adapt_speakers": speakers, "adapt_parts": list(cfg.parts)}
    path = export_inference(out, net, model_cfg, meta, vocoder=ckpt.get("vocoder"))
    print(f"step {step} ({(time.time() - started) / 60:.1f} min): exported {path}")
    return path
