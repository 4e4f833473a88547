"""Where a noisy or reverberant source loses its words (issue 13): the converter's content path or its pitch path.

    python benchmarks/noisy_parts.py --noise-snr 10 --reverb

Each of the fixed dev pairs (benchmarks/dev_pairs.tsv) gets the corrupted source of `evaluate_dev.py --noise-snr DB
[--reverb]` (the same seeds and generators), and is converted three times by the same model: the content code from
the corrupted source and the pitch from the clean one; the content from the clean source and the pitch from the
corrupted one; and both from the corrupted source (what `vc convert` does with it). The corrupted and clean sources
are sample-aligned (the room keeps its direct sound in place). Printed: the mean CER of each, by Whisper base (which
shares no weights with a tiny.en-content converter) against the pair's text (the clean source's transcript where the
pair has none), and the same judge's CER on the corrupted source itself.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import vc
from vc.audio import load_wav
from vc.config import AudioConfig
from vc.judges import AsrJudge, error_rates

sys.path.insert(0, str(Path(__file__).parent))
from evaluate_dev import PAIR_LIST, ROOT, noisy_sources, read_pairs  # noqa: E402

WAYS = {"noisy content, clean pitch": ("noisy", "clean"), "clean content, noisy pitch": ("clean", "noisy"),
        "both noisy (as converted)": ("noisy", "noisy")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None, help="the converter (default: the shipped one)")
    p.add_argument("--noise-snr", type=float, default=10.0, metavar="DB")
    p.add_argument("--reverb", action="store_true", help="a simulated room before the noise")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dev"))
    p.add_argument("--out", default="runs/noisy-parts", help="where the corrupted sources are written")
    p.add_argument("--pairs", type=int, default=40, help="the first N fixed pairs")
    args = p.parse_args()
    pairs = read_pairs(PAIR_LIST, Path(args.data))[:args.pairs]
    pairs = noisy_sources(pairs, args.noise_snr, Path(args.out), args.reverb)
    model, asr = vc.load_model(args.checkpoint), AsrJudge(1, "base")
    cer = {name: [] for name in ["the corrupted source itself", *WAYS]}
    for i, pair in enumerate(pairs):
        wav = {"noisy": model.load(pair["input_source"], trim=False), "clean": model.load(pair["source"], trim=False)}
        if len(wav["noisy"]) != len(wav["clean"]):
            raise SystemExit(f"{pair['input_source']}: not aligned with {pair['source']}")
        text = pair["text"] or asr.transcribe(load_wav(pair["source"], AudioConfig(), trim=True, normalize=False))
        cer["the corrupted source itself"].append(error_rates(text, asr.transcribe(wav["noisy"]))["cer"])
        voice = model.embed(pair["target"])
        for name, (content, pitch) in WAYS.items():
            p = model.source_pitch(wav[pitch], voice)
            mel = model.decode(model.encode(wav[content]), voice, p)
            out = model.finish(model.vocode(mel, len(wav[content]), p))
            cer[name].append(error_rates(text, asr.transcribe(out))["cer"])
        print(f"{i + 1}/{len(pairs)} " + "  ".join(f"{v[-1]:.3f}" for v in cer.values()), flush=True)
    print(f"\nCER by Whisper base, {len(pairs)} pairs, noise {args.noise_snr:g} dB{' and a room' if args.reverb else ''}:")
    for name, values in cer.items():
        print(f"  {name:28s} {np.mean(values):.3f} (standard error {np.std(values) / np.sqrt(len(values)):.3f})")


if __name__ == "__main__":
    main()
