"""F0: a vectorized YIN tracker in torch, and the log-F0 features that put the converted voice in the target's register.

The tracker (de Cheveigné & Kawahara 2002) works on the same frames as `log_mel` (centered, one per hop), so frame k
of the F0 contour belongs to frame k of the mel. It is a few batched FFTs per clip, with no compilation on first use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .config import AudioConfig, PitchConfig


def track(wav: torch.Tensor | np.ndarray, audio: AudioConfig | None = None, cfg: PitchConfig | None = None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(T,) waveform -> F0 in Hz (frames,) with 0 where unvoiced, and the voiced mask (frames,), frames = T // hop + 1.
    """
    audio, cfg = audio or AudioConfig(), cfg or PitchConfig()
    period, best, level = analyse(wav, audio, cfg)
    return contour(period, best, level, audio.sample_rate, float(level.max()), cfg)


def analyse(wav: torch.Tensor | np.ndarray, audio: AudioConfig | None = None, cfg: PitchConfig | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(T,) waveform -> `yin` on frames centred on the mel frames (frames = T // hop + 1): period, dip depth and
    level, each (frames,). `track` makes the F0 of them; the input check (`vc.input_check`) reads them too."""
    audio, cfg = audio or AudioConfig(), cfg or PitchConfig()
    hop, frame_length = audio.hop_length, cfg.frame_length
    x = torch.as_tensor(wav, dtype=torch.float32).flatten()
    frames = x.shape[0] // hop + 1
    x = F.pad(x, (frame_length // 2, frame_length // 2))
    x = F.pad(x, (0, max(0, (frames - 1) * hop + frame_length - x.shape[0])))
    return yin(x.unfold(0, frame_length, hop)[:frames], audio.sample_rate, cfg)


def yin(fr: torch.Tensor, sample_rate: int, cfg: PitchConfig | None = None
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frames (frames, W) -> YIN's period in samples, its dip depth, and the frame's level in dB, each (frames,)."""
    cfg = cfg or PitchConfig()
    frames, frame_length = fr.shape
    fr = fr - fr.mean(dim=1, keepdim=True)
    max_lag = min(int(sample_rate / cfg.fmin) + 1, frame_length // 2)
    min_lag = max(2, int(sample_rate / cfg.fmax))
    n = frame_length - max_lag  # YIN's integration window
    # r(tau) = sum_{j<n} x_j x_{j+tau}, for all tau at once. A circular correlation of frame_length points suffices:
    # j + tau < n + max_lag = frame_length never wraps. (A materialized conjugate: the lazy one is 6x slower.)
    spec = torch.fft.rfft(fr)
    r = torch.fft.irfft(spec * torch.fft.rfft(F.pad(fr[:, :n], (0, frame_length - n))).conj_physical(),
                        frame_length)[:, :max_lag + 1]
    sq = F.pad(torch.cumsum(fr ** 2, dim=1), (1, 0))
    e0 = sq[:, n:n + 1]
    lags = torch.arange(max_lag + 1)
    e_tau = sq[:, lags + n] - sq[:, lags]
    d = (e0 + e_tau - 2 * r).clamp(min=0)
    cmnd = d[:, 1:] * lags[1:] / torch.cumsum(d[:, 1:], dim=1).clamp(min=1e-10)
    cmnd = torch.cat([torch.ones(frames, 1), cmnd], dim=1)  # index = lag
    search = cmnd[:, min_lag:max_lag]
    # first dip below the threshold that is a local minimum, else the global minimum
    is_min = torch.zeros_like(search, dtype=torch.bool)
    is_min[:, 1:-1] = (search[:, 1:-1] <= search[:, :-2]) & (search[:, 1:-1] <= search[:, 2:])
    below = is_min & (search < cfg.threshold)
    first = torch.where(below.any(dim=1), below.float().argmax(dim=1), search.argmin(dim=1))
    best = search.gather(1, first[:, None])[:, 0]
    # parabolic interpolation around the dip
    i = first.clamp(1, search.shape[1] - 2)
    a, b, c = search.gather(1, (i - 1)[:, None])[:, 0], search.gather(1, i[:, None])[:, 0], \
        search.gather(1, (i + 1)[:, None])[:, 0]
    denom = a - 2 * b + c
    shift = torch.where(denom.abs() > 1e-8, 0.5 * (a - c) / denom, torch.zeros_like(denom)).clamp(-1, 1)
    period = (i + min_lag).float() + shift
    level = 10 * torch.log10((fr[:, frame_length // 4: 3 * frame_length // 4] ** 2).mean(dim=1) + 1e-12)
    return period, best, level


def contour(period: torch.Tensor, best: torch.Tensor, level: torch.Tensor, sample_rate: int, max_level: float,
            cfg: PitchConfig | None = None, open_end: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """`yin`'s output -> F0 (Hz, 0 where unvoiced) and the voiced mask: frames with a deep enough dip, within
    `silence_db` of `max_level`, in voiced runs of 3 frames or more, 3-frame median. With `open_end`, a run that
    reaches the last frame is kept (a stream does not know yet how long it lasts)."""
    cfg = cfg or PitchConfig()
    voiced = (best < cfg.voiced_max_cmnd) & (level > max_level - cfg.silence_db)
    voiced = _drop_short_runs(voiced, 3, open_end)
    f0 = torch.where(voiced, sample_rate / period, torch.zeros_like(period))
    return _median3(f0, voiced), voiced


def _drop_short_runs(voiced: torch.Tensor, min_len: int, open_end: bool = False) -> torch.Tensor:
    v = voiced.numpy().copy()
    start = None
    for k in range(len(v) + 1):
        on = k < len(v) and v[k]
        if on and start is None:
            start = k
        elif not on and start is not None:
            if k - start < min_len and not (open_end and k == len(v)):
                v[start:k] = False
            start = None
    return torch.from_numpy(v)


def _median3(f0: torch.Tensor, voiced: torch.Tensor) -> torch.Tensor:
    """3-frame median of voiced F0 (removes single-frame octave jumps); unvoiced neighbours repeat the centre."""
    if f0.numel() < 3:
        return f0
    p = F.pad(f0[None, None], (1, 1), mode="replicate")[0, 0]
    nb = torch.stack([p[:-2], p[1:-1], p[2:]])
    nb = torch.where(nb > 0, nb, f0[None].expand_as(nb))
    return torch.where(voiced, nb.median(dim=0).values, f0)


@dataclass(frozen=True)
class PitchStats:
    """Mean and spread of a speaker's log-F0 over voiced frames (natural log of Hz)."""
    mean: float
    std: float

    @property
    def hz(self) -> float:
        return math.exp(self.mean)


class Register:
    """The log-F0 register of a speaker, accumulated over contours as they come (a whole clip, the chunks of a long
    file, or the blocks of a stream): `add(f0)` then `stats()`."""

    def __init__(self, cfg: PitchConfig | None = None):
        self.default_std = (cfg or PitchConfig()).default_std
        self.n, self.sum, self.sq = 0, 0.0, 0.0

    def add(self, f0: torch.Tensor) -> "Register":
        lf0 = torch.log(f0[f0 > 0].double())
        self.n, self.sum, self.sq = self.n + lf0.numel(), self.sum + float(lf0.sum()), self.sq + float((lf0 ** 2).sum())
        return self

    def stats(self) -> PitchStats | None:
        """Mean and (unbiased) spread of the voiced log-F0 so far; None while fewer than 10 frames are voiced."""
        if self.n < 10:
            return None
        mean = self.sum / self.n
        std = math.sqrt(max(self.sq - self.n * mean * mean, 0.0) / (self.n - 1)) if self.n > 20 else self.default_std
        return PitchStats(mean, max(std, 0.03))


def stats(f0s: list[torch.Tensor], cfg: PitchConfig | None = None) -> PitchStats | None:
    """Over the voiced frames of one or several contours; None when fewer than 10 frames are voiced."""
    register = Register(cfg)
    for f0 in f0s:
        register.add(f0)
    return register.stats()


def features(f0: torch.Tensor, cfg: PitchConfig | None = None) -> torch.Tensor:
    """F0 (frames,) -> the networks' pitch input (2, frames): normalized log-F0 (0 where unvoiced) and voicing."""
    cfg = cfg or PitchConfig()
    voiced = f0 > 0
    lf0 = torch.where(voiced, (torch.log(f0.clamp(min=1.0)) - cfg.log_f0_center) / cfg.log_f0_scale,
                      torch.zeros_like(f0))
    return torch.stack([lf0, voiced.float()])


def hz(features: torch.Tensor, cfg: PitchConfig | None = None) -> torch.Tensor:
    """The inverse of `features`: (2, frames) -> F0 (frames,) in Hz, 0 where unvoiced."""
    cfg = cfg or PitchConfig()
    f0 = torch.exp(features[0].double() * cfg.log_f0_scale + cfg.log_f0_center)
    return torch.where(features[1] > 0.5, f0, torch.zeros_like(f0))


def transpose(f0: torch.Tensor, source: PitchStats | None, target: PitchStats | None, semitones: float = 0.0
              ) -> torch.Tensor:
    """Move a contour from the source's register to the target's (log-F0 mean and spread), then by `semitones`.

    With either statistic missing, only the semitone shift applies.
    """
    voiced = f0 > 0
    lf0 = torch.log(f0.clamp(min=1.0))
    if source is not None and target is not None:
        lf0 = (lf0 - source.mean) / source.std * target.std + target.mean
    lf0 = lf0 + semitones * math.log(2) / 12
    return torch.where(voiced, torch.exp(lf0), torch.zeros_like(f0))
