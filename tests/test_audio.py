import errno
import os
import signal
import warnings

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from vc.audio import (load_wav, log_mel, mel_filterbank, normalize_loudness, prepare, read_blocks, save_wav,
                      trim_silence)
from vc.config import AudioConfig
from vc.errors import VCError, VCWarning

from conftest import synth_speech


def test_log_mel_matches_librosa():
    cfg = AudioConfig()
    wav = synth_speech(150, 1.0)
    ours = log_mel(torch.from_numpy(wav), cfg).numpy()
    ref = librosa.feature.melspectrogram(y=wav, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                                         win_length=cfg.win_length, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax,
                                         power=1.0, pad_mode="constant")
    ref = np.log(np.maximum(ref, 1e-5))
    assert ours.shape == ref.shape == (cfg.n_mels, len(wav) // cfg.hop_length + 1)
    assert np.abs(ours - ref).max() < 1e-2


def test_log_mel_batches():
    wav = torch.from_numpy(np.stack([synth_speech(120, 1.0), synth_speech(200, 1.0)]))
    batch = log_mel(wav)
    assert batch.shape[0] == 2
    torch.testing.assert_close(batch[1], log_mel(wav[1]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("sr,channels,subtype", [(16000, 1, "PCM_16"), (8000, 1, "PCM_16"), (48000, 2, "PCM_24"),
                                                  (44100, 2, "FLOAT"), (22050, 1, "PCM_U8")])
def test_load_any_rate_depth_and_channels(tmp_path, sr, channels, subtype):
    wav = librosa.resample(synth_speech(150, 1.5), orig_sr=16000, target_sr=sr)
    data = np.stack([wav] * channels, axis=1)
    path = tmp_path / "clip.wav"
    sf.write(path, data, sr, subtype=subtype)
    out = load_wav(path, trim=False)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - round(len(wav) * 16000 / sr)) <= 2


def test_flac_ogg_and_mp3_read(tmp_path):
    for ext in ("flac", "ogg", "mp3"):
        sf.write(tmp_path / f"a.{ext}", synth_speech(150, 1.5), 16000)
        assert len(load_wav(tmp_path / f"a.{ext}")) > 16000 // 2


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [(16000, 1024, 80, 0.0, 8000.0), (22050, 512, 40, 50.0, 7000.0)])
def test_filterbank_trim_and_resampling_equal_librosa(sr, n_fft, n_mels, fmin, fmax):
    """The numpy versions that keep scipy.signal out of the first conversion give librosa's numbers."""
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    np.testing.assert_allclose(mel_filterbank(sr, n_fft, n_mels, fmin, fmax).numpy(), ref, atol=1e-7, rtol=1e-5)
    wav = np.concatenate([np.zeros(5000, np.float32), synth_speech(150, 1.0), 1e-4 * np.ones(7000, np.float32)])
    for top_db in (20, 30, 60):
        np.testing.assert_array_equal(trim_silence(wav, top_db), librosa.effects.trim(
            wav, top_db=top_db, frame_length=800, hop_length=200)[0])
    resampled = prepare(wav, 16000, AudioConfig(sample_rate=sr), trim=False, normalize=False)
    centered = (wav - wav.mean(dtype=np.float64)).astype(np.float32)  # prepare removes the DC offset first
    np.testing.assert_array_equal(resampled, librosa.resample(centered, orig_sr=16000, target_sr=sr,
                                                              res_type="soxr_hq"))


def test_trim_and_loudness():
    cfg = AudioConfig()
    wav = np.concatenate([np.zeros(16000, np.float32), 0.05 * synth_speech(150, 1.0), np.zeros(16000, np.float32)])
    out = prepare(wav, 16000, cfg)
    assert len(out) < len(wav) - 16000  # a second of silence on each side is mostly cut
    rms_db = 20 * np.log10(np.sqrt(np.mean(out ** 2)))
    assert -26 < rms_db < -16  # scaled toward cfg.target_db
    assert np.abs(out).max() < 1.0


def test_normalize_loudness_caps_peaks():
    wav = np.zeros(16000, np.float32)
    wav[100] = 0.001  # a lone click: RMS gain would blow it up
    assert np.abs(normalize_loudness(wav, 16000)).max() <= 0.99 + 1e-6


@pytest.mark.parametrize("kind,reason", [("missing", "not found"), ("empty", "empty"), ("text", "not a readable audio"),
                                         ("short", "too short"), ("silent", "silent"), ("folder", "folder")])
def test_bad_inputs_name_the_file_and_reason(tmp_path, kind, reason):
    path = tmp_path / f"{kind}.wav"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not audio\n" * 20)
    elif kind == "short":
        sf.write(path, synth_speech(150, 0.2)[3000:6000], 16000)
    elif kind == "silent":
        sf.write(path, np.zeros(32000, np.float32), 16000)
    elif kind == "folder":
        path.mkdir()
    with pytest.raises(VCError) as err:
        load_wav(path)
    msg = str(err.value)
    assert str(path) in msg and reason in msg and "\n" not in msg


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_save_round_trip_is_atomic(tmp_path, ext):
    wav = synth_speech(150, 1.0)
    path = save_wav(tmp_path / "sub" / f"out.{ext}", wav, 16000)
    back, sr = sf.read(path, dtype="float32")
    assert sr == 16000 and len(back) == len(wav)
    assert np.abs(back - wav).max() < 1e-3
    assert [p.name for p in path.parent.iterdir()] == [f"out.{ext}"]  # no temporary left behind
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # not the 0600 of a temporary file


def test_save_rejects_unknown_format(tmp_path):
    with pytest.raises(VCError, match="unsupported output format"):
        save_wav(tmp_path / "out.xyz", np.zeros(100, np.float32), 16000)


# --- the front end of issue 16: DC, near-DC, truncation, telephone band, what the writer may write --------------------
def test_dc_offset_is_removed_before_anything():
    wav = synth_speech(150, 1.5)
    np.testing.assert_allclose(prepare(wav + 0.6, 16000), prepare(wav, 16000), atol=2e-5)


@pytest.mark.parametrize("name,wav", [("pure DC", np.full(32000, 0.5, np.float32)),
                                      ("2 Hz drift", 0.5 * np.sin(2 * np.pi * 2 * np.arange(32000) / 16000)),
                                      ("DC and a whisper of noise", 0.5 + 1e-5 * np.random.default_rng(0)
                                       .standard_normal(32000))])
def test_dc_and_near_dc_are_silent(name, wav):
    with pytest.raises(VCError, match="silent"):
        prepare(wav.astype(np.float32), 16000, name=name)


def _truncated(tmp_path, ext: str, keep: float = 0.5):
    path = tmp_path / f"cut.{ext}"
    sf.write(path, synth_speech(150, 3.0), 16000)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_truncated_file_warns_and_gives_what_is_readable(tmp_path, ext):
    path = _truncated(tmp_path, ext)
    with pytest.warns(VCWarning, match=rf"{path}: truncated or damaged file: .* of 3\.40 s readable"):
        wav = load_wav(path, trim=False, normalize=False)
    assert 0.8 * 16000 < len(wav) < 2.6 * 16000
    with pytest.warns(VCWarning, match="truncated"):
        blocks = list(read_blocks(path, 16000, block_seconds=0.5))
    assert 0.8 * 16000 < sum(map(len, blocks)) < 2.6 * 16000


def test_whole_file_does_not_warn(tmp_path):
    sf.write(tmp_path / "a.wav", synth_speech(150, 2.0), 16000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VCWarning)
        load_wav(tmp_path / "a.wav")
        list(read_blocks(tmp_path / "a.wav", 22050))


def test_read_blocks_removes_a_constant_offset(tmp_path):
    sf.write(tmp_path / "dc.wav", synth_speech(150, 2.0) + 0.4, 16000)
    wav = np.concatenate(list(read_blocks(tmp_path / "dc.wav", 16000, block_seconds=0.25)))
    assert abs(wav[4000:].mean()) < 2e-3  # the first block's mean is an estimate from its own samples


def test_telephone_band_warns_and_wideband_does_not():
    wav = synth_speech(150, 2.0)
    with pytest.warns(VCWarning, match="no sound above 4 kHz"):
        prepare(wav[::2], 8000, name="phone.wav")
    with warnings.catch_warnings():
        warnings.simplefilter("error", VCWarning)
        prepare(wav, 16000)


def test_writer_never_writes_a_non_finite_sample(tmp_path):
    wav = synth_speech(150, 1.0)
    wav[1000:1100] = np.nan
    wav[2000] = np.inf
    with pytest.warns(VCWarning, match="101 non-finite samples"):
        save_wav(tmp_path / "o.wav", wav, 16000)
    back, _ = sf.read(tmp_path / "o.wav")
    assert np.all(np.isfinite(back)) and np.all(back[1000:1100] == 0)


def test_writer_says_why_a_write_failed(tmp_path):
    """A file-size limit fails writes as a full disk does (EFBIG for ENOSPC); libsndfile says only 'system error'."""
    resource = pytest.importorskip("resource")
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, old_limit[1]))
    try:
        with pytest.raises(OSError) as err:
            save_wav(tmp_path / "big.wav", synth_speech(150, 3.0), 16000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert err.value.errno == errno.EFBIG and err.value.filename == str(tmp_path / "big.wav")
    assert list(tmp_path.iterdir()) == []  # no temporary file left
