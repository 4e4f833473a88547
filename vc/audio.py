"""Audio in and out, and the project's one feature definition, `log_mel`.

Training, inference and the vocoders all call `log_mel`; a mel mismatch between the acoustic model and the
vocoder is the classic bug of this field, and one definition prevents it.
"""
from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch

from .config import AudioConfig
from .errors import VCError

SILENCE_DBFS = -60.0  # a clip whose loudest 50 ms stays below this is "silent"
LOG_FLOOR = 1e-5  # amplitude floor inside the log: about -100 dB


def load_wav(path: str | os.PathLike, cfg: AudioConfig | None = None, *, trim: bool = True,
             normalize: bool = True) -> np.ndarray:
    """Read any file soundfile reads as mono float32 (T,) at `cfg.sample_rate`.

    Resamples with soxr (high quality), trims leading and trailing silence when `trim`, and scales active speech to
    `cfg.target_db` when `normalize`. Raises VCError naming the file for missing, empty, non-audio, silent or too short
    input.
    """
    cfg = cfg or AudioConfig()
    path = Path(path)
    if not path.exists():
        raise VCError(f"{path}: file not found")
    if path.is_dir():
        raise VCError(f"{path}: is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise VCError(f"{path}: file is empty")
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types (LibsndfileError, RuntimeError, TypeError)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise VCError(f"{path}: not a readable audio file ({reason})") from None
    return prepare(wav.mean(axis=1), sr, cfg, trim=trim, normalize=normalize, name=str(path))


def prepare(wav: np.ndarray, sr: int, cfg: AudioConfig | None = None, *, trim: bool = True, normalize: bool = True,
            name: str = "<array>") -> np.ndarray:
    """Mono float32 (T,) at any rate -> model rate, trimmed and normalized as `load_wav` does."""
    cfg = cfg or AudioConfig()
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 2:  # (T, C) as soundfile returns it
        wav = wav.mean(axis=1)
    if wav.size == 0:
        raise VCError(f"{name}: no audio samples")
    if not np.all(np.isfinite(wav)):
        raise VCError(f"{name}: audio contains NaN or infinite samples")
    if sr != cfg.sample_rate:
        wav = librosa.resample(wav, orig_sr=sr, target_sr=cfg.sample_rate, res_type="soxr_hq").astype(np.float32)
    peak_db = _frame_db(wav, cfg.sample_rate).max(initial=-200.0)
    if peak_db < SILENCE_DBFS:
        raise VCError(f"{name}: clip is silent (loudest part {peak_db:.0f} dBFS)")
    if trim:
        wav, _ = librosa.effects.trim(wav, top_db=cfg.trim_db, frame_length=800, hop_length=200)
    seconds = len(wav) / cfg.sample_rate
    if seconds < cfg.min_seconds:
        what = "speech" if trim else "audio"
        raise VCError(f"{name}: clip is too short ({seconds:.2f} s of {what}; need at least {cfg.min_seconds} s)")
    if normalize:
        wav = normalize_loudness(wav, cfg.sample_rate, cfg.target_db)
    return np.ascontiguousarray(wav, dtype=np.float32)


def _frame_db(wav: np.ndarray, sr: int, frame_seconds: float = 0.05) -> np.ndarray:
    n = max(1, int(sr * frame_seconds))
    frames = len(wav) // n
    if frames == 0:
        return np.array([20 * np.log10(np.sqrt(np.mean(wav ** 2)) + 1e-10)])
    power = (wav[: frames * n].reshape(frames, n) ** 2).mean(axis=1)
    return 10 * np.log10(power + 1e-20)


def normalize_loudness(wav: np.ndarray, sr: int, target_db: float = -20.0) -> np.ndarray:
    """Scale so that the RMS of active frames (within 40 dB of the loudest) is `target_db` dBFS; peaks stay < 1."""
    db = _frame_db(wav, sr)
    active = db[db > db.max() - 40.0]
    level = 10 * np.log10(np.mean(10 ** (active / 10)) + 1e-20)
    gain = 10 ** ((target_db - level) / 20)
    peak = np.abs(wav).max() * gain
    if peak > 0.99:
        gain *= 0.99 / peak
    return (wav * gain).astype(np.float32)


def save_wav(path: str | os.PathLike, wav: np.ndarray, sample_rate: int) -> Path:
    """Write (T,) float audio as 16-bit wav or flac (by extension), atomically: a temporary file is renamed."""
    path = Path(path)
    fmt = {".wav": "WAV", ".flac": "FLAC"}.get(path.suffix.lower())
    if fmt is None:
        raise VCError(f"{path}: unsupported output format '{path.suffix}' (use .wav or .flac)")
    wav = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            sf.write(f, wav, sample_rate, format=fmt, subtype="PCM_16")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) Slaney-normalized mel filterbank from librosa, cached."""
    fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    return torch.from_numpy(fb)


@functools.lru_cache(maxsize=8)
def _window(win_length: int) -> torch.Tensor:
    return torch.hann_window(win_length)


def stft(wav: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Complex STFT (B, n_fft // 2 + 1, frames) with librosa's framing (centered, zero padding)."""
    return torch.stft(wav, cfg.n_fft, cfg.hop_length, cfg.win_length, _window(cfg.win_length).to(wav.device),
                      center=True, pad_mode="constant", return_complex=True)


def n_frames(n_samples: int, cfg: AudioConfig) -> int:
    return n_samples // cfg.hop_length + 1


def log_mel(wav: torch.Tensor | np.ndarray, cfg: AudioConfig | None = None) -> torch.Tensor:
    """Natural-log mel magnitude spectrogram.

    wav: (T,) or (B, T) float at cfg.sample_rate. Returns (n_mels, frames) or (B, n_mels, frames) with
    frames = T // hop_length + 1; equals log(librosa.feature.melspectrogram(power=1, pad_mode="constant")).
    """
    cfg = cfg or AudioConfig()
    wav = torch.as_tensor(wav, dtype=torch.float32)
    squeeze = wav.dim() == 1
    if squeeze:
        wav = wav.unsqueeze(0)
    mag = stft(wav, cfg).abs()
    fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax).to(wav.device)
    mel = torch.log(torch.clamp(fb @ mag, min=LOG_FLOOR))
    return mel[0] if squeeze else mel
