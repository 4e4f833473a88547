"""Batch conversion: many inputs into one target voice, resumable, shardable, with a report row per input."""
from __future__ import annotations

import csv
import errno
import glob
import hashlib
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Iterator, Sequence

from .config import AUDIO_EXTENSIONS
from .errors import VCError

REPORT_FIELDS = ["input", "status", "output", "duration_s", "seconds", "error"]


@dataclass(frozen=True)
class Job:
    source: Path
    output: Path
    rel: str  # the input's path relative to the folder its output tree mirrors; sharding hashes it


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def find_inputs(specs: Sequence[str]) -> Iterator[tuple[Path, Path]]:
    """(file, base) for each input: files as given, folders searched recursively for audio, glob patterns expanded.

    `base` is the folder whose tree the output mirrors.
    """
    for spec in specs:
        path = Path(spec)
        if glob.has_magic(spec):
            parts = path.parts
            fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
            base = Path(*parts[:fixed]) if fixed else Path(".")
            for f in sorted(glob.glob(spec, recursive=True)):
                if Path(f).is_file() and Path(f).suffix.lower() in AUDIO_EXTENSIONS:
                    yield Path(f), base
        elif path.is_dir():
            for f in _audio_files(path):
                yield f, path
        else:
            yield path, path.parent  # a missing or unreadable file is reported when its turn comes


def plan(specs: Sequence[str], out_dir: str | Path, fmt: str = "wav") -> list[Job]:
    """Map inputs to outputs under `out_dir`, mirroring their folder trees; no output can land outside `out_dir`."""
    out_dir = Path(out_dir)
    root = out_dir.resolve()
    jobs, seen_inputs, taken = [], set(), set()
    for source, base in find_inputs(specs):
        key = os.path.abspath(source)
        if key in seen_inputs:
            continue
        seen_inputs.add(key)
        try:
            rel = Path(os.path.relpath(os.path.abspath(source), os.path.abspath(base)))
        except ValueError:  # another drive (Windows)
            rel = Path(source.name)
        # Only plain names survive: no '..', no root, no drive, whatever the input's name.
        parts = [p for p in rel.parts if p not in ("", ".", "..", os.sep) and not Path(p).anchor]
        rel = Path(*parts) if parts else Path(source.name or "audio")
        out = (out_dir / rel).with_suffix(f".{fmt}")
        n = 1
        while str(out) in taken:  # a.wav and a.flac in one folder: a.wav and a.flac.wav
            out = out_dir / rel.parent / f"{rel.name}{'' if n == 1 else f'-{n}'}.{fmt}"
            n += 1
        if not out.resolve().is_relative_to(root):
            raise VCError(f"{source}: output path would escape {out_dir}")
        taken.add(str(out))
        jobs.append(Job(source, out, rel.as_posix()))
    return jobs


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (1-based) -> (I, N)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise VCError(f"--shard must look like I/N (e.g. 2/8), got '{text}'") from None
    if not 1 <= i <= n:
        raise VCError(f"--shard {text}: I must be between 1 and N")
    return i, n


def shard(jobs: list[Job], index: int, count: int) -> list[Job]:
    """The jobs of shard `index` of `count` (1-based): a stable hash of each input's relative path decides, so
    that N machines given the same inputs split them exactly, whatever order they list them in."""
    def owner(job: Job) -> int:
        return int(hashlib.sha1(job.rel.encode()).hexdigest(), 16) % count + 1
    return [j for j in jobs if owner(j) == index]


def target_clips(specs: Sequence[str]) -> list[Path]:
    """Target references: files, or folders of one speaker's clips."""
    clips: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = _audio_files(path)
            if not found:
                raise VCError(f"{path}: target folder holds no audio files")
            clips += found
        else:
            clips.append(path)
    return clips


def check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".vc-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise VCError(f"{out_dir}: output folder is not writable ({e.strerror or e})") from None


# --- workers: one model per process, loaded once ------------------------------------------------------------------
_worker: dict = {}


def _init_worker(checkpoint: str | None, vocoder: str | None, device: str, threads: int, voice, options: dict
                 ) -> None:
    import torch

    from .api import load_model

    torch.set_num_threads(threads)
    _worker["model"] = load_model(checkpoint, vocoder=vocoder, device=device)
    _worker.update(voice=voice, options=options)


def _convert_one(source: str, output: str, sample_rate: int | None) -> dict:
    start = time.perf_counter()
    row = {"input": source, "output": output, "duration_s": "", "seconds": "", "error": ""}
    try:
        seconds = _worker["model"].convert_file(source, output, _worker["voice"], sample_rate=sample_rate,
                                                **_worker["options"])
        row.update(status="converted", duration_s=round(seconds, 3))
    except VCError as e:
        row.update(status="failed", error=str(e))
    except OSError as e:
        row.update(status="failed", error=f"{output}: {e.strerror or e}", errno=e.errno)
    except Exception as e:  # a bug must not stop the batch; the report keeps its trace
        row.update(status="failed", error=f"{source}: {type(e).__name__}: {e}")
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row


@dataclass
class Summary:
    converted: int = 0
    skipped: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    report: Path | None = None
    stopped: str = ""  # why the batch stopped early (full disk, unwritable output), else empty

    def line(self) -> str:
        speed = self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0
        text = (f"{self.converted} converted, {self.skipped} skipped (already done), {self.failed} failed; "
                f"{self.audio_seconds / 3600:.3f} h of audio in {self.wall_seconds:.1f} s ({speed:.1f}x real time)")
        return text + (f"; report: {self.report}" if self.report else "")


def run(jobs: list[Job], targets: Sequence[str], out_dir: str | Path, *, checkpoint: str | None = None,
        vocoder: str | None = None, device: str = "cpu", workers: int = 1, sample_rate: int | None = None,
        overwrite: bool = False, dry_run: bool = False, report: str | Path | None = None,
        progress: bool = True, pitch_shift: float = 0.0, match_pitch: bool = True,
        timbre_match: float | None = None) -> Summary:
    """Convert `jobs` into the voice of `targets`. Existing outputs are skipped unless `overwrite`; every input gets
    a report row. A bad input fails alone; an unusable target, a full disk or an unwritable output stops the run.
    `pitch_shift`, `match_pitch` and `timbre_match` (None: the default) are those of `VoiceConverter.convert`."""
    from tqdm import tqdm

    from .api import load_model

    summary = Summary(report=Path(report) if report else None)
    model = load_model(checkpoint, vocoder=vocoder, device=device)
    voice = model.embed(target_clips(targets))  # an unusable target stops the run before any work
    options = {"pitch_shift": pitch_shift, "match_pitch": match_pitch}
    if timbre_match is not None:
        options["timbre_match"] = timbre_match
    done = {j for j in jobs if not overwrite and j.output.exists()}  # outputs appear only when complete
    todo = [j for j in jobs if j not in done]
    skipped = [j for j in jobs if j in done]
    summary.skipped = len(skipped)
    if not dry_run:
        check_writable(Path(out_dir))
        if summary.report:
            check_writable(summary.report.parent)

    rows_file = summary.report.open("w", newline="") if summary.report else None
    writer = csv.DictWriter(rows_file, REPORT_FIELDS, extrasaction="ignore") if rows_file else None
    if writer:
        writer.writeheader()
        for j in skipped:
            writer.writerow({"input": str(j.source), "status": "skipped", "output": str(j.output)})
    started = time.perf_counter()
    bar = tqdm(total=len(todo), unit="file", desc="convert", disable=not progress or dry_run, dynamic_ncols=True)

    def record(row: dict) -> None:
        if row["status"] == "converted":
            summary.converted += 1
            summary.audio_seconds += float(row["duration_s"])
        elif row["status"] == "failed":
            summary.failed += 1
            bar.write(f"failed: {row['error']}")
            if row.get("errno") in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS) and not summary.stopped:
                summary.stopped = row["error"]
        if writer:
            writer.writerow(row)
            rows_file.flush()
        bar.update(1)
        bar.set_postfix(audio_h=f"{summary.audio_seconds / 3600:.2f}", failed=summary.failed)

    try:
        if dry_run:
            for j in todo:
                print(f"{j.source} -> {j.output}")
                record({"input": str(j.source), "status": "dry-run", "output": str(j.output)})
        elif workers <= 1:
            _worker.update(model=model, voice=voice, options=options)
            for j in todo:
                record(_convert_one(str(j.source), str(j.output), sample_rate))
                if summary.stopped:
                    break
        else:
            threads = max(1, (os.cpu_count() or 1) // workers)
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                     initargs=(checkpoint, vocoder, device, threads, voice, options)) as pool:
                queue = list(todo)
                running = set()
                while queue or running:
                    while queue and len(running) < 2 * workers and not summary.stopped:
                        j = queue.pop(0)
                        running.add(pool.submit(_convert_one, str(j.source), str(j.output), sample_rate))
                    if not running:
                        break
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        record(future.result())
    finally:
        bar.close()
        if rows_file:
            rows_file.close()
        summary.wall_seconds = time.perf_counter() - started
    return summary
