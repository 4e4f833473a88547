import numpy as np
import pytest
import torch

from vc.config import AudioConfig, PitchConfig, load_recipe
from vc.training.augment import _centres, new_voices, scale_spectrum
from vc.training.converter import train

from conftest import ROOT

CFG = AudioConfig()


def _peak_at(hz: float) -> torch.Tensor:
    centres, _, _ = _centres(CFG)
    mel = torch.full((CFG.n_mels, 6), -10.0)
    mel[int(np.argmin(abs(centres - hz)))] = 0.0
    return mel


def _peak_hz(mel: torch.Tensor) -> float:
    return float(_centres(CFG)[0][int(mel[:, 0].argmax())])


def test_scale_spectrum_moves_a_formant_by_the_factor_and_one_is_the_identity():
    mel = _peak_at(1000.0)
    assert torch.equal(scale_spectrum(mel, 1.0, CFG), mel)
    assert _peak_hz(scale_spectrum(mel, 1.2, CFG)) == pytest.approx(1200, rel=0.05)
    assert _peak_hz(scale_spectrum(mel, 0.85, CFG)) == pytest.approx(850, rel=0.05)
    top = scale_spectrum(_peak_at(3000.0), 0.85, CFG)[-5:]  # above the input's top: its floor, not garbage
    assert torch.all(top == -10.0)


def test_new_voices_scale_target_reference_and_pitch_by_one_factor_and_leave_the_rest():
    mel = torch.stack([_peak_at(1000.0), _peak_at(1000.0)])
    ref = torch.stack([_peak_at(2000.0), _peak_at(2000.0)])
    pitch = torch.zeros(2, 2, 6)
    pitch[:, 1, :3] = 1.0  # voiced in the first 3 frames, unvoiced after
    pc = PitchConfig()
    m, r, p, changed = new_voices(mel, ref, pitch, 0.15, 1.0, np.random.default_rng(0), CFG, pc)
    assert changed.all()
    for b in range(2):
        factor = _peak_hz(m[b]) / 1000.0
        assert factor != pytest.approx(1.0, abs=0.02) and abs(factor - 1) <= 0.15 + 0.05
        assert _peak_hz(r[b]) / 2000.0 == pytest.approx(factor, abs=0.05)  # the reference is the same new voice
        assert np.exp(float(p[b, 0, 0]) * pc.log_f0_scale) == pytest.approx(factor, abs=0.05)
        assert torch.all(p[b, 0, 3:] == 0) and torch.equal(p[b, 1], pitch[b, 1])  # unvoiced frames stay unvoiced
    assert torch.equal(mel[0], _peak_at(1000.0))  # the inputs themselves are not modified
    same = new_voices(mel, ref, pitch, 0.0, 1.0, np.random.default_rng(0), CFG, pc)
    assert same[0] is mel and not same[3].any()


def test_training_with_speaker_warp_runs_and_keeps_the_setting_in_the_checkpoint(train_dir, dev_dir, tmp_path):
    cfg = load_recipe(ROOT / "recipes" / "tiny.yaml").replace(train={"speaker_warp": 0.15})
    path = train(cfg, train_dir, tmp_path, dev=dev_dir)
    saved = torch.load(path, weights_only=True)
    assert saved["config"]["train"]["speaker_warp"] == 0.15
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
