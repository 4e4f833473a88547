"""`train.code_teacher`: the content code of a whisper-content model as what another model's content encoder learns
to predict (a causal mel encoder learning from a non-causal teacher: the streaming model of issue 15).

The teacher reads the Whisper states that the run caches on its own mel frames, brought to the teacher's frame rate
as its conversion would compute them (`VoiceConverter.encode`: standardized, mirrored at both ends); its code is
brought back onto the run's mel frames, so that the sampler cuts it as it cuts mels, and the loss averages it onto the
student's content frames.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch

from ..checkpoint import build_model, load_checkpoint, save_checkpoint
from ..config import Config
from ..content import mirror_edges
from ..errors import VCError
from ..files import sha256
from ..model import VoiceConverterNet
from ..whisper import WhisperEncoder, resample_states
from .data import read_cache

CODES_VERSION = 1  # bump when what `load_codes` computes changes


def load_teacher(path: str | Path) -> tuple[VoiceConverterNet, Config]:
    """The teacher of `train.code_teacher`: an inference checkpoint with whisper content features, in eval mode."""
    ckpt = load_checkpoint(path)
    net, cfg = build_model(ckpt, path)
    if net.features is None:
        raise VCError(f"{path}: train.code_teacher must be a model with whisper content features")
    return net.eval().requires_grad_(False), cfg


def teacher_encoder(cfg: Config, device: torch.device) -> WhisperEncoder:
    """The Whisper encoder whose states a run with `train.code_teacher` caches: the teacher's own, with its layers."""
    net, teacher_cfg = load_teacher(cfg.train.code_teacher)
    if teacher_cfg.model.whisper_layers != cfg.model.whisper_layers:
        raise VCError(f"{cfg.train.code_teacher}: the teacher reads {teacher_cfg.model.whisper_layers or 'all'} "
                      f"Whisper blocks; set model.whisper_layers to match")
    return net.features.to(device)


@torch.inference_mode()
def teacher_code(net: VoiceConverterNet, cfg: Config, states: torch.Tensor, rate: float) -> torch.Tensor:
    """Raw Whisper states (n_state, T) on frames at `rate` Hz -> the teacher's content code (content_dim, T) float32
    on the same frames (linear interpolation both ways, frame i at i / rate seconds)."""
    frames = states.shape[1]
    own = cfg.audio.sample_rate / cfg.audio.hop_length  # the teacher's mel frames per second
    n = int(math.floor((frames - 1) * own / rate)) + 1
    x, pad = mirror_edges(net.standardize(resample_states(states.float().T, own, n, source_rate=rate).T[None]),
                          cfg.convert.edge_pad)
    code = net.content_encoder(x)[0, :, pad // 2: pad // 2 + math.ceil(n / 2)].float()
    return resample_states(code.T, rate, frames, source_rate=own / 2).T.contiguous()


def load_codes(path: str | Path, states: list[torch.Tensor], rate: float, cache: Path | None = None
               ) -> list[torch.Tensor]:
    """The teacher `path`'s content code (float16, on the run's mel frames at `rate` Hz) of every utterance whose raw
    Whisper states are `states`. With `cache`, saved there once and reused while the teacher file, the rate and
    the utterances' frame counts are unchanged."""
    key = hashlib.sha1(json.dumps([CODES_VERSION, sha256(path), rate, [s.shape[1] for s in states]]).encode()).hexdigest()
    c = read_cache(cache, key)
    if c is not None:
        return c["codes"]
    net, cfg = load_teacher(path)
    codes = [teacher_code(net, cfg, s, rate).to(torch.float16) for s in states]
    if cache is not None:
        save_checkpoint(cache, {"key": key, "codes": codes})
    return codes
