"""The input check: how unlike one person speaking a clip is (music, noise, tones, several voices at once, speech
buried in noise), so that a conversion can warn before a user wonders why the result is garbled. It never blocks.

Two kinds of evidence, combined by a logistic model fitted on labelled clips (`vc.training.input_check`):

- an auto-encoder's reconstruction error. `CheckAutoEncoder` is a small auto-encoder of log-mels trained on clean
  read speech only: what it was trained on it reconstructs well, anything else badly (music and tones above all);
- cues of the signal that the auto-encoder misses: a single talker pauses between phrases (the level spans a wide
  range, part of the clip is quiet), and a voice is periodic with one F0 at a time (YIN's dip is deep, and the
  F0 track does not jump between two voices).

The fitted model travels in one small file (`checkpoints/input_check.pt`, loaded with `load_checker`), apart from
the converters: it scores a clip the same whatever model converts it.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .audio import log_mel
from .config import AudioConfig, PitchConfig
from .errors import VCError
from .files import sha256
from .pitch import analyse, contour
from .registry import FOLDERS

CUES = ("ae_error", "ae_error_p90", "level_range", "quiet_share", "dip_median", "dip_low", "flatness",
        "level_change", "f0_jumps")
SHIPPED = next((f / "input_check.pt" for f in FOLDERS if (f / "input_check.pt").is_file()),
               FOLDERS[-1] / "input_check.pt")  # package data beside the shipped models (`vc.registry`)
SHIPPED_SHA256 = "84ad1b8d1443e007fdc1dbf33b48b16d23788dbfd99eacacee1d3bbfb27bd777"
ACTIVE_DB = 35.0  # frames within this of the clip's loudest are "active" for the cues taken over active frames


class CheckAutoEncoder(nn.Module):
    """Normalized log-mel (B, n_mels, T) -> its reconstruction through a 16-channel bottleneck at half the frame
    rate. No instance norm: unlike the converter's content encoder, it is meant to fail on what is not speech."""

    def __init__(self, n_mels: int = 80, channels: int = 128, bottleneck: int = 16):
        super().__init__()
        self.enc = nn.ModuleList([nn.Conv1d(n_mels, channels, 5, padding=2),
                                  nn.Conv1d(channels, channels, 5, stride=2, padding=2),
                                  nn.Conv1d(channels, bottleneck, 1)])
        self.dec = nn.ModuleList([nn.Conv1d(bottleneck, channels, 5, padding=2),
                                  nn.Conv1d(channels, channels, 5, padding=2),
                                  nn.Conv1d(channels, n_mels, 1)])
        self.register_buffer("mel_mean", torch.zeros(n_mels))
        self.register_buffer("mel_std", torch.ones(n_mels))

    def normalize(self, mel: torch.Tensor) -> torch.Tensor:
        return (mel - self.mel_mean[:, None]) / self.mel_std[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[2]
        h = F.leaky_relu(self.enc[0](x), 0.2)
        h = F.leaky_relu(self.enc[1](h), 0.2)
        h = self.enc[2](h)
        h = F.interpolate(h, size=frames, mode="nearest")
        h = F.leaky_relu(self.dec[0](h), 0.2)
        h = F.leaky_relu(self.dec[1](h), 0.2)
        return self.dec[2](h)


@torch.inference_mode()
def cues(wav: np.ndarray, ae: CheckAutoEncoder, audio: AudioConfig, pitch_cfg: PitchConfig,
         analysis: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> np.ndarray:
    """A prepared clip (T,) at the model's rate -> the values of `CUES`, float64. `analysis`: the clip's
    `vc.pitch.analyse` where the caller has it already (a conversion tracks the source's F0 from it too)."""
    mel = log_mel(wav, audio)
    x = ae.normalize(mel[None])
    err = (ae(x) - x).abs().mean(dim=1)[0].numpy()  # per frame
    period, best, level = analysis if analysis is not None else analyse(wav, audio, pitch_cfg)
    f0, _ = contour(period, best, level, audio.sample_rate, float(level.max()), pitch_cfg)
    lv, dip = level.numpy(), best.numpy()
    active = lv > lv.max() - ACTIVE_DB
    n = min(len(err), len(lv))
    err_active = err[:n][active[:n]] if active[:n].any() else err
    spec = mel.exp().numpy()
    flat = np.exp(np.log(spec + 1e-10).mean(axis=0)) / (spec.mean(axis=0) + 1e-10)
    voiced = f0.numpy() > 0
    both = voiced[1:] & voiced[:-1]
    steps = np.abs(np.diff(np.log(np.maximum(f0.numpy(), 1.0))))[both]
    return np.array([err_active.mean(), np.percentile(err_active, 90),
                     np.percentile(lv, 95) - np.percentile(lv, 10), float((lv < lv.max() - 30).mean()),
                     np.median(dip[active]), np.percentile(dip[active], 25), np.median(flat[active[:flat.shape[0]]]),
                     np.abs(np.diff(mel.mean(dim=0).numpy())).mean(),
                     float((steps > np.log(2) / 4).mean()) if steps.size else 0.0], dtype=np.float64)


@dataclass(frozen=True)
class InputCheck:
    """How unlike one person speaking a clip is: `score` in [0, 1] (the logistic model's probability that it is
    not), and `unusual` when the score is above the checker's threshold."""
    score: float
    unusual: bool

    def message(self, name: str, role: str) -> str:
        return (f"{name}: the {role} does not sound like one person speaking (input check {self.score:.2f}): "
                "music, noise, several voices at once or speech buried in noise convert badly")


class InputChecker:
    """The fitted check: the auto-encoder, the cues' standardization, the logistic weights and the threshold."""

    def __init__(self, state: dict):
        self.ae = CheckAutoEncoder(**state["ae_dims"]).eval()
        self.ae.load_state_dict(state["ae"])
        self.mean, self.std = np.asarray(state["cue_mean"]), np.asarray(state["cue_std"])
        self.weights, self.bias = np.asarray(state["weights"]), float(state["bias"])
        self.threshold = float(state["threshold"])
        self.audio, self.pitch = AudioConfig(**state["audio"]), PitchConfig(**state["pitch"])

    def score_cues(self, values: np.ndarray) -> float:
        z = (values - self.mean) / self.std
        return float(1 / (1 + np.exp(-(z @ self.weights + self.bias))))

    def check(self, wav: np.ndarray, analysis: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
              ) -> InputCheck:
        """A prepared clip (T,) at the checker's sample rate (and its `vc.pitch.analyse` with the checker's settings,
        where the caller has it) -> its `InputCheck`."""
        score = self.score_cues(cues(wav, self.ae, self.audio, self.pitch, analysis))
        return InputCheck(score, score > self.threshold)


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> InputChecker:
    return InputChecker(torch.load(path, map_location="cpu", weights_only=True))


def load_checker(path: str | os.PathLike | None = None) -> InputChecker | None:
    """The check in `path` (default: the shipped one), or None where there is no such file: then nothing is
    checked. $VC_INPUT_CHECK=0 turns the shipped check off."""
    if path is None:
        if os.environ.get("VC_INPUT_CHECK", "1") == "0":
            return None
        path = SHIPPED
    path = Path(path)
    if not path.is_file():
        return None
    if path == SHIPPED and sha256(path) != SHIPPED_SHA256:
        raise VCError(f"{path}: the shipped input check is damaged or was replaced (its SHA-256 differs from "
                      "vc.input_check's); reinstall vc or check out the file again")
    return _load(str(path), path.stat().st_mtime)
