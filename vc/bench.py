"""`vc bench`: how fast a conversion is, end to end, and where the time goes.

    vc bench [--input SRC --target TGT] [--threads 1 2] [--json bench.json]

By default the source is 30 s of one `dev/` speaker (utterances joined and written to a temporary FLAC, so that
reading is timed too) and the target another speaker's clip; without `../shared/data/dev`, synthetic voiced audio
stands in (and the output says so). Each (vocoder, thread count) runs in a fresh process: a warm-up conversion, then
`--runs` timed `convert_file` calls (read, features, encoders, decoder, vocoder, write; the median is reported), one
staged pass for each stage's share, and the process's peak resident memory. The cold start is the wall time of a
fresh `python -c "import vc; vc.load_model()"` (median of 3).
"""
from __future__ import annotations

import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev"
SOURCE_SPEAKER, TARGET_SPEAKER = "460", "SF1"  # a male LibriSpeech reader and a female VCC 2016 speaker
STAGES = ("read", "target embedding", "F0", "mel", "content encoder", "decoder", "vocoder", "write")


def machine() -> dict:
    """The CPU, its core count, torch and whether bf16 is used."""
    import torch

    from .runtime import fast_bf16

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "isa": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__, "python": platform.python_version(), "bf16": fast_bf16(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def make_clips(folder: Path, seconds: float = 30.0, data: Path = DEV) -> tuple[Path, Path, str]:
    """Write the default source (`seconds` of one dev speaker) and target clips into `folder`; say what they are."""
    import soundfile as sf

    if (data / "utterances.tsv").is_file():
        with (data / "utterances.tsv").open() as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        parts, total, sr = [], 0, 16000
        for r in (r for r in rows if r["speaker"] == SOURCE_SPEAKER):
            wav, sr = sf.read(data / r["path"], dtype="float32")
            parts.append(wav)
            total += len(wav)
            if total >= seconds * sr:
                break
        target = data / next(r["path"] for r in rows if r["speaker"] == TARGET_SPEAKER)
        source = folder / "source.flac"
        sf.write(source, np.concatenate(parts)[: int(seconds * sr)], sr)
        return source, target, f"{seconds:g} s of dev speaker {SOURCE_SPEAKER} -> {target.relative_to(data)}"
    sr = 16000
    rng = np.random.default_rng(0)
    for name, f0, length in (("source", 120.0, seconds), ("target", 210.0, 4.0)):
        t = np.arange(int(length * sr)) / sr
        phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t))) / sr
        voiced = sum(np.sin(k * phase) / k for k in range(1, 25))
        envelope = np.sin(2 * np.pi * 2.5 * t) ** 2  # syllables
        sf.write(folder / f"{name}.flac", 0.1 * voiced * envelope + 0.003 * rng.standard_normal(len(t)), sr)
    return folder / "source.flac", folder / "target.flac", f"SYNTHETIC audio ({data} not found): {seconds:g} s"


class StageTimer:
    """Wall time per named stage; the networks are timed by forward hooks inside the real `encode` and `decode`."""

    def __init__(self):
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start

    def hook(self, module, name: str) -> list:
        starts: list[float] = []
        pre = module.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter()))
        post = module.register_forward_hook(lambda *_: self.times.__setitem__(
            name, self.times.get(name, 0.0) + time.perf_counter() - starts.pop()))
        return [pre, post]


def staged_convert(model, source: Path, target: Path, output: Path) -> dict[str, float]:
    """`convert_file` of a short file, stage by stage through the public stage methods; seconds per stage."""
    from .audio import save_wav

    timer = StageTimer()
    handles = timer.hook(model.net.content_encoder, "content encoder") + timer.hook(model.net.decoder, "decoder")
    try:
        with timer("target embedding"):
            voice = model.embed(target)
        with timer("read"):
            wav = model.load(source, trim=False)
        with timer("F0"):
            p = model.source_pitch(wav, voice)
        with timer("mel"):  # the nets are inside: subtracted below
            mel = model.decode(model.encode(wav), voice, p)
        with timer("vocoder"):
            out = model.vocode(mel, len(wav), p)
        with timer("write"):
            save_wav(output, model.finish(out), model.sample_rate)
    finally:
        for h in handles:
            h.remove()
    timer.times["mel"] -= timer.times["content encoder"] + timer.times["decoder"]
    return {k: timer.times[k] for k in STAGES}


def streaming_figures(model, source: Path, target: Path) -> dict | None:
    """Latency and compute per block of `vc.stream` (the causal `checkpoints/stream.pt`) on the same source, with
    10-, 25- and 50-ms blocks (rounded to whole hops), on one torch thread as `vc live` runs it. None for Griffin-Lim
    (the stream needs the causal neural vocoder) or where the streaming checkpoint is missing."""
    from .api import load_model
    from .registry import shipped_path
    from .stream import one_thread

    if model.vocoder_name == "griffin-lim" or not shipped_path("stream").is_file():
        return None
    streamer = load_model("stream")
    wav = streamer.load(source, trim=False)
    out = {}
    for block_ms in (10, 25, 50):
        stream = streamer.stream(target, block_seconds=block_ms / 1000)
        start = time.perf_counter()
        with one_thread():
            stream.run(wav)
        rtf = (time.perf_counter() - start) * streamer.sample_rate / len(wav)
        out[f"{1e3 * stream.block_size / streamer.sample_rate:g}"] = {"latency_ms": 1e3 * stream.latency, "rtf": rtf,
                                                                     **stream.stats.summary()}
    return out


def worker(spec: dict) -> dict:
    """One measurement in this (fresh) process: `spec` names the checkpoint, vocoder, threads, clips and runs."""
    import torch

    torch.set_num_threads(spec["threads"])
    from .api import load_model
    from .audio import audio_seconds

    model = load_model(spec["checkpoint"], vocoder=spec["vocoder"])
    source, target, out = Path(spec["source"]), Path(spec["target"]), Path(spec["output"])
    seconds = audio_seconds(source)
    start = time.perf_counter()
    model.convert_file(source, out, target)
    first = time.perf_counter() - start
    walls = []
    for _ in range(spec["runs"]):
        start = time.perf_counter()
        model.convert_file(source, out, target)
        walls.append(time.perf_counter() - start)
    passes = [staged_convert(model, source, target, out) for _ in range(spec["runs"])]
    stages = {k: statistics.median(p[k] for p in passes) for k in STAGES}
    result = {"vocoder": model.vocoder_name, "threads": spec["threads"], "audio_s": seconds,
              "first_conversion_s": first, "wall_s": walls, "rtf": statistics.median(walls) / seconds,
              "stages_s": stages, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    streaming = streaming_figures(model, source, target)
    if streaming is not None:
        result["streaming"] = streaming
    return result


def _run_worker(spec: dict, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-m", "vc.bench", json.dumps(spec)], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"bench worker failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cold_start(checkpoint: str | None, repeats: int = 3) -> list[float]:
    """Wall seconds of fresh processes that import vc and load the model."""
    code = f"import vc; vc.load_model({checkpoint!r})"
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return times


def bench(source: Path | None = None, target: Path | None = None, *, checkpoint: str | None = None,
          threads: tuple[int, ...] = (1, 2), vocoders: tuple[str, ...] = ("vocos", "griffin-lim"), runs: int = 3,
          seconds: float = 30.0, cold_starts: int = 3, progress: bool = True) -> dict:
    """All the figures of `vc bench` as a dict (see the module docstring)."""
    result: dict = {"machine": machine(), "runs": runs}
    with tempfile.TemporaryDirectory(prefix="vc-bench-") as tmp:
        tmp = Path(tmp)
        if source is None or target is None:
            default_source, default_target, clip = make_clips(tmp, seconds)
            source, target = source or default_source, target or default_target
        else:
            clip = f"{source} -> {target}"
        result["clip"] = clip
        result["cold_start_s"] = cold_start(checkpoint, cold_starts)
        result["rows"] = []
        for vocoder in vocoders:
            for n in threads:
                spec = {"checkpoint": checkpoint, "vocoder": vocoder, "threads": n, "source": str(source),
                        "target": str(target), "output": str(tmp / "out.wav"), "runs": runs}
                row = _run_worker(spec, n)
                result["rows"].append(row)
                if progress:
                    print(f"{vocoder}, {n} thread(s): RTF {row['rtf']:.4f}", file=sys.stderr, flush=True)
    result["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def format_table(result: dict) -> str:
    """The figures as markdown: one row per (vocoder, threads), stage shares as percentages."""
    m = result["machine"]
    cold = result["cold_start_s"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores ({m['isa']}), torch {m['torch']}, bf16 "
             f"{'on' if m['bf16'] else 'off'}; load average {m['load_average']} before, "
             f"{m.get('load_average_after')} after",
             f"clip: {result['clip']}",
             f"cold start (import vc + load_model, fresh process): {statistics.median(cold):.2f} s median of "
             f"{len(cold)} ({', '.join(f'{t:.2f}' for t in cold)})", "",
             "| vocoder | threads | RTF (median) | RTF (best) | x real time | first conversion (s) | peak RSS (MB) | "
             + " | ".join(STAGES) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(STAGES)]
    for r in result["rows"]:
        total = sum(r["stages_s"].values())
        shares = " | ".join(f"{100 * r['stages_s'][s] / total:.0f} %" for s in STAGES)
        best = min(r["wall_s"]) / r["audio_s"]
        lines.append(f"| {r['vocoder']} | {r['threads']} | {r['rtf']:.4f} | {best:.4f} | {1 / r['rtf']:.0f} | "
                     f"{r['first_conversion_s']:.2f} | {r['peak_rss_mb']:.0f} | {shares} |")
    streaming = [r for r in result["rows"] if "streaming" in r]
    lines += ["", "streaming (`vc stream`, checkpoints/stream.pt; Griffin-Lim cannot stream): "
              + ("" if streaming else "not measured (only Griffin-Lim rows, or no checkpoints/stream.pt)")]
    if streaming:
        lines += ["", "| threads | block | latency | compute per block: mean | p95 | p99 | p99.9 | max | blocks | "
                  "share of the block | RTF |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in streaming:
            for block, f in r["streaming"].items():
                tail = " | ".join(f"{f[k]:.2f} ms" if k in f else "-" for k in ("p99_ms", "p999_ms"))
                lines.append(f"| {r['threads']} | {block} ms | {f['latency_ms']:.1f} ms | {f['mean_ms']:.2f} ms | "
                             f"{f['p95_ms']:.2f} ms | {tail} | {f['max_ms']:.2f} ms | {f.get('blocks', '-')} | "
                             f"{100 * f['real_time_share']:.0f} % | {f['rtf']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":  # the worker process of `bench`
    print(json.dumps(worker(json.loads(sys.argv[1]))))
