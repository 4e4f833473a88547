"""The streaming engine on dev speech: its latency, its compute per block on one thread, and how close the streamed
output comes to the offline conversion by the same (causal) model.

    python benchmarks/stream_dev.py --pairs 12 --json runs/stream-dev.json

Closeness: log-mel L1 (natural log; both outputs loudness-normalized) between the streamed and the offline output,
over the first second and over the rest, and the resemblyzer similarity of each to the target clip. Speed: a
30-second source (one dev speaker's clips joined) streamed with 10, 25 and 50 ms blocks (whole hops) under
`torch.set_num_threads(1)`.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from evaluate_dev import make_pairs, read_split

import vc
from vc.registry import shipped_path
from vc.audio import log_mel, normalize_loudness

ROOT = Path(__file__).resolve().parents[1]


def closeness(model, pairs: list[dict], judge) -> dict:
    rows = []
    cfg = model.cfg.audio
    for i, p in enumerate(pairs):
        voice = model.embed(p["target"])
        wav = model.load(p["source"], trim=False)
        offline = model.convert(wav, voice)
        streamed = normalize_loudness(model.stream(p["target"]).run(wav), cfg.sample_rate, cfg.target_db)
        a, b = log_mel(streamed), log_mel(offline)
        err = (a - b).abs().mean(dim=0).numpy()
        row = {"seconds": len(wav) / cfg.sample_rate, "mel_l1_first_s": float(err[:80].mean()),
               "mel_l1_rest": float(err[80:].mean())}
        if judge is not None:
            ref = judge.embed(model.load(p["target"]))
            row["sim_offline"] = judge.similarity(judge.embed(offline), ref)
            row["sim_stream"] = judge.similarity(judge.embed(streamed), ref)
        rows.append(row)
        print(f"{i + 1}/{len(pairs)} {p['kind']}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"pairs": len(rows)}


def speed(model, clips: list[dict], seconds: float = 30.0) -> list[dict]:
    speaker = max({c["speaker"] for c in clips}, key=lambda s: sum(float(c["dur_s"]) for c in clips
                                                                    if c["speaker"] == s))
    own = [c for c in clips if c["speaker"] == speaker]
    wav = np.concatenate([model.load(c["path"], trim=False) for c in own])[:int(seconds * model.sample_rate)]
    target = next(c for c in clips if c["speaker"] != speaker)["path"]
    torch.set_num_threads(1)
    rows = []
    for block_ms in (10, 25, 50):  # rounded to whole hops of the model
        stream = model.stream(target, block_seconds=block_ms / 1000)
        stream.run(wav)
        s = stream.stats.summary()
        block_ms = 1e3 * stream.block_size / model.sample_rate
        rows.append({"block_ms": block_ms, "latency_ms": 1e3 * stream.latency, "audio_s": len(wav) / model.sample_rate,
                     **s})
        print(f"{block_ms:g} ms blocks: latency {1e3 * stream.latency:.1f} ms, compute per block mean "
              f"{s['mean_ms']:.2f} ms, p95 {s['p95_ms']:.2f}, p99 {s['p99_ms']:.2f}, max {s['max_ms']:.2f} "
              f"({100 * s['real_time_share']:.0f}% of the block), 1 thread", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(shipped_path("stream")))
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dev"))
    p.add_argument("--pairs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-speaker", action="store_true", help="skip resemblyzer (the eval extra)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    model = vc.load_model(args.checkpoint)
    clips = read_split(Path(args.data))
    judge = None
    if not args.no_speaker:
        from vc.judges import SpeakerJudge

        judge = SpeakerJudge()
    result = {"machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                         f"bf16 {model.vocoder.bf16}", "checkpoint": args.checkpoint,
              "closeness": closeness(model, make_pairs(clips, args.pairs, args.seed), judge),
              "speed": speed(model, clips)}
    c = result["closeness"]
    print("\n| measure | value |\n|---|---|")
    for k, v in c.items():
        print(f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |")
    print("\n| block | latency | compute per block: mean | p95 | max | share of the block |\n|---|---|---|---|---|---|")
    for r in result["speed"]:
        print(f"| {r['block_ms']} ms | {r['latency_ms']:.1f} ms | {r['mean_ms']:.2f} ms | {r['p95_ms']:.2f} ms | "
              f"{r['max_ms']:.2f} ms | {100 * r['real_time_share']:.0f}% |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
