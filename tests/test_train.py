import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from vc.config import load_recipe
from vc.errors import VCError
from vc.training.converter import train

from conftest import ROOT, write_speakers

TINY = ROOT / "recipes" / "tiny.yaml"


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_tiny_recipe_trains_and_logs(dev_dir, tmp_path):
    data = write_speakers(tmp_path / "data", n_speakers=3, n_clips=4)  # split_holdout holds out one of 4 per speaker
    train(load_recipe(TINY), data, tmp_path / "run", dev=dev_dir)
    assert (tmp_path / "run" / "last.pt").is_file()
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("recon_l1" in r for r in rows) and any("dev_recon_l1" in r for r in rows)
    probe = [r["leak_probe_acc"] for r in rows if "leak_probe_acc" in r]  # the leakage probe ran, at each validation
    assert len(probe) == 2 and all(isinstance(p, float) and 0 <= p <= 1 for p in probe)
    assert rows[-1]["leak_probe_chance"] == pytest.approx(1 / 3, abs=1e-4)


def test_tensorboard_has_scalars_and_audio_of_dev_conversions(tiny_checkpoint):
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = ea.EventAccumulator(str(tiny_checkpoint.parent / "tb"), size_guidance={"audio": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"recon_l1", "lr", "dev_recon_l1"} <= set(tags["scalars"])
    audio = [t for t in tags["audio"] if t.startswith("convert/")]
    assert audio and len(acc.Audio(audio[0])) == 2  # at each validation (steps 10 and 20 of the tiny recipe)


def test_resume_is_exact_and_training_is_deterministic(train_dir, dev_dir, tmp_path):
    straight = train(load_recipe(TINY), train_dir, tmp_path / "a", dev=dev_dir)
    train(load_recipe(TINY), train_dir, tmp_path / "b", dev=dev_dir, until=9)  # stopped part way, as by a kill
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["step"] == 9
    resumed = train(load_recipe(TINY), train_dir, tmp_path / "b", dev=dev_dir)
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=k)


def test_training_learns(train_dir, dev_dir, tmp_path):
    cfg = load_recipe(TINY).replace(train={"steps": 60})
    train(cfg, train_dir, tmp_path, dev=dev_dir)
    rows = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    l1 = [r["recon_l1"] for r in rows if "recon_l1" in r]
    assert l1[-1] < l1[0]


def test_sigterm_saves_a_checkpoint_that_resumes(train_dir, dev_dir, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "vc", "train", str(TINY), "--data", str(train_dir), "--dev", str(dev_dir),
           "--out", str(tmp_path), "--steps", "100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 120
    while not (tmp_path / "log.jsonl").is_file() or "recon_l1" not in (tmp_path / "log.jsonl").read_text():
        assert time.time() < deadline and proc.poll() is None, "training did not start"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "interrupted at step" in out and "Traceback" not in out
    step = torch.load(tmp_path / "last.pt", weights_only=True)["step"]
    assert step >= 5
    cfg = load_recipe(TINY).replace(train={"steps": step + 3})
    train(cfg, train_dir, tmp_path, dev=dev_dir)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == step + 3


def test_folder_without_audio_is_a_clear_error(tmp_path):
    (tmp_path / "spk").mkdir()
    (tmp_path / "spk" / "notes.txt").write_text("no audio here")
    with pytest.raises(VCError, match="no audio found"):
        train(load_recipe(TINY), tmp_path, tmp_path / "out")


def test_bad_recipe(tmp_path):
    (tmp_path / "r.yaml").write_text("model:\n  chanels: 3\n")
    with pytest.raises(VCError, match="model: unknown field.* chanels"):
        load_recipe(tmp_path / "r.yaml")


def test_several_data_folders_pool_their_speakers(dev_dir, tmp_path, capsys):
    a = write_speakers(tmp_path / "a", n_speakers=2, n_clips=2)
    b = write_speakers(tmp_path / "b", n_speakers=3, n_clips=1)  # spk0 and spk1 again, and a new spk2
    cfg = load_recipe(TINY).replace(train={"steps": 2})
    train(cfg, [a, b], tmp_path / "run", dev=dev_dir)
    assert "7 training utterances of 3 speakers" in capsys.readouterr().out
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["speakers"] == ["spk0", "spk1", "spk2"]


def test_restart_before_the_first_checkpoint_says_so_and_keeps_one_log_row_per_step(train_dir, dev_dir, tmp_path,
                                                                                   capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text('{"step": 5, "recon_l1": 9.0}\n{"step": 10, "recon_l1": 9.0}\n{"ste')
    from vc.files import _host

    dead = subprocess.Popen(["true"])
    dead.wait()  # a writer that is gone: its pid, reaped
    # what kill -9 mid-save leaves: a temporary name as `vc.files.atomic_path` makes it
    (run / f".last.pt.vc{dead.pid}-{_host()}.k1ll3d.tmp").write_bytes(b"half a checkpoint")
    train(load_recipe(TINY), train_dir, run, dev=dev_dir, until=10)
    out = capsys.readouterr().out
    assert f"no checkpoint yet in {run}: starting at step 0" in out
    assert "stopped at step 10 of 20 (until step 10); exported" in out and "from this step" in out
    assert not list(run.glob(".*.tmp"))
    assert torch.load(run / "model.pt", weights_only=True)["meta"]["complete"] is False
    train(load_recipe(TINY), train_dir, run, dev=dev_dir)
    assert f"resuming {run / 'last.pt'} at step 10" in capsys.readouterr().out
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "recon_l1" in r]
    assert steps == [5, 10, 15, 20] and 9.0 not in [r["recon_l1"] for r in rows if "recon_l1" in r]
    assert torch.load(run / "model.pt", weights_only=True)["meta"]["complete"] is True


def test_time_budget_stops_short_and_says_so(train_dir, dev_dir, tmp_path, capsys):
    train(load_recipe(TINY), train_dir, tmp_path, dev=dev_dir, max_minutes=0)
    assert "stopped at step 1 of 20 (time budget); exported" in capsys.readouterr().out
    assert torch.load(tmp_path / "model.pt", weights_only=True)["meta"]["complete"] is False


def test_kill_9_leaves_no_temporary_file_and_the_next_run_resumes(train_dir, dev_dir, tmp_path):
    cmd = [sys.executable, "-m", "vc", "train", str(TINY), "--data", str(train_dir), "--dev", str(dev_dir),
           "--out", str(tmp_path), "--steps", "100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "log.jsonl").is_file() or "recon_l1" not in (tmp_path / "log.jsonl").read_text():
        assert time.time() < deadline and proc.poll() is None, "training did not start"
        time.sleep(0.2)
    proc.kill()
    proc.wait(timeout=30)
    from vc.files import _host

    # as if the kill had come mid-save: the killed writer's temporary name, as `vc.files.atomic_path` makes it
    (tmp_path / f".last.pt.vc{proc.pid}-{_host()}.x9x9x9.tmp").write_bytes(b"cut short")
    cfg = load_recipe(TINY).replace(train={"steps": 3})
    train(cfg, train_dir, tmp_path, dev=dev_dir)
    assert not list(tmp_path.glob(".*.tmp"))
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 3


def test_mel_gan_trains_the_decoder_against_a_mel_discriminator_from_its_start_step_and_resumes_exactly(
        train_dir, dev_dir, tmp_path):
    cfg = load_recipe(TINY).replace(train={"steps": 6, "mel_gan": 0.1, "mel_gan_start": 3, "val_every": 6})
    straight = train(cfg, train_dir, tmp_path / "a", dev=dev_dir)
    rows = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    gan_steps = [r["step"] for r in rows if "mel_d" in r]
    assert gan_steps and min(gan_steps) >= 3 and all(r["mel_fm"] > 0 for r in rows if "mel_d" in r)
    assert "mel_discriminator" in torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    train(cfg, train_dir, tmp_path / "b", dev=dev_dir, until=4)  # the discriminator's state goes into the checkpoint
    resumed = train(cfg, train_dir, tmp_path / "b", dev=dev_dir)
    a, b = _weights(straight), _weights(resumed)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=k)
