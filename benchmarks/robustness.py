"""The attacks of issue 16 on `vc`, as a hostile new user would make them, and what became of each.

    PYTHONPATH=. python benchmarks/robustness.py                 # table: attempt | outcome | exit code | message
    PYTHONPATH=/tmp/old-tree python benchmarks/robustness.py     # the same attacks on another version of vc

Each attempt runs in a fresh folder with a tiny randomly initialised model (Griffin-Lim), mostly as an in-process
`vc.cli.main([...])`; the `kill -9` ones start `python -m vc` and kill it. An attempt is "ok" when it ends with the
documented exit code, one `error:` line that names the thing (for a non-zero code), no traceback, every file that
existed before unchanged, no temporary file and no stray process left. tests/test_robustness.py runs this list.
Only vc.cli.main and the checkpoint writer are used, so that the script runs against older versions too.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the harness beside this file, however this file is loaded
from robustness_harness import (SR, Attempt, Workspace, child_env, descendants, kill_batch,  # noqa: E402
                                proc_stat, run_attempt, tiny_checkpoint, voice)

ATTEMPTS: list[Attempt] = []


def attempt(name: str, code: int, says: str = "", warns: str = "", prefix: str = "error:"):
    def add(fn: Callable[[Workspace], list[str]]):
        ATTEMPTS.append(Attempt(name, fn, code, says, warns, prefix))
        return fn
    return add


def _bad_source(name: str, code: int, says: str, write: Callable[[Workspace, str], None], warns: str = ""):
    def make(ws: Workspace) -> list[str]:
        write(ws, name)
        return ws.one(name)
    attempt(f"source: {name}", code, says, warns)(make)

    def make_target(ws: Workspace) -> list[str]:
        write(ws, name)
        return ws.one("source.wav", name)
    if code:
        attempt(f"target: {name}", code, says)(make_target)


t = np.arange(2 * SR) / SR  # two seconds of time for the synthetic attacks
_bad_source("empty.wav", 1, "{dir}/empty.wav", lambda ws, n: (ws.dir / n).write_bytes(b""))
_bad_source("text.wav", 1, "{dir}/text.wav", lambda ws, n: (ws.dir / n).write_text("hello, not audio"))
_bad_source("garbage.wav", 1, "{dir}/garbage.wav",
            lambda ws, n: (ws.dir / n).write_bytes(np.random.default_rng(0).bytes(20000)))
_bad_source("riff-garbage.wav", 1, "{dir}/riff-garbage.wav",
            lambda ws, n: (ws.dir / n).write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(500)))
_bad_source("silence.wav", 1, "silent", lambda ws, n: ws.wav(n, np.zeros(2 * SR, np.float32)))
_bad_source("pure-dc.wav", 1, "silent", lambda ws, n: ws.wav(n, np.full(2 * SR, 0.5, np.float32)))
_bad_source("near-dc-2hz.wav", 1, "silent", lambda ws, n: ws.wav(n, 0.5 * np.sin(2 * np.pi * 2 * t)))
_bad_source("nan.wav", 1, "{dir}/nan.wav",
            lambda ws, n: ws.wav(n, np.where(t < 1, 0.1 * np.sin(900 * t), np.nan), subtype="FLOAT"))
_bad_source("short.wav", 1, "too short", lambda ws, n: ws.wav(n, voice(150, 0.2)))
_bad_source("missing.wav", 1, "{dir}/missing.wav: file not found", lambda ws, n: None)
_bad_source("folder.wav", 1, "{dir}/folder.wav", lambda ws, n: (ws.dir / n).mkdir())


def _truncate(ws: Workspace, name: str) -> None:
    ws.wav(name, voice(150, 3.0, 4))
    data = (ws.dir / name).read_bytes()
    (ws.dir / name).write_bytes(data[: len(data) // 2])


_bad_source("truncated.wav", 0, "", _truncate, warns="{dir}/truncated.wav: truncated")
_bad_source("truncated.flac", 0, "", _truncate, warns="{dir}/truncated.flac: truncated")
_bad_source("telephone-8k.wav", 0, "", lambda ws, n: ws.wav(n, voice(150, 2.0)[::2], 8000), warns="4 kHz")
_bad_source("pure-tone.wav", 0, "", lambda ws, n: ws.wav(n, 0.5 * np.sin(2 * np.pi * 440 * t)))
_bad_source("dc-offset-speech.wav", 0, "", lambda ws, n: ws.wav(n, voice(150, 2.0) + 0.6))
attempt("target: dc-offset-speech.wav", 0)(lambda ws: ws.one("source.wav", ws.wav("dc.wav", voice(150, 2.0) + 0.6)))
attempt("target: truncated.wav", 0, warns="truncated")(
    lambda ws: (_truncate(ws, "tr.wav"), ws.one("source.wav", "tr.wav"))[1])
attempt("target: telephone-8k.wav", 0, warns="4 kHz")(
    lambda ws: ws.one("source.wav", ws.wav("tel.wav", voice(220, 2.0)[::2], 8000)))
attempt("target: empty folder", 1, "{dir}/voices")(lambda ws: ((ws.dir / "voices").mkdir(), ws.one(
    "source.wav", "voices"))[1])

# options, checked at parse time: exit 2 and one line naming the option
for option, value in [("--sample-rate", "1"), ("--sample-rate", "-8000"), ("--sample-rate", "abc"),
                      ("--sample-rate", "400000"), ("--pitch-shift", "nan"), ("--pitch-shift", "1000"),
                      ("--pitch-shift", "inf"), ("--timbre-match", "nan"), ("--timbre-match", "5"),
                      ("--timbre-match", "-3"), ("--jobs", "0"), ("--jobs", "-2"), ("--format", "mp3")]:
    attempt(f"convert {option} {value}", 2, option)(lambda ws, o=option, v=value: ws.one("source.wav",
                                                                                         "target.wav", "o.wav", o, v))
for argv, option in [(["train", "r.yaml", "--data", "d", "--out", "o", "--steps", "0"], "--steps"),
                     (["train", "r.yaml", "--data", "d", "--out", "o", "--max-minutes", "-1"], "--max-minutes"),
                     (["adapt", "c.pt", "--data", "d", "--out", "o", "--lr", "-1"], "--lr"),
                     (["adapt", "c.pt", "--data", "d", "--out", "o", "--batch-size", "0"], "--batch-size"),
                     (["adapt", "c.pt", "--data", "d", "--out", "o", "--minutes", "nan"], "--minutes"),
                     (["adapt", "c.pt", "--data", "d", "--out", "o", "--threads", "-4"], "--threads"),
                     (["train-vocoder", "--data", "d", "--out", "o", "--steps", "-5"], "--steps"),
                     (["prepare", "folder", "src", "--out", "o", "--jobs", "0"], "--jobs"),
                     (["stream", "a.wav", "-o", "b.wav", "-t", "c.wav", "--block-ms", "0"], "--block-ms"),
                     (["live", "-t", "c.wav", "--seconds", "-1"], "--seconds"),
                     (["bench", "--runs", "0"], "--runs")]:
    attempt(f"{argv[0]} {option} {argv[-1]}", 2, option)(lambda ws, a=argv: list(a))
attempt("convert --shard 0/2", 1, "--shard")(lambda ws: ws.convert(ws.tree(), "-t", ws.p("target.wav"), "-o",
                                                                   ws.p("out"), "--shard", "0/2"))


# paths
def _rerun(ws: Workspace, first: list[str], second: list[str]) -> list[str]:
    from vc.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main(first)
    return second


attempt("output = the input", 1, "{dir}/source.wav")(lambda ws: ws.one("source.wav", "target.wav", "source.wav"))
attempt("output = the input, --overwrite", 1, "{dir}/source.wav")(
    lambda ws: ws.one("source.wav", "target.wav", "source.wav", "--overwrite"))
attempt("output = the target", 1, "{dir}/target.wav")(lambda ws: ws.one("source.wav", "target.wav", "target.wav"))
attempt("output = the input via ../", 1, "source.wav")(
    lambda ws: (ws.tree(), ws.one("source.wav", "target.wav", "in/sub/../../source.wav"))[1])
attempt("output folder = the input folder", 1, "{dir}/in")(
    lambda ws: ws.convert(ws.tree(), "-t", ws.p("target.wav"), "-o", ws.p("in")))
attempt("output folder = the input folder, --overwrite", 1, "{dir}/in")(
    lambda ws: ws.convert(ws.tree(), "-t", ws.p("target.wav"), "-o", ws.p("in"), "--overwrite"))
attempt("output folder inside the input folder, run twice", 0)(lambda ws: _rerun(
    ws, *[ws.convert(ws.tree(), "-t", ws.p("target.wav"), "-o", ws.p("in/converted"))] * 2))
attempt("--report = an input", 1, "--report")(lambda ws: ws.convert(
    ws.tree(), "-t", ws.p("target.wav"), "-o", ws.p("out"), "--report", ws.p("in/sub/0.wav")))
attempt("-o name.wav that is a folder", 1, "{dir}/name.wav")(
    lambda ws: ((ws.dir / "name.wav").mkdir(), ws.one("source.wav", "target.wav", "name.wav"))[1])
attempt("-o out.mp3", 1, "{dir}/out.mp3")(lambda ws: ws.one("source.wav", "target.wav", "out.mp3"))
attempt("-o out.ogg with a folder of inputs", 1, "{dir}/out.ogg")(
    lambda ws: ws.convert(ws.tree(), "-t", ws.p("target.wav"), "-o", ws.p("out.ogg")))
attempt("-o x.wav with a folder of inputs", 1, "{dir}/x.wav")(
    lambda ws: ws.convert(ws.tree(), "-t", ws.p("target.wav"), "-o", ws.p("x.wav")))
attempt("-o under a file", 1, "{dir}/file")(lambda ws: ((ws.dir / "file").write_text("x"), ws.convert(
    ws.tree(), "-t", ws.p("target.wav"), "-o", ws.p("file/out")))[1])
attempt("-o name too long", 1, "name too long")(lambda ws: ws.one("source.wav", "target.wav", "n" * 300 + ".wav"))
attempt("--format flac with -o x.wav", 1, "--format")(
    lambda ws: ws.one("source.wav", "target.wav", "x.wav", "--format", "flac"))
attempt("--dry-run, output folder missing", 0)(
    lambda ws: ws.convert(ws.tree(), "-t", ws.p("target.wav"), "-o", ws.p("missing/out"), "--dry-run"))
attempt("--dry-run, one file", 0)(lambda ws: ws.one("source.wav", "target.wav", "o.wav", "--dry-run"))
attempt("read-only output folder, one file", 1, "{dir}/ro")(
    lambda ws: ((ws.dir / "ro").mkdir(mode=0o555), ws.one("source.wav", "target.wav", "ro/o.wav"))[1])
attempt("read-only output folder, batch", 1, "{dir}/ro")(lambda ws: ((ws.dir / "ro").mkdir(mode=0o555), ws.convert(
    ws.tree(), "-t", ws.p("target.wav"), "-o", ws.p("ro")))[1])
attempt("unreadable source", 1, "{dir}/locked.wav")(
    lambda ws: (ws.wav("locked.wav", voice(140, 1.0)), os.chmod(ws.p("locked.wav"), 0), ws.one("locked.wav"))[2])
attempt("missing input folder", 1, "{dir}/nowhere: file not found", prefix="failed:")(
    lambda ws: ws.convert(ws.p("nowhere"), "-t", ws.p("target.wav"), "-o", ws.p("out")))


def _keep(ws: Workspace, *names: str) -> None:
    ws.may_change.update(names)


attempt("existing output, unchanged rerun", 0)(lambda ws: _rerun(ws, ws.one(), ws.one()))
attempt("existing output, other target", 1, "{dir}/out.wav")(
    lambda ws: _rerun(ws, ws.one(), ws.one("source.wav", ws.wav("t2.wav", voice(300, 1.2, 7)))))
attempt("existing output, other --pitch-shift", 1, "{dir}/out.wav")(
    lambda ws: _rerun(ws, ws.one(), ws.one("source.wav", "target.wav", "out.wav", "--pitch-shift", "3")))
attempt("existing output, other target, --overwrite", 0)(
    lambda ws: (_keep(ws, "out.wav"), _rerun(ws, ws.one(), ws.one("source.wav", "target.wav", "out.wav",
                                                                  "--overwrite", "--pitch-shift", "2")))[1])
attempt("existing output not made by vc", 1, "{dir}/out.wav")(
    lambda ws: (ws.wav("out.wav", voice(90, 1.0)), ws.one())[1])
attempt("batch rerun with another target", 1, "other settings")(lambda ws: _rerun(
    ws, ws.convert(ws.tree(), "-t", ws.p("target.wav"), "-o", ws.p("out")),
    ws.convert(ws.p("in"), "-t", ws.wav("t2.wav", voice(300, 1.2, 7)), "-o", ws.p("out"))))

# checkpoints
attempt("checkpoint: text file", 1, "{dir}/model.pt")(
    lambda ws: ((ws.dir / "model.pt").write_text("not a model"), ws.one(ckpt=ws.p("model.pt")))[1])
attempt("checkpoint: empty file", 1, "{dir}/model.pt")(
    lambda ws: ((ws.dir / "model.pt").write_bytes(b""), ws.one(ckpt=ws.p("model.pt")))[1])
attempt("checkpoint: truncated", 1, "{dir}/model.pt")(lambda ws: ((ws.dir / "model.pt").write_bytes(
    ws.ckpt.read_bytes()[: ws.ckpt.stat().st_size // 2]), ws.one(ckpt=ws.p("model.pt")))[1])
attempt("checkpoint: missing", 1, "{dir}/model.pt")(lambda ws: ws.one(ckpt=ws.p("model.pt")))
attempt("checkpoint: a folder", 1, "{dir}/model.pt")(
    lambda ws: ((ws.dir / "model.pt").mkdir(), ws.one(ckpt=ws.p("model.pt")))[1])
attempt("checkpoint: a zip of text", 1, "{dir}/model.pt")(lambda ws: (zipfile.ZipFile(ws.p("model.pt"), "w").close(),
                                                                    ws.one(ckpt=ws.p("model.pt")))[1])
attempt("checkpoint: NaN weights", 1, "{dir}/nan.pt")(
    lambda ws: ws.one(ckpt=str(tiny_checkpoint(ws.dir / "nan.pt", nan=True))))
attempt("vc stream -o the input", 1, "{dir}/source.wav")(lambda ws: [
    "stream", ws.p("source.wav"), "-t", ws.p("target.wav"), "-o", ws.p("source.wav"), "--checkpoint", str(ws.ckpt)])
attempt("vc export over its own input", 1, "{dir}/tiny.pt")(lambda ws: ["export", str(ws.ckpt), str(ws.ckpt)])
attempt("output = the checkpoint", 1, "checkpoint")(
    lambda ws: ws.one("source.wav", "target.wav", "model.wav", ckpt=str(ws.ckpt.rename(ws.dir / "model.wav"))))


# vc prepare: archives
def _zip_bomb(ws: Workspace) -> list[str]:
    with zipfile.ZipFile(ws.dir / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("spk/a.wav", bytes(100_000_000))  # 100 MB of zeros in about 100 KB
    return ["prepare", "folder", ws.p("bomb.zip"), "--out", ws.p("prep")]


attempt("prepare: zip bomb", 1, "{dir}/bomb.zip")(_zip_bomb)
attempt("prepare: text file as archive", 1, "{dir}/corpus.zip")(lambda ws: ((ws.dir / "corpus.zip").write_text(
    "no"), ["prepare", "folder", ws.p("corpus.zip"), "--out", ws.p("prep")])[1])


# full disk (a file-size limit: writes fail with EFBIG, as they fail with ENOSPC on a full disk)
def _limited(ws: Workspace, argv: list[str]) -> list[str]:
    """Run `argv` in a child process whose files may not pass 20 KB (the outputs need more)."""
    import resource

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    ws.snapshot_taken = ws.snapshot()
    proc = subprocess.run([sys.executable, "-m", "vc", *argv], capture_output=True, text=True, preexec_fn=limit,
                          env=child_env(), cwd=ws.dir)
    ws.result = (proc.returncode, proc.stdout, proc.stderr)
    return []


attempt("full disk, one file", 1, "{dir}/big.wav")(
    lambda ws: _limited(ws, ws.one("source.wav", "target.wav", "big.wav")))
attempt("full disk, batch stops", 1, "{dir}/out/")(
    lambda ws: _limited(ws, ws.convert(ws.tree(3, 3.0), "-t", ws.p("target.wav"), "-o", ws.p("out"))))


# kill -9 of a batch, then the same batch again
def _kill_then_rerun(ws: Workspace, jobs: int, ready: Callable[[Workspace], bool], long: bool = False) -> list[str]:
    """Kill -9 a batch when `ready`, check what it left, and give the same batch (one process) to run again."""
    if long:
        ws.wav("in/long.wav", voice(130, 31.0, 9))  # over 30 s: written while it is converted
    else:
        ws.tree(6, 1.0)
    argv = ws.convert(ws.p("in"), "-t", ws.p("target.wav"), "-o", ws.p("out"))
    kill_batch(ws, argv + ["--jobs", str(jobs)], lambda: ready(ws))
    report = ws.dir / "out" / "vc-report.csv"
    done = list((ws.dir / "out").rglob("*.wav"))
    if done and (not report.is_file() or len(report.read_text().splitlines()) - 1 < len(done)):
        ws.problems.append("the report lost rows of finished files")
    return argv


def _tmp_files(ws: Workspace) -> list[Path]:
    return [p for p in ws.dir.rglob(".*.tmp")]


attempt("kill -9 at start-up", 0)(lambda ws: _kill_then_rerun(ws, 2, lambda w: True))
attempt("kill -9 of --jobs 2 while workers load", 0)(
    lambda ws: _kill_then_rerun(ws, 2, lambda w: len(descendants_of_vc(w)) >= 3))
attempt("kill -9 of --jobs 2 after the first outputs", 0)(
    lambda ws: _kill_then_rerun(ws, 2, lambda w: len(list((w.dir / "out").rglob("*.wav"))) >= 1))
attempt("kill -9 while a long file is written", 0)(
    lambda ws: _kill_then_rerun(ws, 1, lambda w: bool(_tmp_files(w)), long=True))


def descendants_of_vc(ws: Workspace) -> set:
    """The processes of the `vc` that `kill_batch` started (its workers, once spawned)."""
    procs = [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit()]
    mine = [p for p in procs if (s := proc_stat(p)) and int(s[1]) == os.getpid()]
    return set().union(*(descendants(p) for p in mine)) if mine else set()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=None, help="run the attempts whose name holds this text")
    p.add_argument("--times", action="store_true", help="print each attempt's seconds to stderr")
    args = p.parse_args()
    import vc

    base = Path(tempfile.mkdtemp(prefix="vc-robustness-", dir="/tmp"))
    os.chmod(base, 0o755)
    checkpoint = tiny_checkpoint(base / "tiny.pt")
    os.chmod(checkpoint, 0o644)
    print(f"vc from {Path(vc.__file__).parent}; {len(ATTEMPTS)} attempts\n")
    print("| attempt | outcome | exit code | message |\n|---|---|---|---|")
    ok = 0
    for i, a in enumerate(ATTEMPTS):
        if args.only and args.only not in a.name:
            continue
        shutil_copy = base / f"{i:03d}" / "tiny.pt"
        shutil_copy.parent.mkdir()
        shutil_copy.write_bytes(checkpoint.read_bytes())
        start = time.perf_counter()
        o = run_attempt(a, base / f"{i:03d}", shutil_copy)
        if args.times:
            print(f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
        ok += o.ok
        outcome = "ok" if o.ok else "; ".join(o.problems)
        print(f"| {a.name} | {outcome} | {o.code} | {o.message[:110].replace('|', '/')} |", flush=True)
    print(f"\n{ok} of {len(ATTEMPTS)} ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
