"""Long audio: a file of any length converted chunk by chunk through the converter's own stages, with bounded memory.

Chunks of `chunk_seconds` overlap by `overlap_seconds` and the overlap is cross-faded (with Griffin-Lim, each chunk
also starts from the phases the previous one ended with; with the neural vocoder, the harmonics' phase of voiced
frames runs on from the previous chunk), so that joins are inaudible. The source's pitch register
accumulates over the chunks seen so far.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch

from . import pitch
from .audio import SILENCE_DBFS, normalize_loudness, speech_levels
from .dereverb import dereverberate
from .errors import VCError
from .vocoder import GriffinLim, f0_phase


def _chunks(blocks: Iterable[np.ndarray], size: int, step: int, overlap: int) -> Iterator[np.ndarray]:
    """Blocks of any length -> chunks of `size` samples every `step`, then what is left (if more than the overlap)."""
    buf, emitted = np.zeros(0, np.float32), False
    for block in blocks:
        buf = np.concatenate([buf, np.asarray(block, np.float32)])
        while len(buf) >= size:
            yield buf[:size]
            buf, emitted = buf[step:], True
    if len(buf) > (overlap if emitted else 0):
        yield buf


def _gain(y: np.ndarray, previous: np.ndarray | None, overlap: int, sample_rate: int, target_db: float) -> float:
    """The decoder's output level follows its context. Each chunk's gain lies halfway (in dB) between the one that
    brings its own speech to the target level and the one that matches the previous chunk where they overlap: steps
    at the joins halve, and the level cannot drift away from the target."""
    target = normalize_loudness(y, sample_rate, target_db)
    gain = float(np.dot(target, y) / max(np.dot(y, y), 1e-12))
    head = y[:overlap]
    if previous is not None and np.dot(head, head) > 0:
        gain = float(np.sqrt(gain * np.sqrt(np.dot(previous, previous) / np.dot(head, head))))
    return gain


def convert_chunks(model, blocks: Iterable[np.ndarray], voice, *,
                   chunk_seconds: float = 30.0, overlap_seconds: float = 1.0, pitch_shift: float = 0.0,
                   match_pitch: bool = True, timbre_match: float | None = None, dereverb: bool | None = None,
                   name: str = "<audio>") -> Iterator[np.ndarray]:
    """Blocks of float32 at the model's rate (any lengths) -> the converted audio, block by block, as long in all.

    `model`: the `vc.api.VoiceConverter` whose stages convert each chunk; `voice`: its `Voice` of the target (this
    module does not import `vc.api`, which imports it). `dereverb` (default `convert.dereverb`): each chunk's room
    echo removed first (`vc.dereverb`; a last chunk under its 4 s is left as it is), as `convert` does."""
    c = model.cfg.audio
    dereverb = model.cfg.convert.dereverb if dereverb is None else dereverb
    hop = c.hop_length
    size = max(2, round(chunk_seconds * c.sample_rate / hop)) * hop
    overlap = min(size // 2, max(1, round(overlap_seconds * c.sample_rate / hop)) * hop)
    step = size - overlap
    fade = (0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)).astype(np.float32)
    register = pitch.Register(model.cfg.pitch)
    pending: np.ndarray | None = None  # the previous chunk's last `overlap` output samples
    phase: torch.Tensor | None = None
    tail: tuple[torch.Tensor, float] | None = None  # the previous chunk's overlap: pitch features, F0 phase at its start
    speech = False
    for x in _chunks(blocks, size, step, overlap):
        if speech_levels(x, c.sample_rate)[0] < SILENCE_DBFS:  # DC and rumble count as silence, as in `load_wav`
            y, phase, tail = np.zeros_like(x), None, None
        else:
            x = normalize_loudness(dereverberate(x, c.sample_rate) if dereverb else x, c.sample_rate, c.target_db)
            f0 = pitch.track(x, c, model.cfg.pitch)[0]
            p = model.source_pitch(x, voice, pitch_shift=pitch_shift, match_pitch=match_pitch,
                                   source_stats=register.add(f0).stats(), f0=f0)
            mel = model.decode(model.encode(x), voice, p, timbre_match=timbre_match)
            if isinstance(model.vocoder, GriffinLim):
                with torch.inference_mode():
                    y, angles = model.vocoder(mel.float().cpu(), len(x), init=phase, return_phase=True)
                y, phase = y.numpy().astype(np.float32), angles[:, step // hop:] if len(x) == size else None
            else:  # the harmonics' phase runs on across the join: the overlap takes the previous chunk's F0 and phase
                if tail is not None:
                    p = torch.cat([tail[0][:, :p.shape[1]], p[:, tail[0].shape[1]:]], dim=1)
                fundamental = f0_phase(pitch.hz(p, model.cfg.pitch), c, tail[1] if tail is not None else 0.0)
                y = model.vocode(mel, len(x), p, fundamental)
                tail = (p[:, step // hop:], float(fundamental[step // hop])) if len(x) == size else None
            y = y * _gain(y, pending, overlap, c.sample_rate, c.target_db)
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
