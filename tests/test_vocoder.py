import numpy as np
import pytest
import torch

from vc.audio import log_mel
from vc.checkpoint import load_checkpoint
from vc.config import AudioConfig, Config, VocoderConfig
from vc.errors import VCError
from vc.vocoder import GriffinLim, NeuralVocoder, Vocos, build_vocoder, load_vocoder, vocoder_weights
from vc.training.vocoder import VocoderTrainConfig, anti_wrap, train_vocoder, vocoder_loss

from conftest import synth_speech, write_speakers

AUDIO = AudioConfig()
SMALL = VocoderConfig(dim=32, layers=2, intermediate=64)
WITH_SMALL = Config(audio=AUDIO, vocoder=SMALL)


def test_vocos_output_lines_up_with_the_mel_frames():
    net = Vocos(AUDIO, SMALL).eval()
    mel = log_mel(synth_speech(150, 1.0), AUDIO)[None]
    wav = net(mel)
    assert wav.shape == (1, (mel.shape[2] - 1) * AUDIO.hop_length)
    assert net(mel, 16123).shape == (1, 16123)
    # one frame of output per input frame: a change at frame k changes the audio around k * hop only (within the
    # receptive field: 3 convolutions of 7 frames, and the 50 ms window)
    mel2 = mel.clone()
    mel2[:, :, 40] += 3
    diff = (net(mel2) - wav).abs()[0]
    changed = torch.nonzero(diff > 1e-6)[:, 0]
    assert changed.min() > (40 - 12) * AUDIO.hop_length and changed.max() < (40 + 12) * AUDIO.hop_length


def test_anti_wrapping_is_periodic():
    x = torch.tensor([0.1, 0.1 + 2 * np.pi, -0.1 - 4 * np.pi, np.pi])
    torch.testing.assert_close(anti_wrap(x), torch.tensor([0.1, 0.1, 0.1, np.pi]))


def test_loss_is_lower_for_the_true_spectrum():
    torch.manual_seed(0)
    net = Vocos(AUDIO, SMALL)
    wav = torch.from_numpy(synth_speech(150, 1.0))[None, :12800]
    mel = log_mel(wav, AUDIO)
    before, parts = vocoder_loss(net, mel, wav, phase_weight=0.5)
    assert set(parts) >= {"mel", "mag", "ip", "gd", "iaf", "stft", "sc"}
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(30):
        loss, _ = vocoder_loss(net, mel, wav, phase_weight=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * before.item()


def test_load_vocoder():
    assert isinstance(load_vocoder("griffin-lim", WITH_SMALL), GriffinLim)
    with pytest.raises(VCError, match="no neural vocoder"):
        load_vocoder("vocos", WITH_SMALL)
    with pytest.raises(VCError, match="unknown vocoder"):
        load_vocoder("wavenet", WITH_SMALL)
    net = Vocos(AUDIO, SMALL)
    voc = load_vocoder("vocos", WITH_SMALL, vocoder_weights(net), bf16=False)
    assert isinstance(voc, NeuralVocoder)
    mel = log_mel(synth_speech(150, 0.5), AUDIO)
    torch.testing.assert_close(voc(mel, 8000), net.eval()(mel[None], 8000)[0])
    fast = load_vocoder("vocos", WITH_SMALL, vocoder_weights(net), bf16=True)  # bf16 autocast: close, not equal
    assert (log_mel(fast(mel, 8000), AUDIO) - log_mel(voc(mel, 8000), AUDIO)).abs().mean() < 0.05
    bad = vocoder_weights(net)
    bad.pop("head.weight")
    with pytest.raises(VCError, match="does not match"):
        load_vocoder("vocos", WITH_SMALL, bad)


def test_train_vocoder_exports_and_resumes(tmp_path):
    data = write_speakers(tmp_path / "data", n_speakers=2, n_clips=2)
    cfg = VocoderTrainConfig(steps=4, batch_size=2, segment_frames=32, val_every=2, log_every=1)
    out = tmp_path / "run"
    path = train_vocoder(data, out, model_cfg=SMALL, cfg=cfg)
    ck = load_checkpoint(path)
    assert ck["kind"] == "vocoder" and ck["meta"]["step"] == 4
    net = build_vocoder(ck["vocoder"], Config.from_dict(ck["config"]))
    assert net.cfg == SMALL
    cfg.steps = 6
    train_vocoder(data, out, model_cfg=SMALL, cfg=cfg)  # resumes from vocoder-last.pt
    assert load_checkpoint(out / "vocoder-last.pt")["step"] == 6
