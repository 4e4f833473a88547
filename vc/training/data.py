"""Training data: utterance lists, cached log-mel features (and Whisper states), and random segment batches."""
from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import load_wav, log_mel
from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import AUDIO_EXTENSIONS, AudioConfig, PitchConfig
from ..errors import VCError
from ..files import sha256
from ..pitch import features, track
from .distributed import Dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Utterance:
    path: str
    speaker: str


def list_utterances(root: str | Path) -> list[Utterance]:
    """A split folder with `utterances.tsv` (columns path, speaker, ...), or one sub-folder of audio per speaker."""
    root = Path(root)
    if not root.is_dir():
        raise VCError(f"{root}: data folder not found")
    table = root / "utterances.tsv"
    if table.is_file():
        with table.open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if rows and not {"path", "speaker"} <= set(rows[0]):
            raise VCError(f"{table}: needs the columns 'path' and 'speaker'")
        utts = [Utterance(str(root / r["path"]), r["speaker"]) for r in rows]
    else:
        utts = [Utterance(str(p), d.name) for d in sorted(root.iterdir()) if d.is_dir()
                for p in sorted(d.rglob("*")) if p.suffix.lower() in AUDIO_EXTENSIONS]
    if not utts:
        raise VCError(f"{root}: no audio found (expected utterances.tsv or one folder of audio per speaker)")
    return utts


def gather_utterances(roots: str | Path | list[str | Path]) -> list[Utterance]:
    """The union of the utterances of one or several data folders. A speaker is its id: the same id in two folders
    (train/ and train_more/) is the same speaker."""
    roots = [roots] if isinstance(roots, (str, Path)) else list(roots)
    found = {u.path: u for root in roots for u in list_utterances(root)}
    return list(found.values())


def read_cache(cache: str | Path | None, key: str) -> dict | None:
    """A feature cache's contents when `cache` exists, reads, and was written under `key`; else None (rebuild it)."""
    if cache is None or not Path(cache).is_file():
        return None
    try:
        c = load_checkpoint(cache)
    except VCError:
        return None
    return c if c.get("key") == key else None


FEATURES_VERSION = 2  # bump when what `load_features` computes changes, so that old caches are rebuilt


def load_features(utts: list[Utterance], cfg: AudioConfig, cache: str | Path | None = None,
                  pitch: PitchConfig | None = None) -> tuple[list[Utterance], list[torch.Tensor], list[torch.Tensor]]:
    """Log-mels (n_mels, T) in float16 and F0 contours (T,) in Hz for every readable utterance; unreadable ones are
    skipped with a warning.

    With `cache`, features are saved there once and reused while the file list and audio config are unchanged.
    """
    pitch = pitch or PitchConfig()
    key = hashlib.sha1(json.dumps([FEATURES_VERSION, asdict(cfg), asdict(pitch), [asdict(u) for u in utts]]
                                  ).encode()).hexdigest()
    c = read_cache(cache, key)
    if c is not None:
        return [Utterance(p, s) for p, s in c["utts"]], c["mels"], c["f0s"]
    kept, mels, f0s = [], [], []
    for u in utts:
        try:
            wav = load_wav(u.path, cfg)
        except VCError as e:
            log.warning("skipped: %s", e)
            continue
        kept.append(u)
        mels.append(log_mel(wav, cfg).to(torch.float16))
        f0s.append(track(wav, cfg, pitch)[0])
    if not kept:
        raise VCError("no usable audio in the data folder")
    if cache is not None:
        save_checkpoint(cache, {"key": key, "utts": [[u.path, u.speaker] for u in kept], "mels": mels, "f0s": f0s})
    return kept, mels, f0s


STATES_VERSION = 1  # bump when what `load_states` computes changes


def encoder_id(encoder) -> str:
    """A digest of a Whisper encoder's weights: `load_states`'s `encoder_id`, so that other weights rebuild a cache."""
    digest = hashlib.sha1()
    for v in encoder.state_dict().values():
        digest.update(v.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def load_states(utts: list[Utterance], mels: list[torch.Tensor], cfg: AudioConfig, encoder, layers: int,
                encoder_id: str, cache: str | Path | None = None) -> list[torch.Tensor]:
    """Whisper states (n_state, T) in float16 of every utterance, on the frames of its mel in `mels`
    (`vc.content.whisper_states`). With `cache`, saved there once and reused while the utterances, the audio config,
    the feature kind, `layers` and the encoder (`encoder_id`, a digest of its weights) are unchanged."""
    from ..content import whisper_states  # the training side of `vc.content`; nothing here runs for mel models

    key = hashlib.sha1(json.dumps([STATES_VERSION, "whisper", layers, encoder_id, asdict(cfg),
                                   [[asdict(u), m.shape[1]] for u, m in zip(utts, mels)]]).encode()).hexdigest()
    c = read_cache(cache, key)
    if c is not None:
        return c["states"]
    states = [whisper_states(encoder, load_wav(u.path, cfg), layers, cfg, m.shape[1]).to(torch.float16)
              for u, m in zip(utts, mels)]
    if cache is not None:
        save_checkpoint(cache, {"key": key, "states": states})
    return states


CORRUPTED_VERSION = 1  # bump when what `load_corrupted` computes changes


def load_corrupted(utts: list[Utterance], mels: list[torch.Tensor], cfg: AudioConfig, pitch: PitchConfig,
                   seed: int, copy: int, encoder=None, layers: int = 0, encoder_id: str = "",
                   cache: str | Path | None = None, babble_clips: int = 120, voice_shift: float = 0.0,
                   converter: str | Path = ""
                   ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor] | None]:
    """Corrupted copy number `copy` of every utterance (`vc.training.corrupt.Corruption`, drawn from `seed`, `copy`
    and the utterance's index): its log-mel (n_mels, T) in float16, F0 (T,) and, with a Whisper `encoder`, its
    states (n_state, T) in float16, on the same frames as the clean mel in `mels`. Cached in `cache` under a key of
    all that, as `load_states` does. The rooms (a second each to simulate at most) are a pool of one per ten
    utterances, 8 to 200. With `voice_shift` (semitones), the copy is the clean clip in another voice instead
    (`vc.training.corrupt.shift_voice`: timbre scrambling, `train.voice_shift`); with `converter` (an inference
    checkpoint, `train.voice_shift_model`) the clip converted by that model into another training speaker's voice
    (`vc.training.corrupt.ConvertedVoices`)."""
    from ..content import whisper_states
    from .corrupt import ConvertedVoices, Corruption, converted_speakers, shift_voice

    rooms = min(200, max(8, len(utts) // 10))
    key = hashlib.sha1(json.dumps([CORRUPTED_VERSION, seed, copy, rooms, babble_clips, layers, encoder_id,
                                   asdict(cfg), asdict(pitch),
                                   [[asdict(u), m.shape[1]] for u, m in zip(utts, mels)]]
                                  + ([voice_shift] if voice_shift else [])  # noise copies keep their cached key
                                  + ([sha256(converter)] if converter else [])
                                  ).encode()).hexdigest()
    c = read_cache(cache, key)
    if c is not None:
        return c["mels"], c["f0s"], c["states"]
    rng = np.random.default_rng([seed, copy, 0])
    if converter:
        clips: dict[str, list[str]] = {}
        for u in utts:
            clips.setdefault(u.speaker, []).append(u.path)
        voices = ConvertedVoices(converter, clips, rng, cfg.sample_rate, cfg.target_db)
        targets = converted_speakers([u.speaker for u in utts], seed, copy)

        def corrupt(wav, r, i):
            return voices(wav, targets[i])
    elif voice_shift > 0:
        def corrupt(wav, r, i):
            return shift_voice(wav, cfg.sample_rate, r, voice_shift)
    else:
        corruption = Corruption.drawn([u.path for u in utts], cfg, rng, rooms, babble_clips)

        def corrupt(wav, r, i):
            return corruption(wav, r)
    out_mels, f0s, states = [], [], [] if encoder is not None else None
    for i, (u, m) in enumerate(zip(utts, mels)):
        wav = corrupt(load_wav(u.path, cfg), np.random.default_rng([seed, copy, 1, i]), i)
        out_mels.append(log_mel(wav, cfg).to(torch.float16))
        f0s.append(track(wav, cfg, pitch)[0])
        if states is not None:
            states.append(whisper_states(encoder, wav, layers, cfg, m.shape[1]).to(torch.float16))
    if cache is not None:
        save_checkpoint(cache, {"key": key, "mels": out_mels, "f0s": f0s, "states": states})
    return out_mels, f0s, states


def shard_features(utts: list[Utterance], cfg: AudioConfig, cache: Path, d: Dist, pitch: PitchConfig | None = None):
    """`load_features` with the extraction shared: rank r computes utterances r, r + world, ... into its own cache,
    then every rank reads all the caches, in the order of `utts`."""
    if d.world == 1:
        return load_features(utts, cfg, cache, pitch)

    def part(r: int):
        try:
            return load_features(utts[r::d.world], cfg, cache.with_name(f"{cache.stem}.{r}-of-{d.world}.pt"), pitch)
        except VCError:  # a shard without usable audio
            return [], [], []

    part(d.rank)
    d.barrier()
    found = {}
    for r in range(d.world):
        for u, m, f in zip(*part(r)):
            found[u] = (m, f)
    kept = [u for u in utts if u in found]
    if not kept:
        raise VCError("no usable audio in the data folder")
    return kept, [found[u][0] for u in kept], [found[u][1] for u in kept]


class SegmentSampler:
    """Random (segment, reference, speaker) batches; batch `step` is the same for a given seed, whatever came before.

    Utterances are drawn in proportion to their length, or, with `speaker_balance` b in (0, 1], a speaker is drawn
    with probability (1 - b) * its share of the audio + b / number of speakers, then one of its utterances by length:
    a corpus where a few speakers hold most of the minutes still shows the speaker side every voice. The reference is
    a crop of another utterance of the same speaker where there is one, so that the speaker path cannot copy the
    content.
    """

    def __init__(self, mels: list[torch.Tensor], speaker_ids: list[int], segment: int, seed: int,
                 f0s: list[torch.Tensor] | None = None, pitch: PitchConfig | None = None,
                 speaker_balance: float = 0.0):
        keep = [i for i, m in enumerate(mels) if m.shape[1] >= segment]
        if not keep:
            raise VCError(f"no utterance is at least {segment} frames long")
        self.mels, self.speaker_ids, self.segment, self.seed, self.f0s = mels, speaker_ids, segment, seed, f0s
        self.pitch = pitch
        self.index = np.array(keep)
        lengths = np.array([mels[i].shape[1] for i in keep], dtype=np.float64)
        self.by_speaker: dict[int, list[int]] = {}
        for i in keep:
            self.by_speaker.setdefault(speaker_ids[i], []).append(i)
        self.p = lengths / lengths.sum()
        if speaker_balance > 0:
            spk = np.array([speaker_ids[i] for i in keep])
            spk_len = {k: lengths[spk == k].sum() for k in self.by_speaker}
            within = lengths / np.array([spk_len[k] for k in spk])  # an utterance's share of its speaker's audio
            self.p = (1 - speaker_balance) * self.p + speaker_balance * within / len(self.by_speaker)

    def _start(self, i: int, rng: np.random.Generator) -> int:
        return int(rng.integers(0, self.mels[i].shape[1] - self.segment + 1))

    def draw(self, step: int, size: int) -> list[tuple[int, int, int, int]]:
        """Batch `step`'s (utterance, segment start, reference utterance, reference start) for each of `size`."""
        rng = np.random.default_rng([self.seed, step])
        picks = rng.choice(self.index, size=size, p=self.p)
        out = []
        for i in picks:
            i = int(i)
            same = [j for j in self.by_speaker[self.speaker_ids[i]] if j != i]
            j = int(rng.choice(same)) if same else i
            s = self._start(i, rng)
            out.append((i, s, j, self._start(j, rng)))
        return out

    def batch(self, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """-> mel (B, n_mels, segment), reference (B, n_mels, segment), speaker ids (B,), float32 log-mels, and the
        segments' pitch features (B, 2, segment) when the sampler has F0 contours."""
        segs, refs, ids, pitch = [], [], [], []
        for i, s, j, r in self.draw(step, size):
            segs.append(self.mels[i][:, s:s + self.segment])
            if self.f0s is not None:
                pitch.append(features(self.f0s[i][s:s + self.segment].float(), self.pitch))
            refs.append(self.mels[j][:, r:r + self.segment])
            ids.append(self.speaker_ids[i])
        return (torch.stack(segs).float(), torch.stack(refs).float(), torch.tensor(ids, dtype=torch.long),
                torch.stack(pitch) if pitch else None)

    def segments(self, step: int, size: int, frames: list[torch.Tensor]) -> torch.Tensor:
        """The segments of batch `step` cut from `frames` (one (C, T) per utterance, on the mels' frames: the
        Whisper states): (B, C, segment) float32."""
        return torch.stack([frames[i][:, s:s + self.segment] for i, s, _, _ in self.draw(step, size)]).float()

    def corrupted(self, step: int, size: int, copies: list[tuple[list, list, list | None]], share: float,
                  ref_share: float, mel: torch.Tensor, ref: torch.Tensor, pitch: torch.Tensor | None,
                  states: torch.Tensor | None, with_pitch: bool = True, salt: int = 3):
        """Batch `step` (`batch`, `segments`) with items swapped for their corrupted copies (`load_corrupted`, one
        (mels, f0s, states) per copy): about `share` of the items take their content input (a copy's states, or its
        mel) and, `with_pitch`, their pitch features from a copy, about `ref_share` their reference. The target,
        `mel`, stays clean. Draws from `salt` (one per kind of copy) -> content mel, reference, pitch features,
        states: new tensors."""
        rng = np.random.default_rng([self.seed, step, salt])
        content, ref = mel.clone(), ref.clone()
        pitch = pitch.clone() if pitch is not None else None
        states = states.clone() if states is not None else None
        n = self.segment
        for b, (i, s, j, r) in enumerate(self.draw(step, size)):
            if rng.random() < share:
                c_mels, c_f0s, c_states = copies[int(rng.integers(len(copies)))]
                content[b] = c_mels[i][:, s:s + n].float()
                if pitch is not None and with_pitch:
                    pitch[b] = features(c_f0s[i][s:s + n].float(), self.pitch)
                if states is not None:
                    states[b] = c_states[i][:, s:s + n].float()
            if rng.random() < ref_share:
                ref[b] = copies[int(rng.integers(len(copies)))][0][j][:, r:r + n].float()
        return content, ref, pitch, states

    def converted_targets(self, step: int, size: int, copies: list[tuple[list, list, list | None]],
                          voices: list[list[int]], share: float, mel: torch.Tensor, ref: torch.Tensor,
                          pitch: torch.Tensor | None, content: torch.Tensor, salt: int = 6):
        """Batch `step` with about `share` of the items whose content input is still the clip (`content[b]` equal to
        `mel[b]`) made conversions (`train.voice_shift_target`): the target, and its pitch features, cut from a
        converted copy (`load_corrupted` with a converter, one (mels, f0s, states) per copy), the reference a crop of
        an utterance of the copy's voice (`voices[copy][i]`: the speaker id utterance i was converted to). The content
        input stays the clip. -> target mel, reference, pitch features (new tensors) and the mask (B,) of the items
        changed."""
        rng = np.random.default_rng([self.seed, step, salt])
        mel, ref = mel.clone(), ref.clone()
        pitch = pitch.clone() if pitch is not None else None
        changed = torch.zeros(size, dtype=torch.bool)
        n = self.segment
        for b, (i, s, _, _) in enumerate(self.draw(step, size)):
            if rng.random() >= share or not torch.equal(content[b], mel[b]):
                continue
            c = int(rng.integers(len(copies)))
            pool = self.by_speaker.get(voices[c][i])
            if not pool:  # that voice has no utterance long enough to cut a reference from
                continue
            k = int(rng.choice(pool))
            start = self._start(k, rng)
            mel[b] = copies[c][0][i][:, s:s + n].float()
            ref[b] = self.mels[k][:, start:start + n].float()
            if pitch is not None:
                pitch[b] = features(copies[c][1][i][s:s + n].float(), self.pitch)
            changed[b] = True
        return mel, ref, pitch, changed
