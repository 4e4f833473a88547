"""`vc train-whisper` (`vc.training.whisper_tune`): the model's Whisper encoder fine-tuned toward the states its frozen
original gives clean clips, on the tiny-whisper model (one block of tiny.en) and segments of one second."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import vc
from vc.checkpoint import build_model, load_checkpoint
from vc.config import WhisperTuneConfig
from vc.errors import VCError
from vc.training.corrupt import Corruption
from vc.training.data import gather_utterances
from vc.training.whisper_tune import WhisperTuner, long_enough, train_whisper

SMALL = WhisperTuneConfig(steps=3, batch_size=2, segment_seconds=1.0, rooms=2, babble_clips=2, warmup_steps=1,
                          log_every=1, val_every=0, threads=1)


def tuner(whisper_run, train_dir, **changes) -> WhisperTuner:
    net, cfg = build_model(load_checkpoint(whisper_run), whisper_run)
    noise_only = Corruption([], [], cfg.audio.sample_rate, p_noise=1.0, snr_db=(0.0, 5.0), p_band=0, p_codec=0)
    settings = dataclasses.replace(SMALL, **changes)
    return WhisperTuner(net, cfg, settings, long_enough(gather_utterances(train_dir), 1.0), noise_only)


def test_a_clean_segment_costs_nothing_before_training(whisper_run, train_dir):
    t = tuner(whisper_run, train_dir, clean_share=1.0)
    losses = t.losses(*t.segments(np.random.default_rng(0)))
    assert losses["states_l1"].item() == 0 and losses["code_l1"].item() == 0


def test_steps_on_a_batch_of_noisy_segments_bring_its_states_toward_the_clean_ones(whisper_run, train_dir):
    t = tuner(whisper_run, train_dir, clean_share=0.0, lr=3e-4)
    first = t.step(0)
    assert first["states_l1"] > 0.05  # noise 0 to 5 dB under the speech moves the states
    for _ in range(6):
        last = t.step(0)  # the same step index: the same batch
    assert last["loss"] < 0.8 * first["loss"]


def test_train_whisper_changes_the_encoder_only_and_exports_a_model_that_converts(whisper_run, train_dir, tmp_path,
                                                                                 clips):
    from vc.cli import main

    out = tmp_path / "tuned.pt"
    args = ["train-whisper", str(whisper_run), "--data", str(train_dir), "--out", str(out), "--steps", "2",
            "--batch-size", "2", "--threads", "1"]
    with pytest.MonkeyPatch.context() as mp:  # the test's small settings for what the CLI leaves at its defaults
        mp.setattr("vc.config.WhisperTuneConfig",
                   lambda threads=0: dataclasses.replace(SMALL, threads=threads, val_every=2))
        assert main(args) == 0
    logged = [json.loads(line) for line in (tmp_path / "tuned.whisper" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "val_loss" in r] == [0, 2]  # the encoder as it came, and at the end
    before, after = load_checkpoint(whisper_run), load_checkpoint(out)
    changed = {k for k, v in before["model"].items() if not torch.equal(v, after["model"][k])}
    assert changed and all(k.startswith("features.") for k in changed)
    assert after["meta"]["whisper_tuned_from"] == str(whisper_run) and after["meta"]["whisper_tune_steps"] == 2
    assert after["config"] == before["config"] and "MIT License" in after["whisper"]["licence"]
    wav = vc.load_model(out).convert(clips["source"], clips["target"])
    assert np.isfinite(wav).all() and wav.std() > 0


def test_a_stopped_run_resumes_where_an_unbroken_one_goes(whisper_run, train_dir, tmp_path):
    whole = train_whisper(whisper_run, [train_dir], tmp_path / "whole.pt", SMALL)
    train_whisper(whisper_run, [train_dir], tmp_path / "split.pt", SMALL, until=1)
    split = train_whisper(whisper_run, [train_dir], tmp_path / "split.pt", SMALL)
    a, b = load_checkpoint(whole)["model"], load_checkpoint(split)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = tmp_path / "other.pt"
    other.write_bytes(whisper_run.read_bytes())
    with pytest.raises(VCError, match="a fine-tune of"):
        train_whisper(other, [train_dir], tmp_path / "split.pt", SMALL)


def test_train_whisper_refuses_a_model_without_a_whisper_encoder(tiny_checkpoint, train_dir, tmp_path):
    with pytest.raises(VCError, match="reads mels"):
        train_whisper(tiny_checkpoint, [train_dir], tmp_path / "x.pt", SMALL)
