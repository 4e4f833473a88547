"""Why do dev speaker embeddings draw together as training goes on? Speaker-embedding spread across a run's snapshots.

    python benchmarks/speaker_drift.py runs/whisper/model-step00*.pt --train ../shared/data/train

For each snapshot (an exported model), on clips of unseen `dev/` speakers and on clips of speakers it trained on:
the mean cosine between embeddings of the same speaker (`same`) and of different speakers (`diff`), and their gap
(`sep`). If the trained-on speakers stay apart while the unseen ones draw together, the speaker encoder is fitting its
training voices rather than learning a space that generalizes. `use` is how much the decoder listens to the speaker:
the mean absolute log-mel difference between one source decoded with two dev speakers' voices.
"""
from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import vc

ROOT = Path(__file__).resolve().parents[1]


def clips_by_speaker(split: Path, speakers: int, per_speaker: int, seed: int = 0) -> dict[str, list[Path]]:
    """`per_speaker` clips each of up to `speakers` speakers of a split that have that many (seeded choice)."""
    by = defaultdict(list)
    with (split / "utterances.tsv").open(newline="") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            by[r["speaker"]].append(split / r["path"])
    rich = sorted(s for s in by if len(by[s]) >= per_speaker)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(rich, size=min(speakers, len(rich)), replace=False)
    return {s: sorted(by[s])[:per_speaker] for s in chosen}


def spread(model: vc.VoiceConverter, clips: dict[str, list[Path]]) -> dict[str, float]:
    """Mean same-speaker and different-speaker cosine of the clips' speaker embeddings."""
    embs, owner = [], []
    for spk, paths in clips.items():
        for p in paths:
            embs.append(model.embed(p).embedding.float())
            owner.append(spk)
    e = torch.nn.functional.normalize(torch.stack(embs), dim=1)
    cos = e @ e.T
    same = torch.tensor([[a == b for b in owner] for a in owner])
    off = ~torch.eye(len(owner), dtype=torch.bool)
    s, d = cos[same & off].mean().item(), cos[~same].mean().item()
    return {"same": s, "diff": d, "sep": s - d}


def speaker_use(model: vc.VoiceConverter, source: Path, a: Path, b: Path) -> float:
    """Mean |log-mel| difference of one source decoded in two voices, pitch kept the same."""
    wav = model.load(source, trim=False)
    content, pitch = model.encode(wav), model.source_pitch(wav, match_pitch=False)
    mels = [model.decode(content, model.embed(t), pitch, timbre_match=0.0) for t in (a, b)]
    return float((mels[0] - mels[1]).abs().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("snapshots", nargs="+", help="exported models of one run (model-stepNNNNNN.pt)")
    p.add_argument("--dev", default=str(ROOT.parent / "shared" / "data" / "dev"))
    p.add_argument("--train", default=str(ROOT.parent / "shared" / "data" / "train"))
    p.add_argument("--speakers", type=int, default=6)
    p.add_argument("--clips", type=int, default=4, help="clips per speaker")
    args = p.parse_args()
    dev = clips_by_speaker(Path(args.dev), args.speakers, args.clips)
    train = clips_by_speaker(Path(args.train), args.speakers, args.clips)
    dev_speakers = sorted(dev)
    src, a, b = dev[dev_speakers[0]][0], dev[dev_speakers[1]][0], dev[dev_speakers[2]][0]
    print(f"{len(dev)} dev speakers, {len(train)} train speakers, {args.clips} clips each")
    print("| snapshot | dev same | dev diff | dev sep | train same | train diff | train sep | use |")
    print("|---|---|---|---|---|---|---|---|")
    for path in sorted(args.snapshots):
        model = vc.load_model(path, vocoder="griffin-lim")
        d, t = spread(model, dev), spread(model, train)
        step = re.search(r"step(\d+)", Path(path).name)
        name = str(int(step.group(1))) if step else Path(path).name
        print(f"| {name} | {d['same']:.3f} | {d['diff']:.3f} | {d['sep']:.3f} | {t['same']:.3f} | {t['diff']:.3f} "
              f"| {t['sep']:.3f} | {speaker_use(model, src, a, b):.3f} |", flush=True)


if __name__ == "__main__":
    main()
