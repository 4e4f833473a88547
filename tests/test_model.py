import dataclasses

import pytest
import torch

from vc.config import ModelConfig
from vc.model import AdaIN, ContentEncoder, Decoder, SpeakerClassifier, SpeakerEncoder, VoiceConverterNet

CFG = ModelConfig(channels=32, content_blocks=3, speaker_blocks=2, speaker_dim=16, decoder_blocks=4,
                  classifier_channels=32, n_speakers=7)
N_MELS = 80


@pytest.mark.parametrize("frames", [64, 101])
def test_shapes(frames):
    mel = torch.randn(3, N_MELS, frames)
    content = ContentEncoder(CFG, N_MELS)(mel)
    assert content.shape == (3, CFG.content_dim, (frames + 1) // 2)
    spk = SpeakerEncoder(CFG, N_MELS)(torch.randn(3, N_MELS, 50))
    assert spk.shape == (3, CFG.speaker_dim)
    pitch = torch.randn(3, 2, frames)
    assert Decoder(CFG, N_MELS)(content, spk, frames, pitch).shape == (3, N_MELS, frames)
    assert SpeakerClassifier(CFG)(content).shape == (3, CFG.n_speakers)


def test_content_code_is_instance_normalized():
    content = ContentEncoder(CFG, N_MELS)(torch.randn(2, N_MELS, 80) * 3 + 5)
    torch.testing.assert_close(content.mean(dim=2), torch.zeros(2, CFG.content_dim), atol=1e-4, rtol=0)
    torch.testing.assert_close(content.std(dim=2, unbiased=False), torch.ones(2, CFG.content_dim), atol=1e-3, rtol=0)


def test_speaker_embedding_ignores_length_of_a_stationary_clip():
    enc = SpeakerEncoder(CFG, N_MELS).eval()
    frame = torch.randn(1, N_MELS, 1)
    short, long = enc(frame.repeat(1, 1, 200)), enc(frame.repeat(1, 1, 800))
    torch.testing.assert_close(short, long, atol=0.05, rtol=0.05)  # pooling: only edges differ


def test_adain_takes_its_statistics_from_the_speaker():
    norm = AdaIN(8, CFG.speaker_dim)
    x = torch.randn(2, 8, 40)
    a, b = torch.randn(1, CFG.speaker_dim).repeat(2, 1), torch.randn(1, CFG.speaker_dim).repeat(2, 1)
    ya, yb = norm(x, a), norm(x * 4 + 1, a)
    torch.testing.assert_close(ya, yb, atol=1e-3, rtol=1e-3)  # the input's own statistics are gone
    assert not torch.allclose(norm(x, a), norm(x, b))  # the speaker's are applied


def test_decoder_output_depends_on_speaker():
    net = VoiceConverterNet(CFG, N_MELS).eval()
    mel, ref1, ref2 = torch.randn(1, N_MELS, 64), torch.randn(1, N_MELS, 64), torch.randn(1, N_MELS, 64) * 2
    pitch = torch.randn(1, 2, 64)
    assert not torch.allclose(net(mel, ref1, pitch), net(mel, ref2, pitch))


def test_decoder_output_depends_on_pitch_and_needs_it():
    net = VoiceConverterNet(CFG, N_MELS).eval()
    mel, ref = torch.randn(1, N_MELS, 64), torch.randn(1, N_MELS, 64)
    low, high = torch.zeros(1, 2, 64), torch.ones(1, 2, 64)
    assert not torch.allclose(net(mel, ref, low), net(mel, ref, high))
    with pytest.raises(ValueError, match="pitch"):
        net(mel, ref)
    no_pitch = VoiceConverterNet(dataclasses.replace(CFG, pitch=False), N_MELS).eval()
    assert no_pitch(mel, ref).shape == mel.shape


def test_normalize_round_trip():
    net = VoiceConverterNet(CFG, N_MELS)
    net.mel_mean.uniform_(-5, 0)
    net.mel_std.uniform_(0.5, 2)
    mel = torch.randn(2, N_MELS, 10)
    torch.testing.assert_close(net.denormalize(net.normalize(mel)), mel)


def test_causal_model_sees_only_its_lookahead(monkeypatch):
    # A change at mel frame t may change the output from frame t - lookahead on, never before; the causal vocoder
    # sees no future frame at all. This is what lets `vc.stream` run them block by block. (Instance norm's
    # statistics, which the stream takes over the frames so far, are left out here.)
    import vc.model
    from vc.config import AudioConfig, VocoderConfig
    from vc.vocoder import Vocos

    monkeypatch.setattr(vc.model, "instance_norm", lambda x, eps=1e-5: x.float())
    torch.manual_seed(0)
    cfg = ModelConfig(causal=True, lookahead=2, channels=32, content_dim=8, speaker_dim=16)
    net = VoiceConverterNet(cfg, 80).eval()
    voc = Vocos(AudioConfig(), VocoderConfig(causal=True, dim=32, intermediate=64, layers=2)).eval()
    mel, ref, pitch = torch.randn(1, 80, 48), torch.randn(1, 80, 40), torch.randn(1, 2, 48)
    with torch.no_grad():
        out, spec = net(mel, ref, pitch), voc.spectrum(mel)[0]
        for t in (20, 21, 30):
            mel2, pitch2 = mel.clone(), pitch.clone()
            mel2[:, :, t] += 1
            pitch2[:, :, t] += 1
            changed = (net(mel2, ref, pitch2) - out).abs().amax(dim=1)[0] > 1e-6
            assert not changed[:t - cfg.lookahead].any() and changed[t]
            changed = (voc.spectrum(mel2)[0] - spec).abs().amax(dim=1)[0] > 1e-6
            assert not changed[:t].any() and changed[t]
