"""Training on two CPU processes under torchrun (gloo): the ranks stay identical, rank 0 alone writes, resume works."""
import json
import os
import subprocess
import sys

import torch

from vc.training.distributed import Dist, StopRequest

from conftest import ROOT

# Runs on every rank: records the network that train() builds, and saves that rank's weights afterwards.
DRIVER = """
import os, sys
import torch
import vc.training.converter as T
from vc.config import load_recipe

nets = []

class Spy(T.VoiceConverterNet):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        nets.append(self)

T.VoiceConverterNet = Spy
recipe, data, dev, out, steps = sys.argv[1:6]
cfg = load_recipe(recipe).replace(train={"steps": int(steps)})
T.train(cfg, data, out, dev=dev, device="cpu")
torch.save(nets[-1].state_dict(), os.path.join(out, f"rank{os.environ['RANK']}.pt"))
"""


def _torchrun(tmp_path, train_dir, dev_dir, steps):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(ROOT / "recipes" / "tiny.yaml"), str(train_dir), str(dev_dir), str(tmp_path / "run"), str(steps)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / "run" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    return proc, ranks


def test_two_process_ddp_ranks_agree_and_resume(train_dir, dev_dir, tmp_path):
    proc, (a, b) = _torchrun(tmp_path, train_dir, dev_dir, steps=3)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=k)
    run = tmp_path / "run"
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 3
    exported = torch.load(run / "model.pt", weights_only=True)["model"]
    torch.testing.assert_close(exported["decoder.conv_out.weight"],  # stored in float16
                               a["decoder.conv_out.weight"].half())
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert sum(1 for r in rows if r["step"] == 3 and "recon_l1" in r) == 1  # one writer
    assert "2 processes" in proc.stdout and proc.stdout.count("training utterances") == 1
    assert {p.name for p in run.glob("features-train.*-of-2.pt")} == {"features-train.0-of-2.pt",
                                                                     "features-train.1-of-2.pt"}

    proc, (a2, b2) = _torchrun(tmp_path, train_dir, dev_dir, steps=5)
    assert "resuming" in proc.stdout and torch.load(run / "last.pt", weights_only=True)["step"] == 5
    for k in a2:
        torch.testing.assert_close(a2[k], b2[k], atol=0, rtol=0, msg=k)
    assert any(not torch.equal(a[k], a2[k]) for k in a)  # the resumed steps trained


def test_one_process_needs_no_process_group():
    d = Dist()
    assert d.main and d.any(True) and not d.any(False)
    net = torch.nn.Linear(2, 2)
    assert d.wrap(net) is net
    with StopRequest(minutes=0) as stop:
        assert stop.due(d)  # a zero budget is spent at once
    with StopRequest() as stop:
        assert not stop.due(d)
