import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from vc.audio import log_mel
from vc.checkpoint import load_checkpoint
from vc.cli import main
from vc.config import AudioConfig, Config, VocoderConfig
from vc.errors import VCError
from vc.runtime import fast_bf16
from vc.vocoder import (GriffinLim, NeuralVocoder, Vocos, build_vocoder, f0_phase, harmonic_phase, load_vocoder,
                        vocoder_weights)
from vc.training import vocoder as training
from vc.training.discriminator import Adversary, Discriminator, discriminator_loss, feature_matching, generator_loss
from vc.training.loop import warmup_cosine
from vc.training.vocoder import (Segments, VocoderTrainConfig, VocoderTrainer, anti_wrap, train_vocoder, vocoder_loss,
                                 with_adversary)

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


def test_harmonic_phase_makes_voiced_frames_harmonics_of_their_f0():
    # A voiced magnitude (peaks at the harmonics of 200 Hz, as wide as the window's main lobe) with random phase
    # sounds rough: its frames do not join. Given F0, the voiced frames' bins below the cutoff take the phase of the
    # nearest harmonic, and the energy gathers at multiples of F0; nothing else changes.
    net, frames, f0 = Vocos(AUDIO, SMALL), 200, 200.0
    bins = AUDIO.n_fft // 2 + 1
    hz = torch.arange(bins) * AUDIO.sample_rate / AUDIO.n_fft
    comb = torch.exp(-0.5 * ((hz - f0 * torch.round(hz / f0)) / 15.0) ** 2) + 1e-3
    gen = torch.Generator().manual_seed(0)
    log_mag = comb.log()[None, :, None].expand(1, bins, frames)
    noise = 2 * math.pi * torch.rand(1, bins, frames, generator=gen)
    contour = torch.full((frames,), f0)
    contour[150:] = 0  # the last frames unvoiced
    phase = harmonic_phase(noise[0], contour, AUDIO, cutoff=4000.0)
    assert torch.equal(phase[hz >= 4000], noise[0][hz >= 4000]) and torch.equal(phase[:, 150:], noise[0][:, 150:])

    def harmonicity(ph: torch.Tensor) -> float:
        """Energy within 20 Hz of a harmonic over the rest, 0.1-3.5 kHz, in the voiced frames' middle."""
        wav = net.synthesize(log_mag, ph[None] if ph.dim() == 2 else ph)[0, 40 * AUDIO.hop_length:130 * AUDIO.hop_length]
        power = np.abs(np.fft.rfft(wav.numpy() * np.hanning(len(wav)))) ** 2
        freq = np.fft.rfftfreq(len(wav), 1 / AUDIO.sample_rate)
        near = np.abs(freq - f0 * np.round(freq / f0)) < 20
        low = (freq > 100) & (freq < 3500)
        return power[near & low].sum() / power[~near & low].sum()

    assert harmonicity(phase) > 10 * harmonicity(noise)
    assert harmonicity(phase) > 100


def test_f0_phase_integrates_f0_from_its_start():
    f0 = torch.tensor([100.0, 100.0, 0.0, 200.0])
    hop = AUDIO.hop_length / AUDIO.sample_rate
    expected = 0.5 + 2 * math.pi * hop * torch.tensor([0.0, 100.0, 150.0, 250.0])  # trapezoids: 100, 50, 100 Hz
    assert torch.allclose(f0_phase(f0, AUDIO, start=0.5), expected.double())


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


def test_gan_losses():
    up, down = [(torch.full((2, 3), 2.0), [])], [(torch.full((2, 3), -2.0), [])]
    assert discriminator_loss(up, down, "hinge") == 0  # both beyond the margin
    assert discriminator_loss(down, up, "hinge") == 6
    assert generator_loss(down, "hinge") == 3 and generator_loss(up, "hinge") == 0
    assert discriminator_loss(up, down, "lsgan") == 1 + 4 and generator_loss(down, "lsgan") == 9
    maps = [(torch.zeros(1), [torch.ones(2, 3), torch.zeros(4)])]
    assert feature_matching(maps, maps) == 0
    moved = [(torch.zeros(1), [torch.ones(2, 3) + 0.5, torch.zeros(4) - 1])]
    assert feature_matching(maps, moved) == pytest.approx(1.5)  # summed over layers
    with pytest.raises(VCError, match="unknown GAN loss"):
        Adversary(kind="wasserstein")


def test_discriminators_judge_each_segment_alone():
    torch.manual_seed(0)
    disc = Discriminator(channels=4, periods=(2, 3))
    wav = torch.randn(3, 6401)  # not a multiple of the periods
    out = disc(wav)
    assert len(out) == 3 + 2
    alone = disc(wav[1:2])
    for (logits, features), (one, one_features) in zip(out, alone):
        assert logits.shape[0] == 3 and len(features) == len(one_features)
        torch.testing.assert_close(logits[1:2], one)  # the period folding keeps segments apart


def test_adversary_updates_only_itself_and_learns():
    torch.manual_seed(0)
    adversary = Adversary(channels=4, periods=(2,), lr=1e-3)
    real = torch.from_numpy(np.stack([synth_speech(150, 0.5), synth_speech(230, 0.5)]))
    gain = torch.ones(1, requires_grad=True)  # a one-parameter generator
    fake = gain * (real + 0.05 * torch.randn_like(real))
    d_loss, adv, fm = adversary.losses(fake, real, generator=True)
    (adv + fm).backward(inputs=[gain], retain_graph=True)
    grad = gain.grad.clone()
    assert grad.abs() > 0 and all(p.grad is None for p in adversary.net.parameters())
    losses = []
    for _ in range(6):
        adversary.update(d_loss, lr=1e-3)
        d_loss, adv, fm = adversary.losses(fake, real, generator=False)
        assert adv is None and fm is None
        assert torch.autograd.grad(d_loss, gain, retain_graph=True, allow_unused=True) == (None,)  # fake detached
        losses.append(d_loss.item())
    assert torch.equal(gain.grad, grad)  # the discriminator's updates left the generator's gradient alone
    assert losses[-1] < losses[0]


def _segments(cfg: VocoderTrainConfig) -> Segments:
    wavs = [torch.from_numpy((synth_speech(f0, 1.0) * 32767).astype(np.int16)) for f0 in (120, 200)]
    return Segments(wavs, [log_mel(w.float() / 32767, AUDIO) for w in wavs], None, AUDIO, cfg)


def test_without_adversarial_weight_the_step_is_as_before():
    cfg = VocoderTrainConfig(steps=3, batch_size=2, segment_frames=32)
    # the step as it was before adversarial training was added, with the same seed and batches
    torch.manual_seed(0)
    ref, sampler = Vocos(AUDIO, SMALL), _segments(cfg)
    opt = torch.optim.AdamW(ref.parameters(), lr=cfg.lr, betas=(0.8, 0.99), weight_decay=0.01)
    for step in range(cfg.steps):
        opt.param_groups[0]["lr"] = warmup_cosine(step, cfg.lr, cfg.warmup_steps, cfg.steps, floor=0.05)
        loss, _ = vocoder_loss(ref, *sampler.batch(step), cfg.phase_weight, fast_bf16("cpu"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 5.0)
        opt.step()
    # every other adversarial setting changed, but adv_weight 0
    knobs = dataclasses.replace(cfg, fm_weight=5.0, disc_lr=0.1, disc_start=0, disc_channels=8, mpd=True,
                                gan_loss="lsgan")
    torch.manual_seed(0)
    trainer = VocoderTrainer(Vocos(AUDIO, SMALL), knobs, WITH_SMALL, _segments(knobs), ([], []))
    for step in range(cfg.steps):
        values = trainer.step(step)
    assert trainer.adversary is None and "d" not in values and "discriminator" not in trainer.state()
    weights = trainer.net.state_dict()
    for name, value in ref.state_dict().items():
        assert torch.equal(weights[name], value), name


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(v, b[k]) if isinstance(v, torch.Tensor) else
                                        _same(v, b[k]) if isinstance(v, dict) else v == b[k] for k, v in a.items())


def test_adversarial_training_resumes_exactly_and_exports_the_vocoder_alone(train_dir, tmp_path):
    cfg = with_adversary(VocoderTrainConfig(steps=4, batch_size=2, segment_frames=32, disc_start=1, disc_channels=8,
                                            val_every=0, log_every=1))
    exported = load_checkpoint(train_vocoder(train_dir, tmp_path / "straight", model_cfg=SMALL, cfg=cfg))
    train_vocoder(train_dir, tmp_path / "split", model_cfg=SMALL, cfg=cfg, until=2)
    assert load_checkpoint(tmp_path / "split" / "vocoder-last.pt")["step"] == 2
    train_vocoder(train_dir, tmp_path / "split", model_cfg=SMALL, cfg=cfg)
    straight, split = (load_checkpoint(tmp_path / run / "vocoder-last.pt") for run in ("straight", "split"))
    assert straight["step"] == split["step"] == 4
    for part in ("weights", "optimizer", "discriminator"):
        assert _same(straight[part], split[part]), part
    assert straight["discriminator"]["optimizer"]["state"]  # the discriminator was trained, and its Adam state kept
    # the exported file: the vocoder's weights only
    assert "discriminator" not in exported and exported["vocoder"].keys() == Vocos(AUDIO, SMALL).state_dict().keys()
    build_vocoder(exported["vocoder"], Config.from_dict(exported["config"]))
    rows = [json.loads(r) for r in (tmp_path / "straight" / "vocoder-log.jsonl").read_text().splitlines()]
    assert "adv" not in rows[0] and all({"d", "adv", "fm"} <= r.keys() for r in rows[1:])
    assert all(math.isfinite(r["d"]) for r in rows)
    # the adversarial terms reach the vocoder: without them, the same run ends elsewhere
    plain = load_checkpoint(train_vocoder(train_dir, tmp_path / "plain", model_cfg=SMALL,
                                          cfg=dataclasses.replace(cfg, adv_weight=0.0)))
    assert not _same(plain["vocoder"], exported["vocoder"])


def test_train_vocoder_adversarial_options(monkeypatch):
    seen = []
    monkeypatch.setattr(training, "train_vocoder", lambda data, out, cfg, **kwargs: seen.append(cfg))
    for extra, expect in [([], (0.0, 0.2, False, 500)), (["--adversarial"], (0.1, 0.2, False, 500)),
                          (["--adv-weight", "0.3", "--mpd", "--disc-start", "0"], (0.3, 0.6, True, 0)),
                          (["--mpd"], (0.1, 0.2, True, 500))]:
        assert main(["train-vocoder", "--data", "d", "--out", "o", *extra]) == 0
        cfg = seen.pop()
        assert (cfg.adv_weight, cfg.fm_weight, cfg.mpd, cfg.disc_start) == pytest.approx(expect), extra
    with pytest.raises(SystemExit):
        main(["train-vocoder", "--data", "d", "--out", "o", "--disc-start", "-1"])
