"""`vc train`: adversarial training of the disentangling auto-encoder, with validation, checkpoints and resume; on one
process, or on several under torchrun (DistributedDataParallel, see `vc.training.distributed`)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import export_inference, read_config, whisper_entry
from ..config import Config
from ..errors import VCError
from ..model import SpeakerClassifier, VoiceConverterNet
from ..runtime import fast_bf16
from ..whisper import WhisperEncoder
from .augment import freq_warp, new_voices
from .corrupt import converted_speakers
from .corpus import Corpus, channel_stats, read_corpus, whisper_encoder
from .data import SegmentSampler
from .discriminator import Adversary, MelDiscriminator
from .distributed import Dist, setup
from .finetune import fit_speaker_head, init_state, trainable
from .hold import CodeAnchor, VoiceAnchor
from .loop import Run, Schedule, seed, warmup_cosine
from .monitor import Monitor, sample_conversions
from .teacher import teacher_encoder
from .validation import validate
from .words import voice_loss, word_loss


# what a resumed run takes from the recipe: a run may be extended, go on as denoising training, against the
# adversary (from `adv_start`) or with speaker augmentation, or go on with longer segments (a model with a causal
# norm window learns on them the steady state of its chained windows), or on fewer threads (a machine that got busy)
RECIPE_ON_RESUME = ("steps", "denoise", "denoise_ref", "denoise_copies", "voice_shift", "voice_shift_semitones",
                    "voice_shift_copies", "voice_shift_model", "voice_shift_target", "segment_frames", "batch_size",
                    "mel_gan", "mel_gan_start", "adv_weight", "adv_start", "adv_ramp", "teacher_code_share",
                    "speaker_warp", "speaker_warp_share", "word_loss", "word_loss_norm", "voice_loss",
                    "word_loss_speech_db", "code_hold", "code_hold_db", "code_hold_clean", "voice_hold", "threads")


def adv_weight(cfg: Config, step: int) -> float:
    t = cfg.train
    if step < t.adv_start:
        return 0.0
    return t.adv_weight * min(1.0, (step - t.adv_start) / max(1, t.adv_ramp))


def learning_rate(cfg: Config, step: int) -> float:
    t = cfg.train
    return warmup_cosine(step, t.lr, t.warmup_steps, t.steps, floor=0.1)


class Generator(nn.Module):
    """Everything the generator loss trains, behind one forward, so that DistributedDataParallel sees all of it:
    warped mel (B, n_mels, T), reference (B, n_mels, T_ref), pitch (B, 2, T) -> content code, speaker embedding,
    reconstruction (B, n_mels, T), speaker logits (B, n_speakers), with a distillation head (`train.distill`) its
    prediction of the teacher's states from the content code (B, n_state, T'; else None), and with `cross` (the
    pitch input of each item in the previous item's register: `in_register`) each item decoded in the previous
    item's voice (B, n_mels, T; else None: `train.word_loss`)."""

    def __init__(self, net: VoiceConverterNet, speaker_head: nn.Linear, distill_head: nn.Module | None = None,
                 detach_code: bool = False):
        super().__init__()
        self.net, self.speaker_head, self.distill_head = net, speaker_head, distill_head
        self.detach_code = detach_code  # `train.code_teacher`: the decoder's loss does not reach the content encoder

    def forward(self, mel: torch.Tensor, ref: torch.Tensor, pitch: torch.Tensor | None,
                teacher: tuple[torch.Tensor, torch.Tensor] | None = None, cross: torch.Tensor | None = None):
        """`teacher`: (the teacher's code (B, content_dim, T'), which items' decoder reads it (B,) bool)."""
        content = self.net.content_encoder(mel)
        spk = self.net.speaker_encoder(ref)
        predicted = self.distill_head(content) if self.distill_head is not None else None
        code = content.detach() if self.detach_code else content
        if teacher is not None:
            code = torch.where(teacher[1][:, None, None], teacher[0].to(code.dtype), code)
        converted = self.net.decoder(code, spk.roll(1, dims=0), mel.shape[2], cross) if cross is not None else None
        return (content, spk, self.net.decoder(code, spk, mel.shape[2], pitch), self.speaker_head(spk.float()),
                predicted, converted)


def in_register(pitch: torch.Tensor | None, other: torch.Tensor | None) -> torch.Tensor | None:
    """Pitch inputs (B, 2, T) with each item's log-F0 moved by the difference of the voiced means of `other`'s and its
    own (as a conversion moves the source to the target's register); None for a model without pitch."""
    if pitch is None:
        return None

    def mean(p: torch.Tensor) -> torch.Tensor:
        return (p[:, 0] * p[:, 1]).sum(dim=1) / p[:, 1].sum(dim=1).clamp(min=1)

    shift = torch.where((pitch[:, 1].sum(dim=1) > 0) & (other[:, 1].sum(dim=1) > 0), mean(other) - mean(pitch), 0)
    return torch.stack([pitch[:, 0] + shift[:, None] * pitch[:, 1], pitch[:, 1]], dim=1)


def distill_head(content_dim: int, n_state: int, channels: int = 256) -> nn.Module:
    """What reads the teacher's states out of a content code in training (`train.distill`): two convolutions that see
    two content frames either side (training only, so it need not be causal)."""
    return nn.Sequential(nn.Conv1d(content_dim, channels, 5, padding=2), nn.LeakyReLU(0.2),
                         nn.Conv1d(channels, n_state, 5, padding=2))




class ConverterTrainer:
    """`vc train`'s part of the loop: the auto-encoder, the adversarial speaker classifier on its content code and
    an auxiliary speaker head, their optimizers, one step of both, and validation."""
    progress = ("recon_l1", "clf_ce")

    def __init__(self, cfg: Config, corpus: Corpus, d: Dist, folder: Path, state: dict[str, Any] | None = None,
                 encoder: WhisperEncoder | None = None):
        t = cfg.train
        self.cfg, self.corpus, self.d, self.folder = cfg, corpus, d, folder
        self.net = net = VoiceConverterNet(cfg.model, cfg.audio.n_mels, encoder.dims if encoder is not None else None)
        # Whisper states: the content input of a whisper-content model, or the teacher of a distilled mel model
        self.states = corpus.states[0] if corpus.states is not None and net.features is not None else None
        self.teacher = corpus.states[0] if corpus.states is not None and t.distill > 0 else None
        self.distill_head = None
        if self.teacher is not None:
            self.teacher_stats = channel_stats(self.teacher)
            self.distill_head = distill_head(cfg.model.content_dim, encoder.dims.n_state)
        if net.features is not None:
            net.features.load_state_dict(encoder.state_dict())
            mean, std = channel_stats(self.states)
            net.content_mean.copy_(mean)
            net.content_std.copy_(std)
        self.clf = SpeakerClassifier(cfg.model)
        self.spk_head = nn.Linear(cfg.model.speaker_dim, cfg.model.n_speakers)
        all_frames = torch.cat([m.float() for m in corpus.mels], dim=1)
        net.mel_mean.copy_(all_frames.mean(dim=1))
        net.mel_std.copy_(all_frames.std(dim=1).clamp(min=1e-3))
        del all_frames
        if t.parts:  # `train.parts`: the rest is held (gradients still pass through it to the parts that train)
            trainable(net, t.parts)
        # the frozen Whisper encoder, when there is one, is no parameter of the optimizer
        heads = [self.spk_head] + ([self.distill_head] if self.distill_head is not None else [])
        self.gen_params = [p for p in net.parameters() if p.requires_grad] + [p for h in heads for p in h.parameters()]
        self.opt_g = torch.optim.AdamW(self.gen_params, lr=t.lr, betas=(0.9, 0.99), weight_decay=t.weight_decay)
        self.opt_c = torch.optim.AdamW(self.clf.parameters(), lr=t.lr, betas=(0.9, 0.99), weight_decay=t.weight_decay)
        if state is not None:  # a training checkpoint; an exported model (`--init`) has the weights of `net` only
            net.load_state_dict(state["model"])
            for module, key in ((self.clf, "classifier"), (self.spk_head, "speaker_head"),
                                (self.distill_head, "distill_head")):
                if module is not None and key in state:
                    module.load_state_dict(state[key])
        for m in (net, self.clf, *heads):
            m.to(d.device)
        spk_index = {s: i for i, s in enumerate(corpus.speakers)}
        speaker_ids = [spk_index[u.speaker] for u in corpus.utts]
        if state is not None and "speaker_head" not in state and t.speaker_ce_weight > 0:
            # `--init`: the export carries no speaker head; one that names the speakers from the start keeps the
            # auxiliary loss from pulling the embeddings about while a fresh head learns
            accuracy = fit_speaker_head(self.spk_head, net, corpus.mels, speaker_ids, d.device)
            if d.main:
                print(f"speaker head fitted on the model's embeddings: {accuracy:.1%} of training utterances named")
        if state is not None and "opt_g" in state:  # after the move, so that the optimizer state lands on the
            # parameters' device
            self.opt_g.load_state_dict(state["opt_g"])
            self.opt_c.load_state_dict(state["opt_c"])
        self.anchor = (CodeAnchor(net.content_encoder, t.code_hold_db, (state or {}).get("code_anchor")).to(d.device)
                       if t.code_hold > 0 else None)  # `train.code_hold`: the content encoder as the run began
        self.voice_anchor = (VoiceAnchor(net.speaker_encoder, (state or {}).get("voice_anchor")).to(d.device)
                             if t.voice_hold > 0 else None)  # `train.voice_hold`: the speaker encoder as it began
        self.codes = corpus.codes  # `train.code_teacher`: the teacher's codes, on the mel frames
        self.gen = d.wrap(Generator(net, self.spk_head, self.distill_head, detach_code=self.codes is not None))
        self.clf_dp = d.wrap(self.clf)
        self.sampler = SegmentSampler(corpus.mels, speaker_ids, t.segment_frames,
                                      t.seed, corpus.f0s if cfg.model.pitch else None, cfg.pitch,
                                      t.speaker_balance)
        self.voices = None  # `train.voice_shift_target`: the voice each converted copy gave each utterance
        if t.voice_shift_target > 0:
            self.voices = [[spk_index[s] for s in converted_speakers([u.speaker for u in corpus.utts], t.seed, c)]
                           for c in range(len(corpus.shifted))]
        self.bf16 = t.bf16 and fast_bf16(d.device)
        self.mel_adv = None  # `train.mel_gan`: a run resumed with it switched on starts a fresh discriminator
        if t.mel_gan > 0:
            self.mel_adv = Adversary(lr=t.lr, state=(state or {}).get("mel_discriminator"),
                                     net=MelDiscriminator().to(d.device))
        net.train(), self.clf.train()

    def _batch(self, draw: int):
        """Batch `draw` on the device: target and reference mels (normalized), speaker ids, pitch, the content input
        (the target, or a corrupted or voice-shifted copy), its Whisper states and the teacher's (or None), and which
        items became new voices (`new_voices`). With `code_hold_clean` the Whisper states, with `voice_hold` the
        reference, come twice: as the encoders read them, and the clip's own before a copy replaced them (`clean`,
        `clean_ref`; else None)."""
        cfg, t, d, net = self.cfg, self.cfg.train, self.d, self.net
        mel, ref, ids, pitch = self.sampler.batch(draw, t.batch_size)
        states = self.sampler.segments(draw, t.batch_size, self.states) if self.states is not None else None
        teacher = self.sampler.segments(draw, t.batch_size, self.teacher) if self.teacher is not None else None
        content_mel = mel  # what a mel content encoder reads: the target itself, or a corrupted copy (denoising)
        # the clip's own states and reference before any copy replaces them, where a hold reads them
        clean = states if t.code_hold_clean else None
        clean_ref = ref if t.voice_hold > 0 else None
        if self.corpus.corrupted:
            content_mel, ref, pitch, states = self.sampler.corrupted(draw, t.batch_size, self.corpus.corrupted,
                                                                     t.denoise, t.denoise_ref, mel, ref, pitch, states)
        if self.corpus.shifted:  # the content input in another voice: the decoder must take the voice from `ref`
            content_mel, _, _, states = self.sampler.corrupted(draw, t.batch_size, self.corpus.shifted, t.voice_shift,
                                                               0.0, content_mel, ref, pitch, states, with_pitch=False,
                                                               salt=4)
        converted = torch.zeros(t.batch_size, dtype=torch.bool)
        if self.voices is not None:  # conversions to learn: the copy's voice as the target, the clip as the input
            mel, ref, pitch, converted = self.sampler.converted_targets(
                draw, t.batch_size, self.corpus.shifted, self.voices, t.voice_shift_target, mel, ref, pitch,
                content_mel)
        mel, ref, ids, pitch, content_mel, clean_ref = (x.to(d.device) if x is not None else None
                                                        for x in (mel, ref, ids, pitch, content_mel, clean_ref))
        mel, ref, pitch, changed = new_voices(mel, ref, pitch, t.speaker_warp, t.speaker_warp_share,
                                              np.random.default_rng([t.seed, draw, 2]), cfg.audio, cfg.pitch)
        mel, ref = net.normalize(mel), net.normalize(ref)
        clean_ref = net.normalize(clean_ref) if clean_ref is not None else None
        content_mel = net.normalize(content_mel) if self.corpus.corrupted or self.corpus.shifted else mel
        # a conversion's reference is another speaker's: the speaker head, which names the clip's, skips it
        return (mel, ref, ids, pitch, content_mel, states, clean, clean_ref, teacher,
                changed | converted.to(changed.device))

    def step(self, step: int) -> dict[str, float]:
        cfg, t, d, net = self.cfg, self.cfg.train, self.d, self.net
        torch.manual_seed(t.seed * 1_000_003 + step)  # dropout depends on the step only: resume is exact
        draw = step * d.world + d.rank  # every rank its own batches; one process draws as it always did
        rng = np.random.default_rng([t.seed, draw, 1])
        mel, ref, ids, pitch, content_mel, states, clean, clean_ref, teacher, changed = self._batch(draw)
        lr = learning_rate(cfg, step)
        for group in self.opt_g.param_groups + self.opt_c.param_groups:
            group["lr"] = lr
        alpha = adv_weight(cfg, step)
        states = net.standardize(states.to(d.device)) if states is not None else None  # cut from the Whisper states
        if t.code_hold_clean:  # a mel content encoder's clean input is the clip's mel itself
            clean = net.standardize(clean.to(d.device)) if clean is not None else mel
        code_target, shown = self._teacher_codes(draw)
        with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            # freq_warp stretches the mel along frequency (timbre scrambling): Whisper states have no frequency axis
            # to stretch, so they enter unwarped
            x = freq_warp(content_mel, t.freq_warp, rng) if states is None else states
            cross = in_register(pitch, pitch.roll(1, dims=0)) if t.word_loss > 0 or t.voice_loss > 0 else None
            content, spk, rec, spk_logits, predicted, converted = self.gen(x, ref, pitch, shown, cross)
            recon = (rec.float() - mel).abs().mean()
            # The encoder is pushed toward a classifier that cannot tell speakers apart (uniform output);
            # this is bounded, unlike maximizing the classifier's cross-entropy, so training stays stable.
            # (The classifier's own gradients from this term are discarded: opt_c zeroes them below.)
            adv = -F.log_softmax(self.clf(content).float(), dim=1).mean() - math.log(cfg.model.n_speakers)
            # the speaker head names recorded voices only: a new voice (`new_voices`) is none of them
            kept = ~changed.to(ids.device)
            spk_ce = F.cross_entropy(spk_logits[kept], ids[kept]) if kept.any() else spk_logits.sum() * 0
            loss = recon + alpha * adv + t.speaker_ce_weight * spk_ce
            vq = net.content_encoder.quantizer  # model.content "vq": the codebook and commitment terms
            if vq is not None:
                loss = loss + vq.losses[0] + t.vq_commitment * vq.losses[1]
            if predicted is not None:  # the teacher's standardized states, averaged onto the content frames
                mean, std = (v.to(d.device)[:, None] for v in self.teacher_stats)
                target = F.avg_pool1d((teacher.to(d.device).float() - mean) / std, 2, 2, ceil_mode=True)
                distill = (predicted.float() - target[:, :, :predicted.shape[2]]).abs().mean()
                loss = loss + t.distill * distill
            if code_target is not None:
                code_l1 = (content.float() - code_target[:, :, :content.shape[2]]).abs().mean()
                loss = loss + t.code_distill * code_l1
            if t.word_loss > 0:  # what Whisper hears of the conversion to another voice against the clip
                words = word_loss(net.features, net.denormalize(converted.float()), net.denormalize(mel), cfg.audio,
                                  t.word_loss_norm, t.word_loss_speech_db)
                loss = loss + t.word_loss * words
            if t.voice_loss > 0:  # and whose voice the speaker encoder hears in it
                voice = voice_loss(net.speaker_encoder, converted, spk.roll(1, dims=0))
                loss = loss + t.voice_loss * voice
            if self.anchor is not None:  # the code of the clip's pauses held where the run began (with
                # `code_hold_clean`, to the code the clip had before it was corrupted)
                hold = self.anchor.loss(clean if t.code_hold_clean else x, content, net.denormalize(mel))
                loss = loss + t.code_hold * hold
            if self.voice_anchor is not None:  # a corrupted reference's embedding held to the clean one's
                voice_hold = self.voice_anchor.loss(clean_ref, spk)
                loss = loss + t.voice_hold * voice_hold
            gan = self.mel_adv is not None and step >= t.mel_gan_start
            if gan:  # against the discriminator before its update; its loss from the same forward
                d_loss, g_adv, fm = self.mel_adv.losses(rec.float(), mel, True, self.bf16)
                loss = loss + t.mel_gan * (g_adv + 2 * fm)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward(retain_graph=gan)
        gnorm = torch.nn.utils.clip_grad_norm_(self.gen_params, t.grad_clip)
        self.opt_g.step()
        if gan:
            self.mel_adv.update(d_loss, lr)
        with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            clf_loss = F.cross_entropy(self.clf_dp(content.detach()).float(), ids)
        self.opt_c.zero_grad(set_to_none=True)
        clf_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.clf.parameters(), t.grad_clip)
        self.opt_c.step()
        return {"recon_l1": recon.item(), "adv": adv.item(), "adv_weight": alpha, "clf_ce": clf_loss.item(),
                "spk_ce": spk_ce.item(), "grad_norm": float(gnorm), "lr": lr,
                **({"vq_perplexity": vq.perplexity} if vq is not None else {}),
                **({"distill": distill.item()} if predicted is not None else {}),
                **({"code_l1": code_l1.item()} if code_target is not None else {}),
                **({"words": words.item()} if t.word_loss > 0 else {}),
                **({"voice": voice.item()} if t.voice_loss > 0 else {}),
                **({"hold": hold.item()} if self.anchor is not None else {}),
                **({"voice_hold": voice_hold.item()} if self.voice_anchor is not None else {}),
                **({"mel_d": d_loss.item(), "mel_g": g_adv.item(), "mel_fm": fm.item()} if gan else {})}

    def _teacher_codes(self, draw: int) -> tuple[torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None]:
        """`train.code_teacher`: batch `draw`'s teacher codes averaged onto the content frames (or None), and with
        `train.teacher_code_share` the Generator's `teacher` (those codes, the items whose decoder reads them)."""
        t = self.cfg.train
        if self.codes is None:
            return None, None
        codes = self.sampler.segments(draw, t.batch_size, self.codes).to(self.d.device)
        target = F.avg_pool1d(codes, 2, 2, ceil_mode=True)
        if t.teacher_code_share <= 0:
            return target, None
        pick = np.random.default_rng([t.seed, draw, 5]).random(len(target)) < t.teacher_code_share
        return target, (target, torch.from_numpy(pick).to(self.d.device))

    def state(self) -> dict[str, Any]:
        return {"kind": "training", "config": self.cfg.to_dict(), "speakers": self.corpus.speakers,
                "model": self.net.state_dict(), "classifier": self.clf.state_dict(),
                "speaker_head": self.spk_head.state_dict(), "opt_g": self.opt_g.state_dict(),
                "opt_c": self.opt_c.state_dict(),
                **({"distill_head": self.distill_head.state_dict()} if self.distill_head is not None else {}),
                **({"mel_discriminator": self.mel_adv.state()} if self.mel_adv is not None else {}),
                **({"code_anchor": self.anchor.state()} if self.anchor is not None else {}),
                **({"voice_anchor": self.voice_anchor.state()} if self.voice_anchor is not None else {}),
                **({"whisper": whisper_entry(self.net)} if self.net.features is not None else {})}

    def validate(self, step: int, monitor: Monitor) -> dict[str, float]:
        cfg, dev = self.cfg, self.corpus.dev
        _, held, dev_states = self.corpus.states if self.states is not None else (None, None, None)
        values = validate(self.net, self.clf, cfg, dev, self.corpus.held, dev_states, held)
        monitor.audio(step, sample_conversions(self.net, cfg, *dev, states=dev_states), cfg.audio.sample_rate)
        if cfg.train.export_every and step % cfg.train.export_every == 0:  # snapshots, to compare on dev later
            export_inference(self.folder / f"model-step{step:06d}.pt", self.net, cfg, {"steps": step})
        return values


def train(cfg: Config, data: str | Path | list[str | Path], out: str | Path, dev: str | Path | None = None,
          max_minutes: float | None = None, until: int | None = None, device: str = "auto",
          init: str | Path | None = None) -> Path:
    """Train (or resume from `out/last.pt`) and export `out/model.pt`. Returns the exported path.

    `init`: a fresh run starts from this exported model's weights (fine-tuning: its architecture and feature
    statistics, fresh optimizers, probe classifier and heads, step 0 of the recipe's schedule); a resumed run ignores
    it.

    `data`: one data folder or several, whose utterances are pooled (a speaker id names one speaker across them).
    `max_minutes` and `until` (a step) end this call early, with a checkpoint, as a kill would; a later call resumes.
    Under torchrun every process runs this: each draws its own batches (`batch_size` is per process), gradients are
    averaged, and rank 0 alone writes checkpoints, logs and the export.
    """
    d = setup(device)
    try:
        return _train(cfg, data, Path(out), dev, max_minutes, until, d, init)
    finally:
        d.close()


def _train(cfg: Config, data: str | Path | list[str | Path], out: Path, dev: str | Path | None,
           max_minutes: float | None, until: int | None, d: Dist, init: str | Path | None = None) -> Path:
    folders = [Path(data)] if isinstance(data, (str, Path)) else [Path(f) for f in data]
    run = Run(out, d)
    state = run.resume()
    if state is not None:  # what RECIPE_ON_RESUME names comes from the recipe; everything else is the run's own
        cfg = read_config(state, run.last).replace(train={k: getattr(cfg.train, k) for k in RECIPE_ON_RESUME})
    elif init is not None:
        state, cfg = init_state(init, cfg)
    t = cfg.train
    if t.word_loss > 0 and cfg.model.content_features != "whisper":
        raise VCError("train.word_loss needs model.content_features: whisper (its Whisper encoder hears the output)")
    seed(t.seed, t.threads)
    encoder = (whisper_encoder(cfg, out, d) if cfg.model.content_features == "whisper" or t.distill > 0
               else teacher_encoder(cfg, d.device) if t.code_teacher else None)
    corpus = read_corpus(cfg, folders, out, dev, d, state["speakers"] if state is not None else None, encoder)
    cfg = cfg.replace(model={"n_speakers": len(corpus.speakers)})
    trainer = ConverterTrainer(cfg, corpus, d, out, state, encoder)
    start = state.get("step", 0) if state is not None else 0
    schedule = Schedule(t.steps, t.log_every, t.val_every, t.checkpoint_minutes, max_minutes, until=until)
    outcome = run.loop(trainer, schedule, start, run.monitor(t.steps, start))
    model_path = out / "model.pt"
    if d.main:
        export_inference(model_path, trainer.net, cfg, {"steps": outcome.step, "speakers": len(corpus.speakers),
                                                        "train_utterances": len(corpus.utts),
                                                        "data": ", ".join(map(str, folders)),
                                                        "complete": outcome.complete})
    run.finish(outcome, model_path)
    d.barrier()
    return model_path
