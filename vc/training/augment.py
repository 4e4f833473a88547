"""What training does to its batches to teach the networks what to ignore (`freq_warp`: the content encoder must not
hear timbre) and what to listen to (`new_voices`: the decoder must take the voice from the speaker embedding)."""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..audio import _hz_to_mel, _mel_to_hz
from ..config import AudioConfig, PitchConfig


def freq_warp(mel: torch.Tensor, max_warp: float, rng: np.random.Generator) -> torch.Tensor:
    """Stretch each normalized mel (B, n_mels, T) along frequency by a random factor in [1 - w, 1 + w].

    Fed to the content encoder only: formants move while what is said stays, so timbre becomes useless to it.
    """
    if max_warp <= 0:
        return mel
    out = torch.empty_like(mel)
    n = mel.shape[1]
    for b in range(mel.shape[0]):
        size = max(2, round(n * (1 + rng.uniform(-max_warp, max_warp))))
        x = F.interpolate(mel[b:b + 1].transpose(1, 2), size=size, mode="linear", align_corners=True)[0].T
        if size >= n:
            out[b] = x[:n]
        else:
            out[b, :size] = x
            out[b, size:] = mel[b].min()
    return out


@functools.lru_cache(maxsize=8)
def _centres(cfg: AudioConfig) -> tuple[np.ndarray, float, float]:
    """The mel bins' centre frequencies (Hz, as `vc.audio.mel_filterbank` places them), the mel of the lowest edge
    and the mel step between bins."""
    lo, hi = _hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax)
    step = (hi - lo) / (cfg.n_mels + 1)
    return _mel_to_hz(lo + step * np.arange(1, cfg.n_mels + 1)), lo, step


def scale_spectrum(mel: torch.Tensor, factor: float, cfg: AudioConfig) -> torch.Tensor:
    """A log-mel (n_mels, T) whose every frequency is multiplied by `factor` (formants and harmonics alike, as a
    longer or shorter vocal tract and a higher or lower voice): bin i takes the value the input has at f_i / factor,
    interpolated between bins; above the input's top bin it takes the input's floor."""
    centres, lo, step = _centres(cfg)
    pos = (_hz_to_mel(centres / factor) - lo) / step - 1  # fractional input bin of each output bin
    pos = torch.from_numpy(np.clip(pos, 0, None)).to(mel.dtype)
    i0 = pos.floor().long().clamp(max=mel.shape[0] - 1)
    i1 = (i0 + 1).clamp(max=mel.shape[0] - 1)
    w = (pos - i0.to(pos.dtype)).clamp(0, 1)[:, None]
    out = mel[i0] * (1 - w) + mel[i1] * w
    return torch.where((pos > mel.shape[0] - 1)[:, None], mel.min(), out)


def new_voices(mel: torch.Tensor, ref: torch.Tensor, pitch: torch.Tensor | None, max_warp: float, share: float,
               rng: np.random.Generator, audio: AudioConfig, pitch_cfg: PitchConfig
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Speaker augmentation: about `share` of a batch become voices no one recorded.

    For each chosen item one factor in [1 - w, 1 + w] scales every frequency of its target log-mel, its reference
    (the same voice) and its F0. The content input stays as it was, so the only way the decoder can paint the new
    voice is to read it from the speaker embedding of the reference: a decoder that takes timbre from the content
    code instead reconstructs these items badly. -> mel, ref (B, n_mels, T) raw log-mels, pitch features (B, 2, T)
    and the mask (B,) of the items changed.
    """
    changed = torch.from_numpy(rng.random(mel.shape[0]) < share)
    if max_warp <= 0 or not changed.any():
        return mel, ref, pitch, torch.zeros_like(changed)
    mel, ref = mel.clone(), ref.clone()
    pitch = pitch.clone() if pitch is not None else None
    for b in torch.nonzero(changed).flatten().tolist():
        factor = float(rng.uniform(1 - max_warp, 1 + max_warp))
        mel[b] = scale_spectrum(mel[b], factor, audio)
        ref[b] = scale_spectrum(ref[b], factor, audio)
        if pitch is not None:  # features(): channel 0 is (log F0 - centre) / scale where voiced, channel 1 voicing
            pitch[b, 0] += pitch[b, 1] * (math.log(factor) / pitch_cfg.log_f0_scale)
    return mel, ref, pitch, changed
