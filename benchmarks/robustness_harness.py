"""What `benchmarks/robustness.py` runs its attacks with: a fresh folder per attempt with clips and a tiny model,
`vc.cli.main` in this process (or `python -m vc` in a child, to kill), the processes a run leaves behind, and the
judgement of an outcome (exit code, one error line that names the thing, nothing changed or left behind).
Only vc.cli.main and the checkpoint writer are used, so that the attacks run against older versions too.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
SR = 16000
MAY_CHANGE = {"vc-report.csv", ".vc-manifest.jsonl"}  # rewritten by every run, by design


def voice(f0: float, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A buzzy vowel-like tone with a syllable rhythm: enough to embed and convert."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 25) if k * f0 < SR / 2)
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t) ** 2) + 0.02 * rng.standard_normal(len(t))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def tiny_checkpoint(path: Path, nan: bool = False) -> Path:
    """A randomly initialised model of recipes/tiny.yaml, written as an inference checkpoint."""
    import torch

    from vc.checkpoint import export_inference
    from vc.config import load_recipe
    from vc.model import VoiceConverterNet

    torch.manual_seed(0)
    cfg = load_recipe(ROOT / "recipes" / "tiny.yaml")
    net = VoiceConverterNet(cfg.model, cfg.audio.n_mels)
    if nan:
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(float("nan"))
    return Path(export_inference(path, net, cfg, {"note": "random weights for the robustness attacks"}))


class Workspace:
    """One attempt's folder: a source and a target clip, the model, and what the attempt adds."""

    def __init__(self, folder: Path, checkpoint: Path):
        self.dir, self.ckpt = folder, checkpoint
        self.problems: list[str] = []  # found by the attempt itself (kill attempts)
        self.snapshot_taken: dict[Path, str] | None = None
        self.may_change: set[str] = set()
        self.result: tuple[int, str, str] | None = None  # of an attempt that ran vc in a child process itself
        self.wav("source.wav", voice(120, 1.2, 1))
        self.wav("target.wav", voice(220, 1.2, 2))

    def p(self, name: str) -> str:
        return str(self.dir / name)

    def wav(self, name: str, data: np.ndarray, sr: int = SR, **kw) -> str:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, data, sr, **kw)
        return str(path)

    def convert(self, *args: str, ckpt: str | None = None) -> list[str]:
        return ["convert", *args, "--checkpoint", ckpt or str(self.ckpt), "-q"]

    def one(self, source: str = "source.wav", target: str = "target.wav", out: str = "out.wav", *extra: str,
            ckpt: str | None = None) -> list[str]:
        return self.convert(self.p(source), "-t", self.p(target), "-o", self.p(out), *extra, ckpt=ckpt)

    def tree(self, n: int = 3, seconds: float = 1.0) -> str:
        for i in range(n):
            self.wav(f"in/sub/{i}.wav", voice(100 + 30 * i, seconds, i))
        return self.p("in")

    def snapshot(self) -> dict[Path, str]:
        return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in self.dir.rglob("*") if p.is_file()}


def run_vc(argv: list[str]) -> tuple[int | None, str, str]:
    """vc.cli.main in this process: (exit code, or None for an exception that escaped; stdout; stderr)."""
    from vc.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # what a user would see as a traceback
            traceback.print_exc()
            code = None
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def unprivileged():
    """Root ignores file permissions: run as nobody for the permission attacks."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


# --- processes ----------------------------------------------------------------------------------------------------
def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat from the state on (None once the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from the state on (the name may hold spaces)


def descendants(pid: int) -> set[tuple[int, str]]:
    """(pid, start time) of every process below `pid`."""
    table = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (s := proc_stat(int(d.name))):
            table[int(d.name)] = (int(s[1]), s[19])
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, start) in table.items():
            if ppid == parent and (child, start) not in found:
                found.add((child, start))
                todo.append(child)
    return found


def _running(proc: tuple[int, str]) -> bool:
    s = proc_stat(proc[0])
    return s is not None and s[19] == proc[1] and s[0] not in ("Z", "X")


def child_env() -> dict[str, str]:
    """The environment of a `python -m vc` that runs the vc this script imported (not one found from its cwd)."""
    import vc

    here = str(Path(vc.__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def kill_batch(ws: Workspace, argv: list[str], ready: Callable[[], bool]) -> None:
    """Start `vc argv`, wait for `ready()`, kill -9 it, and note the processes it leaves behind (then end them)."""
    ws.snapshot_taken = ws.snapshot()
    proc = subprocess.Popen([sys.executable, "-m", "vc", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=child_env(), cwd=ws.dir)
    deadline = time.monotonic() + 120
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    children = descendants(proc.pid)
    proc.kill()
    proc.wait()
    for _ in range(300):  # orphans that watch their parent notice within a second on an idle machine; under load
        # (a CI run beside two training jobs) a worker still importing torch took more than 6 s to be scheduled
        if not any(_running(c) for c in children):
            break
        time.sleep(0.1)
    left = [c for c in children if _running(c)]
    if left:
        ws.problems.append(f"{len(left)} stray processes")
        for pid, _ in left:  # our own children: end them so that they do not run on
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)



@dataclass
class Attempt:
    name: str
    make: Callable[[Workspace], list[str]]  # sets up files; returns the argv of `vc` to run
    code: int  # the documented exit code
    says: str = ""  # in the error line ({dir}: the attempt's folder)
    warns: str = ""  # in a warning line
    prefix: str = "error:"  # of the one line that says what went wrong ("failed:" for an input of a batch)



# --- running and judging ------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    name: str
    code: int | None
    message: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def judge(a: Attempt, ws: Workspace, before: dict[Path, str], code: int | None, err: str) -> list[str]:
    problems = list(ws.problems)
    if "Traceback" in err or code is None:
        problems.append("traceback")
    if code != a.code:
        problems.append(f"exit {code}, not {a.code}")
    errors = [line for line in err.splitlines() if line.startswith(a.prefix)]
    if a.code != 0:
        says = a.says.format(dir=ws.dir)
        if len(errors) != 1:
            problems.append(f"{len(errors)} '{a.prefix}' lines, not 1")
        elif says not in errors[0]:
            problems.append(f"the error does not say '{says}'")
    warns = a.warns.format(dir=ws.dir)
    if a.warns and not any(warns in line for line in err.splitlines() if line.startswith("warning:")):
        problems.append(f"no warning saying '{warns}'")
    changed = [p.name for p, h in before.items() if p.name not in MAY_CHANGE | ws.may_change
               and (not p.is_file() or hashlib.sha256(p.read_bytes()).hexdigest() != h)]
    if changed:
        problems.append("changed or removed: " + ", ".join(sorted(changed)[:3]))
    left = [p.name for p in ws.dir.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".vc-write-test")]
    if left:
        problems.append("temporary files left: " + ", ".join(left[:2]))
    return problems


def run_attempt(a: Attempt, folder: Path, checkpoint: Path) -> Outcome:
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o777)  # the permission attacks run as nobody where this runs as root
    ws = Workspace(folder, checkpoint)
    try:
        argv = a.make(ws)
    except Exception as e:  # an attempt that could not be set up says so
        return Outcome(a.name, None, f"set-up failed: {type(e).__name__}: {e}", ["set-up failed"])
    before = ws.snapshot_taken if ws.snapshot_taken is not None else ws.snapshot()
    if ws.result is not None:
        code, _, err = ws.result
    else:
        with unprivileged() if a.name.startswith(("read-only", "unreadable")) else contextlib.nullcontext():
            code, _, err = run_vc(argv)
    lines = [line for kind in ("error:", "warning:", "failed:") for line in err.splitlines() if line.startswith(kind)]
    message = lines[0] if lines else (err.strip().splitlines() or [""])[-1]
    message = message.replace(str(folder) + "/", "").replace(str(folder), ".")
    return Outcome(a.name, code, message, judge(a, ws, before, code, err))
