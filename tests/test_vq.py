import dataclasses
import json

import pytest
import torch

from vc.api import load_model
from vc.config import ModelConfig, load_recipe
from vc.errors import VCError
from vc.model import ContentEncoder, VectorQuantizer
from vc.training.converter import train

from conftest import ROOT

CFG = ModelConfig(channels=32, content_blocks=3, speaker_blocks=2, speaker_dim=16, decoder_blocks=4,
                  classifier_channels=32, n_speakers=7, content="vq", codebook_size=8)


def test_vq_content_code_takes_only_codebook_values_and_passes_gradients_straight_through():
    enc = ContentEncoder(CFG, 80).eval()
    mel = torch.randn(2, 80, 60, requires_grad=True)
    code = enc(mel)
    frames = code.detach().transpose(1, 2).reshape(-1, CFG.content_dim)
    book = enc.quantizer.codebook.detach()
    assert torch.cdist(frames, book).min(dim=1).values.max() < 1e-2  # every frame is one of the 8 units
    code.sum().backward()
    assert mel.grad is not None and mel.grad.abs().sum() > 0  # straight through, not stopped at the argmin


def test_vq_training_terms_and_dead_units_restart_on_the_batch():
    vq = VectorQuantizer(4, 3, decay=0.0).train()
    with torch.no_grad():
        vq.codebook[:] = torch.tensor([[0., 0, 0], [100, 100, 100], [-100, -100, -100], [50, -50, 50]])
    z = torch.randn(2, 3, 20) * 0.1
    out = vq(z)
    assert out.shape == z.shape
    book, commit = vq.losses
    assert book.item() == pytest.approx(commit.item()) and book.item() > 0
    assert vq.perplexity == pytest.approx(1.0)  # only unit 0 was chosen
    # the three unused units restarted on frames of the batch: near the data now
    assert torch.linalg.vector_norm(vq.codebook.detach()[1:], dim=1).max() < 1.0


def test_content_vq_is_a_recipe_switch_that_trains_and_converts(train_dir, dev_dir, tmp_path):
    cfg = load_recipe(ROOT / "recipes" / "tiny.yaml").replace(model={"content": "vq", "codebook_size": 16})
    path = train(cfg, train_dir, tmp_path, dev=dev_dir)
    rows = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(1 <= r["vq_perplexity"] <= 16 for r in rows if "recon_l1" in r)
    model = load_model(path)
    assert model.net.content_encoder.quantizer is not None and model.cfg.model.content == "vq"
    wav = model.load(sorted(p for p in dev_dir.rglob("*") if p.suffix in (".wav", ".flac"))[0], trim=False)
    out = model.convert((wav, model.sample_rate), (wav, model.sample_rate))
    assert out.shape == wav.shape and torch.isfinite(torch.from_numpy(out)).all()


def test_vq_is_refused_for_causal_models():
    with pytest.raises(VCError, match="content"):
        dataclasses.replace(CFG, causal=True)
