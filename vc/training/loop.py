"""The one training loop of `vc train`, `vc adapt`, `vc train-vocoder` and `vc train-whisper`: it owns the run's state
(seed, resume from the last checkpoint, periodic atomic saves, stops, logging, the closing message) and a trainer
supplies its step.

A trainer is any object with
    step(step: int) -> dict[str, float]   one optimizer step, the step's index counted from 0, and its scalars
    state() -> dict                        everything a resume needs (the loop adds "step")
    validate(step: int, monitor) -> dict   scalars measured on held-out data (audio may go to `monitor`)
    progress: tuple[str, ...]              names of the step's scalars shown on the progress bar

    run = Run(out, d)
    state = run.resume()                  # None, or the last checkpoint; says which on one line
    trainer = ...                         # built from `state` when there is one
    outcome = run.loop(trainer, Schedule(steps, ...), start=state["step"] if state else 0, monitor=run.monitor(...))
    run.finish(outcome, export(...))      # says whether the run completed or stopped short

Ctrl-C, SIGTERM, a time budget or an `until` step end the loop at a step boundary with a checkpoint, so that running
the same command again resumes exactly. A signal raises KeyboardInterrupt after the checkpoint (the CLI exits 130).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from ..checkpoint import load_checkpoint, save_checkpoint
from ..files import atomic_path, remove_stale
from .distributed import Dist, StopRequest
from .monitor import Monitor


class Trainer(Protocol):
    progress: tuple[str, ...]

    def step(self, step: int) -> dict[str, float]: ...

    def state(self) -> dict[str, Any]: ...

    def validate(self, step: int, monitor: Monitor) -> dict[str, float]: ...


def warmup_cosine(step: int, peak: float, warmup: int, total: int, floor: float) -> float:
    """Linear warm-up to `peak`, then a cosine down to `floor * peak` at step `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def seed(value: int, threads: int = 0) -> None:
    """Seed torch (inside the run, never at import) and set its thread count (0 keeps torch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(value)


@dataclass
class Schedule:
    """When the loop logs, validates, saves and stops."""
    steps: int  # the run's length: it completes at this step
    log_every: int
    val_every: int  # 0: never
    checkpoint_minutes: float
    max_minutes: float | None = None  # time budget, counted from `started` (default: the loop's start)
    started: float | None = None
    until: int | None = None  # stop at this step, as a kill would (for tests and for splitting a run)


@dataclass
class Outcome:
    step: int  # where the run stands
    steps: int
    reason: str = ""  # why it stopped before `steps`: "time budget" or "until step N"; empty when complete

    @property
    def complete(self) -> bool:
        return self.step >= self.steps


def trim_log(path: Path, step: int) -> None:
    """Drop the rows of a jsonl log written after `step`: a restart from `step` writes them again."""
    if not path.is_file():
        return
    rows = path.read_text().splitlines(keepends=True)
    kept = [r for r in rows if _row_step(r) <= step]
    if len(kept) != len(rows):
        with atomic_path(path) as tmp:
            tmp.write_text("".join(kept))


def _row_step(row: str) -> float:
    try:
        return json.loads(row)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf  # a row cut short by a kill


class Run:
    """A run folder: its last checkpoint (`checkpoint`), its log (`log`) and TensorBoard folder (`tb`). Under
    torchrun only rank 0 writes; every rank reads."""

    def __init__(self, folder: str | Path, d: Dist | None = None, checkpoint: str = "last.pt",
                 log: str = "log.jsonl", tb: str = "tb"):
        self.folder, self.d = Path(folder), d or Dist()
        self.last, self.log, self.tb = self.folder / checkpoint, self.folder / log, tb

    def resume(self) -> dict[str, Any] | None:
        """The last checkpoint, or None; says which on one line, and trims the log to the step resumed from."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.d.main:
            self._remove_temporaries()
        self.d.barrier()  # no rank writes before the leftovers are gone
        state = load_checkpoint(self.last) if self.last.is_file() else None
        step = state["step"] if state is not None else 0
        if self.d.main:
            if state is not None:
                print(f"resuming {self.last} at step {step}")
            elif self.log.is_file() and self.log.stat().st_size:
                print(f"no checkpoint yet in {self.folder}: starting at step 0")
            trim_log(self.log, step)
        return state

    def _remove_temporaries(self) -> None:
        """Temporary files of writes that a kill (-9) cut short (`vc.files.remove_stale`: their writer is gone)."""
        remove_stale(self.folder, recursive=False)

    def monitor(self, total: int, initial: int, desc: str = "train") -> Monitor:
        return Monitor(self.folder, total, initial, desc=desc, enabled=self.d.main, log=self.log.name, tb=self.tb)

    def save(self, trainer: Trainer, step: int) -> None:
        if self.d.main:
            save_checkpoint(self.last, {**trainer.state(), "step": step})

    def loop(self, trainer: Trainer, schedule: Schedule, start: int, monitor: Monitor) -> Outcome:
        """Steps from `start` until the schedule ends or a stop; checkpoints at the end. Raises KeyboardInterrupt
        after the checkpoint when a signal stopped it."""
        try:
            step, reason, interrupted = self._steps(trainer, schedule, start, monitor)
            self.save(trainer, step)
            self.d.barrier()  # nobody leaves (or reads the checkpoint) before rank 0 has written it
            if interrupted:
                monitor.close()  # the bar ends before the message
                if self.d.main:
                    print(f"interrupted at step {step}; saved {self.last}; run the same command again to resume")
                raise KeyboardInterrupt
        finally:
            monitor.close()
        return Outcome(step, schedule.steps, reason)

    def _steps(self, trainer: Trainer, s: Schedule, step: int, monitor: Monitor) -> tuple[int, str, bool]:
        d, last_save = self.d, time.time()
        with StopRequest(s.max_minutes, s.started) as stop:
            while step < s.steps:
                values = trainer.step(step)
                step += 1
                monitor.update(**{k: values[k] for k in trainer.progress if k in values})
                stopping = stop.due(d) or step == s.until  # a collective: every rank asks at every step
                if step % s.log_every == 0 or step == s.steps:
                    monitor.scalars(step, values)
                # validated at the end of a run, also one cut short by its budget (not by a signal: that is urgent)
                if d.main and s.val_every and (step % s.val_every == 0 or step == s.steps
                                               or (stopping and not stop.signalled)):
                    self._validate(trainer, step, monitor)
                if d.main and time.time() - last_save > s.checkpoint_minutes * 60:
                    self.save(trainer, step)
                    last_save = time.time()
                if stopping:
                    break
            interrupted = d.any(stop.signalled)
            reason = "" if step >= s.steps or interrupted else (
                f"until step {s.until}" if step == s.until else "time budget")
        return step, reason, interrupted

    @staticmethod
    def _validate(trainer: Trainer, step: int, monitor: Monitor) -> None:
        measured = trainer.validate(step, monitor)
        monitor.scalars(step, measured)
        if measured:
            monitor.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in measured.items()))

    def finish(self, outcome: Outcome, exported: Path, elapsed: float | None = None) -> None:
        """One line: what was exported, and whether the run stopped short of its steps."""
        if not self.d.main:
            return
        took = f" ({elapsed / 60:.1f} min)" if elapsed is not None else ""
        if outcome.complete:
            print(f"step {outcome.step}{took}: exported {exported}")
        else:
            print(f"stopped at step {outcome.step} of {outcome.steps} ({outcome.reason}){took}; exported {exported} "
                  "from this step")
