"""The public API: `load_model()` and the `VoiceConverter` it returns.

    model = vc.load_model()
    wav = model.convert("source.flac", "target.wav")   # np.float32 (T,) at model.sample_rate
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import numpy as np
import soxr
import torch

from .audio import (
    SILENCE_DBFS,
    AudioWriter,
    audio_seconds,
    load_wav,
    log_mel,
    normalize_loudness,
    prepare,
    stream_wav,
)
from .checkpoint import build_model, load_checkpoint
from .config import Config
from .errors import VCError
from .model import VoiceConverterNet
from .vocoder import load_vocoder

MAX_NORMALIZED_MEL = 4.0  # decoder output above this many standard deviations over the mean band level is a glitch
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "default.pt"

# A clip: a path, a float array already at the model's rate, or (array, sample_rate).
Audio = Union[str, os.PathLike, np.ndarray, tuple]


class VoiceConverter:
    """A trained model with its config and vocoder. Stage methods can be called one by one:

    `embed` (target clips -> speaker vector), `encode` (source -> content code), `decode` (content + speaker ->
    log-mel), `vocode` (log-mel -> waveform); `convert` chains them, mirroring the mel at both ends first so that the
    networks' zero-padded edges do not burst.
    """

    def __init__(self, net: VoiceConverterNet, cfg: Config, vocoder: str = "griffin-lim", device: str = "cpu"):
        self.net = net.to(device).eval()
        self.cfg = cfg
        self.device = torch.device(device)
        self.vocoder_name = vocoder
        self.vocoder = load_vocoder(vocoder, cfg.audio)

    @property
    def sample_rate(self) -> int:
        return self.cfg.audio.sample_rate

    def load(self, audio: Audio, *, trim: bool = True) -> np.ndarray:
        """Any clip -> mono float32 (T,) at the model's rate, loudness-normalized (and trimmed, for references)."""
        if isinstance(audio, (str, os.PathLike)):
            return load_wav(audio, self.cfg.audio, trim=trim)
        if isinstance(audio, tuple):
            wav, sr = audio
            return prepare(wav, sr, self.cfg.audio, trim=trim)
        if isinstance(audio, np.ndarray):
            return prepare(audio, self.sample_rate, self.cfg.audio, trim=trim)
        raise VCError(f"cannot read audio from a {type(audio).__name__}")

    def mel(self, wav: np.ndarray) -> torch.Tensor:
        """(T,) waveform -> normalized log-mel (1, n_mels, frames) on the model's device."""
        return self.net.normalize(log_mel(wav, self.cfg.audio).to(self.device)[None])

    @torch.inference_mode()
    def embed(self, targets: Audio | Sequence[Audio]) -> torch.Tensor:
        """One or several clips of the target speaker -> speaker vector (speaker_dim,), the mean over the clips."""
        if isinstance(targets, (str, os.PathLike, np.ndarray, tuple)):
            targets = [targets]
        if len(targets) == 0:
            raise VCError("no target clip given")
        embs = [self.net.speaker_encoder(self.mel(self.load(t, trim=True)))[0] for t in targets]
        return torch.stack(embs).mean(dim=0)

    @torch.inference_mode()
    def encode(self, wav: np.ndarray) -> torch.Tensor:
        """(T,) waveform -> content code (content_dim, ceil(frames / 2))."""
        return self.net.content_encoder(self.mel(wav))[0]

    @torch.inference_mode()
    def decode(self, content: torch.Tensor, speaker: torch.Tensor, frames: int) -> torch.Tensor:
        """Content code and speaker vector -> log-mel (n_mels, frames), in the space `log_mel` returns."""
        mel = self.net.decoder(content[None], speaker[None].to(self.device), frames)
        return self.net.denormalize(mel)[0]

    @torch.inference_mode()
    def vocode(self, mel: torch.Tensor, length: int | None = None) -> np.ndarray:
        """Log-mel (n_mels, frames) -> waveform (T,) float32."""
        return self.vocoder(mel.float().cpu(), length).numpy().astype(np.float32)

    def convert(self, source: Audio, target: Audio | Sequence[Audio] | torch.Tensor) -> np.ndarray:
        """Say what `source` says in the voice of `target` (clip(s), or a vector from `embed`).

        Returns float32 (T,) at `sample_rate`, as long as the source (silences kept) and loudness-normalized.
        """
        speaker = target if isinstance(target, torch.Tensor) else self.embed(target)
        wav = self.load(source, trim=False)
        out = self.vocode(self._convert_mel(wav, speaker), len(wav))
        return normalize_loudness(out, self.sample_rate, self.cfg.audio.target_db)

    @torch.inference_mode()
    def _convert_mel(self, wav: np.ndarray, speaker: torch.Tensor, pad: int = 32) -> torch.Tensor:
        """(T,) source -> converted log-mel (n_mels, frames). The mel is mirrored `pad` frames out at both ends and
        the output cropped: the networks' zero-padded edges otherwise give the first frames a loud burst."""
        mel = self.mel(wav)
        frames = mel.shape[2]
        pad = min(pad, frames - 1) // 2 * 2  # even, so that the content code's halved rate stays aligned
        padded = torch.nn.functional.pad(mel, (pad, pad), mode="reflect") if pad > 0 else mel
        out = self.net.decoder(self.net.content_encoder(padded), speaker[None].to(self.device), frames + 2 * pad)
        out = out[:, :, pad:pad + frames].clamp(max=MAX_NORMALIZED_MEL)
        return self.net.denormalize(out)[0]

    def convert_stream(self, blocks: Iterable[np.ndarray], speaker: torch.Tensor, *, chunk_seconds: float = 30.0,
                       overlap_seconds: float = 1.0, name: str = "<stream>") -> Iterator[np.ndarray]:
        """Convert audio of any length, given as blocks of float32 at the model's rate, chunk by chunk.

        Chunks of `chunk_seconds` overlap by `overlap_seconds`; each chunk's vocoder starts from the phases the
        previous one ended with, and the overlap is cross-faded, so that joins are inaudible. Memory depends on the
        chunk length only.
        """
        c = self.cfg.audio
        hop = c.hop_length
        size = max(2, round(chunk_seconds * c.sample_rate / hop)) * hop
        overlap = min(size // 2, max(1, round(overlap_seconds * c.sample_rate / hop)) * hop)
        step = size - overlap
        fade = (0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)).astype(np.float32)
        pending: np.ndarray | None = None  # the previous chunk's last `overlap` output samples
        phase: torch.Tensor | None = None
        speech = False

        def chunks() -> Iterator[np.ndarray]:
            buf, emitted = np.zeros(0, np.float32), False
            for block in blocks:
                buf = np.concatenate([buf, np.asarray(block, np.float32)])
                while len(buf) >= size:
                    yield buf[:size]
                    buf, emitted = buf[step:], True
            if len(buf) > (overlap if emitted else 0):
                yield buf

        for x in chunks():
            silent = 10 * np.log10(np.max(x ** 2) + 1e-20) < SILENCE_DBFS
            if silent:
                y, phase = np.zeros_like(x), None
            else:
                mel = self._convert_mel(normalize_loudness(x, c.sample_rate, c.target_db), speaker)
                with torch.inference_mode():
                    y, angles = self.vocoder(mel.float().cpu(), len(x), init=phase, return_phase=True)
                y = y.numpy().astype(np.float32)
                phase = angles[:, step // hop:] if len(x) == size else None
                # The decoder's output level follows its context. Each chunk's gain lies halfway (in dB) between
                # the one that brings its own speech to the target level and the one that matches the previous chunk
                # where they overlap: steps at the joins halve, and the level cannot drift away from the target.
                target = normalize_loudness(y, c.sample_rate, c.target_db)
                gain = float(np.dot(target, y) / max(np.dot(y, y), 1e-12))
                if pending is not None and np.dot(y[:overlap], y[:overlap]) > 0:
                    gain = float(np.sqrt(gain * np.sqrt(np.dot(pending, pending) / np.dot(y[:overlap], y[:overlap]))))
                y = y * gain
                speech = True
            if pending is not None:
                y[:overlap] = pending * (1 - fade) + y[:overlap] * fade
            if len(x) == size:
                yield y[:-overlap]
                pending = y[-overlap:]
            else:
                pending = None
                yield y
        if not speech:
            raise VCError(f"{name}: clip is silent")
        if pending is not None:
            yield pending

    def convert_file(self, source: str | os.PathLike, output: str | os.PathLike, speaker: torch.Tensor, *,
                     sample_rate: int | None = None, chunk_seconds: float = 30.0) -> float:
        """Convert an audio file of any length into `output` (.wav or .flac, written atomically) in the voice of
        `speaker` (from `embed`). Files longer than `chunk_seconds` stream through `convert_stream` with bounded
        memory. Returns the source's duration in seconds."""
        seconds = audio_seconds(source)
        if seconds <= chunk_seconds:
            blocks: Iterable[np.ndarray] = [self.convert(source, speaker)]
        else:
            blocks = self.convert_stream(stream_wav(source, self.sample_rate), speaker, chunk_seconds=chunk_seconds,
                                         name=str(source))
        rate = sample_rate or self.sample_rate
        resampler = (soxr.ResampleStream(self.sample_rate, rate, 1, dtype="float32")
                     if rate != self.sample_rate else None)
        with AudioWriter(output, rate) as writer:
            for block in blocks:
                writer.write(resampler.resample_chunk(block) if resampler else block)
            if resampler:
                writer.write(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        return seconds


def load_model(checkpoint: str | os.PathLike | None = None, *, vocoder: str = "griffin-lim",
               device: str = "cpu") -> VoiceConverter:
    """Load a checkpoint (default: the shipped `checkpoints/default.pt`) as a `VoiceConverter`."""
    path = Path(checkpoint) if checkpoint is not None else Path(os.environ.get("VC_CHECKPOINT", DEFAULT_CHECKPOINT))
    net, cfg = build_model(load_checkpoint(path), path)
    return VoiceConverter(net, cfg, vocoder=vocoder, device=device)
