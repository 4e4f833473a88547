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

from conftest import ROOT

TINY = ROOT / "recipes" / "tiny.yaml"


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_tiny_recipe_trains_and_logs(tiny_checkpoint):
    run = tiny_checkpoint.parent
    assert (run / "last.pt").is_file()
    lines = (run / "log.jsonl").read_text().splitlines()
    assert any("recon_l1" in line for line in lines)
    assert any("leak_probe_acc" in line or "dev_recon_l1" in line for line in lines)


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
