"""`vc train-whisper`: a converter's Whisper encoder fine-tuned to hear through rooms and noise.

The converter learned its content code from the states of Whisper tiny.en's encoder. A source recorded in a room or
with noise gives other states, and the code, and the words, suffer with them. Here the encoder (the student) reads a
corrupted copy of a training clip (`vc.training.corrupt.Corruption`: a simulated room, coloured noise or babble, band
limits, codecs) or, for `clean_share` of the segments, the clip itself, and learns to give what a frozen copy of the
starting encoder (the teacher) gives the clean clip: L1 on the states as the content encoder reads them
(standardized), plus `code_weight` times L1 on the content code of the model's own content encoder (held). Nothing
else changes, so the converter needs no retraining: the export is the input model with the encoder's new weights.

Both read the same segment of the clip. The student's is corrupted together with up to `lead_seconds` of the clip
before it, so that the room's tail from before the cut is heard, as in a recording (and not the whole clip, which
would cost half a step). Each step's draws come from (seed, step), so a resumed run computes what an unbroken one does.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import audio_seconds, load_wav
from ..checkpoint import build_model, export_inference, load_checkpoint
from ..config import Config, WhisperTuneConfig
from ..errors import VCError
from ..model import VoiceConverterNet
from ..whisper import resample_states, window_mel
from .corrupt import Corruption
from .data import gather_utterances
from .distributed import Dist
from .loop import Run, Schedule, seed, warmup_cosine
from .monitor import Monitor


class WhisperTuner:
    """The loop's trainer (`vc.training.loop`): the student encoder (`net.features`, trained in place), its frozen
    teacher, one distillation step on a batch of (corrupted, clean) segments, and the same losses on a fixed batch
    drawn apart from training's as validation."""
    progress = ("states_l1", "code_l1")

    def __init__(self, net: VoiceConverterNet, model_cfg: Config, cfg: WhisperTuneConfig, clips: list[str],
                 corruption: Corruption, state: dict[str, Any] | None = None, source: str = ""):
        self.net, self.model_cfg, self.cfg, self.clips, self.corruption = net, model_cfg, cfg, clips, corruption
        self.source = source  # the input model: a resume must start from the same one (its encoder is the teacher)
        self.student = net.features
        self.teacher = copy.deepcopy(self.student).eval()  # the encoder of the input model, before any step
        for p in list(net.parameters()) + list(self.teacher.parameters()):
            p.requires_grad_(False)
        for p in self.student.parameters():
            p.requires_grad_(True)
        if state is not None:
            self.student.load_state_dict(state["encoder"])
        self.opt = torch.optim.AdamW(self.student.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
        if state is not None:
            self.opt.load_state_dict(state["opt"])
        self.samples = round(cfg.segment_seconds * model_cfg.audio.sample_rate)
        self.frames = self.samples // model_cfg.audio.hop_length  # the converter's mel frames of a segment
        self.held_aside = self.segments(np.random.default_rng([cfg.seed, 7, 7]))
        self.student.train()

    def segments(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of Whisper log-mels (B, 80, frames): the corrupted (or, `clean_share` of them, clean) segments the
        student reads, and the clean ones the teacher reads."""
        heard, clean = [], []
        lead = round(self.cfg.lead_seconds * self.model_cfg.audio.sample_rate)
        for _ in range(self.cfg.batch_size):
            wav = load_wav(self.clips[int(rng.integers(len(self.clips)))], self.model_cfg.audio, trim=False)
            start = int(rng.integers(0, len(wav) - self.samples + 1))
            begin = max(0, start - lead)
            piece = wav[begin:start + self.samples]
            bad = piece if rng.random() < self.cfg.clean_share else self.corruption(piece, rng)
            heard.append(window_mel(bad[start - begin:start - begin + self.samples]))
            clean.append(window_mel(wav[start:start + self.samples]))
        return torch.stack(heard), torch.stack(clean)

    def code(self, states: torch.Tensor) -> torch.Tensor:
        """Encoder states (B, T, C) at 50 Hz -> the content code the converter makes of them."""
        rate = self.model_cfg.audio.sample_rate / self.model_cfg.audio.hop_length
        on_frames = torch.stack([resample_states(s, rate, self.frames).T for s in states])
        return self.net.content_encoder(self.net.standardize(on_frames))

    def losses(self, heard: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        layers = self.net.cfg.whisper_layers or None
        with torch.no_grad():
            target = self.teacher(clean, layers)
            target_code = self.code(target)
        states = self.student(heard, layers)
        out = {"states_l1": ((states - target).abs() / self.net.content_std).mean()}
        out["code_l1"] = (self.code(states) - target_code).abs().mean()
        out["loss"] = out["states_l1"] + self.cfg.code_weight * out["code_l1"]
        return out

    def step(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        lr = warmup_cosine(step, cfg.lr, cfg.warmup_steps, cfg.steps, 0.05)
        for group in self.opt.param_groups:
            group["lr"] = lr
        losses = self.losses(*self.segments(np.random.default_rng([cfg.seed, step])))
        self.opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), cfg.grad_clip)
        self.opt.step()
        return {**{k: v.item() for k, v in losses.items()}, "lr": lr}

    def state(self) -> dict[str, Any]:
        return {"kind": "whisper-tune", "from": self.source, "settings": asdict(self.cfg),
                "encoder": self.student.state_dict(), "opt": self.opt.state_dict()}

    @torch.no_grad()
    def validate(self, step: int, monitor: Monitor) -> dict[str, float]:
        self.student.eval()
        try:
            return {f"val_{k}": v.item() for k, v in self.losses(*self.held_aside).items()}
        finally:
            self.student.train()


def long_enough(utterances, seconds: float) -> list[str]:
    """The clips that hold a segment of `seconds` (and half a second more)."""
    return [u.path for u in utterances if audio_seconds(u.path) >= seconds + 0.5]


def train_whisper(checkpoint: str | Path, data: list[str | Path], out: str | Path,
                  cfg: WhisperTuneConfig | None = None, run: str | Path | None = None, max_minutes: float | None = None,
                  until: int | None = None) -> Path:
    """Fine-tune the Whisper encoder of `checkpoint` (an exported model with whisper content features) on the clips
    of `data` and export `out`. Work files (`last.pt` to resume from, `log.jsonl`, TensorBoard) go to `run`, by
    default OUT without its suffix plus `.whisper`; the same command again resumes a stopped run."""
    entered = time.time()
    cfg = cfg or WhisperTuneConfig()
    out = Path(out)
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("kind") == "training":
        raise VCError(f"{checkpoint}: a training checkpoint; fine-tune an exported one (vc export, or "
                      "checkpoints/*.pt)")
    net, model_cfg = build_model(ckpt, checkpoint)
    if net.features is None:
        raise VCError(f"{checkpoint}: its content encoder reads mels, not Whisper states: there is no Whisper encoder "
                      "to fine-tune")
    r = Run(run or out.with_suffix(".whisper"), Dist())
    state = r.resume()
    if state is not None and state.get("from") != str(checkpoint):
        raise VCError(f"{r.last}: a fine-tune of {state.get('from')}, not of {checkpoint}; remove {r.folder} to start "
                      "afresh")
    seed(cfg.seed, cfg.threads)
    clips = long_enough(gather_utterances(data), cfg.segment_seconds)
    if not clips:
        raise VCError(f"{', '.join(map(str, data))}: no clip of {cfg.segment_seconds + 0.5:g} s or more to cut "
                      "segments from")
    print(f"{len(clips)} clips; simulating {cfg.rooms} rooms")
    corruption = Corruption.drawn(clips, model_cfg.audio, np.random.default_rng([cfg.seed, 2]), cfg.rooms,
                                  cfg.babble_clips, p_reverb=cfg.reverb)  # other draws than the steps'
    trainer = WhisperTuner(net, model_cfg, cfg, clips, corruption, state, source=str(checkpoint))
    step = state["step"] if state is not None else 0
    schedule = Schedule(cfg.steps, cfg.log_every, cfg.val_every, cfg.checkpoint_minutes, max_minutes, entered,
                        until)
    monitor = r.monitor(cfg.steps, step, desc="train-whisper")
    if step == 0 and cfg.val_every:  # the encoder as it came, to compare with
        monitor.scalars(0, trainer.validate(0, monitor))
    outcome = r.loop(trainer, schedule, step, monitor)
    meta = {**ckpt.get("meta", {}), "whisper_tuned_from": str(checkpoint), "whisper_tune_steps": outcome.step,
            "whisper_tune": asdict(cfg), "complete": outcome.complete}
    path = export_inference(out, net, model_cfg, meta, vocoder=ckpt.get("vocoder"))
    r.finish(outcome, path, elapsed=time.time() - entered)
    return path
