"""The timbre match after the decoder: the output's long-term average spectrum over its speech frames is moved toward
the target clips'. Offline, a clip's frames come all at once; a stream adds them as they come (`SpeechSpectrum`)."""
from __future__ import annotations

import math

import torch


class SpeechSpectrum:
    """The mean log-mel (n_mels,) of the speech frames seen so far: frames within `speech_db` dB of the loudest yet.

    `add(mel)` takes log-mel frames (n_mels, frames); offline, one `add` of a whole clip gives its speech spectrum."""

    def __init__(self, speech_db: float):
        self.threshold = speech_db / 20 * math.log(10)  # in natural-log amplitude
        self.n, self.sum, self.loudest = 0, None, -math.inf

    def add(self, mel: torch.Tensor) -> "SpeechSpectrum":
        level = torch.logsumexp(mel, dim=0)
        self.loudest = max(self.loudest, float(level.max()))
        keep = level > self.loudest - self.threshold
        if keep.any():
            s = mel[:, keep].sum(dim=1)
            self.n += int(keep.sum())
            self.sum = s if self.sum is None else self.sum + s
        return self

    def mean(self) -> torch.Tensor | None:
        return self.sum / self.n if self.n else None


def speech_spectrum(mel: torch.Tensor, speech_db: float) -> torch.Tensor:
    """Log-mel (n_mels, frames) -> the mean log-mel (n_mels,) of its speech frames."""
    return SpeechSpectrum(speech_db).add(mel).mean()


def match(mel: torch.Tensor, target: torch.Tensor | None, output: torch.Tensor | None, amount: float) -> torch.Tensor:
    """Move log-mel `mel` (n_mels, frames), whose speech spectrum is `output`, `amount` (0 to 1) of the way to the
    `target` spectrum, keeping its level (the mean over bands of the change is removed)."""
    if amount <= 0 or target is None or output is None:
        return mel
    delta = target.to(mel.device) - output
    return mel + amount * (delta - delta.mean())[:, None]
