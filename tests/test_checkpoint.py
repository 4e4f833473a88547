import numpy as np
import pytest
import torch

import vc
from vc.checkpoint import VERSION, load_checkpoint, save_checkpoint
from vc.errors import VCError


def test_round_trip_gives_the_same_outputs(tiny_checkpoint, clips, tmp_path):
    model = vc.load_model(tiny_checkpoint)
    before = model.convert(clips["source"], clips["target"])
    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)  # no code can run on load
    assert ckpt["version"] == VERSION and ckpt["kind"] == "inference"
    assert not any("opt" in k for k in ckpt)  # no optimizer state in an inference checkpoint
    copy = tmp_path / "copy.pt"
    save_checkpoint(copy, {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    after = vc.load_model(copy).convert(clips["source"], clips["target"])
    np.testing.assert_allclose(before, after, atol=1e-6)


def test_truncated_checkpoint(tiny_checkpoint, tmp_path):
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    with pytest.raises(VCError, match="corrupt or truncated"):
        load_checkpoint(bad)


@pytest.mark.parametrize("content,reason", [(b"", "empty"), (b"garbage" * 100, "corrupt")])
def test_corrupt_checkpoint(tmp_path, content, reason):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    with pytest.raises(VCError, match=reason):
        load_checkpoint(bad)


def test_foreign_and_future_checkpoints(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(VCError, match="not a vc checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"format": "vc-checkpoint", "version": VERSION + 1}, tmp_path / "future.pt")
    with pytest.raises(VCError, match="version"):
        load_checkpoint(tmp_path / "future.pt")


def test_mismatched_weights(tiny_checkpoint, tmp_path):
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["config"]["model"]["channels"] *= 2
    torch.save(ckpt, tmp_path / "mismatch.pt")
    with pytest.raises(VCError, match="does not match"):
        vc.load_model(tmp_path / "mismatch.pt")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(VCError, match="not found"):
        vc.load_model(tmp_path / "nope.pt")


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"kind": "training", "step": 1})
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04 half a checkpoint")  # part of the file is written, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(VCError, match="last.pt: could not write the checkpoint .*No space left.*previous .* intact"):
        save_checkpoint(path, {"kind": "training", "step": 2})
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind
