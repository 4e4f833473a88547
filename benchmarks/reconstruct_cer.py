"""Words kept by the content path alone: teacher-forced reconstructions (each clip in its own voice and pitch), judged
by an ASR that shares no weights with the converters, against the dev texts.

    python benchmarks/reconstruct_cer.py checkpoints/default.pt runs/c5000.pt --clips 12

If a model loses words here too, the loss is in its content code, not in the change of voice.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

import vc
from vc.judges import AsrJudge, error_rates

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dev"))
    p.add_argument("--clips", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--asr", default="base", choices=("base", "tiny.en"))
    args = p.parse_args()
    data = Path(args.data)
    with (data / "utterances.tsv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["text"]]
    picks = np.random.default_rng(args.seed).choice(len(rows), min(args.clips, len(rows)), replace=False)
    asr = AsrJudge(1, args.asr)
    models = {c: vc.load_model(c) for c in args.checkpoints}
    cer: dict[str, list[float]] = {"source": [], **{c: [] for c in models}}
    for i in picks:
        path, text = data / rows[i]["path"], rows[i]["text"]
        wav = next(iter(models.values())).load(path, trim=False)
        cer["source"].append(error_rates(text, asr.transcribe(wav))["cer"])
        for name, model in models.items():
            out = model.finish(model.vocode(model.reconstruct_mel(model.load(path, trim=False)), len(wav)))
            cer[name].append(error_rates(text, asr.transcribe(out))["cer"])
    print(f"{len(picks)} dev clips with text, ASR judge Whisper {args.asr}")
    for name, values in cer.items():
        print(f"{name}: CER {np.mean(values):.3f}")


if __name__ == "__main__":
    main()
