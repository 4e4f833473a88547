"""The timbre match after the decoder: the output's long-term average spectrum over its speech frames is moved toward
the target clips'. Offline, a clip's frames come all at once; a stream adds them as they come (`SpeechSpectrum`).

A reference recorded in noise has the noise's spectrum in its own: where a band's speech is not well above the clip's
noise floor, `reference_spectrum` leaves that band unknown (NaN) and `match` leaves the output's band as it is."""
from __future__ import annotations

import math

import torch

RELIABLE_DB = 10.0  # a band of a reference whose speech is less than this above its noise floor is not matched
NOISE_QUANTILE = 0.1  # a reference's noise floor in a band: this quantile of the band's power over the clip's frames


class SpeechSpectrum:
    """The mean log-mel (n_mels,) of the speech frames seen so far: frames within `speech_db` dB of the loudest yet.

    `add(mel)` takes log-mel frames (n_mels, frames); offline, one `add` of a whole clip gives its speech spectrum."""

    def __init__(self, speech_db: float):
        self.threshold = speech_db / 20 * math.log(10)  # in natural-log amplitude
        self.n, self.sum, self.loudest = 0, None, -math.inf

    def speech_frames(self, mel: torch.Tensor) -> torch.Tensor:
        """The speech frames of log-mel `mel` (n_mels, frames), as a mask (frames,); the loudest yet includes them."""
        level = torch.logsumexp(mel, dim=0)
        self.loudest = max(self.loudest, float(level.max()))
        return level > self.loudest - self.threshold

    def add(self, mel: torch.Tensor) -> "SpeechSpectrum":
        keep = self.speech_frames(mel)
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


def reference_spectrum(mel: torch.Tensor, speech_db: float, reliable_db: float = RELIABLE_DB,
                       noise_quantile: float = NOISE_QUANTILE) -> torch.Tensor:
    """A target clip's log-mel (n_mels, frames) -> its speech spectrum (n_mels,), NaN in the bands whose mean power
    over the speech frames is less than `reliable_db` above the clip's noise floor there (the `noise_quantile` of the
    band's power over all frames): in those bands the spectrum is the noise's, not the voice's."""
    frames = SpeechSpectrum(speech_db).speech_frames(mel)  # the frames `speech_spectrum` averages
    power = torch.exp(2 * mel.float())
    noise = torch.quantile(power, noise_quantile, dim=1).clamp(min=1e-20)
    snr_db = 10 * torch.log10(power[:, frames].mean(dim=1) / noise)
    return torch.where(snr_db < reliable_db, torch.nan, mel[:, frames].mean(dim=1))


def mean_spectrum(spectra: list[torch.Tensor], weights: list[float] | None = None) -> torch.Tensor:
    """The weighted mean of reference spectra, band by band over the clips where the band is known (NaN where none
    knows it)."""
    stacked = torch.stack(spectra)
    w = torch.tensor(weights or [1.0] * len(spectra), dtype=stacked.dtype)[:, None].expand_as(stacked)
    known = torch.isfinite(stacked)
    total = torch.where(known, w, 0.0).sum(dim=0)
    summed = torch.where(known, stacked * w, 0.0).sum(dim=0)
    return torch.where(total > 0, summed / total.clamp(min=1e-12), torch.nan)


def match(mel: torch.Tensor, target: torch.Tensor | None, output: torch.Tensor | None, amount: float) -> torch.Tensor:
    """Move log-mel `mel` (n_mels, frames), whose speech spectrum is `output`, `amount` (0 to 1) of the way to the
    `target` spectrum, keeping its level (the mean over bands of the change is removed). Bands where `target` is NaN
    (unknown: `reference_spectrum`) are left as they are."""
    if amount <= 0 or target is None or output is None:
        return mel
    delta = target.to(mel.device) - output
    known = torch.isfinite(delta)
    if not known.any():
        return mel
    delta = torch.where(known, delta - delta[known].mean(), 0.0)
    return mel + amount * delta[:, None]
