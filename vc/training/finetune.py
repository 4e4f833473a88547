"""`vc train --init`: a run that starts from an exported model. The export holds the networks' weights and config;
what it lacks (optimizer state, the speaker head) starts afresh, the speaker head fitted before the first step."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import float32, load_checkpoint, read_config
from ..config import PARTS, Config
from ..errors import VCError
from ..model import VoiceConverterNet


def fit_speaker_head(head: nn.Linear, net: VoiceConverterNet, mels: list[torch.Tensor], speaker_ids: list[int],
                     device: torch.device, frames: int = 400, steps: int = 300) -> float:
    """Fit `head` (speaker embedding -> training speaker) on the embeddings of every training utterance (its middle
    `frames` mel frames; `speaker_ids`: each one's speaker) by the model as it stands, full batch; returns the head's
    accuracy on them."""
    ids = torch.tensor(speaker_ids, device=device)
    with torch.no_grad():
        embs = []
        for mel in mels:
            start = max(0, (mel.shape[1] - frames) // 2)
            embs.append(net.speaker_encoder(net.normalize(mel[None, :, start:start + frames].float().to(device))))
        embs = torch.cat(embs).float()
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(head(embs), ids).backward()
        opt.step()
    with torch.no_grad():
        return (head(embs).argmax(dim=1) == ids).float().mean().item()


def init_state(path: str | Path, cfg: Config) -> tuple[dict[str, Any], Config]:
    """An exported model as the start of a fresh run (`vc train --init`): its weights in float32, and its config
    with the recipe's training section."""
    payload = load_checkpoint(path)
    if payload.get("kind") != "inference" or "model" not in payload:
        raise VCError(f"{path}: not an exported model (vc train --init takes a model.pt or a shipped checkpoint)")
    model_cfg = read_config(payload, Path(path))
    weights = float32(payload["model"])
    return {"model": weights, "speakers": None}, model_cfg.replace(train=dataclasses.asdict(cfg.train))


def trainable(net: VoiceConverterNet, parts: tuple[str, ...] | list[str]) -> list[torch.nn.Parameter]:
    """Freeze everything but `parts` (names from PARTS) and return the parameters left to train."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise VCError(f"unknown part(s): {', '.join(unknown) or 'none given'} "
                      f"(choose from {', '.join(PARTS)})")
    modules = {"speaker": [net.speaker_encoder], "adain": [net.decoder.norms], "decoder": [net.decoder],
               "content": [net.content_encoder],
               "pitch": [net.decoder.pitch] if net.decoder.pitch is not None else []}
    net.requires_grad_(False)
    for part in parts:
        for m in modules[part]:
            m.requires_grad_(True)
    return [p for p in net.parameters() if p.requires_grad]
