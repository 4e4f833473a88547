"""The public API: `load_model()` and the `VoiceConverter` it returns.

    model = vc.load_model()
    wav = model.convert("source.flac", "target.wav")   # np.float32 (T,) at model.sample_rate
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence, Union

import numpy as np
import soxr
import torch

from . import pitch
from .audio import (
    SILENCE_DBFS,
    AudioWriter,
    audio_seconds,
    load_wav,
    log_mel,
    normalize_loudness,
    prepare,
    read_blocks,
)
from .checkpoint import build_model, load_checkpoint
from .config import Config
from .errors import VCError
from .model import VoiceConverterNet
from .pitch import PitchStats
from .runtime import fast_bf16
from .vocoder import GriffinLim, load_vocoder

if TYPE_CHECKING:
    from .stream import Stream

TIMBRE_MATCH = 1.0  # default share of the mean-spectrum match after the decoder (see `_convert_mel`)
MAX_NORMALIZED_MEL = 4.0  # decoder output above this many standard deviations over the mean band level is a glitch
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "default.pt"
STREAM_CHECKPOINT = DEFAULT_CHECKPOINT.with_name("stream.pt")  # the causal model of `vc stream` and `vc live`

# A clip: a path, a float array already at the model's rate, or (array, sample_rate).
Audio = Union[str, os.PathLike, np.ndarray, tuple]


@dataclass(frozen=True)
class Voice:
    """A target voice, from `VoiceConverter.embed`: the speaker embedding and the log-F0 statistics of its clips
    (None where they held too little voiced speech to measure)."""
    embedding: torch.Tensor
    pitch: PitchStats | None = None
    spectrum: torch.Tensor | None = None  # mean log-mel (n_mels,) of the clips' speech frames

    def mix(self, other: "Voice", weight: float) -> "Voice":
        """(1 - weight) of this voice and `weight` of the other: embeddings, log-F0 statistics and mean spectra
        interpolated."""
        emb = (1 - weight) * self.embedding + weight * other.embedding
        stats = self.pitch or other.pitch
        if self.pitch is not None and other.pitch is not None:
            stats = PitchStats((1 - weight) * self.pitch.mean + weight * other.pitch.mean,
                               (1 - weight) * self.pitch.std + weight * other.pitch.std)
        spectrum = self.spectrum if self.spectrum is not None else other.spectrum
        if self.spectrum is not None and other.spectrum is not None:
            spectrum = (1 - weight) * self.spectrum + weight * other.spectrum
        return Voice(emb, stats, spectrum)


SPEECH_FRAMES_DB = 30.0  # frames within this many dB of a clip's loudest count as speech for its mean spectrum


def speech_spectrum(mel: torch.Tensor) -> torch.Tensor:
    """Log-mel (n_mels, frames) -> the mean log-mel (n_mels,) of its speech frames."""
    level = torch.logsumexp(mel, dim=0)
    keep = level > level.max() - SPEECH_FRAMES_DB / 20 * np.log(10)
    return mel[:, keep].mean(dim=1)


class VoiceConverter:
    """A trained model with its config and vocoder. Stage methods can be called one by one:

    `embed` (target clips -> `Voice`), `encode` (source -> content code), `decode` (content + speaker [+ pitch] ->
    log-mel), `vocode` (log-mel -> waveform); `convert` chains them, mirroring the mel at both ends first so that the
    networks' zero-padded edges do not burst.

    Pitch: the source's F0 contour is moved to the target's register (log-F0 mean and spread of the target clips)
    unless `match_pitch=False`, then shifted by `pitch_shift` semitones, and given to the decoder. Timbre:
    `timbre_match` moves the output's average spectrum toward the target clips' (see `_convert_mel`).
    """

    def __init__(self, net: VoiceConverterNet, cfg: Config, vocoder: str | None = None, device: str = "cpu",
                 vocoder_state: dict | None = None):
        self.net = net.to(device).eval()
        self.cfg = cfg
        self.device = torch.device(device)
        self.bf16 = fast_bf16()  # the content encoder and decoder too run under bf16 autocast (VC_BF16=0: float32)
        self.vocoder_name = vocoder or ("vocos" if vocoder_state is not None else "griffin-lim")
        self.vocoder = load_vocoder(self.vocoder_name, cfg.audio, state=vocoder_state)
        if self.vocoder_name != "griffin-lim":
            self.vocoder.net.to(device)

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

    def autocast(self) -> torch.autocast:
        """bf16 autocast where bf16 matrix units make it pay (`fast_bf16`); instance norms stay in float32."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    @torch.inference_mode()
    def embed(self, targets: Audio | Sequence[Audio]) -> Voice:
        """One or several clips of the target speaker -> their `Voice` (embedding averaged over the clips)."""
        if isinstance(targets, (str, os.PathLike, np.ndarray, tuple)):
            targets = [targets]
        if len(targets) == 0:
            raise VCError("no target clip given")
        wavs = [self.load(t, trim=True) for t in targets]
        mels = [log_mel(w, self.cfg.audio) for w in wavs]
        embs = [self.net.speaker_encoder(self.net.normalize(m.to(self.device)[None]))[0] for m in mels]
        stats = pitch.stats([pitch.track(w, self.cfg.audio)[0] for w in wavs])
        spectrum = torch.stack([speech_spectrum(m) for m in mels]).mean(dim=0)
        return Voice(torch.stack(embs).mean(dim=0).cpu(), stats, spectrum)

    @torch.inference_mode()
    def encode(self, wav: np.ndarray) -> torch.Tensor:
        """(T,) waveform -> content code (content_dim, ceil(frames / 2))."""
        with self.autocast():
            return self.net.content_encoder(self.mel(wav))[0].float()

    def source_pitch(self, wav: np.ndarray, voice: Voice | None = None, *, pitch_shift: float = 0.0,
                     match_pitch: bool = True, source_stats: PitchStats | None = None,
                     f0: torch.Tensor | None = None) -> torch.Tensor:
        """(T,) source -> the decoder's pitch input (2, frames): its F0 (`f0` where already tracked) moved to
        `voice`'s register (when `match_pitch`; the source's statistics default to this clip's), shifted by
        `pitch_shift` semitones."""
        if f0 is None:
            f0 = pitch.track(wav, self.cfg.audio)[0]
        if match_pitch and voice is not None and voice.pitch is not None:
            f0 = pitch.transpose(f0, source_stats or pitch.stats([f0]), voice.pitch, pitch_shift)
        else:
            f0 = pitch.transpose(f0, None, None, pitch_shift)
        return pitch.features(f0)

    @torch.inference_mode()
    def decode(self, content: torch.Tensor, voice: Voice | torch.Tensor, frames: int,
               pitch_features: torch.Tensor | None = None) -> torch.Tensor:
        """Content code, speaker (a `Voice` or its embedding) and, for pitch-conditioned models, `source_pitch`
        -> log-mel (n_mels, frames), in the space `log_mel` returns."""
        emb = voice.embedding if isinstance(voice, Voice) else voice
        p = pitch_features[None].to(self.device) if pitch_features is not None else None
        with self.autocast():
            mel = self.net.decoder(content[None], emb[None].to(self.device), frames, p)
        return self.net.denormalize(mel.float())[0]

    @torch.inference_mode()
    def vocode(self, mel: torch.Tensor, length: int | None = None) -> np.ndarray:
        """Log-mel (n_mels, frames) -> waveform (T,) float32."""
        return self.vocoder(mel.float().cpu(), length).numpy().astype(np.float32)

    def convert(self, source: Audio, target: Audio | Sequence[Audio] | Voice, *, pitch_shift: float = 0.0,
                match_pitch: bool = True, timbre_match: float = TIMBRE_MATCH) -> np.ndarray:
        """Say what `source` says in the voice of `target` (clip(s), or a `Voice` from `embed`).

        Returns float32 (T,) at `sample_rate`, as long as the source (silences kept) and loudness-normalized.
        """
        voice = self._voice(target)
        wav = self.load(source, trim=False)
        p = self.source_pitch(wav, voice, pitch_shift=pitch_shift, match_pitch=match_pitch)
        out = self.vocode(self._convert_mel(wav, voice, p, timbre_match), len(wav))
        return normalize_loudness(out, self.sample_rate, self.cfg.audio.target_db)

    def reconstruct_mel(self, wav: np.ndarray) -> torch.Tensor:
        """Teacher-forced reconstruction of a (prepared) clip in its own voice and pitch: log-mel (n_mels, frames)
        aligned with `log_mel(wav)`. What the vocoder is fine-tuned on."""
        with torch.inference_mode():
            voice = Voice(self.net.speaker_encoder(self.mel(wav))[0])
        return self._convert_mel(wav, voice, self.source_pitch(wav, match_pitch=False))

    def _voice(self, target: Audio | Sequence[Audio] | Voice) -> Voice:
        if isinstance(target, Voice):
            return target
        if isinstance(target, torch.Tensor):  # a bare embedding: no pitch statistics
            return Voice(target)
        return self.embed(target)

    @torch.inference_mode()
    def _convert_mel(self, wav: np.ndarray, voice: Voice, pitch_features: torch.Tensor, timbre_match: float = 0.0,
                     pad: int = 32) -> torch.Tensor:
        """(T,) source -> converted log-mel (n_mels, frames). The mel and pitch are mirrored `pad` frames out at both
        ends and the output cropped: the networks' zero-padded edges otherwise give the first frames a loud burst.

        `timbre_match` (0 to 1) then moves the output's mean spectrum over its speech frames that share of the way to
        the target clips' (level kept): a long-term-average-spectrum match after the decoder."""
        mel = self.mel(wav)
        frames = mel.shape[2]
        pad = min(pad, frames - 1) // 2 * 2  # even, so that the content code's halved rate stays aligned
        p = pitch_features[None].to(self.device) if self.net.cfg.pitch else None
        if pad > 0:
            mel = torch.nn.functional.pad(mel, (pad, pad), mode="reflect")
            p = torch.nn.functional.pad(p, (pad, pad), mode="reflect") if p is not None else None
        with self.autocast():
            out = self.net.decoder(self.net.content_encoder(mel), voice.embedding[None].to(self.device),
                                   frames + 2 * pad, p).float()
        out = self.net.denormalize(out[:, :, pad:pad + frames].clamp(max=MAX_NORMALIZED_MEL))[0]
        if timbre_match > 0 and voice.spectrum is not None:
            delta = voice.spectrum.to(out.device) - speech_spectrum(out)
            out = out + timbre_match * (delta - delta.mean())[:, None]
        return out

    def convert_stream(self, blocks: Iterable[np.ndarray], target: Audio | Sequence[Audio] | Voice, *,
                       chunk_seconds: float = 30.0, overlap_seconds: float = 1.0, pitch_shift: float = 0.0,
                       match_pitch: bool = True, timbre_match: float = TIMBRE_MATCH, name: str = "<stream>"
                       ) -> Iterator[np.ndarray]:
        """Convert audio of any length, given as blocks of float32 at the model's rate, chunk by chunk.

        Chunks of `chunk_seconds` overlap by `overlap_seconds` and the overlap is cross-faded (with Griffin-Lim, each
        chunk also starts from the phases the previous one ended with), so that joins are inaudible. The source's
        pitch statistics accumulate over the chunks seen so far. Memory depends on the chunk length only.
        """
        voice = self._voice(target)
        voiced_f0: list[torch.Tensor] = []
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
                x = normalize_loudness(x, c.sample_rate, c.target_db)
                f0 = pitch.track(x, c)[0]
                voiced_f0.append(f0[f0 > 0])
                src_stats = pitch.stats(voiced_f0)
                p = self.source_pitch(x, voice, pitch_shift=pitch_shift, match_pitch=match_pitch,
                                      source_stats=src_stats, f0=f0)
                mel = self._convert_mel(x, voice, p, timbre_match)
                with torch.inference_mode():
                    if isinstance(self.vocoder, GriffinLim):
                        y, angles = self.vocoder(mel.float().cpu(), len(x), init=phase, return_phase=True)
                        phase = angles[:, step // hop:] if len(x) == size else None
                    else:
                        y = self.vocoder(mel.float().cpu(), len(x))
                y = y.numpy().astype(np.float32)
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

    def stream(self, target: Audio | Sequence[Audio] | Voice, *, block_seconds: float = 0.025,
               pitch_shift: float = 0.0, match_pitch: bool = True, timbre_match: float = TIMBRE_MATCH,
               bf16: bool | None = None) -> "Stream":
        """A `vc.stream.Stream` that converts a live signal block by block into the voice of `target` (embedded
        once), with a fixed latency. Needs a causal model, such as the shipped `checkpoints/stream.pt`. Target clips
        (rather than a `Voice`) also give the stream's instance norm its starting statistics."""
        from .stream import Stream

        prime = None
        if not isinstance(target, (Voice, torch.Tensor)):  # clips: they also start the stream's statistics
            clips = [target] if isinstance(target, (str, os.PathLike, np.ndarray, tuple)) else list(target)
            target = [self.load(c, trim=True) for c in clips]  # read once, for the embedding and the prime
            prime = np.concatenate(target)[:30 * self.sample_rate]
        return Stream(self, self._voice(target), block_seconds=block_seconds, pitch_shift=pitch_shift,
                      match_pitch=match_pitch, timbre_match=timbre_match, bf16=bf16, prime=prime)

    def convert_file(self, source: str | os.PathLike, output: str | os.PathLike,
                     target: Audio | Sequence[Audio] | Voice, *, sample_rate: int | None = None,
                     chunk_seconds: float = 30.0, pitch_shift: float = 0.0, match_pitch: bool = True,
                     timbre_match: float = TIMBRE_MATCH) -> float:
        """Convert an audio file of any length into `output` (.wav or .flac, written atomically) in the voice of
        `target` (clips, or a `Voice` from `embed`). Files longer than `chunk_seconds` stream through
        `convert_stream` with bounded memory. Returns the source's duration in seconds."""
        seconds = audio_seconds(source)
        voice = self._voice(target)
        if seconds <= chunk_seconds:
            blocks: Iterable[np.ndarray] = [self.convert(source, voice, pitch_shift=pitch_shift,
                                                         match_pitch=match_pitch, timbre_match=timbre_match)]
        else:
            blocks = self.convert_stream(read_blocks(source, self.sample_rate), voice, chunk_seconds=chunk_seconds,
                                         pitch_shift=pitch_shift, match_pitch=match_pitch,
                                         timbre_match=timbre_match, name=str(source))
        rate = sample_rate or self.sample_rate
        resampler = (soxr.ResampleStream(self.sample_rate, rate, 1, dtype="float32")
                     if rate != self.sample_rate else None)
        with AudioWriter(output, rate) as writer:
            for block in blocks:
                writer.write(resampler.resample_chunk(block) if resampler else block)
            if resampler:
                writer.write(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        return seconds


def load_model(checkpoint: str | os.PathLike | None = None, *, vocoder: str | None = None,
               device: str = "cpu") -> VoiceConverter:
    """Load a checkpoint (default: the shipped `checkpoints/default.pt`) as a `VoiceConverter`.

    `vocoder`: "vocos" (the checkpoint's own neural vocoder; the default when it has one) or "griffin-lim".
    """
    path = Path(checkpoint) if checkpoint is not None else Path(os.environ.get("VC_CHECKPOINT", DEFAULT_CHECKPOINT))
    ckpt = load_checkpoint(path)
    net, cfg = build_model(ckpt, path)
    try:
        return VoiceConverter(net, cfg, vocoder=vocoder, device=device, vocoder_state=ckpt.get("vocoder"))
    except VCError as e:
        raise VCError(f"{path}: {e}") from None
