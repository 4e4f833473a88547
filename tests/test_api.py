import numpy as np
import soundfile as sf
import torch

import vc
from vc.api import DEFAULT_CHECKPOINT

from conftest import SHARED, synth_speech


def test_stages_chain_into_convert(tiny_checkpoint, clips):
    model = vc.load_model(tiny_checkpoint)
    src = model.load(clips["source"], trim=False)
    spk = model.embed(clips["target"])
    content = model.encode(src)
    frames = len(src) // model.cfg.audio.hop_length + 1
    mel = model.decode(content, spk, frames)
    assert spk.shape == (model.cfg.model.speaker_dim,)
    assert content.shape == (model.cfg.model.content_dim, (frames + 1) // 2)
    assert mel.shape == (model.cfg.audio.n_mels, frames)
    out = model.convert(clips["source"], clips["target"])
    assert out.dtype == np.float32 and out.shape == src.shape


def test_targets_average_and_arrays_work(tiny_checkpoint, clips):
    model = vc.load_model(tiny_checkpoint)
    a, b = model.embed(clips["source"]), model.embed(clips["target"])
    torch.testing.assert_close(model.embed([clips["source"], clips["target"]]), (a + b) / 2)
    wav48 = synth_speech(150, 1.0, sr=48000)
    out = model.convert((wav48, 48000), clips["target"])
    assert abs(len(out) - len(wav48) // 3) <= 1


def test_shipped_default_model_converts_speech(tmp_path):
    assert DEFAULT_CHECKPOINT.is_file(), "the repository ships checkpoints/default.pt"
    assert DEFAULT_CHECKPOINT.stat().st_size < 50e6
    model = vc.load_model()
    if (SHARED / "tiny").is_dir():
        src, tgt = SHARED / "tiny/vctk/p225/p225_003.flac", SHARED / "tiny/vctk/p226/p226_003.flac"
    else:
        src, tgt = tmp_path / "s.wav", tmp_path / "t.wav"
        sf.write(src, synth_speech(120, 2.0), 16000)
        sf.write(tgt, synth_speech(220, 2.0), 16000)
    out = model.convert(src, tgt)
    n = len(model.load(src, trim=False))
    assert len(out) == n and np.isfinite(out).all()
    assert np.abs(out[:1600]).max() <= np.abs(out[1600:]).max()  # no burst from the networks' padded edges
    assert -30 < 20 * np.log10(np.sqrt(np.mean(out ** 2))) < -10
