"""What a training run shows: a progress bar, `log.jsonl`, TensorBoard scalars, and audio of conversions to listen to.

Only the main process of a distributed run monitors (`enabled=False` elsewhere), so that logs are written once.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import pitch
from ..config import Config
from ..model import VoiceConverterNet
from ..vocoder import GriffinLim

log = logging.getLogger(__name__)

SAMPLE_FRAMES = 400  # 5 s of each clip is enough to hear the voice


class Monitor:
    """Progress bar (`total` steps, starting at `initial`), `out/log.jsonl`, and TensorBoard under `out/tb` (other
    names with `log` and `tb`, for runs that share a folder)."""

    def __init__(self, out: Path, total: int, initial: int = 0, desc: str = "train", enabled: bool = True,
                 log: str = "log.jsonl", tb: str = "tb"):
        self.enabled = enabled
        self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, mininterval=2.0,
                        disable=not enabled)
        self.writer = _tensorboard(out / tb) if enabled else None
        self.log_file = (out / log).open("a") if enabled else None

    def update(self, n: int = 1, **postfix: float) -> None:
        self.bar.update(n)
        if postfix:
            self.bar.set_postfix({k: f"{v:.3f}" for k, v in postfix.items()}, refresh=False)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.log_file is None or not values:
            return
        for k, v in values.items():
            if self.writer is not None:
                self.writer.add_scalar(k, v, step)
        self.log_file.write(json.dumps({"step": step, **{k: round(v, 5) for k, v in values.items()}}) + "\n")
        self.log_file.flush()

    def audio(self, step: int, clips: dict[str, np.ndarray], sample_rate: int) -> None:
        """Clips (T,) float32 under TensorBoard's AUDIO tab, e.g. conversions between dev speakers."""
        if self.writer is None:
            return
        for name, wav in clips.items():
            self.writer.add_audio(name, torch.from_numpy(np.clip(wav, -1, 1))[None], step, sample_rate=sample_rate)
        self.writer.flush()

    def write(self, text: str) -> None:
        if self.enabled:
            self.bar.write(text)

    def close(self) -> None:
        """Idempotent."""
        self.bar.close()
        if self.log_file is not None:
            self.log_file.close()
        if self.writer is not None:
            self.writer.close()
        self.log_file = self.writer = None


@torch.no_grad()
def sample_conversions(net: VoiceConverterNet, cfg: Config, utts: list, mels: list[torch.Tensor],
                       f0s: list[torch.Tensor], n: int = 2, vocoder=None,
                       states: list[torch.Tensor] | None = None) -> dict[str, np.ndarray]:
    """Up to `n` conversions between different speakers among `utts` (with their log-mels (n_mels, T) and F0
    contours), pitch moved to the target's register, made audible by `vocoder` (log-mel (n_mels, frames) ->
    waveform; default Griffin-Lim, as no neural vocoder exists while training): {name: waveform (T,)}. `states`: the
    utterances' Whisper states, for models with whisper content features."""
    speakers = list(dict.fromkeys(u.speaker for u in utts))
    first = {s: next(i for i, u in enumerate(utts) if u.speaker == s) for s in speakers}
    if len(speakers) < 2:
        return {}
    device = net.mel_mean.device
    was_training = net.training
    net.eval()
    vocoder = vocoder or GriffinLim(cfg.audio, n_iter=32)
    out = {}
    for k in range(min(n, len(speakers))):
        i, j = first[speakers[k]], first[speakers[(k + 1) % len(speakers)]]
        src = net.normalize(mels[i][:, :SAMPLE_FRAMES].float().to(device)[None])
        ref = net.normalize(mels[j].float().to(device)[None])
        f0 = f0s[i][:SAMPLE_FRAMES].float()
        p = None
        if cfg.model.pitch:
            f0 = pitch.transpose(f0, pitch.stats([f0s[i].float()], cfg.pitch), pitch.stats([f0s[j].float()], cfg.pitch))
            p = pitch.features(f0, cfg.pitch)[None].to(device)
        x = src if states is None else net.standardize(states[i][None, :, :SAMPLE_FRAMES].to(device))
        mel = net.denormalize(net.decoder(net.content_encoder(x), net.speaker_encoder(ref), src.shape[2], p))
        name = f"convert/{k}_{speakers[k]}_to_{speakers[(k + 1) % len(speakers)]}"
        out[name] = vocoder(mel[0].float().cpu()).cpu().numpy()
    net.train(was_training)
    return out


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is in the `train` extra
        log.warning("tensorboard is not installed: no TensorBoard scalars (pip install 'vc[train]')")
        return None
    return SummaryWriter(str(folder))
