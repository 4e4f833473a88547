"""`train.code_hold`: the content code of the clip's pauses held where the run began; `train.voice_hold`: the speaker
embedding of a corrupted reference held to the starting speaker encoder's embedding of the clean one.

A fine-tune of the content encoder alone (`train.parts: [content]`) with the word loss keeps the voice and gains
words, but raises the floor of the conversions' pauses (README, "The voice is lost to the reconstruction loss"): no
loss pins the code of a pause, and the decoder, held, renders whatever code it gets there. This loss pulls the code
of each content frame that hears no speech toward what the content encoder gave that same input when the run
started (a frozen copy, kept in the training checkpoint so that a resumed run holds to the same code).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .words import speech_states


class _Frozen:
    """A frozen copy of an encoder as the run began, kept in the training checkpoint (`state`) so that a resumed run
    holds to the same one."""

    def __init__(self, encoder: nn.Module, state: dict[str, Any] | None = None):
        self.encoder = copy.deepcopy(encoder).eval().requires_grad_(False)
        if state is not None:
            self.encoder.load_state_dict(state)

    def to(self, device: torch.device):
        self.encoder.to(device)
        return self

    def state(self) -> dict[str, Any]:
        return self.encoder.state_dict()


class CodeAnchor(_Frozen):
    """A frozen copy of a content encoder, and the L1 of a code to its code on the pauses of a clip."""

    def __init__(self, encoder: nn.Module, speech_db: float, state: dict[str, Any] | None = None):
        super().__init__(encoder, state)
        self.speech_db = speech_db

    def loss(self, x: torch.Tensor, code: torch.Tensor, clip: torch.Tensor) -> torch.Tensor:
        """Mean absolute difference between `code` (B, content_dim, T'), the trained encoder's code of its input `x`,
        and the frozen encoder's code of `x`, over the content frames where `clip` (the natural-log mels (B, 80, T)
        that `x` was made from) has no frame within `speech_db` dB of its loudest; over every frame if `speech_db`
        is 0."""
        with torch.no_grad():
            held = self.encoder(x).float()
        error = (code.float() - held).abs().mean(dim=1)  # (B, T')
        if self.speech_db <= 0:
            return error.mean()
        pause = (~speech_states(clip.float(), self.speech_db, error.shape[1])).float()
        return (error * pause).sum() / pause.sum().clamp(min=1)


class VoiceAnchor(_Frozen):
    """A frozen copy of a speaker encoder, and the L1 of an embedding to its embedding of the clean reference."""

    def loss(self, clean_ref: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """Mean absolute difference between `embedding` (B, speaker_dim), the trained encoder's embedding of a
        reference as training gave it (possibly a noisy, reverberant copy), and the frozen encoder's embedding of that
        reference's clean clip `clean_ref` (normalized mels (B, 80, T))."""
        with torch.no_grad():
            held = self.encoder(clean_ref).float()
        return (embedding.float() - held).abs().mean()
