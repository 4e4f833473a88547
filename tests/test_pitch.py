import math

import numpy as np
import pytest
import torch

from vc.config import AudioConfig
from vc.pitch import PitchStats, features, stats, track, transpose

from conftest import synth_speech

CFG = AudioConfig()


@pytest.mark.parametrize("f0", [80.0, 120.0, 220.0, 400.0])
def test_tracks_the_f0_of_a_harmonic_voice(f0):
    wav = synth_speech(f0, 1.5, seed=int(f0))
    hz, voiced = track(wav, CFG)
    assert hz.shape == voiced.shape == (len(wav) // CFG.hop_length + 1,)
    speech = slice(int(0.3 * 80), int(1.5 * 80))  # after the leading 0.2 s of silence
    assert voiced[speech].float().mean() > 0.9
    # within 4 % (the synthetic voice has 3 % vibrato) and no octave errors
    assert torch.median(hz[speech][voiced[speech]]).item() == pytest.approx(f0, rel=0.04)
    assert torch.all((hz[voiced] > f0 * 0.9) & (hz[voiced] < f0 * 1.1))


def test_silence_and_noise_are_unvoiced():
    rng = np.random.default_rng(0)
    wav = np.concatenate([np.zeros(8000), 0.1 * rng.standard_normal(16000)]).astype(np.float32)
    hz, voiced = track(wav, CFG)
    assert voiced.float().mean() < 0.1
    assert torch.all(hz[~voiced] == 0)


def test_frames_align_with_log_mel():
    from vc.audio import log_mel
    for n in (3200, 3333, 16000):
        wav = synth_speech(150, n / 16000 + 0.01)[:n]
        assert track(wav, CFG)[0].shape[0] == log_mel(wav, CFG).shape[1]


def test_transpose_moves_the_register_and_keeps_unvoiced_frames():
    f0 = torch.tensor([0.0, 95.0, 100.0, 0.0, 105.0])
    src, tgt = stats([torch.full((30,), 100.0) * torch.linspace(0.9, 1.1, 30)]), PitchStats(math.log(200.0), 0.1)
    out = transpose(f0, src, tgt)
    assert out[0] == 0 and out[3] == 0
    assert torch.log(out[[1, 2, 4]]).mean().item() == pytest.approx(math.log(200.0), abs=0.02)
    # 12 semitones up is an octave; with no statistics only the shift applies
    torch.testing.assert_close(transpose(f0, None, None, 12.0), f0 * 2)


def test_stats_need_enough_voiced_frames():
    assert stats([torch.zeros(100)]) is None
    s = stats([torch.full((50,), 150.0)])
    assert s.hz == pytest.approx(150.0) and s.std > 0


def test_features_are_normalized_log_f0_and_voicing():
    feat = features(torch.tensor([0.0, 150.0, 300.0]))
    assert feat.shape == (2, 3)
    torch.testing.assert_close(feat[1], torch.tensor([0.0, 1.0, 1.0]))
    assert feat[0, 0] == 0 and abs(feat[0, 1]) < 1e-6 and feat[0, 2] > 1
