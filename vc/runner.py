"""Batch running: convert planned jobs into one target voice, resumable and shardable, with a report row per input
written as soon as the input is done.

A bad input fails alone; an unusable target stops the run before any work; a full disk, a read-only or unwritable
output stops it at once (`files.FATAL_ERRNOS`). Worker processes die with the batch (`_die_with`).
"""
from __future__ import annotations

import csv
import ctypes
import io
import os
import signal
import sys
import threading
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

from .batch import Job, check_paths, target_clips
from .errors import VCError, VCWarning
from .files import FATAL_ERRNOS, describe, remove_stale
from .manifest import Manifest, explain, key, mark, recipe
from .registry import resolve_checkpoint

REPORT_FIELDS = ["input", "status", "output", "duration_s", "seconds", "error", "warnings", "input_check"]


@dataclass
class Summary:
    converted: int = 0
    skipped: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    report: Path | None = None
    stopped: str = ""  # why the batch stopped early (full disk, unwritable output), else empty
    errors: list[str] = field(default_factory=list)  # of the inputs that failed
    warnings: list[str] = field(default_factory=list)  # about the inputs converted

    def line(self) -> str:
        speed = self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0
        text = (f"{self.converted} converted, {self.skipped} skipped (already done), {self.failed} failed; "
                f"{self.audio_seconds / 3600:.3f} h of audio in {self.wall_seconds:.1f} s ({speed:.1f}x real time)")
        return text + (f"; report: {self.report}" if self.report else "")


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".vc-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise VCError(f"{folder}: output folder is not writable ({describe(e, '').lstrip(': ')})") from None


# --- workers: one model per process, loaded once ------------------------------------------------------------------
_worker: dict = {}


def _die_with(parent: int) -> None:
    """End this worker when the batch process `parent` ends, even by `kill -9`: the kernel sends SIGKILL on the
    parent's death (Linux), and a watcher thread checks the parent elsewhere (and covers a parent gone already)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="vc-parent-watch").start()


def _init_worker(parent: int, checkpoint: str | None, vocoder: str | None, device: str, threads: int, voice,
                 options: dict) -> None:
    _die_with(parent)
    import torch

    from .api import load_model

    torch.set_num_threads(threads)
    _worker["model"] = load_model(checkpoint, vocoder=vocoder, device=device)
    _worker.update(voice=voice, options=options)


def append_row(report: Path | None, row: dict) -> None:
    """Append one report row in one write, so that the rows of parallel workers do not interleave and a row is on
    disk as soon as its output is."""
    if report is None:
        return
    buf = io.StringIO()
    csv.DictWriter(buf, REPORT_FIELDS, extrasaction="ignore").writerow(row)
    fd = os.open(report, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, buf.getvalue().encode())
    finally:
        os.close(fd)


def _convert_one(job: Job, wanted: dict, manifest: Path, sample_rate: int | None, report: Path | None) -> dict:
    start = time.perf_counter()
    source, output = str(job.source), str(job.output)
    row = {"input": source, "output": output, "duration_s": "", "seconds": "", "error": ""}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", VCWarning)
        try:
            mark(manifest, job.output, wanted, "before")
            seconds = _worker["model"].convert_file(source, output, _worker["voice"], sample_rate=sample_rate,
                                                    **_worker["options"])
            mark(manifest, job.output, wanted, "after")
            row.update(status="converted", duration_s=round(seconds, 3))
            found = _worker["model"].last_checks.get("source")  # how unlike one person speaking (vc.input_check)
            row["input_check"] = f"{found.score:.3f}" if found is not None else ""
        except VCError as e:
            row.update(status="failed", error=str(e))
        except OSError as e:  # inputs are read through audio._open, which names them: an OSError is the output's
            row.update(status="failed", error=describe(e, e.filename or output), errno=e.errno)
        except Exception as e:  # a bug must not stop the batch; the report keeps its trace
            row.update(status="failed", error=f"{source}: {type(e).__name__}: {e}")
    row["warnings"] = "; ".join(str(w.message) for w in caught if issubclass(w.category, VCWarning))
    row["seconds"] = round(time.perf_counter() - start, 3)
    try:
        append_row(report, row)
    except OSError as e:
        row.setdefault("errno", e.errno)
        row.update(status="failed", error=describe(e, report))
    return row


def sort_jobs(jobs: Sequence[Job], manifest: Manifest, wanted: dict[Job, dict], overwrite: bool
              ) -> tuple[list[Job], list[Job]]:
    """(to convert, already done). An existing output made otherwise (other targets, model, options, source, or
    not by vc) is converted again only with `overwrite`; without it the run is refused before any work."""
    todo, done, clashes = [], [], []
    for j in jobs:
        state = manifest.state(j.output, wanted[j])
        if state == "done" and not overwrite:
            done.append(j)
        elif state in ("todo", "done") or overwrite:
            todo.append(j)
        else:
            clashes.append((j, state))
    if clashes:
        j, state = clashes[0]
        more = f" (and {len(clashes) - 1} more outputs)" if len(clashes) > 1 else ""
        raise VCError(f"{j.output}: exists, {explain(state)}{more}; add --overwrite to convert again, or choose "
                      "another --output")
    return todo, done


def run(jobs: list[Job], targets: Sequence[str], out_dir: str | Path, *, checkpoint: str | None = None,
        vocoder: str | None = None, device: str = "cpu", workers: int = 1, sample_rate: int | None = None,
        overwrite: bool = False, dry_run: bool = False, report: str | Path | None = None,
        progress: bool = True, echo: bool = True, pitch_shift: float = 0.0, match_pitch: bool = True,
        timbre_match: float | None = None, dereverb: bool = False) -> Summary:
    """Convert `jobs` (outputs under `out_dir`) into the voice of `targets`. Outputs already made from the same
    source, targets, model and options are skipped; every input gets a report row. `pitch_shift`, `match_pitch`,
    `timbre_match` (None: the default) and `dereverb` are those of `VoiceConverter.convert`. `echo`: print a line
    for each failure and warning as it comes (they are in the summary and the report too)."""
    from .api import load_model

    out_dir, report = Path(out_dir), Path(report) if report else None
    clips, model_path = target_clips(targets), resolve_checkpoint(checkpoint)
    check_paths(jobs, [("the target clip", c) for c in clips] + [("the checkpoint", model_path)],
                [("--report", report)] if report else [])
    options = {"pitch_shift": pitch_shift, "match_pitch": match_pitch}
    if timbre_match is not None:
        options["timbre_match"] = timbre_match
    if dereverb:  # only when asked: outputs made before the option existed keep their key
        options["dereverb"] = True
    shared = recipe(clips, model_path, {**options, "sample_rate": sample_rate, "vocoder": vocoder})
    wanted = {j: key(j.source, shared) for j in jobs}
    todo, done = sort_jobs(jobs, Manifest(out_dir), wanted, overwrite)
    model = load_model(checkpoint, vocoder=vocoder, device=device)
    voice = model.embed(clips)  # an unusable target stops the run before any work
    if not dry_run:
        for folder in {out_dir} | ({report.parent} if report else set()):
            check_writable(folder)
        for folder in {j.output.parent for j in todo} | ({report.parent} if report else set()):
            remove_stale(folder, recursive=False)  # where a killed earlier run left its temporary files
    summary = Summary(report=report, skipped=len(done))
    settings = dict(checkpoint=checkpoint, vocoder=vocoder, device=device, sample_rate=sample_rate)
    _execute(todo, done, summary, model, voice, options, wanted, out_dir, settings, workers, dry_run,
             progress, echo)
    return summary


def _execute(todo: list[Job], done: list[Job], summary: Summary, model, voice, options: dict, wanted: dict,
             out_dir: Path, settings: dict, workers: int, dry_run: bool, progress: bool, echo: bool) -> None:
    """Run the jobs in this process or in `workers` processes; write each report row as soon as it is known."""
    from tqdm import tqdm

    if summary.report:  # the header and the rows known now; each converting process appends its rows
        with summary.report.open("w", newline="") as f:
            writer = csv.DictWriter(f, REPORT_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows({"input": str(j.source), "status": "skipped", "output": str(j.output)} for j in done)
    started = time.perf_counter()
    bar = tqdm(total=len(todo), unit="file", desc="convert", disable=not progress or dry_run, dynamic_ncols=True)

    def record(row: dict) -> None:
        if row["status"] == "converted":
            summary.converted += 1
            summary.audio_seconds += float(row["duration_s"])
        elif row["status"] == "failed":
            summary.failed += 1
            summary.errors.append(row["error"])
            if row.get("errno") in FATAL_ERRNOS and not summary.stopped:
                summary.stopped = row["error"]
        for line in filter(None, row.get("warnings", "").split("; ")):
            summary.warnings.append(line)
            if echo:
                bar.write(f"warning: {line}", file=sys.stderr)
        if echo and row["status"] == "failed":
            bar.write(f"failed: {row['error']}", file=sys.stderr)
        if row["status"] == "dry-run":
            append_row(summary.report, row)
        bar.update(1)
        bar.set_postfix(audio_h=f"{summary.audio_seconds / 3600:.2f}", failed=summary.failed)

    sample_rate = settings["sample_rate"]
    try:
        if dry_run:
            for j in todo:
                print(f"{j.source} -> {j.output}" + (" (would replace it)" if j.output.exists() else ""))
                record({"input": str(j.source), "status": "dry-run", "output": str(j.output)})
        elif workers <= 1 or len(todo) <= 1:
            _worker.update(model=model, voice=voice, options=options)
            for j in todo:
                record(_convert_one(j, wanted[j], out_dir, sample_rate, summary.report))
                if summary.stopped:
                    break
        else:
            _pool(todo, record, summary, voice, options, wanted, out_dir, settings, workers)
    finally:
        bar.close()
        summary.wall_seconds = time.perf_counter() - started


def _pool(todo: list[Job], record, summary: Summary, voice, options: dict, wanted: dict, out_dir: Path,
          settings: dict, workers: int) -> None:
    threads = max(1, (os.cpu_count() or 1) // workers)
    initargs = (os.getpid(), settings["checkpoint"], settings["vocoder"], settings["device"], threads, voice, options)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=initargs) as pool:
        queue, running = list(todo), set()
        while queue or running:
            while queue and len(running) < 2 * workers and not summary.stopped:
                j = queue.pop(0)
                running.add(pool.submit(_convert_one, j, wanted[j], out_dir, settings["sample_rate"], summary.report))
            if not running:
                break
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                record(future.result())
