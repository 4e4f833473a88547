"""`vc adapt`: fine-tune a trained converter on new speakers, by default only the parts that carry identity.

The content encoder (what is said) stays frozen; the speaker encoder and the decoder's AdaIN layers (where the speaker
enters) learn the new voices from their reconstruction, the reference being another clip of the same speaker, as in
training. A few minutes of speech per speaker and a few minutes of CPU suffice; the result is an inference checkpoint
with the original's vocoder, used like any other (`vc convert --checkpoint`).

A model with whisper content features (`model.content_features: whisper`) adapts as it was trained: its own frozen
Whisper encoder computes the states of the clips once (cached in the run folder beside the mels, keyed by the encoder's
weights and layer count), and the content encoder reads the standardized states of each batch's segments; the
frequency warp of training applies to mels only, so they enter unwarped. The Whisper encoder never trains.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import build_model, export_inference, load_checkpoint
from ..config import AdaptConfig, Config
from ..errors import VCError
from ..model import VoiceConverterNet
from ..runtime import fast_bf16, resolve_device
from ..vocoder import load_vocoder
from .augment import freq_warp
from .data import SegmentSampler, encoder_id, list_utterances, load_features, load_states
from .distributed import Dist
from .finetune import trainable
from .loop import Run, Schedule, seed, warmup_cosine
from .monitor import Monitor, sample_conversions


def learning_rate(cfg: AdaptConfig, step: int, time_used: float = 0.0, floor: float = 0.05) -> float:
    """Warm-up, then the cosine of `warmup_cosine` down to `floor * lr` at `steps` or at the end of the time budget
    (`time_used` is its spent fraction), whichever comes first."""
    if step >= cfg.warmup_steps:
        step = max(step, cfg.warmup_steps + time_used * (cfg.steps - cfg.warmup_steps))
    return warmup_cosine(step, cfg.lr, cfg.warmup_steps, cfg.steps, floor)


class AdaptTrainer:
    """`vc adapt`'s part of the loop: the trainable parts of a converter, their optimizer, one reconstruction step,
    and audio of conversions between the new speakers as validation. `states`: the Whisper states (C, T) of the
    utterances of `features`, on their mels' frames, for a model with whisper content features (and only for one)."""
    progress = ("recon_l1",)

    def __init__(self, net: VoiceConverterNet, model_cfg: Config, cfg: AdaptConfig, features: tuple[list, list, list],
                 started: float, vocoder=None, state: dict[str, Any] | None = None, states: list | None = None):
        if (net.features is None) != (states is None):
            raise VCError("a model with whisper content features adapts on the Whisper states of its clips, "
                          "and only such a model does")
        self.net, self.model_cfg, self.cfg, self.started, self.vocoder = net, model_cfg, cfg, started, vocoder
        self.states = states
        self.utts, self.mels, self.f0s = features
        self.speakers = sorted({u.speaker for u in self.utts})
        self.params = trainable(net, cfg.parts)
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
        if state is not None:
            net.load_state_dict(state["model"])
            self.opt.load_state_dict(state["opt"])
        spk_index = {s: i for i, s in enumerate(self.speakers)}
        self.sampler = SegmentSampler(self.mels, [spk_index[u.speaker] for u in self.utts], cfg.segment_frames,
                                      cfg.seed, self.f0s if model_cfg.model.pitch else None, model_cfg.pitch)
        self.device = net.mel_mean.device
        self.bf16 = model_cfg.train.bf16 and fast_bf16(self.device)
        self.budget = None if cfg.minutes is None else cfg.minutes * 60
        net.train()

    def step(self, step: int) -> dict[str, float]:
        cfg, net, dev = self.cfg, self.net, self.device
        rng = np.random.default_rng([cfg.seed, step, 1])
        mel, ref, _, pitch = self.sampler.batch(step, cfg.batch_size)
        mel, ref = net.normalize(mel.to(dev)), net.normalize(ref.to(dev))
        pitch = pitch.to(dev) if pitch is not None else None
        states = (None if self.states is None  # the same segments, cut from the Whisper states
                  else net.standardize(self.sampler.segments(step, cfg.batch_size, self.states).to(dev)))
        lr = learning_rate(cfg, step, (time.time() - self.started) / self.budget if self.budget else 0.0)
        for group in self.opt.param_groups:
            group["lr"] = lr
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.bf16):
            with torch.set_grad_enabled("content" in cfg.parts):
                # as in training, the warp stretches mels along frequency; Whisper states enter unwarped
                x = freq_warp(mel, self.model_cfg.train.freq_warp, rng) if states is None else states
                content = net.content_encoder(x)
            rec = net.decoder(content, net.speaker_encoder(ref), mel.shape[2], pitch)
            loss = (rec.float() - mel).abs().mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.model_cfg.train.grad_clip)
        self.opt.step()
        return {"recon_l1": loss.item(), "lr": lr}

    def state(self) -> dict[str, Any]:
        return {"kind": "adaptation", "seconds": time.time() - self.started, "speakers": self.speakers,
                "parts": list(self.cfg.parts), "config": self.model_cfg.to_dict(), "settings": asdict(self.cfg),
                "model": self.net.state_dict(), "opt": self.opt.state_dict()}

    def validate(self, step: int, monitor: Monitor) -> dict[str, float]:
        monitor.audio(step, sample_conversions(self.net, self.model_cfg, self.utts, self.mels, self.f0s,
                                               vocoder=self.vocoder, states=self.states),
                      self.model_cfg.audio.sample_rate)
        return {}


def adapt(checkpoint: str | Path, data: str | Path, out: str | Path, cfg: AdaptConfig | None = None,
          run: str | Path | None = None, device: str = "cpu") -> Path:
    """Fine-tune `checkpoint` (an inference checkpoint, e.g. the shipped one) on the speakers of `data` and export
    `out`. Work files (feature cache, `last.pt` to resume from, `log.jsonl`, TensorBoard) go to `run`, by default
    OUT without its suffix plus `.adapt`. A killed or time-limited run resumes when the same command is run again."""
    entered = time.time()
    cfg = cfg or AdaptConfig()
    out = Path(out)
    dev = resolve_device(device)
    r = Run(run or out.with_suffix(".adapt"), Dist(device=dev))
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("kind") == "training":
        raise VCError(f"{checkpoint}: a training checkpoint; adapt an exported one (vc export, or checkpoints/*.pt)")
    state = r.resume()
    seed(cfg.seed, cfg.threads)
    net, model_cfg = build_model(ckpt, checkpoint)
    net.to(dev)
    features = load_features(list_utterances(data), model_cfg.audio, r.folder / "features.pt", model_cfg.pitch)
    states = None
    if net.features is not None:  # the content encoder's input: the states of the model's own Whisper encoder
        layers = net.cfg.whisper_layers
        states = load_states(*features[:2], model_cfg.audio, net.features, layers, encoder_id(net.features),
                             r.folder / f"states-whisper{layers}.pt")
    speakers = sorted({u.speaker for u in features[0]})
    seconds = {s: sum(m.shape[1] for u, m in zip(features[0], features[1]) if u.speaker == s) / 80 for s in speakers}
    print(f"adapting to {len(speakers)} speaker(s): " + ", ".join(f"{s} {v / 60:.1f} min" for s, v in seconds.items()))
    if state is not None and (state.get("speakers") != speakers or state.get("parts") != list(cfg.parts)):
        raise VCError(f"{r.last}: an adaptation to other speakers or parts; remove {r.folder} to start afresh")
    step, spent = (state["step"], state["seconds"]) if state is not None else (0, 0.0)
    started = entered - spent  # the budget counts from the call, features included, and across resumes
    vocoder = load_vocoder("vocos", model_cfg, ckpt["vocoder"]) if ckpt.get("vocoder") is not None else None
    trainer = AdaptTrainer(net, model_cfg, cfg, features, started, vocoder, state, states)
    monitor = r.monitor(cfg.steps, step, desc="adapt")
    if step == 0:
        trainer.validate(0, monitor)  # the unadapted model, to compare with
    schedule = Schedule(cfg.steps, cfg.log_every, cfg.sample_every, cfg.checkpoint_minutes, cfg.minutes, started)
    outcome = r.loop(trainer, schedule, step, monitor)
    meta = {**ckpt.get("meta", {}), "adapted_from": str(checkpoint), "adapt_steps": outcome.step,
            "adapt_speakers": speakers, "adapt_parts": list(cfg.parts), "complete": outcome.complete}
    path = export_inference(out, net, model_cfg, meta, vocoder=ckpt.get("vocoder"))
    r.finish(outcome, path, elapsed=time.time() - started)
    return path
