"""Audio in and out, and the project's one feature definition, `log_mel`.

Training, inference and the vocoders all call `log_mel`; a mel mismatch between the acoustic model and the
vocoder is the classic bug of this field, and one definition prevents it.
"""
from __future__ import annotations

import errno
import functools
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr
import torch

from .config import AudioConfig
from .errors import VCError, reason, warn
from .files import atomic_path, describe

SILENCE_DBFS = -60.0  # a clip whose loudest 100 ms stays below this above SPEECH_LOW_HZ is "silent"
SPEECH_LOW_HZ = 60.0  # below the lowest voice: DC, drift and rumble do not make a clip "not silent"
NARROW_HZ = 4000.0  # telephone audio has nothing above this (and nothing above 3.4 kHz in practice)
NARROW_DB = -55.0  # speech above NARROW_HZ, relative to all speech, below which a clip is "band-limited"
CLIPPED_FRACTION = 1e-3  # more than 0.1 % of samples written beyond full scale: audibly distorted
LOG_FLOOR = 1e-5  # amplitude floor inside the log: about -100 dB


def _open(path: str | os.PathLike) -> sf.SoundFile:
    """Open an audio file for reading, or raise VCError naming it and the reason."""
    path = Path(path)
    try:
        if not path.exists():
            raise VCError(f"{path}: file not found")
        if path.is_dir():
            raise VCError(f"{path}: is a folder, not an audio file")
        if path.stat().st_size == 0:
            raise VCError(f"{path}: file is empty")
        with open(path, "rb"):  # names the reason (permission denied, ...) that soundfile would not
            pass
    except OSError as e:
        raise VCError(describe(e, path)) from None
    try:
        return sf.SoundFile(str(path))
    except Exception as e:  # soundfile raises several types (LibsndfileError, RuntimeError, TypeError)
        raise VCError(f"{path}: not a readable audio file ({reason(e)})") from None


def load_wav(path: str | os.PathLike, cfg: AudioConfig | None = None, *, trim: bool = True,
             normalize: bool = True) -> np.ndarray:
    """Read any file soundfile reads as mono float32 (T,) at `cfg.sample_rate`.

    Resamples with soxr (high quality), trims leading and trailing silence when `trim`, and scales active speech to
    `cfg.target_db` when `normalize`. Raises VCError naming the file for missing, empty, non-audio, silent or too short
    input.
    """
    cfg = cfg or AudioConfig()
    with _open(path) as f:
        error = None
        try:
            wav = f.read(dtype="float32", always_2d=True)
        except Exception:  # a damaged file: read it again in small blocks and keep what comes before the damage
            wav, error = _salvage(f)
        sr = f.samplerate
        check_complete(path, f, len(wav), error)
    return prepare(wav.mean(axis=1), sr, cfg, trim=trim, normalize=normalize, name=str(path))


def _salvage(f: sf.SoundFile) -> tuple[np.ndarray, Exception | None]:
    """What a damaged file holds before its damage: (T, C) float32, and the error that stopped the reading."""
    f.seek(0)
    blocks, error = [], None
    try:
        for block in f.blocks(blocksize=4096, dtype="float32", always_2d=True):  # small: damage loses little
            blocks.append(block)
    except Exception as e:
        error = e
    return (np.concatenate(blocks) if blocks else np.zeros((0, f.channels), np.float32)), error


def declared_frames(path: str | os.PathLike) -> int | None:
    """The frames that a WAV header's data chunk declares (libsndfile counts only those present); None for other
    formats, and for the sizes of streamed headers (0 or 0xFFFFFFFF)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = 0
            for _ in range(64):  # chunks before 'data': 'fmt ', 'LIST', 'fact', ...
                head = fh.read(8)
                if len(head) < 8:
                    return None
                size = int.from_bytes(head[4:], "little")
                if head[:4] == b"data":
                    return size // block_align if block_align and size not in (0, 0xFFFFFFFF) else None
                if head[:4] == b"fmt ":
                    block_align = int.from_bytes(fh.read(size + (size & 1))[12:14], "little")
                else:
                    fh.seek(size + (size & 1), 1)
    except OSError:
        return None
    return None


def check_complete(path: str | os.PathLike, f: sf.SoundFile, frames: int, error: Exception | None) -> None:
    """After reading `frames` of `f`: raise for a file with nothing readable, warn (one line) for a truncated or
    damaged one, whose readable part is used."""
    expected = declared_frames(path) or f.frames
    rate = f.samplerate or 1
    if error is not None and frames == 0:
        raise VCError(f"{path}: audio data is corrupt ({reason(error)})")
    if error is not None or frames < expected * 0.99 - 1:
        why = reason(error) if error is not None else "the file ends early"
        warn(f"{path}: truncated or damaged file: {frames / rate:.2f} s of {expected / rate:.2f} s readable "
             f"({why}); only that part is used")


def audio_seconds(path: str | os.PathLike) -> float:
    """Duration from the file header, without reading the samples."""
    with _open(path) as f:
        return f.frames / f.samplerate if f.samplerate else 0.0


def read_blocks(path: str | os.PathLike, sample_rate: int, block_seconds: float = 10.0) -> Iterator[np.ndarray]:
    """Mono float32 blocks at `sample_rate`, read and resampled block by block, so that memory stays bounded.

    The DC offset is removed (the running mean of the samples so far, so that a constant offset goes whole and
    real audio, whose mean is near zero, is not touched); a truncated or damaged file gives what is readable, with
    a warning (`check_complete`)."""
    with _open(path) as f:
        resampler = soxr.ResampleStream(f.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
        same = f.samplerate == sample_rate
        frames, total, error = 0, 0.0, None
        blocks = f.blocks(blocksize=max(1, int(block_seconds * f.samplerate)), dtype="float32", always_2d=True)
        while True:
            try:
                block = next(blocks)
            except StopIteration:
                break
            except Exception as e:  # damaged after `frames` frames: what came before is kept
                error = e
                break
            mono = block.mean(axis=1, dtype=np.float64)
            frames, total = frames + len(mono), total + float(mono.sum())
            mono = np.ascontiguousarray(mono - total / frames, dtype=np.float32)
            out = mono if same else resampler.resample_chunk(mono)
            if len(out):
                yield out
        check_complete(path, f, frames, error)
        if not same:
            tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if len(tail):
                yield tail


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
    wav = (wav - wav.mean(dtype=np.float64)).astype(np.float32)  # a DC offset says nothing of the voice
    if sr != cfg.sample_rate:
        n = int(np.ceil(len(wav) * cfg.sample_rate / sr))  # librosa.resample's length, as before
        wav = np.pad(soxr.resample(wav, sr, cfg.sample_rate, quality="HQ"), (0, n))[:n].astype(np.float32)
    band_db, narrow_db = speech_levels(wav, cfg.sample_rate)
    if band_db < SILENCE_DBFS:
        raise VCError(f"{name}: clip is silent (loudest part {band_db:.0f} dBFS above {SPEECH_LOW_HZ:.0f} Hz)")
    if narrow_db < NARROW_DB:
        warn(f"{name}: no sound above {NARROW_HZ / 1000:.0f} kHz (telephone-band or low-rate audio): part of the "
             "voice is missing, so the result may sound muffled or unlike the target")
    if trim:
        wav = trim_silence(wav, cfg.trim_db)
    seconds = len(wav) / cfg.sample_rate
    if seconds < cfg.min_seconds:
        what = "speech" if trim else "audio"
        raise VCError(f"{name}: clip is too short ({seconds:.2f} s of {what}; need at least {cfg.min_seconds} s)")
    if normalize:
        wav = normalize_loudness(wav, cfg.sample_rate, cfg.target_db)
    return np.ascontiguousarray(wav, dtype=np.float32)


def trim_silence(wav: np.ndarray, top_db: float, frame_length: int = 800, hop_length: int = 200) -> np.ndarray:
    """Cut leading and trailing frames quieter than the loudest by `top_db`: `librosa.effects.trim`'s rule (centered
    frames, zero padding), in numpy, so that loading a clip does not import scipy.signal (over a second)."""
    padded = np.pad(wav, frame_length // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop_length]
    power = np.mean(frames.astype(np.float64) ** 2, axis=1)
    db = 10 * np.log10(np.maximum(power, 1e-10)) - 10 * np.log10(max(power.max(), 1e-10))
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return wav[:0]
    return wav[loud[0] * hop_length: min(len(wav), (loud[-1] + 1) * hop_length)]


def speech_levels(wav: np.ndarray, sr: int, frame_seconds: float = 0.1) -> tuple[float, float]:
    """(dBFS of the loudest frame above SPEECH_LOW_HZ, dB of the sound above NARROW_HZ relative to all of it over
    the frames within 40 dB of the loudest). Each frame loses its mean and linear trend and is Hann-windowed, so
    that DC, drift and sub-audio rumble count as silence."""
    n = max(2, int(sr * frame_seconds))
    x = wav[: max(1, len(wav) // n) * n].astype(np.float64)
    x = np.pad(x, (0, n - len(x))).reshape(1, n) if len(x) < n else x.reshape(-1, n)
    t = np.arange(n) - (n - 1) / 2
    x = x - x.mean(axis=1, keepdims=True)
    x = x - np.outer(x @ t / (t @ t), t)
    window = np.hanning(n)
    power = np.abs(np.fft.rfft(x * window, axis=1)) ** 2 * 2 / (n * n * np.mean(window ** 2))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    band = power[:, freqs >= SPEECH_LOW_HZ].sum(axis=1)
    loud = band >= band.max() * 1e-4
    if sr / 2 <= NARROW_HZ * 1.25:  # no room above NARROW_HZ to tell
        return 10 * np.log10(band.max() + 1e-20), 0.0
    high = power[loud][:, freqs >= NARROW_HZ].sum()
    return 10 * np.log10(band.max() + 1e-20), 10 * np.log10(high / max(band[loud].sum(), 1e-30) + 1e-30)


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


class AudioWriter:
    """Write 16-bit wav or flac block by block to a temporary file that is renamed into place on success only.

        with AudioWriter("out.flac", 16000) as w:
            w.write(block)

    A run killed part way leaves no truncated file under the final name. Non-finite samples are written as silence
    and said (one warning line), as is a result more than `CLIPPED_FRACTION` of which was beyond full scale. A write
    that fails (full disk, quota) raises the OSError that says why.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int):
        self.path = Path(path)
        fmt = {".wav": "WAV", ".flac": "FLAC"}.get(self.path.suffix.lower())
        if fmt is None:
            raise VCError(f"{self.path}: unsupported output format '{self.path.suffix}' (use .wav or .flac)")
        self._atomic = atomic_path(self.path)
        self.tmp = self._atomic.__enter__()
        try:
            self.file = sf.SoundFile(self.tmp, "w", sample_rate, 1, subtype="PCM_16", format=fmt)
        except BaseException:
            self._atomic.__exit__(*sys.exc_info())
            raise
        self.frames = self.clipped = self.non_finite = 0

    def write(self, wav: np.ndarray) -> None:
        wav = np.asarray(wav, dtype=np.float32).reshape(-1)
        finite = np.isfinite(wav)
        if not finite.all():
            self.non_finite += int((~finite).sum())
            wav = np.where(finite, wav, 0.0).astype(np.float32)
        self.clipped += int((np.abs(wav) > 1.0).sum())
        try:
            self.file.write(np.clip(wav, -1.0, 1.0))
        except sf.SoundFileError:
            raise self._why() from None
        self.frames += len(wav)

    def _why(self) -> OSError:
        """libsndfile says only "system error": a plain write to the same file finds the OS's reason."""
        try:
            with open(self.tmp, "ab") as f:
                f.write(bytes(1 << 16))
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            return OSError(e.errno, e.strerror, str(self.path))
        return OSError(errno.EIO, "write failed", str(self.path))

    def __enter__(self) -> "AudioWriter":
        return self

    def __exit__(self, kind, value, tb) -> None:
        try:
            try:
                self.file.close()
            except sf.SoundFileError:
                raise self._why() from None
        except BaseException:
            self._atomic.__exit__(*sys.exc_info())
            raise
        self._atomic.__exit__(kind, value, tb)
        if kind is None and self.non_finite:
            warn(f"{self.path}: {self.non_finite} non-finite samples (NaN or infinite) were written as silence")
        if kind is None and self.clipped > CLIPPED_FRACTION * max(self.frames, 1):
            warn(f"{self.path}: {100 * self.clipped / self.frames:.1f} % of the samples were beyond full scale and "
                 "clipped")


def save_wav(path: str | os.PathLike, wav: np.ndarray, sample_rate: int) -> Path:
    """Write (T,) float audio as 16-bit wav or flac (by extension), atomically: a temporary file is renamed."""
    with AudioWriter(path, sample_rate) as w:
        w.write(wav)
    return w.path


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa's default, htk=False)."""
    hz = np.asarray(hz, dtype=np.float64)
    return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27), hz * 3 / 200)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return np.where(mel >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27 * (mel - 15.0)), mel * 200 / 3)


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) Slaney-normalized mel filterbank, cached: `librosa.filters.mel` with its defaults,
    in numpy (librosa.filters imports scipy.signal, over a second of the first conversion)."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    ramps = edges[:, None] - np.fft.rfftfreq(n_fft, 1 / sample_rate)[None]
    lower = -ramps[:-2] / np.diff(edges)[:-1, None]
    upper = ramps[2:] / np.diff(edges)[1:, None]
    fb = np.maximum(0, np.minimum(lower, upper)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return torch.from_numpy(fb.astype(np.float32))


@functools.lru_cache(maxsize=8)
def hann_window(win_length: int) -> torch.Tensor:
    """The analysis and synthesis window of every STFT here (cached)."""
    return torch.hann_window(win_length)


def stft(wav: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Complex STFT (B, n_fft // 2 + 1, frames) with librosa's framing (centered, zero padding)."""
    return torch.stft(wav, cfg.n_fft, cfg.hop_length, cfg.win_length, hann_window(cfg.win_length).to(wav.device),
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
