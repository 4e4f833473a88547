import math

import numpy as np
import torch

from vc import timbre
from vc.audio import log_mel
from vc.training.corrupt import colored_noise, mix

from conftest import synth_speech

SPEECH_DB = 30.0


def with_pauses(seed: int = 0) -> np.ndarray:
    """Speech-like sound in three bursts with near-silent pauses between them, as a real reference has."""
    rng = np.random.default_rng(seed)
    burst = synth_speech(180, 0.8, seed=seed)
    pause = 1e-4 * rng.standard_normal(4000).astype(np.float32)
    return np.concatenate([burst, pause, burst, pause, burst])


def test_a_clean_reference_knows_every_band_and_matches_as_before():
    mel = log_mel(with_pauses())
    spectrum = timbre.reference_spectrum(mel, SPEECH_DB)
    assert torch.isfinite(spectrum).all()
    torch.testing.assert_close(spectrum, timbre.speech_spectrum(mel, SPEECH_DB))


def test_bands_that_noise_hides_in_a_reference_are_unknown():
    wav = with_pauses()
    noisy = mix(wav, colored_noise(len(wav), 0.0, np.random.default_rng(1)), 10.0)  # white noise 10 dB below
    spectrum = timbre.reference_spectrum(log_mel(noisy.astype(np.float32)), SPEECH_DB)
    known = torch.isfinite(spectrum)
    # the harmonics are loud at the bottom of the spectrum and fall by 1/k^1.45: white noise covers the top (and the
    # narrow low bands between harmonics)
    assert known[:30].sum() >= 10 and not known[-30:].any()


def test_match_leaves_unknown_bands_alone_and_moves_the_known_ones():
    mel = torch.zeros(4, 6)
    target = torch.tensor([1.0, 3.0, torch.nan, torch.nan])
    out = timbre.match(mel, target, torch.zeros(4), 1.0)
    torch.testing.assert_close(out[:, 0], torch.tensor([-1.0, 1.0, 0.0, 0.0]))  # mean change over known bands removed
    torch.testing.assert_close(timbre.match(mel, torch.full((4,), torch.nan), torch.zeros(4), 1.0), mel)


def test_mean_spectrum_averages_each_band_over_the_clips_that_know_it():
    a = torch.tensor([1.0, torch.nan, torch.nan])
    b = torch.tensor([3.0, 2.0, torch.nan])
    mean = timbre.mean_spectrum([a, b], [0.25, 0.75])
    torch.testing.assert_close(mean[:2], torch.tensor([2.5, 2.0]))
    assert torch.isnan(mean[2])


def test_a_noisy_reference_leaves_its_pauses_out_of_the_bands_it_knows():
    wav = with_pauses()
    noisy = log_mel(mix(wav, colored_noise(len(wav), 1.0, np.random.default_rng(1)), 10.0).astype(np.float32))
    clean = timbre.speech_spectrum(log_mel(wav), SPEECH_DB)
    spectrum = timbre.reference_spectrum(noisy, SPEECH_DB)
    known = torch.isfinite(spectrum)

    def error(s: torch.Tensor) -> float:  # the timbre match removes the mean change over the known bands
        d = (s - clean)[known]
        return float((d - d.mean()).abs().mean())

    # pink noise 10 dB below: most bands unknown, so the clip counts as noisy; its pauses (noise alone) are left out
    # of the bands still known, which halves the error of a plain mean over its speech frames
    assert 0.1 < known.float().mean() < 0.5
    assert error(spectrum) < 0.6 * error(timbre.speech_spectrum(noisy, SPEECH_DB))


def test_contrast_widens_departures_from_the_speech_spectrum_and_leaves_pauses():
    mel = log_mel(with_pauses())
    spectrum = timbre.SpeechSpectrum(SPEECH_DB).add(mel)
    speech = spectrum.speech_frames(mel)
    out = timbre.contrast(mel, spectrum, 1.2)
    torch.testing.assert_close(out[:, speech].mean(1), spectrum.mean())  # the speech spectrum stays where it was
    torch.testing.assert_close(out[:, speech].std(1), 1.2 * mel[:, speech].std(1))  # its variation over time widens
    level = timbre.frame_levels(mel)
    far_below = level < spectrum.loudest - (SPEECH_DB + timbre.CONTRAST_FADE_DB) / 20 * math.log(10)
    assert far_below.sum() > 20  # the pauses
    torch.testing.assert_close(out[:, far_below], mel[:, far_below])  # keep their level
    assert timbre.contrast(mel, spectrum, 1.0) is mel
    assert timbre.contrast(mel, timbre.SpeechSpectrum(SPEECH_DB), 1.2) is mel  # no speech seen yet
