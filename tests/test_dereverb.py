"""Dereverberation (vc/dereverb.py): the WPE estimator against a per-bin reference, what it does to a reverberant
signal, and the conversion option that runs it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vc.config import Config
from vc.dereverb import delayed_frames, dereverberate, wpe_spectrum
from vc.errors import VCError

SR = 16000


def reference_wpe(spec: np.ndarray, taps: int, delay: int, iterations: int) -> np.ndarray:
    """WPE written out bin by bin (Yoshioka and Nakatani 2012, eq. 13-15, one channel) in complex128, the inverse
    power floored at 1e-10 of the input's loudest bin."""
    n_bins, frames = spec.shape
    out = spec.copy()
    floor = 1e-10 * (np.abs(spec) ** 2).max()
    for _ in range(iterations):
        inverse = 1 / np.maximum(np.abs(out) ** 2, floor)
        result = np.empty_like(spec)
        for f in range(n_bins):
            y = spec[f]
            past = np.zeros((taps, frames), complex)
            for k in range(taps):
                shift = delay + k
                past[k, shift:] = y[:frames - shift]
            correlation = (past * inverse[f]) @ past.conj().T
            cross = (past * inverse[f]) @ y.conj()
            g = np.linalg.solve(correlation, cross)
            result[f] = y - g.conj() @ past
        out = result
    return out


def reverberant_bursts(seed: int = 0, rt60: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """(dry, wet): harmonic bursts of 0.3 s with 0.4-s gaps, and the same through an exponentially decaying noise
    room impulse response (direct sound first) of `rt60` seconds."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(4.0 * SR)) / SR
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(h * phase) / h for h in range(1, 20))
    gate = ((t % 0.7) < 0.3).astype(float)
    dry = voiced * gate
    n = int(rt60 * SR)
    rir = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n) * 0.3
    rir[0] = 1.0
    wet = np.convolve(dry, rir)[:len(dry)]
    return dry.astype(np.float32), (wet / np.abs(wet).max() * 0.5).astype(np.float32)


def gap_energy(wav: np.ndarray) -> float:
    """Energy in the second halves of the gaps between the bursts (where only the room's tail is heard), relative to
    the bursts' energy, in dB."""
    t = np.arange(len(wav)) / SR
    pos = t % 0.7
    tail, burst = (pos > 0.5) & (t > 0.7), pos < 0.3
    return float(10 * np.log10(np.mean(wav[tail] ** 2) / np.mean(wav[burst] ** 2)))


def test_delayed_frames_hold_the_past_frames_and_zeros_before_the_start():
    spec = torch.arange(1, 13, dtype=torch.float64).reshape(2, 6)
    past = delayed_frames(spec, taps=3, delay=2)  # frame t: frames t - 4, t - 3, t - 2
    assert past.shape == (2, 6, 3)
    assert past[0, 5].tolist() == [2.0, 3.0, 4.0]
    assert past[1, 2].tolist() == [0.0, 0.0, 7.0]
    assert past[0, 1].tolist() == [0.0, 0.0, 0.0]


def test_wpe_matches_the_per_bin_reference():
    rng = np.random.default_rng(1)
    spec = rng.standard_normal((9, 200)) + 1j * rng.standard_normal((9, 200))
    spec[:, 50:] += 0.6 * spec[:, 46:-4]  # an echo four frames later
    ours = wpe_spectrum(torch.from_numpy(spec), taps=6, delay=2, iterations=3, bins=4, loading=0).numpy()
    np.testing.assert_allclose(ours, reference_wpe(spec, 6, 2, 3), atol=1e-9, rtol=1e-9)


def test_dereverberate_removes_the_rooms_tail_and_keeps_the_direct_sound():
    dry, wet = reverberant_bursts()
    out = dereverberate(wet, SR)
    assert out.shape == wet.shape and out.dtype == np.float32 and np.all(np.isfinite(out))
    assert gap_energy(wet) - gap_energy(out) > 6.0  # the tail between the bursts falls by more than 6 dB

    def distance(a: np.ndarray) -> float:  # mean log-spectral distance to the dry signal, levels matched, in dB
        def spectrum(x):
            x = torch.from_numpy(x / np.sqrt(np.mean(x ** 2)))
            return torch.stft(x, 512, 128, window=torch.hann_window(512), return_complex=True).abs()

        return float((20 * (spectrum(a) + 1e-3).log10() - 20 * (spectrum(dry) + 1e-3).log10()).abs().mean())

    assert distance(out) < distance(wet) - 1.0  # nearer the dry signal than the reverberant one was


def test_a_short_clip_is_left_as_it_is_and_a_shorter_one_gets_fewer_taps(monkeypatch):
    import vc.dereverb as dereverb

    seen = []
    real = dereverb.wpe_spectrum
    monkeypatch.setattr(dereverb, "wpe_spectrum", lambda spec, taps, *a: seen.append(taps) or real(spec, taps, *a))
    _, wet = reverberant_bursts()
    short = wet[:int(3.9 * SR)]
    assert dereverb.too_short(len(short), SR) and not dereverb.too_short(len(wet), SR)
    np.testing.assert_array_equal(dereverb.dereverberate(short, SR), short)
    dereverb.dereverberate(wet, SR)  # 4 s: 251 frames of 16 ms
    dereverb.dereverberate(np.tile(wet, 2), SR)
    assert seen == [25, dereverb.TAPS]


def test_the_dereverb_setting_is_true_or_false():
    assert Config().convert.dereverb is False
    assert Config().replace(convert={"dereverb": True}).convert.dereverb is True
    with pytest.raises(VCError, match="dereverb"):
        Config().replace(convert={"dereverb": 2})


def test_convert_dereverbs_the_source_only_when_asked(tiny_checkpoint, tmp_path):
    import soundfile as sf

    import vc

    _, wet = reverberant_bursts(seed=3, rt60=0.5)
    source, target = tmp_path / "room.wav", tmp_path / "target.wav"
    sf.write(source, np.tile(wet, 2)[:9 * SR], SR)
    sf.write(target, reverberant_bursts(seed=4)[0][:2 * SR], SR)
    model = vc.load_model(tiny_checkpoint)
    plain = model.convert(source, target)
    np.testing.assert_array_equal(plain, model.convert(source, target, dereverb=False))  # off by default
    cleaned = model.convert(source, target, dereverb=True)
    assert cleaned.shape == plain.shape and np.all(np.isfinite(cleaned))
    assert not np.allclose(cleaned, plain, atol=1e-3)
    model.cfg = model.cfg.replace(convert={"dereverb": True})  # the model's default, as a checkpoint can set it
    np.testing.assert_array_equal(model.convert(source, target), cleaned)
    out = tmp_path / "long.wav"  # the chunked path of a long file runs it per chunk
    model.cfg = model.cfg.replace(convert={"dereverb": False})
    model.convert_file(source, out, target, chunk_seconds=5.0, dereverb=True)  # two chunks of 5 s
    chunked = sf.read(out, dtype="float32")[0]
    model.convert_file(source, tmp_path / "long-plain.wav", target, chunk_seconds=5.0)
    assert len(chunked) == len(plain) and not np.allclose(chunked, sf.read(tmp_path / "long-plain.wav")[0],
                                                           atol=1e-3)
    sf.write(source, wet[:3 * SR], SR)  # too short: converted as recorded, with a warning
    with pytest.warns(vc.VCWarning, match="too short to dereverberate"):
        np.testing.assert_array_equal(model.convert(source, target, dereverb=True), model.convert(source, target))


def test_vc_convert_dereverb_flag_is_an_option_of_the_outputs_recipe(tiny_checkpoint, tmp_path, capsys):
    import soundfile as sf

    from vc.cli import main

    _, wet = reverberant_bursts(seed=5, rt60=0.5)
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "a.wav", np.tile(wet, 2)[:int(4.5 * SR)], SR)
    sf.write(tmp_path / "t.wav", reverberant_bursts(seed=6)[0][:2 * SR], SR)
    args = ["convert", str(tmp_path / "in"), "-t", str(tmp_path / "t.wav"), "-o", str(tmp_path / "out"),
            "--checkpoint", str(tiny_checkpoint), "--quiet"]
    assert main(args) == 0
    plain = sf.read(tmp_path / "out" / "a.wav")[0]
    assert main(args + ["--dereverb"]) == 1  # made without it: not done, and not replaced unasked
    assert "--overwrite" in capsys.readouterr().err + open(tmp_path / "out" / "vc-report.csv").read()
    assert main(args + ["--dereverb", "--overwrite"]) == 0
    assert not np.allclose(sf.read(tmp_path / "out" / "a.wav")[0], plain, atol=1e-3)
    assert main(args + ["--dereverb"]) == 0
    assert "0 converted, 1 skipped" in capsys.readouterr().out
