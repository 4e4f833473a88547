"""The input check (`vc.input_check`) on dev speakers it never saw: every clean dev clip against clips that are not one
person speaking, made from dev clips and generators with another seed than the fit's: music, tones, noise, two dev
speakers at once (-3..3 dB), dev speech at -5 dB SNR; and, reported but not counted as anomalies, 2.5- to 5-s
stretches of the clean clips and dev speech at 10 and 20 dB SNR (a little noise is still one person speaking).

    python benchmarks/input_check_dev.py [--check checkpoints/input_check.pt] [--per-kind 40]

Prints ROC AUC (clean against all the anomalies, and against each kind), the share of clean clips that warn, and
the share of each kind that warns. Target (issue 13): AUC >= 0.95, at most 2 % of clean dev clips warn.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from vc.audio import load_wav, prepare
from vc.input_check import load_checker
from vc.training.corrupt import colored_noise, mix
from vc.training.input_check import KINDS, anomaly, crop

ROOT = Path(__file__).resolve().parents[1]


def roc_auc(negative: np.ndarray, positive: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half."""
    diff = positive[:, None] - negative[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", default=None, help="the check's file (default: the shipped one)")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dev"))
    p.add_argument("--per-kind", type=int, default=40)
    p.add_argument("--seed", type=int, default=1001)
    p.add_argument("--out", default=None, help="write the scores here (JSON)")
    args = p.parse_args()
    checker = load_checker(args.check)
    if checker is None:
        raise SystemExit(f"no input check at {args.check or 'checkpoints/input_check.pt'}")
    audio, sr = checker.audio, checker.audio.sample_rate
    data = Path(args.data)
    with (data / "utterances.tsv").open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    raw = [load_wav(data / r["path"], audio, trim=False) for r in rows]
    speakers = [r["speaker"] for r in rows]
    rng = np.random.default_rng(args.seed)
    scores: dict[str, list[float]] = {"clean": [checker.check(w).score for w in raw]}
    for kind in KINDS:
        if kind == "noisy":  # exactly -5 dB, as the target reads
            clips = [mix(w, colored_noise(len(w), float(rng.uniform(0, 2)), rng), -5.0)
                     for w in (raw[int(rng.integers(len(raw)))] for _ in range(args.per_kind))]
        else:
            clips = [anomaly(kind, raw, speakers, rng, sr) for _ in range(args.per_kind)]
        scores[kind] = [checker.check(prepare(c.astype(np.float32), sr, audio, trim=False)).score for c in clips]
    scores["clean, 2.5-5 s stretches"] = [checker.check(crop(w, rng, sr)).score for w in raw]
    for snr in (10, 20):
        clips = [mix(w, colored_noise(len(w), float(rng.uniform(0, 2)), rng), snr)
                 for w in (raw[int(rng.integers(len(raw)))] for _ in range(args.per_kind))]
        scores[f"speech+noise {snr} dB"] = [checker.check(prepare(c.astype(np.float32), sr, audio, trim=False)).score
                                            for c in clips]
    clean = np.array(scores["clean"])
    bad = np.concatenate([scores[k] for k in KINDS])
    print(f"input check {args.check or 'checkpoints/input_check.pt'} (threshold {checker.threshold:.3f}) on "
          f"{len(clean)} clean dev clips and {args.per_kind} clips of each other kind")
    print(f"ROC AUC, clean against {', '.join(KINDS)}: {roc_auc(clean, bad):.3f}")
    print(f"clean dev clips that warn: {(clean > checker.threshold).mean():.1%}")
    print("| kind | AUC against clean | warns |\n|---|---|---|")
    for kind, values in scores.items():
        if kind != "clean":
            v = np.array(values)
            print(f"| {kind} | {roc_auc(clean, v):.3f} | {(v > checker.threshold).mean():.1%} |")
    if args.out:
        Path(args.out).write_text(json.dumps(scores))


if __name__ == "__main__":
    main()
