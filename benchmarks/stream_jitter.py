"""The slow blocks of a stream (issue 15, item 3): compute per block over a long stream, with and without each shield.

    python benchmarks/stream_jitter.py --minutes 10 --json runs/stream-jitter.json

Dev speech (LibriSpeech clips of `../shared/data/dev`, joined, looped to `--minutes`) streams through the shipped
`stream` model into the voice of a VCC 2016 speaker, in 25-ms blocks. Every variant below converts the whole
`--minutes`, with a stream of its own; the variants take turns segment by segment (`--segment` seconds each), so that
the machine's load falls on all of them alike. Each block is timed with `time.perf_counter_ns`; the figures are the
mean, p50, p95, p99, p99.9 and max compute per block, the blocks over half a block, the full garbage collections that
ran inside a block, and how many of the slow blocks were preempted (involuntary context switches of the thread, from
`getrusage`). The load average is printed before and after.

Variants, all on one torch thread: `none` (the stream as it was: automatic collections of the whole heap), and:
- `gc`: what set-up made frozen out of the collector's reach (`gc.freeze`), no automatic collection during a block;
- `all`: that, and `torch.inference_mode` entered once around the segment;
- `all+rt`: and the thread at real-time priority (SCHED_FIFO, as `vc live` gives its audio callback where the OS
  allows it: `vc.live.realtime_priority`), so that other processes no longer preempt a block.
Then `--pool` seconds (default 10) of the same speech alternate between torch's default thread count (one per core)
and one thread, in turns of 5 s: on a busy 2-core machine the intra-op pool's second thread is the worst shield of all
to go without (blocks of hundreds of ms), so it is kept short.
`--churn N` keeps N small objects per block in a bounded history, as an application around the stream does (meters,
logs, a UI): what makes the collector's full collections come due in a real program.
"""
from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import resource
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import vc
from vc.live import realtime_priority

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev"
VARIANTS = ("none", "gc", "all", "all+rt")
SHIELDS = {"none": (), "gc": ("gc",), "all": ("gc", "inference"), "all+rt": ("gc", "inference", "rt")}


def dev_speech(minutes: float, rate: int = 16000) -> tuple[np.ndarray, str]:
    with (DEV / "utterances.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    parts = [sf.read(DEV / r["path"], dtype="float32")[0] for r in rows if r["corpus"].startswith("librispeech")]
    wav = np.concatenate(parts)
    n = int(minutes * 60 * rate)
    target = DEV / next(r["path"] for r in rows if r["speaker"] == "SF1")
    return np.resize(wav, n), str(target)  # looped where the dev clips are shorter


def figures(ms: np.ndarray, block_ms: float) -> dict:
    p50, p95, p99, p999 = np.percentile(ms, [50, 95, 99, 99.9])
    return {"blocks": len(ms), "mean_ms": float(ms.mean()), "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
            "p999_ms": p999, "max_ms": float(ms.max()), "over_half_block": int((ms > block_ms / 2).sum())}


def run_variants(streams: dict, wav: np.ndarray, size: int, per_segment: int, churn: int, paced: float = 0.0
                 ) -> tuple[dict, dict, dict]:
    """Stream `wav` through every variant's stream, in turns of `per_segment` blocks, each block as soon as the last is
    done or, with `paced` (a block's seconds), when it would have arrived from a device. Returns, per variant, each
    block's compute time (ms), whether its thread was preempted in it, and the full collections that ran inside a
    block (ms)."""
    n = len(wav) // size
    times = {v: np.zeros(n) for v in streams}
    preempted = {v: np.zeros(n, bool) for v in streams}
    full_gc = {v: [] for v in streams}
    history: deque = deque(maxlen=20000)
    current: list = []
    starts: dict = {}

    def on_gc(phase: str, info: dict) -> None:
        if info["generation"] == 2:
            if phase == "start":
                starts["t"] = time.perf_counter_ns()
            elif current:
                full_gc[current[0]].append((time.perf_counter_ns() - starts["t"]) / 1e6)

    gc.callbacks.append(on_gc)
    wall = time.perf_counter()
    for first in range(0, n, per_segment):
        for v, s in streams.items():
            shields = SHIELDS[v]
            if "gc" in shields:
                gc.freeze()
            else:
                gc.unfreeze()
            if "rt" in shields and not realtime_priority():
                sys.exit("all+rt: this process may not use real-time priority (CAP_SYS_NICE or RLIMIT_RTPRIO)")
            mode = torch.inference_mode() if "inference" in shields else torch.inference_mode(False)
            current[:] = [v]
            with mode:
                start = time.perf_counter()
                for i in range(first, min(first + per_segment, n)):
                    if paced:
                        time.sleep(max(0.0, start + (i - first + 1) * paced - time.perf_counter()))
                    block = wav[i * size:(i + 1) * size]
                    r0 = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw
                    t0 = time.perf_counter_ns()
                    s.process(block)
                    times[v][i] = (time.perf_counter_ns() - t0) / 1e6
                    preempted[v][i] = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw > r0
                    history.extend({"block": i, "ms": times[v][i]} for _ in range(churn))
            current.clear()
            if "rt" in shields:
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        if first // per_segment % 4 == 3:
            print(f"  {100 * (first + per_segment) / n:.0f} % ({time.perf_counter() - wall:.0f} s; load "
                  f"{os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
    gc.callbacks.remove(on_gc)
    return times, preempted, full_gc


def thread_pool(stream, wav: np.ndarray, blocks: int, default_threads: int) -> dict[int, list[float]]:
    """The thread pool, on a stream of its own: turns of 5 s at torch's default thread count and at one thread, over
    the first `blocks` blocks; each block's compute time (ms) per thread count."""
    size = stream.block_size
    pool = {default_threads: [], 1: []}
    turn = round(5 * stream.cfg.sample_rate / size)
    for first in range(0, min(len(wav) // size, blocks), turn):
        for threads in pool:
            torch.set_num_threads(threads)
            for i in range(first, min(first + turn, len(wav) // size)):
                t0 = time.perf_counter_ns()
                stream.process(wav[i * size:(i + 1) * size])
                pool[threads].append((time.perf_counter_ns() - t0) / 1e6)
    torch.set_num_threads(1)
    return pool


def report(result: dict, block_ms: float, times: dict, preempted: dict, full_gc: dict, pool: dict,
           default_threads: int) -> None:
    """Print the two tables and add their figures to `result`."""
    print(f"| variant | mean | p50 | p95 | p99 | p99.9 | max | blocks > {block_ms / 2:g} ms | of them preempted | "
          f"full collections in a block (ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for v in times:
        ms = times[v][1:]  # the first block pays for warm-up
        f = figures(ms, block_ms)
        slow = ms > block_ms / 2
        f.update(slow_preempted=int((preempted[v][1:] & slow).sum()), full_gc_ms=full_gc[v])
        result["variants"][v] = f
        gcs = ", ".join(f"{t:.0f}" for t in full_gc[v]) or "none"
        print(f"| {v} | {f['mean_ms']:.2f} | {f['p50_ms']:.2f} | {f['p95_ms']:.2f} | {f['p99_ms']:.2f} | "
              f"{f['p999_ms']:.2f} | {f['max_ms']:.2f} | {f['over_half_block']} | {f['slow_preempted']} | {gcs} |")
    if any(pool.values()):
        print(f"\nthread pool, {result['pool_s']:g} s of speech each, all shields on:\n")
        print("| torch threads | mean | p50 | p95 | p99 | p99.9 | max | blocks > half a block |")
        print("|---|---|---|---|---|---|---|---|")
    for threads, ms in pool.items():
        if ms:
            f = figures(np.asarray(ms[1:] if threads == default_threads else ms), block_ms)
            result[f"threads_{threads}"] = f
            print(f"| {threads} | {f['mean_ms']:.2f} | {f['p50_ms']:.2f} | {f['p95_ms']:.2f} | {f['p99_ms']:.2f} | "
                  f"{f['p999_ms']:.2f} | {f['max_ms']:.2f} | {f['over_half_block']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="audio streamed by each variant")
    ap.add_argument("--segment", type=float, default=30.0, help="seconds each variant streams before the next one")
    ap.add_argument("--block-ms", type=float, default=25.0)
    ap.add_argument("--churn", type=int, default=0, help="objects the application keeps per block (see above)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--pool", type=float, default=10.0, help="seconds of speech for the thread-count comparison")
    ap.add_argument("--paced", action="store_true", help="each block when a device would deliver it (real time), "
                    "not as soon as the last is done")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    default_threads = torch.get_num_threads()
    torch.set_num_interop_threads(1)  # the stream never uses the inter-op pool: one thread fewer, for all variants
    torch.set_num_threads(1)
    wav, target = dev_speech(args.minutes)
    model = vc.load_model("stream")
    streams = {v: model.stream(target, block_seconds=args.block_ms / 1000) for v in args.variants}
    gc.unfreeze()  # each `Stream` froze the heap: the variants without the gc shield undo it
    for v, s in streams.items():
        s.pause_gc = "gc" in SHIELDS[v]
    size = streams[args.variants[0]].block_size
    block_ms = 1e3 * size / model.sample_rate
    per_segment = max(1, round(args.segment * model.sample_rate / size))
    load_before = os.getloadavg()
    print(f"{args.minutes:g} min of dev speech per variant, {block_ms:g}-ms blocks, turns of {args.segment:g} s; "
          f"load average {load_before}", file=sys.stderr, flush=True)
    times, preempted, full_gc = run_variants(streams, wav, size, per_segment, args.churn,
                                             size / model.sample_rate if args.paced else 0.0)
    pool = thread_pool(model.stream(target, block_seconds=args.block_ms / 1000), wav,
                       round(args.pool * model.sample_rate / size), default_threads)
    load_after = os.getloadavg()
    result = {"minutes": args.minutes, "block_ms": block_ms, "churn": args.churn, "segment_s": args.segment,
              "paced": args.paced,
              "pool_s": args.pool, "default_threads": default_threads, "load_average_before": load_before,
              "load_average_after": load_after, "variants": {}}
    print(f"\nload average {load_before} before, {load_after} after; {args.minutes:g} min per variant, churn "
          f"{args.churn}{', paced' if args.paced else ''}\n")
    report(result, block_ms, times, preempted, full_gc, pool, default_threads)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
