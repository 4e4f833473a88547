import numpy as np
import pytest
import torch

import vc
from vc.checkpoint import VERSION, build_model, load_checkpoint, save_checkpoint
from vc.errors import VCError


def test_training_checkpoint_exports_to_the_same_converter(tiny_checkpoint, clips, tmp_path):
    # train -> last.pt (training state) -> `vc export` -> an inference file that converts exactly as the one the
    # training run exported itself, holds no optimizer state, and loads without running code.
    from vc.cli import main

    last = tiny_checkpoint.parent / "last.pt"
    assert load_checkpoint(last)["kind"] == "training"
    assert main(["export", str(last), str(tmp_path / "exported.pt")]) == 0
    ckpt = torch.load(tmp_path / "exported.pt", map_location="cpu", weights_only=True)  # no code can run on load
    assert ckpt["version"] == VERSION and ckpt["kind"] == "inference"
    assert not any("opt" in k or "classifier" in k for k in ckpt)  # no training state in an inference checkpoint
    before = vc.load_model(tiny_checkpoint).convert(clips["source"], clips["target"])
    after = vc.load_model(tmp_path / "exported.pt").convert(clips["source"], clips["target"])
    np.testing.assert_array_equal(before, after)


def test_truncated_checkpoint(tiny_checkpoint, tmp_path):
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    with pytest.raises(VCError, match="corrupt, truncated"):
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


def test_nan_weights_and_impossible_configs_are_refused_on_load(tiny_checkpoint, tmp_path):
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    broken = {**ckpt, "model": {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                                for k, v in ckpt["model"].items()}}
    torch.save(broken, tmp_path / "nan.pt")
    with pytest.raises(VCError, match="nan.pt: weights hold NaN"):
        vc.load_model(tmp_path / "nan.pt")
    for section, field, value in (("audio", "hop_length", 0), ("audio", "sample_rate", -8000),
                                  ("model", "channels", 0), ("convert", "timbre_match", 5.0)):
        bad = {**ckpt, "config": {**ckpt["config"], section: {**ckpt["config"][section], field: value}}}
        torch.save(bad, tmp_path / "bad.pt")
        with pytest.raises(VCError, match=f"bad.pt: bad config .*{field}"):
            vc.load_model(tmp_path / "bad.pt")
    del ckpt["config"]["pitch"]
    torch.save(ckpt, tmp_path / "partial.pt")
    with pytest.raises(VCError, match="missing: pitch"):  # no silent fall-back to defaults
        vc.load_model(tmp_path / "partial.pt")


def test_a_vocoder_of_other_mels_is_refused_at_export(tiny_checkpoint, tmp_path):
    from vc.checkpoint import with_vocoder
    from vc.config import Config, VocoderConfig
    from vc.vocoder import Vocos, vocoder_weights

    small = VocoderConfig(dim=16, layers=1, intermediate=32)
    for n_mels, ok in ((80, True), (64, False)):
        cfg = Config().replace(audio={"n_mels": n_mels}, vocoder=vars(small))
        save_checkpoint(tmp_path / "vocoder.pt", {"kind": "vocoder", "config": cfg.to_dict(),
                                                  "vocoder": vocoder_weights(Vocos(cfg.audio, small))})
        net_cfg = build_model(load_checkpoint(tiny_checkpoint))[1]
        if ok:
            assert with_vocoder(net_cfg, tmp_path / "vocoder.pt")[0].vocoder == small
        else:
            with pytest.raises(VCError, match="vocoder's audio settings differ .*n_mels 64 vs 80"):
                with_vocoder(net_cfg, tmp_path / "vocoder.pt")


def test_version_1_files_are_read_as_version_2(tmp_path):
    # The format the shipped models were written in: n_mels in the model section, no pitch/convert/vocoder sections,
    # the vocoder's config beside its weights.
    from vc.config import Config
    from vc.model import VoiceConverterNet
    from vc.vocoder import Vocos, vocoder_weights

    cfg = Config().replace(model={"channels": 16, "content_dim": 4, "speaker_dim": 8, "classifier_channels": 8},
                           vocoder={"dim": 16, "layers": 1, "intermediate": 32})
    old = {"audio": vars(cfg.audio), "model": {**vars(cfg.model), "n_mels": 80}, "train": vars(cfg.train)}
    torch.save({"format": "vc-checkpoint", "version": 1, "kind": "inference", "config": old, "meta": {},
                "model": VoiceConverterNet(cfg.model, 80).state_dict(),
                "vocoder": {"config": vars(cfg.vocoder), "weights": vocoder_weights(Vocos(cfg.audio, cfg.vocoder))}},
               tmp_path / "v1.pt")
    model = vc.load_model(tmp_path / "v1.pt")
    assert model.cfg == cfg and model.vocoder_name == "vocos"


def test_int8_weights_keep_every_row_within_half_a_step_and_the_others_as_they_are():
    from vc.checkpoint import dequantized, quantized

    torch.manual_seed(0)
    state = {"features.blocks.0.mlp.0.weight": torch.randn(6, 5) * torch.arange(1, 7)[:, None],
             "features.conv1.weight": torch.randn(4, 3, 2).half(), "features.conv1.bias": torch.randn(4),
             "decoder.convs.0.weight": torch.randn(3, 3).half()}
    stored, scales = quantized(state)
    assert set(scales) == {"features.blocks.0.mlp.0.weight", "features.conv1.weight"}  # matrices under INT8 only
    assert all(stored[k].dtype == torch.int8 for k in scales)
    assert stored["features.conv1.bias"] is state["features.conv1.bias"]
    assert stored["decoder.convs.0.weight"] is state["decoder.convs.0.weight"]
    back = dequantized(stored, scales)
    for k in scales:
        w = state[k].float()
        step = w.reshape(w.shape[0], -1).abs().amax(dim=1) / 127  # one scale per output row
        assert ((back[k] - w).abs() <= step.reshape(-1, *[1] * (w.dim() - 1)) / 2 + 1e-6).all(), k
        assert not torch.equal(back[k], w)  # it did round
    requantized, _ = quantized(back)  # exporting a loaded file again stores the same numbers
    assert all(torch.equal(requantized[k], stored[k]) for k in scales)


def test_a_version_2_file_loads_and_damaged_int8_weights_are_named(tiny_checkpoint, clips, tmp_path):
    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    torch.save({**ckpt, "version": 2}, tmp_path / "v2.pt")  # written before int8 weights: the same numbers
    assert load_checkpoint(tmp_path / "v2.pt")["version"] == VERSION
    np.testing.assert_array_equal(vc.load_model(tmp_path / "v2.pt").convert(clips["source"], clips["target"]),
                                  vc.load_model(tiny_checkpoint).convert(clips["source"], clips["target"]))
    torch.save({**ckpt, "scales": {"features.missing.weight": torch.ones(3)}}, tmp_path / "bad.pt")
    with pytest.raises(VCError, match="bad.pt: damaged int8 weights"):
        load_checkpoint(tmp_path / "bad.pt")
