"""`vc adapt`: a few steps from a tiny checkpoint; only the identity-carrying parts change; resume; bad input."""
import pytest
import torch

import vc
from vc.training.adapt import AdaptConfig, adapt, learning_rate
from vc.cli import main
from vc.errors import VCError


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_adapt_trains_only_speaker_parts_and_resumes(tiny_checkpoint, dev_dir, tmp_path, capsys):
    out = tmp_path / "mine.pt"
    cfg = AdaptConfig(steps=2, minutes=None, batch_size=2, segment_frames=64, log_every=1)
    adapt(tiny_checkpoint, dev_dir, out, cfg)
    before, after = _weights(tiny_checkpoint), _weights(out)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing was trained"
    assert all(k.startswith(("speaker_encoder.", "decoder.norms.")) for k in changed), changed
    assert any(k.startswith("decoder.norms.") for k in changed)
    assert (tmp_path / "mine.adapt" / "last.pt").is_file() and (tmp_path / "mine.adapt" / "log.jsonl").is_file()
    meta = torch.load(out, weights_only=True)["meta"]
    assert meta["adapt_steps"] == 2 and sorted(meta["adapt_speakers"]) == ["spk0", "spk1"]

    cfg.steps = 4  # run again with more steps: resumes from step 2
    adapt(tiny_checkpoint, dev_dir, out, cfg)
    assert "resuming" in capsys.readouterr().out
    assert torch.load(out, weights_only=True)["meta"]["adapt_steps"] == 4
    model = vc.load_model(out)
    wav = model.convert(str(next(dev_dir.rglob("*.wav"))), str(sorted(dev_dir.rglob("*.wav"))[-1]))
    assert wav.ndim == 1 and len(wav) > 0


def test_adapt_cli_with_more_parts(tiny_checkpoint, dev_dir, tmp_path):
    out = tmp_path / "more.pt"
    assert main(["adapt", str(tiny_checkpoint), "--data", str(dev_dir), "--out", str(out), "--steps", "2",
                 "--batch-size", "2", "--parts", "speaker,adain,pitch,decoder"]) == 0
    before, after = _weights(tiny_checkpoint), _weights(out)
    assert not torch.equal(before["decoder.conv_out.weight"], after["decoder.conv_out.weight"])
    assert torch.equal(before["content_encoder.conv_in.weight"], after["content_encoder.conv_in.weight"])


def test_adapt_bad_input(tiny_checkpoint, dev_dir, tmp_path, capsys):
    assert main(["adapt", str(tiny_checkpoint), "--data", str(dev_dir), "--out", str(tmp_path / "x.pt"),
                 "--parts", "speaker,ears"]) == 1
    assert "unknown part(s): ears" in capsys.readouterr().err
    assert main(["adapt", str(tiny_checkpoint.parent / "last.pt"), "--data", str(dev_dir), "--out",
                 str(tmp_path / "x.pt")]) == 1
    assert "a training checkpoint" in capsys.readouterr().err
    with pytest.raises(VCError, match="data folder not found"):
        adapt(tiny_checkpoint, tmp_path / "nothing", tmp_path / "y.pt")


def test_learning_rate_warms_up_then_anneals_by_steps_or_time():
    cfg = AdaptConfig(steps=100, warmup_steps=10, lr=1e-3)
    assert learning_rate(cfg, 0) == pytest.approx(1e-4)
    assert learning_rate(cfg, 10) == pytest.approx(1e-3)
    assert learning_rate(cfg, 99) < 1e-4
    assert learning_rate(cfg, 20, time_used=1.0) == pytest.approx(5e-5)  # the time budget is spent
