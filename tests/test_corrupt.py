"""Denoising training: the corruptions keep a clip's length and timing, and `train.denoise` trains on corrupted
content inputs and references against clean targets."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vc.config import load_recipe
from vc.training.corrupt import (Corruption, babble, band_limit, codec, colored_noise, mix, reverberate,
                                 room_impulse, shift_voice)
from vc.training.data import SegmentSampler

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def _voice(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Noise bursts at a syllable rate, low-passed: no period, so a cross-correlation finds the one true lag."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = np.convolve(rng.standard_normal(len(t)), np.hanning(5) / 2.5, mode="same")
    return (0.1 * x * (0.2 + np.sin(2 * np.pi * 3 * t) ** 2)).astype(np.float64)


def _lag(a: np.ndarray, b: np.ndarray) -> int:
    n = len(a)
    c = np.fft.irfft(np.fft.rfft(a, 2 * n) * np.conj(np.fft.rfft(b, 2 * n)), 2 * n)
    k = int(np.argmax(c))
    return k if k < n else k - 2 * n


def test_mix_puts_the_noise_the_asked_snr_below_the_signal():
    rng = np.random.default_rng(0)
    x = _voice()
    noise = colored_noise(len(x), 1.0, rng)
    y = mix(x, noise, 10.0)
    snr = 10 * np.log10(np.mean(x ** 2) / np.mean((y - x) ** 2))
    assert snr == pytest.approx(10.0, abs=0.01)


def test_room_reverb_keeps_length_timing_and_power_and_adds_a_tail():
    rng = np.random.default_rng(1)
    rir = room_impulse(rng, SR, rt60=(0.6, 0.6))
    assert np.argmax(np.abs(rir)) == 0 and len(rir) > 0.2 * SR  # direct sound first, then a tail
    x = _voice()
    y = reverberate(x, rir)
    assert y.shape == x.shape
    assert _lag(y, x) == 0
    assert np.mean(y ** 2) == pytest.approx(np.mean(x ** 2), rel=1e-6)
    assert not np.allclose(y, x, atol=1e-3)


def test_band_limit_and_codecs_keep_timing_and_band_limit_removes_the_top():
    rng = np.random.default_rng(2)
    x = _voice()
    for _ in range(4):  # both codecs, several bitrates
        y = codec(x, SR, rng)
        assert y.shape == x.shape and _lag(y, x) == 0
    y = band_limit(x, SR, rng)
    assert y.shape == x.shape and _lag(y, x) == 0
    top = np.abs(np.fft.rfft(y))[int(len(y) * 6500 / SR):].sum() / np.abs(np.fft.rfft(x))[int(len(x) * 6500 / SR):].sum()
    assert top < 0.05


def test_babble_is_several_clips_at_once_and_the_chain_keeps_the_clip_aligned():
    rng = np.random.default_rng(3)
    speech = [_voice(1.0, seed) for seed in range(1, 5)]
    b = babble(3 * SR, speech, rng)
    assert b.shape == (3 * SR,) and np.abs(b).max() > 0
    chain = Corruption([room_impulse(rng, SR)], speech, SR, p_reverb=1.0, p_noise=1.0, snr_db=(20, 20))
    x = _voice().astype(np.float32)
    y = chain(x, rng)
    assert y.shape == x.shape and y.dtype == np.float32 and _lag(y, x) == 0
    assert not np.allclose(y / np.abs(y).max(), x / np.abs(x).max(), atol=1e-2)


def test_shift_voice_moves_every_frequency_by_the_drawn_semitones_and_keeps_length():
    t = np.arange(2 * SR) / SR
    x = 0.1 * (np.sin(2 * np.pi * 200 * t) + np.sin(2 * np.pi * 1200 * t))  # a pitch and a "formant"
    shifts = []
    for seed in range(6):
        y = shift_voice(x, SR, np.random.default_rng(seed), 4.0)
        assert y.shape == x.shape
        spec = np.abs(np.fft.rfft(y[SR // 4:-SR // 4]))
        freqs = np.fft.rfftfreq(len(y) - SR // 2, 1 / SR)
        low = freqs[np.argmax(spec * (freqs < 600))]
        high = freqs[np.argmax(spec * (freqs > 700))]
        ratio = low / 200
        assert 2 ** (1 / 12) * 0.99 < max(ratio, 1 / ratio) < 2 ** (4 / 12) * 1.01  # 1 to 4 semitones
        assert high / 1200 == pytest.approx(ratio, rel=0.02)  # the formant moves with the pitch
        shifts.append(ratio > 1)
    assert any(shifts) and not all(shifts)  # up and down


def test_voice_shift_training_takes_content_from_shifted_copies_and_keeps_pitch_and_target(
        train_dir, dev_dir, tmp_path, monkeypatch):
    from vc.training import data
    from vc.training.converter import train
    seen = []
    real = data.SegmentSampler.corrupted

    def spy(self, step, size, copies, share, ref_share, mel, ref, pitch, states, with_pitch=True, salt=3):
        out = real(self, step, size, copies, share, ref_share, mel, ref, pitch, states, with_pitch, salt)
        seen.append((salt, with_pitch, ref_share, torch.equal(out[1], ref), pitch is None or torch.equal(out[2], pitch),
                     torch.equal(out[0], mel)))
        return out

    monkeypatch.setattr(data.SegmentSampler, "corrupted", spy)
    cfg = load_recipe(ROOT / "recipes" / "tiny.yaml").replace(train={"voice_shift": 1.0, "steps": 4})
    path = train(cfg, train_dir, tmp_path, dev=dev_dir)
    assert (tmp_path / "shifted0-mel0.pt").is_file() and not list(tmp_path.glob("corrupted*"))
    assert torch.load(path, weights_only=True)["config"]["train"]["voice_shift"] == 1.0
    assert len(seen) == 4
    # every step: shifted copies (salt 4), pitch and references kept, the content input replaced
    assert all(s == (4, False, 0.0, True, True, False) for s in seen)


def test_sampler_swaps_content_pitch_and_references_for_corrupted_copies_and_keeps_the_target():
    from vc.config import PitchConfig
    mels = [torch.full((4, 40), float(i)) for i in range(3)]
    f0s = [torch.full((40,), 100.0) for _ in range(3)]
    noisy = ([m + 100 for m in mels], [torch.full((40,), 200.0) for _ in range(3)], [torch.full((2, 40), -1.0)] * 3)
    sampler = SegmentSampler(mels, [0, 0, 1], 16, seed=0, f0s=f0s, pitch=PitchConfig())
    mel, ref, _, pitch = sampler.batch(5, 8)
    states = sampler.segments(5, 8, [torch.zeros(2, 40)] * 3)
    content, ref2, pitch2, states2 = sampler.corrupted(5, 8, [noisy], 1.0, 0.0, mel, ref, pitch, states)
    assert (content == mel + 100).all() and (states2 == -1).all() and not torch.equal(pitch2, pitch)
    assert torch.equal(ref2, ref) and mel.max() < 100  # references and targets untouched
    _, ref3, _, states3 = sampler.corrupted(5, 8, [noisy], 0.0, 1.0, mel, ref, pitch, states)
    assert (ref3 == ref + 100).all() and torch.equal(states3, states)


def test_denoising_training_runs_and_keeps_the_settings(train_dir, dev_dir, tmp_path):
    from vc.training.converter import train
    cfg = load_recipe(ROOT / "recipes" / "tiny.yaml").replace(
        train={"denoise": 0.5, "denoise_ref": 0.5, "denoise_copies": 1, "steps": 10})
    path = train(cfg, train_dir, tmp_path, dev=dev_dir)
    saved = torch.load(path, weights_only=True)
    assert saved["config"]["train"]["denoise"] == 0.5 and saved["config"]["train"]["denoise_ref"] == 0.5
    assert (tmp_path / "corrupted0-mel0.pt").is_file()
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_a_clean_run_stopped_with_until_and_resumed_with_a_denoising_recipe_goes_on_as_denoising_training(
        train_dir, dev_dir, tmp_path):
    from vc.checkpoint import load_checkpoint
    from vc.cli import main
    from vc.training.converter import train
    args = ["train", str(ROOT / "recipes" / "tiny.yaml"), "--data", str(train_dir), "--dev", str(dev_dir),
            "--out", str(tmp_path), "--steps", "10"]
    assert main([*args, "--until", "6"]) == 0
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 6 and not list(tmp_path.glob("corrupted*"))
    clean = load_recipe(ROOT / "recipes" / "tiny.yaml").replace(train={"steps": 10})
    path = train(clean.replace(train={"denoise": 0.5, "denoise_copies": 1, "segment_frames": 48, "adv_weight": 0.2}),
                 train_dir, tmp_path, dev=dev_dir)
    saved = torch.load(path, weights_only=True)
    assert saved["config"]["train"]["denoise"] == 0.5
    assert saved["config"]["train"]["adv_weight"] == 0.2  # so can the adversary's weight (and its start and ramp)
    assert saved["config"]["train"]["segment_frames"] == 48  # longer or shorter segments go on from a resume too
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 10
    assert (tmp_path / "corrupted0-mel0.pt").is_file()


@pytest.mark.parametrize("clean", [False, True])
def test_code_hold_clean_holds_the_code_of_a_corrupted_input_to_the_clean_clips(train_dir, dev_dir, tmp_path, clean):
    from vc.training.converter import train
    cfg = load_recipe(ROOT / "recipes" / "tiny.yaml").replace(train={
        "denoise": 1.0, "denoise_copies": 1, "steps": 1, "log_every": 1, "freq_warp": 0.0, "code_hold": 1.0,
        "code_hold_db": 0.0, "code_hold_clean": clean})
    train(cfg, train_dir, tmp_path, dev=dev_dir)
    first = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    # before the first update the trained encoder is its frozen copy: they differ only in what they read
    assert (first["hold"] > 1e-3) if clean else (first["hold"] == 0.0)


@pytest.mark.parametrize("corrupted", [0.0, 1.0])
def test_voice_hold_holds_a_corrupted_references_embedding_to_the_clean_ones(train_dir, dev_dir, tmp_path, corrupted):
    from vc.training.converter import train
    cfg = load_recipe(ROOT / "recipes" / "tiny.yaml").replace(train={
        "denoise_ref": corrupted, "denoise_copies": 1, "steps": 1, "log_every": 1, "voice_hold": 1.0})
    path = train(cfg, train_dir, tmp_path, dev=dev_dir)
    first = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    # before the first update the speaker encoder is its frozen copy: they differ only in the reference they hear
    assert (first["voice_hold"] > 1e-3) if corrupted else (first["voice_hold"] == 0.0)
    assert torch.load(path, weights_only=True)["config"]["train"]["voice_hold"] == 1.0


def test_converted_voices_say_the_clip_in_another_speakers_voice_with_its_length(tiny_checkpoint, clips):
    import vc
    from vc.audio import load_wav, normalize_loudness
    from vc.training.corrupt import ConvertedVoices

    model = vc.load_model(tiny_checkpoint)
    wav = load_wav(clips["source"], model.cfg.audio)
    voices = ConvertedVoices(tiny_checkpoint, {"a": [str(clips["source"])], "b": [str(clips["target"])]},
                             np.random.default_rng(0), model.sample_rate, -20.0)
    out = voices(wav, "b")
    assert out.shape == wav.shape and out.dtype == np.float32 and np.isfinite(out).all()
    expected = normalize_loudness(model.convert(wav, model.embed(clips["target"])), model.sample_rate, -20.0)
    assert np.allclose(out, expected, atol=1e-4)
    assert list(voices.voices) == ["b"]  # embedded once, reused
    assert not np.allclose(out, normalize_loudness(wav, model.sample_rate, -20.0), atol=1e-2)


def test_converted_voices_refuse_a_model_at_another_sample_rate(tiny_checkpoint, clips):
    from vc.errors import VCError
    from vc.training.corrupt import ConvertedVoices

    with pytest.raises(VCError, match="voice_shift_model"):
        ConvertedVoices(tiny_checkpoint, {"a": [str(clips["source"])]}, np.random.default_rng(0), 22050, -20.0)


def test_voice_shift_model_training_reads_converted_copies_on_the_clips_frames(train_dir, dev_dir, tmp_path,
                                                                               tiny_checkpoint, monkeypatch):
    from vc.checkpoint import load_checkpoint
    from vc.training import data
    from vc.training.converter import train
    made = []
    real = data.SegmentSampler.converted_targets

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        made.append(int(out[3].sum()))
        return out

    monkeypatch.setattr(data.SegmentSampler, "converted_targets", spy)

    cfg = load_recipe(ROOT / "recipes" / "tiny.yaml").replace(
        train={"voice_shift": 0.5, "voice_shift_model": str(tiny_checkpoint), "voice_shift_target": 1.0, "steps": 2})
    path = train(cfg, train_dir, tmp_path, dev=dev_dir)
    saved = torch.load(path, weights_only=True)["config"]["train"]
    assert saved["voice_shift_model"] == str(tiny_checkpoint) and saved["voice_shift_target"] == 1.0
    assert not list(tmp_path.glob("shifted*"))
    assert len(made) == 2 and sum(made) > 0  # every step, some items learned conversions
    copy = load_checkpoint(next(tmp_path.glob("converted0-*.pt")))
    clean = load_checkpoint(tmp_path / "features-train.pt")
    assert [m.shape for m in copy["mels"]] == [m.shape for m in clean["mels"]]
    assert all((a.float() - b.float()).abs().mean() > 0.05 for a, b in zip(copy["mels"], clean["mels"]))


def test_sampler_converted_targets_take_target_and_pitch_from_the_copy_and_the_reference_from_its_voice():
    from vc.config import PitchConfig
    mels = [torch.full((4, 40), float(i)) for i in range(3)]
    f0s = [torch.full((40,), 100.0) for _ in range(3)]
    copy = ([m + 100 for m in mels], [torch.full((40,), 200.0) for _ in range(3)], None)
    sampler = SegmentSampler(mels, [0, 0, 1], 16, seed=0, f0s=f0s, pitch=PitchConfig())
    mel, ref, _, pitch = sampler.batch(5, 8)
    picked = [i for i, _, _, _ in sampler.draw(5, 8)]
    content = mel.clone()
    content[0] += 7  # an item whose content input was already swapped stays a reconstruction
    target, ref2, pitch2, changed = sampler.converted_targets(5, 8, [copy], [[1, 1, 0]], 1.0, mel, ref, pitch, content)
    assert not changed[0] and torch.equal(target[0], mel[0]) and torch.equal(ref2[0], ref[0])
    assert changed[1:].all()
    for b in range(1, 8):
        i = picked[b]
        assert (target[b] == i + 100).all() and not torch.equal(pitch2[b], pitch[b])
        voice_of = {0: 1, 1: 1, 2: 0}[i]  # the reference is an utterance of the copy's voice
        assert {int(v) for v in ref2[b].unique()} <= ({2} if voice_of == 1 else {0, 1})
    assert torch.equal(mel, content - torch.cat([torch.full((1, 4, 16), 7.0), torch.zeros(7, 4, 16)]))  # inputs kept
    _, _, _, none = sampler.converted_targets(5, 8, [copy], [[1, 1, 0]], 0.0, mel, ref, pitch, content)
    assert not none.any()


def test_voice_shift_target_needs_a_converter_and_refuses_voice_hold():
    from vc.errors import VCError
    cfg = load_recipe(ROOT / "recipes" / "tiny.yaml")
    with pytest.raises(VCError, match="voice_shift_target"):
        cfg.replace(train={"voice_shift_target": 0.5})
    with pytest.raises(VCError, match="voice_shift_target"):
        cfg.replace(train={"voice_shift_target": 0.5, "voice_shift_model": "m.pt", "voice_hold": 1.0})
    assert cfg.replace(train={"voice_shift_target": 0.5, "voice_shift_model": "m.pt"}).train.voice_shift_target == 0.5


def test_converted_speakers_give_every_clip_another_voice_the_same_on_every_call():
    from vc.training.corrupt import converted_speakers
    speakers = ["a", "a", "b", "c", "c", "c"]
    voices = converted_speakers(speakers, seed=0, copy=0)
    assert len(voices) == 6 and all(v != s and v in speakers for v, s in zip(voices, speakers))
    assert converted_speakers(speakers, seed=0, copy=0) == voices
    assert converted_speakers(["a", "b"], seed=3, copy=1) == ["b", "a"]  # the only other voice
