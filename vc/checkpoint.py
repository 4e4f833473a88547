"""One file holds the config and the weights. Inference checkpoints load with `torch.load(weights_only=True)`."""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .config import Config
from .errors import VCError, reason
from .files import atomic_path
from .model import VoiceConverterNet

FORMAT = "vc-checkpoint"
VERSION = 1  # bump when the layout of the file changes; loading refuses versions it does not know


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write atomically: a crash or a full disk mid-write leaves the previous file intact."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)
    except (OSError, RuntimeError) as e:  # disk full, quota, read-only: torch.save may wrap the OSError
        kept = "; the previous file is intact" if path.is_file() else ""
        raise VCError(f"{path}: could not write the checkpoint ({reason(e)[:160]}){kept}") from None
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a checkpoint; raise VCError naming the file for missing, corrupt or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise VCError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise VCError(f"{path}: checkpoint is empty")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as e:
        raise VCError(f"{path}: corrupt or truncated checkpoint ({reason(e)[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise VCError(f"{path}: not a vc checkpoint")
    if ckpt.get("version") != VERSION:
        raise VCError(f"{path}: checkpoint format version {ckpt.get('version')} is not supported "
                      f"(this vc reads version {VERSION})")
    return ckpt


def build_model(ckpt: dict[str, Any], path: str | os.PathLike = "<checkpoint>") -> tuple[VoiceConverterNet, Config]:
    """Rebuild the inference network from a checkpoint's own config and load its weights."""
    try:
        d = ckpt["config"]
        if "pitch" not in d.get("model", {}):  # written before the decoder took pitch
            d = {**d, "model": {**d.get("model", {}), "pitch": False}}
        cfg = Config.from_dict(d)
        with torch.device("meta"):  # no random initialization of weights that the checkpoint replaces
            net = VoiceConverterNet(cfg.model)
        net.load_state_dict(ckpt["model"], assign=True)
    except (KeyError, TypeError, RuntimeError, VCError) as e:
        raise VCError(f"{path}: checkpoint does not match this model ({reason(e)[:200]})") from None
    return net.eval(), cfg


def export_inference(path: str | os.PathLike, net: VoiceConverterNet, cfg: Config,
                     meta: dict[str, Any] | None = None, vocoder: dict[str, Any] | None = None) -> Path:
    """Weights and config only (no optimizer state): small, and safe to load with weights_only=True.

    `vocoder`: the "vocoder" entry of a file written by `vc train-vocoder` (its config and weights), bundled so that
    one file holds the whole converter."""
    state = {k: v.detach().to(torch.float32).clone() for k, v in net.state_dict().items()}
    payload = {"kind": "inference", "config": cfg.to_dict(), "model": state, "meta": dict(meta or {})}
    if vocoder is not None:  # stored in float16 (half the size; it computes in float32 after loading)
        payload["vocoder"] = {**vocoder, "weights": {k: v.to(torch.float16) if v.is_floating_point() else v
                                                     for k, v in vocoder["weights"].items()}}
    return save_checkpoint(path, payload)
