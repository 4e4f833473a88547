"""What a real recording does to clean speech, for denoising training (`train.denoise`) and the noisy benchmarks:
additive noise (coloured, or babble of other voices) at a signal-to-noise ratio, room reverberation (image-source
rooms from `pyroomacoustics`), band limiting and lossy codecs (Opus and MP3 through libsndfile).

Every corruption keeps the clip's length and timing (the reverberant copy has its direct sound where the dry one had
it), so that a corrupted clip's frames line up with the clean clip's: the converter learns to map one to the other.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from ..audio import load_wav, normalize_loudness
from ..errors import VCError, VCWarning


def colored_noise(n: int, beta: float, rng: np.random.Generator) -> np.ndarray:
    """Noise whose power falls as 1 / f^beta (0 white, 1 pink, 2 brown), peak 0.3."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / f ** (beta / 2), n)
    return 0.3 * x / (np.abs(x).max() + 1e-9)


def mix(a: np.ndarray, b: np.ndarray, snr_db: float) -> np.ndarray:
    """`a` with `b` added `snr_db` below it (mean power over their common length)."""
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    gain = np.sqrt(np.mean(a ** 2) / (np.mean(b ** 2) + 1e-12) / 10 ** (snr_db / 10))
    return a + gain * b


def babble(n: int, speech: list[np.ndarray], rng: np.random.Generator, voices: tuple[int, int] = (3, 7)
           ) -> np.ndarray:
    """`n` samples of several voices at once (a café, a crowd): random stretches of clips in `speech`, each at its
    own level, summed; a clip shorter than `n` is looped."""
    out = np.zeros(n)
    for _ in range(int(rng.integers(*voices))):
        clip = speech[int(rng.integers(len(speech)))]
        clip = np.tile(clip, -(-n // len(clip)) + 1)
        start = int(rng.integers(0, len(clip) - n + 1))
        out += clip[start:start + n] * 10 ** (rng.uniform(-6, 0) / 20)
    return out


def room_impulse(rng: np.random.Generator, sr: int, rt60: tuple[float, float] = (0.2, 0.9)) -> np.ndarray:
    """The impulse response of a random shoebox room (3-10 m by 3-8 m by 2.4-4 m, reverberation time drawn from
    `rt60` seconds, source and microphone at least 0.5 m from the walls), from its direct sound on, peak 1."""
    import pyroomacoustics as pra  # the train extra; nothing at conversion time needs it

    dims = np.array([rng.uniform(3, 10), rng.uniform(3, 8), rng.uniform(2.4, 4)])
    target = float(rng.uniform(*rt60))
    try:
        absorption, order = pra.inverse_sabine(target, dims)
    except ValueError:  # a room too small for that long a reverberation: take the longest it allows
        absorption, order = 0.05, 100
    room = pra.ShoeBox(dims, fs=sr, materials=pra.Material(absorption), max_order=min(order, 100))
    room.add_source(rng.uniform(0.5, dims - 0.5))
    room.add_microphone(rng.uniform(0.5, dims - 0.5))
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float64)
    rir = rir[int(np.argmax(np.abs(rir))):]
    return rir / np.abs(rir).max()


def reverberate(wav: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """`wav` heard in the room of `rir` (`room_impulse`): same length, direct sound in place, same mean power."""
    n = len(wav) + len(rir) - 1
    size = 1 << (n - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(wav, size) * np.fft.rfft(rir, size), size)[:len(wav)]
    return wet * np.sqrt(np.mean(wav ** 2) / (np.mean(wet ** 2) + 1e-12))


def band_limit(wav: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """`wav` through a narrower channel: resampled down to 8, 11.025 or 12 kHz and back up (telephone, old
    recorders), same length."""
    low = int(rng.choice([8000, 11025, 12000]))
    back = soxr.resample(soxr.resample(wav, sr, low, quality="HQ"), low, sr, quality="HQ")
    return np.pad(back, (0, max(0, len(wav) - len(back))))[:len(wav)]


def codec(wav: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """`wav` after a lossy codec at a low bitrate (Opus or MP3, as phones and messaging apps send it), same length."""
    buf = io.BytesIO()
    peak = max(1.0, float(np.abs(wav).max()))
    if rng.random() < 0.5:  # about 10 to 40 kbit/s
        sf.write(buf, wav / peak, sr, format="OGG", subtype="OPUS", compression_level=float(rng.uniform(0.85, 0.99)))
    else:  # variable bitrate, 24 to 34 kbit/s; libsndfile's constant bitrates this low come back 1105 samples late
        sf.write(buf, wav / peak, sr, format="MP3", subtype="MPEG_LAYER_III",
                 compression_level=float(rng.uniform(0.8, 0.99)))
    buf.seek(0)
    out, _ = sf.read(buf, dtype="float64")
    out = out if out.ndim == 1 else out.mean(axis=1)
    return np.pad(out, (0, max(0, len(wav) - len(out))))[:len(wav)] * peak


def shift_voice(wav: np.ndarray, sr: int, rng: np.random.Generator, semitones: float) -> np.ndarray:
    """`wav` as another voice would say it: every frequency (pitch and formants together) moved by 1 to `semitones`
    semitones up or down, same length and timing (phase vocoder and resampling, `librosa.effects.pitch_shift`)."""
    import librosa

    steps = float(rng.uniform(1.0, semitones)) * (1 if rng.random() < 0.5 else -1)
    x = librosa.effects.pitch_shift(wav.astype(np.float32), sr=sr, n_steps=steps, n_fft=1024, hop_length=256)
    return np.pad(x, (0, max(0, len(wav) - len(x))))[:len(wav)]


def converted_speakers(speakers: list[str], seed: int, copy: int) -> list[str]:
    """The voice that converted copy `copy` gives each clip (`ConvertedVoices`; `speakers[i]`: clip i's speaker):
    another of the speakers, drawn from (`seed`, `copy`, i). `load_corrupted` converts the clips to them and
    `vc train` cuts references of them (`train.voice_shift_target`)."""
    names = sorted(set(speakers))
    out = []
    for i, speaker in enumerate(speakers):
        others = [n for n in names if n != speaker] or names
        out.append(others[int(np.random.default_rng([seed, copy, 1, i]).integers(len(others)))])
    return out


class ConvertedVoices:
    """`train.voice_shift_model`: a clip as another training speaker would say it, converted by an offline model
    (`vc.load_model`): the voice is a real one, register and timbre together, unlike `shift_voice`. Each speaker's
    voice is embedded once from one of its clips (drawn from `rng`); which voice a clip goes to is the caller's
    (`converted_speakers`). Same length and timing as the clip, loudness-normalized to `target_db`."""

    def __init__(self, path, clips: dict[str, list[str]], rng: np.random.Generator, sample_rate: int,
                 target_db: float):
        from ..api import load_model  # the training modules do not import the application otherwise

        self.model, self.target_db = load_model(path), target_db
        if self.model.sample_rate != sample_rate:
            raise VCError(f"{path}: converts at {self.model.sample_rate} Hz, the run's audio is at {sample_rate} Hz "
                          "(train.voice_shift_model)")
        self.refs = {s: c[int(rng.integers(len(c)))] for s, c in sorted(clips.items())}
        self.voices: dict = {}

    def __call__(self, wav: np.ndarray, target: str) -> np.ndarray:
        """`wav` in the voice of the speaker `target` (a key of the `clips` given)."""
        with warnings.catch_warnings():  # the input check's remarks on training clips are not the run's concern
            warnings.simplefilter("ignore", VCWarning)
            if target not in self.voices:
                self.voices[target] = self.model.embed(self.refs[target])
            x = self.model.convert(wav, self.voices[target])
        x = np.pad(x, (0, max(0, len(wav) - len(x))))[:len(wav)]
        return normalize_loudness(x, self.model.sample_rate, self.target_db).astype(np.float32)


@dataclass
class Corruption:
    """The training chain: each part applies with its probability. `rooms` and `speech` are pools to draw from
    (impulse responses and clean clips for babble), built once, since a room takes up to a second to simulate."""
    rooms: list[np.ndarray]
    speech: list[np.ndarray]
    sample_rate: int
    p_reverb: float = 0.5
    p_noise: float = 0.8
    snr_db: tuple[float, float] = (0.0, 25.0)
    p_babble: float = 0.3  # of the noisy ones
    p_band: float = 0.15
    p_codec: float = 0.25
    target_db: float = -20.0

    @classmethod
    def drawn(cls, paths: list[str], audio, rng: np.random.Generator, rooms: int, babble_clips: int,
              **chances) -> "Corruption":
        """The chain with its pools drawn from `rng`: `babble_clips` of the clean clips at `paths` (read at `audio`,
        an `AudioConfig`), then `rooms` simulated rooms. `chances`: the other fields."""
        picked = rng.choice(len(paths), min(babble_clips, len(paths)), replace=False)
        speech = [load_wav(paths[i], audio) for i in picked]
        return cls([room_impulse(rng, audio.sample_rate) for _ in range(rooms)], speech, audio.sample_rate,
                   target_db=audio.target_db, **chances)

    def __call__(self, wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A corrupted copy of the clean (T,) `wav`, scaled as `vc.audio.prepare` would scale it -> float32 (T,)."""
        sr, x = self.sample_rate, wav.astype(np.float64)
        if self.rooms and rng.random() < self.p_reverb:
            x = reverberate(x, self.rooms[int(rng.integers(len(self.rooms)))])
        if rng.random() < self.p_noise:
            noise = (babble(len(x), self.speech, rng) if self.speech and rng.random() < self.p_babble
                     else colored_noise(len(x), float(rng.uniform(0, 2)), rng))
            x = mix(x, noise, float(rng.uniform(*self.snr_db)))
        if rng.random() < self.p_band:
            x = band_limit(x, sr, rng)
        if rng.random() < self.p_codec:
            x = codec(x, sr, rng)
        return normalize_loudness(x.astype(np.float32), sr, self.target_db)
