"""The timbre match after the decoder: the output's long-term average spectrum over its speech frames is moved toward
the target clips'; then `contrast` widens the output's departures from that spectrum. Offline, a clip's frames come all at once; a stream adds them as they come (`SpeechSpectrum`).

A reference recorded in noise has the noise's spectrum in its own: where a band's speech is not well above the clip's
noise floor, `reference_spectrum` leaves that band unknown (NaN) and `match` leaves the output's band as it is. In a
noisy reference (more than `NOISY_SHARE` of its bands unknown), the frames of noise alone, its pauses, are left out
of the mean."""
from __future__ import annotations

import math

import torch

RELIABLE_DB = 10.0  # a band of a reference whose speech is less than this above its noise floor is not matched
NOISE_QUANTILE = 0.1  # a reference's noise floor in a band: this quantile of the band's power over the clip's frames
NOISY_SHARE = 0.05  # a reference with more of its bands unknown than this is noisy (clean dev clips: 0.8 % on average)
CONTRAST_FADE_DB = 20.0  # `contrast` fades out over this many dB below the speech frames
NOISE_ONLY_DB = 4.5  # in a noisy reference, frames less than this above its quietest (NOISE_QUANTILE) are noise alone


def frame_levels(mel: torch.Tensor) -> torch.Tensor:
    """Log-mel (..., n_mels, frames) -> each frame's level (..., frames), in natural-log amplitude."""
    return torch.logsumexp(mel, dim=-2)


class SpeechSpectrum:
    """The mean log-mel (n_mels,) of the speech frames seen so far: frames within `speech_db` dB of the loudest yet.

    `add(mel)` takes log-mel frames (n_mels, frames); offline, one `add` of a whole clip gives its speech spectrum."""

    def __init__(self, speech_db: float):
        self.threshold = speech_db / 20 * math.log(10)  # in natural-log amplitude
        self.n, self.sum, self.loudest = 0, None, -math.inf

    def speech_frames(self, mel: torch.Tensor) -> torch.Tensor:
        """The speech frames of log-mel `mel` (n_mels, frames), as a mask (frames,); the loudest yet includes them."""
        level = frame_levels(mel)
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
    band's power over all frames): in those bands the spectrum is the noise's, not the voice's.

    A noisy reference (more than `NOISY_SHARE` of its bands unknown) counts as speech only the frames `NOISE_ONLY_DB`
    above the clip's quietest (its `noise_quantile` of frame levels): the others, its pauses, are the noise's alone.
    A clean reference is measured as `speech_spectrum` measures the output."""
    frames = SpeechSpectrum(speech_db).speech_frames(mel)  # the frames `speech_spectrum` averages
    power = torch.exp(2 * mel.float())
    noise = torch.quantile(power, noise_quantile, dim=1).clamp(min=1e-20)

    def known(frames: torch.Tensor) -> torch.Tensor:
        return 10 * torch.log10(power[:, frames].mean(dim=1) / noise) >= reliable_db

    reliable = known(frames)
    if float((~reliable).float().mean()) <= NOISY_SHARE:
        return torch.where(reliable, mel[:, frames].mean(dim=1), torch.nan)
    level = frame_levels(mel.float())
    frames = frames & (level > torch.quantile(level, noise_quantile) + NOISE_ONLY_DB / 20 * math.log(10))
    if not frames.any():  # noise all through: nothing of the voice to match
        return torch.full_like(noise, torch.nan)
    return torch.where(known(frames), mel[:, frames].mean(dim=1), torch.nan)


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


def contrast(mel: torch.Tensor, spectrum: SpeechSpectrum, amount: float, fade_db: float = CONTRAST_FADE_DB
             ) -> torch.Tensor:
    """Log-mel `mel` (n_mels, frames) with each band's departures from its speech spectrum (`spectrum`, to which
    `mel` has been added) scaled by `amount` (1: unchanged): a global-variance post-filter (cf. Toda et al. 2007,
    Silen et al. 2012) for a decoder whose mels are smoother over time and frequency than speech. Speech frames get
    all of it; below them it fades out over `fade_db`, so that pauses keep their level."""
    centre = spectrum.mean()
    if amount == 1 or centre is None:
        return mel
    fade = fade_db / 20 * math.log(10)
    floor = spectrum.loudest - spectrum.threshold - fade
    weight = ((frame_levels(mel) - floor) / fade).clamp(0, 1)
    return mel + (amount - 1) * weight[None] * (mel - centre.to(mel.device)[:, None])
