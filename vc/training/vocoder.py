"""`vc train-vocoder`: train the Vocos-style vocoder on real speech, then fine-tune it on a model's own decoder output.

Reconstruction losses (by default there is no discriminator, so that it trains on a CPU in an hour): L1 on log-mel
and on multi-resolution STFT log magnitudes of the waveform, spectral convergence, L1 on the predicted log magnitude,
and the anti-wrapping phase losses of APNet (Ai & Ling 2023: group delay and instantaneous angular frequency) against
the true STFT.

Adversarial training (`adv_weight` > 0, `--adversarial`; meant mainly for fine-tuning), as in Vocos and HiFi-GAN: a
small multi-resolution discriminator (and optionally a multi-period one, `vc.training.discriminator`) trains beside
the vocoder; after `disc_start` steps on its own, its hinge loss (`adv_weight`) and feature matching (`fm_weight`) join
the generator's. `--adversarial` weighs them 0.1 and 0.2 against the mel L1's 2: HiFi-GAN's 1 : 2 : 45, whose
adversarial and feature-matching terms are sums over sub-discriminators (three here, where they are averaged), gives
0.13 : 0.27 : 2; a little less, since the reconstruction here has more terms than HiFi-GAN's mel L1. A step costs
about twice a step without it. The discriminator and its optimizer are in `vocoder-last.pt`, not in `vocoder.pt`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..audio import hann_window, load_wav, log_mel, stft
from ..checkpoint import load_checkpoint, read_config, save_checkpoint
from ..config import AudioConfig, Config, VocoderConfig
from ..errors import VCError
from ..runtime import fast_bf16
from ..vocoder import Vocos, vocoder_weights
from .data import list_utterances
from .discriminator import MPD_PERIODS, Adversary
from .loop import Run, Schedule, seed, warmup_cosine
from .monitor import Monitor

log = logging.getLogger(__name__)

RESOLUTIONS = ((256, 64), (512, 128), (1024, 256), (2048, 512))  # (n_fft, hop) of the multi-resolution STFT loss
EDGE = 3  # frames at each end of a segment left out of the direct spectrum losses (their analysis saw padding)


@dataclasses.dataclass
class VocoderTrainConfig:
    steps: int = 12000
    batch_size: int = 16
    segment_frames: int = 64
    lr: float = 5e-4
    warmup_steps: int = 200
    phase_weight: float = 0.5
    gain_db: float = 6.0  # random gain of each segment in +-gain_db, so that level does not matter
    recon_share: float = 0.7  # fine-tuning: share of segments whose mel is the model's reconstruction
    threads: int = 0
    bf16: bool = True
    seed: int = 0
    checkpoint_minutes: float = 5.0
    val_every: int = 500
    log_every: int = 50
    # adversarial training (vc.training.discriminator); adv_weight 0: none, and no discriminator is built
    adv_weight: float = 0.0
    fm_weight: float = 0.2  # feature matching, while adv_weight > 0
    disc_lr: float = 2e-4  # the discriminator's peak learning rate (the generator's schedule)
    disc_start: int = 500  # steps the discriminator trains alone before its losses enter the generator's
    disc_channels: int = 16
    mpd: bool = False  # add the multi-period discriminator to the multi-resolution one
    gan_loss: str = "hinge"  # or "lsgan"


ADV_WEIGHT = 0.1  # what --adversarial sets (see the module's docstring)


def with_adversary(cfg: VocoderTrainConfig, weight: float = ADV_WEIGHT, **fields: Any) -> VocoderTrainConfig:
    """`cfg` with adversarial training at `weight` and feature matching at twice it (HiFi-GAN's ratio)."""
    return dataclasses.replace(cfg, adv_weight=weight, fm_weight=2 * weight, **fields)


def anti_wrap(x: torch.Tensor) -> torch.Tensor:
    return (x - 2 * math.pi * torch.round(x / (2 * math.pi))).abs()


def _mag(wav: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    return torch.stft(wav, n_fft, hop, n_fft, hann_window(n_fft).to(wav.device), center=True, pad_mode="constant",
                      return_complex=True).abs()


def vocoder_loss(net: Vocos, mel: torch.Tensor, wav: torch.Tensor, phase_weight: float, bf16: bool = False
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """mel (B, n_mels, frames) and the waveform it belongs to (B, (frames - 1) * hop) -> loss, parts."""
    loss, parts, _ = reconstruction(net, mel, wav, phase_weight, bf16)
    return loss, parts


def reconstruction(net: Vocos, mel: torch.Tensor, wav: torch.Tensor, phase_weight: float, bf16: bool = False
                   ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """`vocoder_loss`, and the generated waveform (B, samples)."""
    a = net.audio
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        log_mag, phase = net.spectrum(mel)
    out = net.synthesize(log_mag, phase, wav.shape[-1])
    true = stft(wav, a)[:, :, EDGE:-EDGE]
    true_phase = true.angle()
    log_mag, phase = log_mag[:, :, EDGE:-EDGE], phase[:, :, EDGE:-EDGE]
    parts = {
        "mel": F.l1_loss(log_mel(out, a), log_mel(wav, a)),
        "mag": F.l1_loss(log_mag, torch.log(true.abs().clamp(min=1e-5))),
        "ip": anti_wrap(phase - true_phase).mean(),
        "gd": anti_wrap(torch.diff(phase, dim=1) - torch.diff(true_phase, dim=1)).mean(),
        "iaf": anti_wrap(torch.diff(phase, dim=2) - torch.diff(true_phase, dim=2)).mean(),
    }
    mr, sc = 0.0, 0.0
    for n_fft, hop in RESOLUTIONS:
        m, t = _mag(out, n_fft, hop), _mag(wav, n_fft, hop)
        mr = mr + F.l1_loss(torch.log(m.clamp(min=1e-5)), torch.log(t.clamp(min=1e-5)))
        sc = sc + torch.linalg.norm(t - m) / torch.linalg.norm(t).clamp(min=1e-5)
    parts["stft"], parts["sc"] = mr / len(RESOLUTIONS), sc / len(RESOLUTIONS)
    # The instantaneous phase itself is logged but not trained: the absolute phase of a frame depends on where the
    # pitch pulses fall in it, which a mel does not say; as a loss it only added noise (it stayed at pi / 2).
    loss = (2 * parts["mel"] + parts["mag"] + parts["stft"] + parts["sc"]
            + phase_weight * (parts["gd"] + parts["iaf"]))
    return loss, {k: float(v.detach()) for k, v in parts.items()}, out


def load_corpus(data: str | Path, audio: AudioConfig, cache: Path | None = None) -> list[torch.Tensor]:
    """Every readable utterance of a data folder as prepared audio (int16 tensors, to halve the memory).

    With `cache`, the audio is saved there once and reused while the file list and audio config are unchanged."""
    utts = list_utterances(data)
    key = hashlib.sha1(json.dumps([dataclasses.asdict(audio), [u.path for u in utts]]).encode()).hexdigest()
    if cache is not None and cache.is_file():
        c = load_checkpoint(cache)
        if c.get("key") == key:
            return c["wavs"]
    wavs = []
    for u in tqdm(utts, desc="reading audio", unit="file", leave=False):
        try:
            wav = load_wav(u.path, audio)
        except VCError as e:
            log.warning("skipped: %s", e)
            continue
        wavs.append(torch.from_numpy(np.clip(wav * 32767, -32768, 32767).astype(np.int16)))
    if not wavs:
        raise VCError(f"{data}: no usable audio")
    if cache is not None:
        save_checkpoint(cache, {"key": key, "wavs": wavs})
    return wavs


@torch.inference_mode()
def reconstructions(model_path: str | Path, wavs: list[torch.Tensor], audio: AudioConfig) -> list[torch.Tensor]:
    """Teacher-forced reconstructions by a trained converter: each utterance's content in its own voice, as log-mels
    aligned frame for frame with the audio. This is what the vocoder will be fed at inference."""
    from ..api import load_model
    vc = load_model(model_path, vocoder="griffin-lim")
    if dataclasses.asdict(vc.cfg.audio) != dataclasses.asdict(audio):
        raise VCError(f"{model_path}: its audio settings differ from the vocoder's")
    mels = []
    for w in tqdm(wavs, desc="reconstructing", unit="utt", leave=False):
        wav = w.float().numpy() / 32767
        mels.append(vc.reconstruct_mel(wav).to(torch.float16))
    return mels


class Segments:
    """Random (mel, waveform) segment batches, the same for a given seed and step."""

    def __init__(self, wavs: list[torch.Tensor], mels: list[torch.Tensor], recon: list[torch.Tensor] | None,
                 audio: AudioConfig, cfg: VocoderTrainConfig):
        self.audio, self.cfg = audio, cfg
        keep = [i for i, m in enumerate(mels) if m.shape[1] > cfg.segment_frames]
        if not keep:
            raise VCError(f"no utterance is longer than {cfg.segment_frames} frames")
        self.wavs, self.mels, self.recon, self.index = wavs, mels, recon, np.array(keep)
        lengths = np.array([mels[i].shape[1] for i in keep], dtype=np.float64)
        self.p = lengths / lengths.sum()

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        c, hop = self.cfg, self.audio.hop_length
        rng = np.random.default_rng([c.seed, step])
        mels, wavs = [], []
        for i in rng.choice(self.index, size=c.batch_size, p=self.p):
            source = self.recon if self.recon is not None and rng.random() < c.recon_share else self.mels
            m = source[i]
            start = int(rng.integers(0, m.shape[1] - c.segment_frames))
            gain = 10 ** (rng.uniform(-c.gain_db, c.gain_db) / 20)
            mels.append(m[:, start:start + c.segment_frames + 1].float() + math.log(gain))
            w = self.wavs[i][start * hop:(start + c.segment_frames) * hop].float() / 32767 * gain
            wavs.append(F.pad(w, (0, c.segment_frames * hop - len(w))))
        return torch.stack(mels), torch.stack(wavs)


class VocoderTrainer:
    """`vc train-vocoder`'s part of the loop: the vocoder and its optimizer (and with `cfg.adv_weight`, the
    discriminator and its), one step on random segments, and copy-synthesis validation."""
    progress: tuple[str, ...] = ("mel", "ip")

    def __init__(self, net: Vocos, cfg: VocoderTrainConfig, config: Config, sampler: "Segments",
                 val: tuple[list[torch.Tensor], list[torch.Tensor]], state: dict[str, Any] | None = None):
        self.net, self.cfg, self.config, self.sampler, self.val = net, cfg, config, sampler, val
        self.opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, betas=(0.8, 0.99), weight_decay=0.01)
        if state is not None:
            net.load_state_dict(state["weights"])
            self.opt.load_state_dict(state["optimizer"])
        self.bf16 = cfg.bf16 and fast_bf16("cpu")  # the vocoder trains on the CPU
        self.adversary = None
        if cfg.adv_weight > 0:
            self.adversary = Adversary(cfg.disc_channels, MPD_PERIODS if cfg.mpd else (), cfg.disc_lr, cfg.gan_loss,
                                       (state or {}).get("discriminator"))
            self.progress = ("mel", "ip", "d")
        elif state is not None and "discriminator" in state:
            log.warning("resuming without the checkpoint's discriminator: this run has no adversarial loss")

    def step(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        for g in self.opt.param_groups:
            g["lr"] = warmup_cosine(step, cfg.lr, cfg.warmup_steps, cfg.steps, floor=0.05)
        mel, wav = self.sampler.batch(step)
        self.net.train()
        if self.adversary is None:
            loss, parts = vocoder_loss(self.net, mel, wav, cfg.phase_weight, self.bf16)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
        else:
            loss, parts = self._adversarial_backward(step, mel, wav)
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 5.0)
        self.opt.step()
        return {"loss": loss.item(), **parts}

    def _adversarial_backward(self, step: int, mel: torch.Tensor, wav: torch.Tensor
                              ) -> tuple[torch.Tensor, dict[str, float]]:
        """The generator's gradients (reconstruction, and after `disc_start` steps the adversarial and feature-matching
        terms), and the discriminator's update on the same audio."""
        cfg, adversary = self.cfg, self.adversary
        loss, parts, out = reconstruction(self.net, mel, wav, cfg.phase_weight, self.bf16)
        joint = step >= cfg.disc_start
        d_loss, adv, fm = adversary.losses(out, wav, joint, self.bf16)
        if joint:
            loss = loss + cfg.adv_weight * adv + cfg.fm_weight * fm
            parts.update(adv=float(adv.detach()), fm=float(fm.detach()))
        self.opt.zero_grad(set_to_none=True)
        # before the discriminator's update, which changes the weights that this backward pass goes through
        loss.backward(inputs=list(self.net.parameters()), retain_graph=joint)
        adversary.update(d_loss, warmup_cosine(step, cfg.disc_lr, cfg.warmup_steps, cfg.steps, floor=0.05))
        parts["d"] = float(d_loss.detach())
        return loss, parts

    def state(self) -> dict[str, Any]:
        state = {"kind": "vocoder-train", "weights": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                 "config": self.config.to_dict(), "settings": dataclasses.asdict(self.cfg)}
        if self.adversary is not None:
            state["discriminator"] = self.adversary.state()
        return state

    def validate(self, step: int, monitor: Monitor) -> dict[str, float]:
        return validate(self.net, *self.val, self.config.audio)


def train_vocoder(data: str | Path, out: str | Path, *, audio: AudioConfig | None = None,
                  model_cfg: VocoderConfig | None = None, cfg: VocoderTrainConfig | None = None,
                  init: str | Path | None = None, finetune_on: str | Path | None = None,
                  max_minutes: float | None = None, causal: bool | None = None, until: int | None = None) -> Path:
    """Train (or, with `init`, continue from an exported vocoder) and export `out/vocoder.pt`.

    `finetune_on`: a converter checkpoint whose teacher-forced reconstructions replace `recon_share` of the mels.
    `causal`: a streamable vocoder (None: as `model_cfg`, or as the `init` vocoder, which it must agree with).
    Resumes from `out/vocoder-last.pt` when it exists, with that run's audio and vocoder settings.
    """
    out = Path(out)
    cfg = cfg or VocoderTrainConfig()
    run = Run(out, checkpoint="vocoder-last.pt", log="vocoder-log.jsonl", tb="vocoder-tb")
    state = run.resume()
    seed(cfg.seed, cfg.threads)
    if state is not None:
        config = read_config(state, run.last)
        net = Vocos(config.audio, config.vocoder)
    else:
        config, net = _initial(audio, model_cfg or VocoderConfig(), init, causal)
    audio = config.audio
    wavs = load_corpus(data, audio, out / "audio-cache.pt")
    mels = [log_mel(w.float() / 32767, audio).to(torch.float16) for w in wavs]
    if init is None and state is None:
        allm = torch.cat([m.float().flatten() for m in mels])
        net.mel_mean.fill_(float(allm.mean()))
        net.mel_std.fill_(float(allm.std()))
    recon = reconstructions(finetune_on, wavs, audio) if finetune_on else None
    val_idx = np.random.default_rng(12345).choice(len(wavs), size=min(8, len(wavs)), replace=False)
    val = ([wavs[i] for i in val_idx], [(recon or mels)[i] for i in val_idx])
    trainer = VocoderTrainer(net, cfg, config, Segments(wavs, mels, recon, audio, cfg), val, state)
    start = state["step"] if state is not None else 0
    schedule = Schedule(cfg.steps, cfg.log_every, cfg.val_every, cfg.checkpoint_minutes, max_minutes, until=until)
    outcome = run.loop(trainer, schedule, start, run.monitor(cfg.steps, start, desc="vocoder"))
    path = save_checkpoint(out / "vocoder.pt", {
        "kind": "vocoder", "config": config.to_dict(), "vocoder": vocoder_weights(net),
        "meta": {"step": outcome.step, "data": str(data), "finetune_on": str(finetune_on or ""),
                 "complete": outcome.complete}})
    run.finish(outcome, path)
    return path


def _initial(audio: AudioConfig | None, model_cfg: VocoderConfig, init: str | Path | None, causal: bool | None
             ) -> tuple[Config, Vocos]:
    """The config and network a new run starts from: `audio` (None: the default) and `model_cfg` (made causal or not
    by `causal`), or the exported vocoder `init`, which brings its own architecture and audio settings."""
    if init is None:
        audio = audio or AudioConfig()
        if causal is not None:
            model_cfg = dataclasses.replace(model_cfg, causal=causal)
        return Config(audio=audio, vocoder=model_cfg), Vocos(audio, model_cfg)
    start = load_checkpoint(init)
    if start.get("vocoder") is None:
        raise VCError(f"{init}: not a vocoder file (write one with `vc train-vocoder`)")
    init_cfg = read_config(start, init)
    if causal is not None and causal != init_cfg.vocoder.causal:
        raise VCError(f"{init}: its vocoder is {'' if init_cfg.vocoder.causal else 'not '}causal; "
                      "--causal cannot change that (train from scratch instead)")
    if audio is not None and audio != init_cfg.audio:
        raise VCError(f"{init}: its audio settings differ from the recipe's")
    config = Config(audio=init_cfg.audio, vocoder=init_cfg.vocoder)
    net = Vocos(init_cfg.audio, init_cfg.vocoder)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in start["vocoder"].items()})
    return config, net


@torch.inference_mode()
def validate(net: Vocos, wavs: list[torch.Tensor], mels: list[torch.Tensor], audio: AudioConfig) -> dict[str, float]:
    """Whole-utterance copy synthesis: log-mel L1 between the vocoded audio and the original."""
    net.eval()
    errs = []
    for w, m in zip(wavs, mels):
        wav = w.float() / 32767
        out = net(m.float()[None], len(wav))[0]
        errs.append(float((log_mel(out, audio) - log_mel(wav, audio)).abs().mean()))
    net.train()
    return {"val_mel_l1": float(np.mean(errs))}
