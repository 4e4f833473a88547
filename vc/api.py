"""The public API: `load_model()` and the `VoiceConverter` it returns.

    model = vc.load_model()
    wav = model.convert("source.flac", "target.wav")   # np.float32 (T,) at model.sample_rate

`convert` is its public stages chained, and every other path (long files, `vc bench`, the demo) calls the same
stages: `embed` (target clips -> `Voice`), `encode` (source -> `Content`), `source_pitch` (source -> the decoder's
pitch input), `decode` (-> log-mel, edges, clamp, timbre match and contrast included), `vocode` (-> waveform), `finish`
(loudness, and a check that the result is sound).
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import numpy as np
import soxr
import torch

from . import pitch, timbre
from .audio import AudioWriter, audio_seconds, load_wav, log_mel, normalize_loudness, prepare, read_blocks
from .checkpoint import build_model, check_weights, load_checkpoint
from .chunks import convert_chunks
from .config import Config
from .content import content_input, mirror_edges
from .dereverb import MIN_SECONDS, dereverberate, too_short
from .errors import VCError, VCWarning, warn
from .input_check import InputCheck, load_checker
from .model import VoiceConverterNet
from .pitch import PitchStats
from .registry import resolve_checkpoint
from .runtime import fast_bf16
from .stream import Stream
from .vocoder import GriffinLim, load_vocoder

# A clip: a path, a float array already at the model's rate, or (array, sample_rate).
Audio = Union[str, os.PathLike, np.ndarray, tuple]
MAX_PITCH_SHIFT = 24.0  # semitones: two octaves either way


@dataclass(frozen=True)
class Voice:
    """A target voice, from `VoiceConverter.embed`: the speaker embedding and the log-F0 statistics of its clips
    (None where they held too little voiced speech to measure)."""
    embedding: torch.Tensor
    pitch: PitchStats | None = None
    spectrum: torch.Tensor | None = None  # mean log-mel (n_mels,) of the clips' speech frames; NaN: a band noise hid
    checks: tuple[InputCheck, ...] = ()  # the input check of each clip (`VoiceConverter.check_input`), where run

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
            spectrum = timbre.mean_spectrum([self.spectrum, other.spectrum], [1 - weight, weight])
        return Voice(emb, stats, spectrum, self.checks + other.checks)


@dataclass(frozen=True)
class Content:
    """A source's content code, from `VoiceConverter.encode`: (content_dim, ceil((frames + 2 pad) / 2)), computed on
    its content input (mel or Whisper states) mirrored `pad` frames out at both ends (the networks' zero-padded edges
    otherwise give a burst)."""
    code: torch.Tensor
    frames: int  # mel frames of the source
    pad: int  # mirrored mel frames at each end; even, so that the halved rate stays aligned


def check_options(pitch_shift: float = 0.0, timbre_match: float | None = None) -> None:
    """Refuse conversion options that cannot be meant: one line naming the option."""
    if not (math.isfinite(pitch_shift) and abs(pitch_shift) <= MAX_PITCH_SHIFT):
        raise VCError(f"pitch_shift must be a number of semitones within +-{MAX_PITCH_SHIFT:g}, got {pitch_shift}")
    if timbre_match is not None and not (math.isfinite(timbre_match) and 0 <= timbre_match <= 1):
        raise VCError(f"timbre_match must be between 0 and 1, got {timbre_match}")


class VoiceConverter:
    """A trained model with its config and vocoder. Stage methods can be called one by one (see the module's
    docstring); `convert` chains them.

    Pitch: the source's F0 contour is moved to the target's register (log-F0 mean and spread of the target clips)
    unless `match_pitch=False`, then shifted by `pitch_shift` semitones, and given to the decoder. Timbre:
    `timbre_match` moves the output's average spectrum toward the target clips' (`vc.timbre`).
    """

    def __init__(self, net: VoiceConverterNet, cfg: Config, vocoder: str | None = None, device: str = "cpu",
                 vocoder_weights: dict | None = None):
        self.net = net.to(device).eval()
        self.cfg = cfg
        self.device = torch.device(device)
        self.bf16 = fast_bf16(self.device)  # the content encoder and decoder run under bf16 autocast (VC_BF16=0: no)
        self.vocoder_name = vocoder or ("vocos" if vocoder_weights is not None else "griffin-lim")
        self.vocoder = load_vocoder(self.vocoder_name, cfg, vocoder_weights)
        if self.vocoder_name != "griffin-lim":
            self.vocoder.net.to(device)
        self.checker = load_checker()  # the input check (`vc.input_check`); None where it is not installed
        self.last_checks: dict[str, InputCheck] = {}  # the last `convert`'s, by role ("source")

    def check_input(self, audio: Audio, *, role: str = "source") -> InputCheck | None:
        """How unlike one person speaking a clip is (`vc.input_check`): its `InputCheck`, and one warning line when
        it is unusual. None where no check is installed. It never raises for what it finds: conversion goes on."""
        name = str(audio) if isinstance(audio, (str, os.PathLike)) else f"<{role}>"
        return self._check(self.load(audio, trim=False) if self.checker is not None else None, name, role)

    def _check(self, wav: np.ndarray | None, name: str, role: str, analysis=None) -> InputCheck | None:
        """`check_input` of a clip already loaded (prepared at the model's rate); `analysis`: its `pitch.analyse`
        with the model's settings, reused where the checker's settings are the same."""
        if wav is None or self.checker is None or self.checker.audio.sample_rate != self.sample_rate:
            return None
        same = self.checker.audio == self.cfg.audio and self.checker.pitch == self.cfg.pitch
        found = self.checker.check(wav, analysis if same else None)
        if found.unusual:
            warn(found.message(name, role))
        return found

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

    def voice(self, target: Audio | Sequence[Audio] | Voice) -> Voice:
        """A `Voice` as it is, a bare speaker embedding (no pitch statistics), or clips to `embed`."""
        if isinstance(target, Voice):
            return target
        if isinstance(target, torch.Tensor):
            return Voice(target)
        return self.embed(target)

    @torch.inference_mode()
    def embed(self, targets: Audio | Sequence[Audio]) -> Voice:
        """One or several clips of the target speaker -> their `Voice` (embedding averaged over the clips)."""
        if isinstance(targets, (str, os.PathLike, np.ndarray, tuple)):
            targets = [targets]
        if len(targets) == 0:
            raise VCError("no target clip given")
        wavs = [self.load(t, trim=True) for t in targets]
        # checked as recorded, before the trim: pauses and the quiet before and after are part of the evidence. The
        # clip is read again untrimmed, quietly: the trimmed read above has already warned about the file itself
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VCWarning)
            untrimmed = [self.load(t, trim=False) for t in targets] if self.checker is not None else []
        checks = [self._check(w, str(t) if isinstance(t, (str, os.PathLike)) else "<target>", "target clip")
                  for w, t in zip(untrimmed, targets)]
        mels = [log_mel(w, self.cfg.audio) for w in wavs]
        embs = [self.net.speaker_encoder(self.net.normalize(m.to(self.device)[None]))[0] for m in mels]
        stats = pitch.stats([pitch.track(w, self.cfg.audio, self.cfg.pitch)[0] for w in wavs], self.cfg.pitch)
        db = self.cfg.convert.speech_frames_db
        spectrum = timbre.mean_spectrum([timbre.reference_spectrum(m, db) for m in mels])
        checked = tuple(c for c in checks if c is not None)
        return Voice(torch.stack(embs).mean(dim=0).cpu(), stats, spectrum, checked)

    @torch.inference_mode()
    def encode(self, wav: np.ndarray) -> Content:
        """(T,) waveform -> its `Content`: the content code of its content input (`vc.content.content_input`: the
        mel, or the Whisper states on the mel's frames), mirrored at both ends."""
        x = content_input(self.net, wav, self.mel(wav), self.cfg.audio)
        frames = x.shape[2]
        x, pad = mirror_edges(x, self.cfg.convert.edge_pad)
        with self.autocast():
            return Content(self.net.content_encoder(x)[0].float(), frames, pad)

    def source_pitch(self, wav: np.ndarray, voice: Voice | None = None, *, pitch_shift: float = 0.0,
                     match_pitch: bool = True, source_stats: PitchStats | None = None,
                     f0: torch.Tensor | None = None) -> torch.Tensor:
        """(T,) source -> the decoder's pitch input (2, frames): its F0 (`f0` where already tracked) moved to
        `voice`'s register (when `match_pitch`; the source's statistics default to this clip's), shifted by
        `pitch_shift` semitones."""
        p = self.cfg.pitch
        if f0 is None:
            f0 = pitch.track(wav, self.cfg.audio, p)[0]
        if match_pitch and voice is not None and voice.pitch is not None:
            f0 = pitch.transpose(f0, source_stats or pitch.stats([f0], p), voice.pitch, pitch_shift)
        else:
            f0 = pitch.transpose(f0, None, None, pitch_shift)
        return pitch.features(f0, p)

    @torch.inference_mode()
    def decode(self, content: Content, voice: Voice | torch.Tensor, pitch_features: torch.Tensor | None = None, *,
               timbre_match: float | None = None) -> torch.Tensor:
        """Content, speaker (a `Voice` or its embedding) and, for pitch-conditioned models, `source_pitch` (2, frames)
        -> log-mel (n_mels, frames) in the space `log_mel` returns: decoded with the content's mirrored edges, which
        are then cut, glitches clamped (`convert.mel_clamp`), the timbre matched to the voice's clips
        (`timbre_match`, default `convert.timbre_match`; a voice without clips has no spectrum to match), and the
        departures from the speech spectrum widened (`convert.mel_contrast`, `vc.timbre.contrast`)."""
        c = self.cfg.convert
        voice = self.voice(voice)
        frames, pad = content.frames, content.pad
        p = None
        if self.net.cfg.pitch:
            if pitch_features is None:
                raise VCError("this model needs the source's pitch (source_pitch)")
            p = pitch_features[None].to(self.device)
            p = torch.nn.functional.pad(p, (pad, pad), mode="reflect") if pad > 0 else p
        with self.autocast():
            out = self.net.decoder(content.code[None].to(self.device), voice.embedding[None].to(self.device),
                                   frames + 2 * pad, p).float()
        mel = self.net.denormalize(out[:, :, pad:pad + frames], clamp=c.mel_clamp)[0]
        amount = c.timbre_match if timbre_match is None else timbre_match
        if amount > 0 and voice.spectrum is not None:
            mel = timbre.match(mel, voice.spectrum, timbre.speech_spectrum(mel, c.speech_frames_db), amount)
        if c.mel_contrast != 1:
            mel = timbre.contrast(mel, timbre.SpeechSpectrum(c.speech_frames_db).add(mel), c.mel_contrast)
        return mel

    @torch.inference_mode()
    def vocode(self, mel: torch.Tensor, length: int | None = None, pitch_features: torch.Tensor | None = None,
               fundamental: torch.Tensor | None = None) -> np.ndarray:
        """Log-mel (n_mels, frames) -> waveform (T,) float32. With the decoder's `pitch_features` (`source_pitch`),
        the neural vocoder's voiced frames take the phase of their F0's harmonics below `convert.harmonic_phase` Hz
        (`vc.vocoder.harmonic_phase`; `fundamental`: the F0's phase track, where chunks carry it)."""
        if pitch_features is None or isinstance(self.vocoder, GriffinLim):
            return self.vocoder(mel.float().cpu(), length).numpy().astype(np.float32)
        return self.vocoder(mel.float().cpu(), length, pitch.hz(pitch_features, self.cfg.pitch),
                            self.cfg.convert.harmonic_phase, fundamental).numpy().astype(np.float32)

    def finish(self, wav: np.ndarray, name: str = "<conversion>") -> np.ndarray:
        """The vocoder's waveform -> the output: checked to be finite, loudness-normalized."""
        if not np.all(np.isfinite(wav)):
            raise VCError(f"{name}: the conversion produced invalid samples (NaN); the model or its vocoder is "
                          "damaged")
        return normalize_loudness(wav, self.sample_rate, self.cfg.audio.target_db)

    def convert(self, source: Audio, target: Audio | Sequence[Audio] | Voice, *, pitch_shift: float = 0.0,
                match_pitch: bool = True, timbre_match: float | None = None,
                dereverb: bool | None = None) -> np.ndarray:
        """Say what `source` says in the voice of `target` (clip(s), or a `Voice` from `embed`).

        `dereverb` (default `convert.dereverb`, off): remove the source's room echo first (`vc.dereverb`), for
        sources recorded at a distance in a reverberant room; it costs about as much time as the conversion.
        Returns float32 (T,) at `sample_rate`, as long as the source (silences kept) and loudness-normalized.
        """
        check_options(pitch_shift, timbre_match)
        voice = self.voice(target)
        recorded = self.load(source, trim=False)
        name = str(source) if isinstance(source, (str, os.PathLike)) else "<source>"
        dereverb = self.cfg.convert.dereverb if dereverb is None else dereverb
        if dereverb and too_short(len(recorded), self.sample_rate):
            warn(f"{name}: too short to dereverberate ({len(recorded) / self.sample_rate:.1f} s, under "
                 f"{MIN_SECONDS:g} s): converted as recorded")
            dereverb = False
        wav = (normalize_loudness(dereverberate(recorded, self.sample_rate), self.sample_rate,
                                  self.cfg.audio.target_db) if dereverb else recorded)
        analysis = pitch.analyse(wav, self.cfg.audio, self.cfg.pitch)  # YIN once: the F0, and the input check
        found = self._check(recorded, name, "source", None if dereverb else analysis)  # the source as recorded
        self.last_checks = {"source": found} if found is not None else {}
        content = self.encode(wav)
        f0 = pitch.contour(*analysis, self.sample_rate, float(analysis[2].max()), self.cfg.pitch)[0]
        p = self.source_pitch(wav, voice, pitch_shift=pitch_shift, match_pitch=match_pitch, f0=f0)
        mel = self.decode(content, voice, p, timbre_match=timbre_match)
        return self.finish(self.vocode(mel, len(wav), p), name if name != "<source>" else "<conversion>")

    def reconstruct_mel(self, wav: np.ndarray) -> torch.Tensor:
        """Teacher-forced reconstruction of a (prepared) clip in its own voice and pitch: log-mel (n_mels, frames)
        aligned with `log_mel(wav)`. What the vocoder is fine-tuned on."""
        with torch.inference_mode():
            voice = Voice(self.net.speaker_encoder(self.mel(wav))[0])
        return self.decode(self.encode(wav), voice, self.source_pitch(wav, match_pitch=False))

    def stream(self, target: Audio | Sequence[Audio] | Voice, *, block_seconds: float = 0.02,
               pitch_shift: float = 0.0, match_pitch: bool = True, timbre_match: float | None = None,
               bf16: bool = False) -> Stream:
        """A `vc.stream.Stream` that converts a live signal block by block into the voice of `target` (embedded
        once), with a fixed latency. Needs a causal model, such as the shipped `stream` checkpoint. Target clips
        (rather than a `Voice`) also give the stream's instance norm its starting statistics, where the model takes
        them over the whole clip. `bf16`: the products in bf16 (slower than float32 on a CPU for one-frame
        blocks)."""
        check_options(pitch_shift, timbre_match)
        prime = None
        if not isinstance(target, (Voice, torch.Tensor)):  # clips: they also start the stream's statistics
            clips = [target] if isinstance(target, (str, os.PathLike, np.ndarray, tuple)) else list(target)
            target = [self.load(c, trim=True) for c in clips]  # read once, for the embedding and the prime
            prime = np.concatenate(target)[:30 * self.sample_rate]
        return Stream(self, self.voice(target), block_seconds=block_seconds, pitch_shift=pitch_shift,
                      match_pitch=match_pitch, timbre_match=timbre_match, bf16=bf16, prime=prime)

    def convert_file(self, source: str | os.PathLike, output: str | os.PathLike,
                     target: Audio | Sequence[Audio] | Voice, *, sample_rate: int | None = None,
                     chunk_seconds: float = 30.0, pitch_shift: float = 0.0, match_pitch: bool = True,
                     timbre_match: float | None = None, dereverb: bool | None = None) -> float:
        """Convert an audio file of any length into `output` (.wav or .flac, written atomically) in the voice of
        `target` (clips, or a `Voice` from `embed`). Files longer than `chunk_seconds` go through
        `vc.chunks.convert_chunks` with bounded memory. Returns the source's duration in seconds."""
        check_options(pitch_shift, timbre_match)
        seconds = audio_seconds(source)
        voice = self.voice(target)
        options = {"pitch_shift": pitch_shift, "match_pitch": match_pitch, "timbre_match": timbre_match,
                   "dereverb": dereverb}
        if seconds <= chunk_seconds:
            blocks: Iterable[np.ndarray] = [self.convert(source, voice, **options)]
        else:
            if self.checker is not None:  # a long file: its first chunk is checked
                head = next(read_blocks(source, self.sample_rate, block_seconds=chunk_seconds))
                found = self._check(prepare(head, self.sample_rate, self.cfg.audio, trim=False), str(source),
                                    "source")
                self.last_checks = {"source": found} if found is not None else {}
            blocks = convert_chunks(self, read_blocks(source, self.sample_rate), voice, chunk_seconds=chunk_seconds,
                                    name=str(source), **options)
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
    """Load a checkpoint as a `VoiceConverter`: a path, or the name of a shipped model ("default", "stream"; see
    `vc.registry`). Without one, $VC_CHECKPOINT or the shipped "default".

    `vocoder`: "vocos" (the checkpoint's own neural vocoder; the default when it has one) or "griffin-lim".
    """
    path = resolve_checkpoint(checkpoint)
    ckpt = load_checkpoint(path)
    net, cfg = build_model(ckpt, path)
    if ckpt.get("vocoder") is not None:
        check_weights(ckpt["vocoder"], path, "vocoder weights")
    try:
        return VoiceConverter(net, cfg, vocoder=vocoder, device=device, vocoder_weights=ckpt.get("vocoder"))
    except VCError as e:
        raise VCError(f"{path}: {e}") from None
