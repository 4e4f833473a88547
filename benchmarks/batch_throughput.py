"""Batch throughput and long-file memory of `vc convert` (not a test: it prints figures).

    python benchmarks/batch_throughput.py --data ../shared/data/dev --clips 100 --long-minutes 10 60

Prints audio-seconds converted per second with --jobs 1 and --jobs 2 on `--clips` dev clips, the real-time factor,
and the peak resident memory of `vc convert` on generated files of each `--long-minutes` length (dev speech looped).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def run_cli(args: list[str]) -> tuple[float, float]:
    """Run `python -m vc ...`; return (wall seconds, peak RSS in MB of that process)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "vc", *args], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"vc {' '.join(args)} failed")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "dev"))
    p.add_argument("--clips", type=int, default=100)
    p.add_argument("--jobs", type=int, nargs="*", default=[1, 2])
    p.add_argument("--long-minutes", type=float, nargs="*", default=[10, 60])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args()

    data = Path(args.data)
    with (data / "utterances.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    rows = rows[:: max(1, len(rows) // args.clips)][: args.clips]
    target = str(data / rows[-1]["path"])
    ckpt = ["--checkpoint", args.checkpoint] if args.checkpoint else []
    results: dict[str, float] = {"clips": len(rows), "audio_s": sum(float(r["dur_s"]) for r in rows)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = tmp / "in"
        inputs.mkdir()
        for r in rows:  # links, so that the inputs form one folder
            (inputs / r["path"].replace("/", "_")).symlink_to((data / r["path"]).resolve())
        for jobs in args.jobs:
            wall, _ = run_cli(["convert", str(inputs), "-t", target, "-o", str(tmp / f"out{jobs}"), "-j", str(jobs),
                               "-q", *ckpt])
            results[f"jobs{jobs}_audio_s_per_s"] = results["audio_s"] / wall
            results[f"jobs{jobs}_rtf"] = wall / results["audio_s"]
            print(f"--jobs {jobs}: {results['audio_s']:.0f} s of audio in {wall:.1f} s: "
                  f"{results[f'jobs{jobs}_audio_s_per_s']:.2f} audio-s/s (RTF {results[f'jobs{jobs}_rtf']:.3f})",
                  flush=True)
        speech = np.concatenate([sf.read(data / r["path"], dtype="float32")[0] for r in rows[:40]])
        for minutes in args.long_minutes:
            n = int(minutes * 60 * 16000)
            long = tmp / f"long{minutes:g}.wav"
            with sf.SoundFile(long, "w", 16000, 1, subtype="PCM_16") as f:
                for start in range(0, n, len(speech)):
                    f.write(speech[: min(len(speech), n - start)])
            wall, rss = run_cli(["convert", str(long), "-t", target, "-o", str(tmp / "long-out.wav"), *ckpt])
            results[f"long{minutes:g}min_peak_rss_mb"] = rss
            results[f"long{minutes:g}min_rtf"] = wall / (minutes * 60)
            print(f"{minutes:g}-minute file: peak RSS {rss:.0f} MB, RTF {wall / (minutes * 60):.3f}", flush=True)
            long.unlink()
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
