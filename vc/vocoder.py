"""Mel to waveform. Griffin-Lim needs no training; a neural vocoder is to come."""
from __future__ import annotations

import functools

import torch

from .audio import LOG_FLOOR, _window, mel_filterbank, stft
from .config import VOCODERS, AudioConfig
from .errors import VCError


@functools.lru_cache(maxsize=8)
def _inverse_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    return torch.linalg.pinv(mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax))


class GriffinLim:
    """Log-mel (n_mels, frames) -> waveform (samples,), by the fast Griffin-Lim algorithm (Perraudin et al. 2013).

    The linear magnitude is the filterbank's pseudo-inverse applied to the mel magnitude, floored at zero.
    """

    def __init__(self, cfg: AudioConfig, n_iter: int = 64, momentum: float = 0.99, power: float = 1.0):
        self.cfg, self.n_iter, self.momentum, self.power = cfg, n_iter, momentum, power

    def magnitude(self, mel: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        inv = _inverse_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax).to(mel.device)
        # power > 1 sharpens formants at the cost of level accuracy; 1.0 keeps log_mel(output) close to the input
        return (inv @ torch.exp(mel.float())).clamp(min=LOG_FLOOR) ** self.power

    def __call__(self, mel: torch.Tensor, length: int | None = None, init: torch.Tensor | None = None,
                 return_phase: bool = False):
        """mel (n_mels, frames) -> waveform (length,). `init`: unit phases (F, n) for the first n frames, e.g. the
        end of the previous chunk, so that consecutive chunks join in phase. With `return_phase`, also the final
        unit phases (F, frames)."""
        c = self.cfg
        mag = self.magnitude(mel)
        length = length or (mag.shape[-1] - 1) * c.hop_length
        window = _window(c.win_length).to(mag.device)
        gen = torch.Generator().manual_seed(0)  # the same mel always gives the same audio
        angles = torch.exp(2j * torch.pi * torch.rand(mag.shape, generator=gen)).to(mag.device)
        if init is not None:
            n = min(init.shape[-1], angles.shape[-1])
            angles[:, :n] = init[:, :n]
        previous = torch.zeros_like(angles)

        def istft(spec: torch.Tensor) -> torch.Tensor:
            return torch.istft(spec, c.n_fft, c.hop_length, c.win_length, window, center=True, length=length)

        for _ in range(self.n_iter):
            rebuilt = stft(istft(mag * angles), c)
            angles = rebuilt - (self.momentum / (1 + self.momentum)) * previous
            angles = angles / angles.abs().clamp(min=1e-8)
            previous = rebuilt
        wav = istft(mag * angles)
        return (wav, angles) if return_phase else wav


def load_vocoder(name: str, cfg: AudioConfig, **kwargs) -> GriffinLim:
    if name == "griffin-lim":
        return GriffinLim(cfg, **kwargs)
    raise VCError(f"unknown vocoder '{name}' (choose from: {', '.join(VOCODERS)})")
