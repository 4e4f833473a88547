import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import vc
from vc.audio import log_mel
from vc.batch import Job, plan, shard
from vc.cli import main

from conftest import SHARED, synth_speech


def make_tree(root: Path) -> Path:
    """3 good clips in a nested tree, plus a corrupt one and a silent one."""
    (root / "book" / "ch1").mkdir(parents=True)
    (root / "book" / "ch2").mkdir(parents=True)
    sf.write(root / "book" / "ch1" / "a.wav", synth_speech(120, 1.5, seed=1), 16000)
    sf.write(root / "book" / "ch1" / "b.flac", synth_speech(140, 1.2, seed=2), 16000)
    sf.write(root / "book" / "ch2" / "c.wav", synth_speech(160, 1.0, sr=44100, seed=3), 44100)
    (root / "book" / "ch2" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + os.urandom(200))
    sf.write(root / "book" / "silent.wav", np.zeros(24000, np.float32), 16000)
    return root / "book"


def read_report(path: Path) -> dict[str, dict]:
    with path.open() as f:
        return {Path(r["input"]).name: r for r in csv.DictReader(f)}


def test_folder_batch_tree_report_exit_code_and_resume(tiny_checkpoint, clips, tmp_path, capsys):
    book, out = make_tree(tmp_path / "in"), tmp_path / "out"
    args = ["convert", str(book), "--target", str(clips["target"]), "--output", str(out), "--format", "flac",
            "--checkpoint", str(tiny_checkpoint), "--quiet"]
    assert main(args) == 1  # two inputs failed
    printed = capsys.readouterr()
    assert "3 converted, 0 skipped (already done), 2 failed" in printed.out
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.flac")) == [
        "ch1/a.flac", "ch1/b.flac", "ch2/c.flac"]
    rows = read_report(out / "vc-report.csv")
    assert {k: r["status"] for k, r in rows.items()} == {
        "a.wav": "converted", "b.flac": "converted", "c.wav": "converted", "corrupt.wav": "failed",
        "silent.wav": "failed"}
    assert "silent" in rows["silent.wav"]["error"] and "corrupt.wav" in rows["corrupt.wav"]["error"]
    assert abs(float(rows["a.wav"]["duration_s"]) - 1.9) < 0.01
    wav, sr = sf.read(out / "ch2" / "c.flac")
    assert sr == 16000 and abs(len(wav) - 1.4 * 16000) <= 200  # 44.1 kHz input, output at the model's rate

    assert main(args) == 1  # the failures are still failures...
    assert "0 converted, 3 skipped (already done), 2 failed" in capsys.readouterr().out  # ...the rest is not redone


def test_files_globs_jobs_and_sample_rate(tiny_checkpoint, clips, tmp_path, capsys):
    book, out = make_tree(tmp_path / "in"), tmp_path / "out"
    rc = main(["convert", str(book / "ch1" / "*.wav"), str(book / "ch2" / "c.wav"), "-t", str(clips["target"]),
               "-o", str(out), "--sample-rate", "22050", "--jobs", "2", "--checkpoint", str(tiny_checkpoint), "-q"])
    assert rc == 0
    assert "2 converted" in capsys.readouterr().out
    info = sf.info(out / "a.wav")
    assert info.samplerate == 22050 and abs(info.duration - 1.9) < 0.02
    assert (out / "c.wav").is_file()


def test_dry_run_writes_nothing(tiny_checkpoint, clips, tmp_path, capsys):
    book, out = make_tree(tmp_path / "in"), tmp_path / "out"
    assert main(["convert", str(book), "-t", str(clips["target"]), "-o", str(out), "--dry-run",
                 "--checkpoint", str(tiny_checkpoint), "--report", str(tmp_path / "r.csv")]) == 0
    assert str(out / "ch1" / "a.wav") in capsys.readouterr().out
    assert not list(out.rglob("*.wav")) if out.exists() else True
    assert {r["status"] for r in read_report(tmp_path / "r.csv").values()} == {"dry-run"}


def test_unusable_target_stops_before_any_work(tiny_checkpoint, tmp_path, capsys):
    book, out = make_tree(tmp_path / "in"), tmp_path / "out"
    rc = main(["convert", str(book), "-t", str(book / "silent.wav"), "-o", str(out),
               "--checkpoint", str(tiny_checkpoint)])
    assert rc == 1
    assert "silent.wav: clip is silent" in capsys.readouterr().err
    assert not out.exists()


def test_unwritable_output_is_reported_once(tiny_checkpoint, clips, tmp_path, capsys):
    book = make_tree(tmp_path / "in")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    rc = main(["convert", str(book), "-t", str(clips["target"]), "-o", str(blocker / "out"),
               "--checkpoint", str(tiny_checkpoint)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and "not writable" in err


def test_shards_cover_every_input_exactly_once(tmp_path):
    jobs = [Job(Path(f"in/{i}.wav"), Path(f"out/{i}.wav"), f"d{i % 7}/{i}.wav") for i in range(500)]
    parts = [shard(jobs, i, 4) for i in range(1, 5)]
    assert sorted(j.rel for p in parts for j in p) == sorted(j.rel for j in jobs)
    assert all(80 < len(p) < 170 for p in parts)
    assert shard(list(reversed(jobs)), 2, 4) == list(reversed(parts[1]))  # the listing order does not matter


def test_outputs_never_escape_the_output_folder(tmp_path):
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    for name in ("x.wav", "..wav", "y.flac", "y.wav"):
        (inner / name).write_bytes(b"")
    out = tmp_path / "out"
    specs = [str(inner / "x.wav"), str(tmp_path / "a" / ".." / "a" / "b"), str(inner) + "/../b/*.wav"]
    jobs = plan(specs, out)
    for j in jobs:
        assert j.output.resolve().is_relative_to(out.resolve())
    outputs = [j.output for j in jobs]
    assert len(outputs) == len(set(outputs)) == 4  # y.wav and y.flac do not overwrite each other


def test_killed_run_leaves_no_truncated_output_and_resumes(tiny_checkpoint, clips, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(12):
        sf.write(src / f"{i:02d}.wav", synth_speech(100 + 10 * i, 6.0, seed=i), 16000)
    cmd = [sys.executable, "-m", "vc", "convert", str(src), "-t", str(clips["target"]), "-o", str(out),
           "--checkpoint", str(tiny_checkpoint), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(out.glob("*.wav"))) < 2:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = list(out.glob("*.wav"))
    assert 2 <= len(finished) < 12
    for f in finished:  # every file under its final name is complete
        assert abs(sf.info(f).duration - 6.4) < 0.01
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"{12 - len(finished)} converted, {len(finished)} skipped" in done.stdout
    assert len(list(out.glob("*.wav"))) == 12


def long_speech() -> np.ndarray:
    """About 38 s of one speaker: real speech from ../shared/data/tiny where present, else synthetic."""
    vctk = SHARED / "tiny" / "vctk" / "p225"
    if vctk.is_dir():
        return np.concatenate([sf.read(vctk / f, dtype="float32")[0] for f in ("p225_003.flac", "p225_008.flac") * 3])
    return synth_speech(130, 37.0, seed=5)


def test_chunked_long_file_matches_unchunked_and_joins_are_smooth(clips, tmp_path):
    model = vc.load_model()  # the shipped model: a tiny one's output is too erratic to compare spectra
    x = long_speech()
    sf.write(tmp_path / "long.wav", x, 16000)
    speaker = model.embed(clips["target"])
    whole = model.convert(x, speaker)
    model.convert_file(tmp_path / "long.wav", tmp_path / "chunked.wav", speaker, chunk_seconds=8.0)
    chunked, _ = sf.read(tmp_path / "chunked.wav", dtype="float32")
    assert len(chunked) == len(whole)

    def distance(p, q):  # log-mel distance over the louder half of the bins, up to one gain
        a, b = log_mel(np.ascontiguousarray(p)).numpy(), log_mel(np.ascontiguousarray(q)).numpy()
        d = (a - b)[a > np.median(a)]
        return np.abs(d - d.mean()).mean()

    # Instance norm and Griffin-Lim make a conversion depend on its context. Away from the joins, each chunk of the
    # chunked output must be as close to the unchunked output as that chunk converted on its own is.
    step, inner = 7 * 16000, 8000
    for k in range(len(x) // step):
        span = slice(k * step + inner, (k + 1) * step - inner)
        alone = model.convert(x[k * step:k * step + 8 * 16000], speaker)
        assert distance(whole[span], chunked[span]) < distance(whole[span], alone[inner:step - inner]) + 0.05

    def level(x):
        return 20 * np.log10(np.sqrt(np.mean(x ** 2)) + 1e-9)

    steps = np.abs(np.diff(chunked))
    near = np.zeros(len(steps), bool)
    for k in range(1, len(x) // step):
        near[k * step - 800:k * step + 16800] = True
    for k in range(1, len(x) // step):
        start, end = k * step, k * step + 16000  # the cross-faded second
        # no click: no sample step at a join is larger than the largest one away from the joins
        assert steps[start - 800:end + 800].max() < steps[~near].max()
        # No level jump: the level step across the cross-fade (half a second either side) stays near the unchunked
        # output's own step there; the model's context effect alone moves it by a few dB (up to 6 measured).
        before, after = slice(start - 8000, start), slice(end, end + 8000)
        jump = level(chunked[after]) - level(chunked[before])
        assert abs(jump - (level(whole[after]) - level(whole[before]))) < 8.0


# --- what made an output (vc/manifest.py), and the single-file case through the same runner ------------------------
def test_manifest_tells_done_changed_foreign_and_a_kill_after_the_rename(tmp_path):
    from vc.manifest import Manifest, mark

    out = tmp_path / "a.wav"
    key = {"source": "s", "targets": "t", "model": "m", "options": "o"}
    assert Manifest(tmp_path).state(out, key) == "todo"
    mark(tmp_path, out, key, "before")
    out.write_bytes(b"converted")  # renamed into place; killed before the "after" line
    assert Manifest(tmp_path).state(out, key) == "done"
    mark(tmp_path, out, key, "after")
    assert Manifest(tmp_path).state(out, {**key, "targets": "t2", "options": "o2"}) == (
        "changed: the targets, the options")
    time.sleep(0.01)  # a new modification time for the hand-made file below (not a timing assertion)
    out.write_bytes(b"made by hand")
    assert Manifest(tmp_path).state(out, key) == "foreign"
    (tmp_path / ".vc-manifest.jsonl").open("a").write('{"output": "a.wav", "key": {')  # a line cut by a kill
    assert Manifest(tmp_path).state(out, key) == "foreign"


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    from vc.files import _host, remove_stale

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".a.wav.vc{int(dead.stdout)}-{_host()}.abc123_x.tmp"
    live = tmp_path / f".b.wav.vc{os.getpid()}-{_host()}.abc123_x.tmp"
    elsewhere = tmp_path / f".c.wav.vc{int(dead.stdout)}-otherhost.abc123_x.tmp"
    mine = tmp_path / ".notes.tmp"  # not a name of atomic_path: never touched
    for p in (stale, live, elsewhere, mine):
        p.write_bytes(b"")
    assert remove_stale(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, elsewhere, mine))


def test_single_file_honours_dry_run_report_quiet_overwrite_and_format(tiny_checkpoint, clips, tmp_path, capsys):
    out, report = tmp_path / "o.flac", tmp_path / "r.csv"
    base = ["convert", str(clips["source"]), "-t", str(clips["target"]), "-o", str(out),
            "--checkpoint", str(tiny_checkpoint)]
    assert main(base + ["--dry-run"]) == 0
    assert f"{clips['source']} -> {out}" in capsys.readouterr().out and not out.exists()
    assert main(base + ["--format", "wav"]) == 1
    assert "--format wav does not match" in capsys.readouterr().err and not out.exists()
    assert main(base + ["--quiet", "--report", str(report), "--format", "flac"]) == 0
    assert capsys.readouterr().out == "" and out.is_file()
    assert read_report(report)["source.wav"]["status"] == "converted"
    first = out.read_bytes()
    assert main(base) == 0  # unchanged: already done, not converted again
    assert "already done" in capsys.readouterr().out
    assert main(base + ["--pitch-shift", "4"]) == 1  # other options: not replaced without --overwrite
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the options changed" in err and "--overwrite" in err
    assert out.read_bytes() == first
    assert main(base + ["--pitch-shift", "4", "--overwrite"]) == 0
    assert out.read_bytes() != first


def test_batch_skips_its_output_folder_inside_the_input_folder(tiny_checkpoint, clips, tmp_path, capsys):
    book = make_tree(tmp_path / "in")
    (book / "ch2" / "corrupt.wav").unlink()
    (book / "silent.wav").unlink()
    args = ["convert", str(book), "-t", str(clips["target"]), "-o", str(book / "converted"),
            "--checkpoint", str(tiny_checkpoint), "-q"]
    assert main(args) == 0 and "3 converted" in capsys.readouterr().out
    assert main(args) == 0 and "0 converted, 3 skipped" in capsys.readouterr().out
    assert not list((book / "converted" / "converted").rglob("*"))  # its outputs were not taken for inputs


def test_temporary_files_of_a_dead_but_unreaped_writer_are_removed(tmp_path):
    """A killed batch's workers are orphans; where nothing reaps them they stay zombies, whose pid still exists."""
    from vc.files import _host, remove_stale

    if not Path("/proc/self/stat").is_file():
        pytest.skip("no /proc on this system")
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    while Path(f"/proc/{zombie.pid}/stat").read_text().split(") ")[1][0] != "Z":  # exited, not yet waited for
        time.sleep(0.01)
    stale = tmp_path / f".a.wav.vc{zombie.pid}-{_host()}.abc123_x.tmp"
    stale.write_bytes(b"")
    try:
        assert remove_stale(tmp_path) == [stale]
    finally:
        zombie.wait()
