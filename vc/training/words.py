"""Losses on conversions to another voice of the batch: `train.word_loss`, what a frozen Whisper encoder hears in a
conversion against what it hears in the clip, and `train.voice_loss`, whose voice the speaker encoder hears in it.

The decoder learns from an L1 loss on the mel of the clip in its own voice, which weighs every band and frame alike:
a fricative's few quiet high bands ("th" against "s") count for little, and conversions to another voice are never
compared with anything. This loss decodes each segment's content code in another voice of the batch, maps the
output's log-mel onto Whisper's front end (`whisper_view`) and compares the frozen encoder's states of it with those
of the clip's own mel seen the same way, so errors in the mapping cancel. The encoder is the converter's own content
encoder's (Whisper tiny.en), so it teaches nothing about words that the judges (Whisper base) share.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from torch.func import functional_call

from ..config import AudioConfig
from ..timbre import frame_levels
from ..whisper import HOP_LENGTH, SAMPLE_RATE, WhisperEncoder

# Whisper's own front end reads a dev clip 0.15 above `whisper_view` of its mel in every band (the 25-ms window
# against the converter's 50-ms one; per-frame spread 0.08): added, so that the encoder hears its usual levels
VIEW_OFFSET = 0.15


def whisper_view(mel: torch.Tensor, audio: AudioConfig) -> torch.Tensor:
    """Natural-log mel magnitudes (B, 80, T) on the converter's frames -> Whisper's scaled log10 mel power
    (B, 80, T') on its 10-ms frames: the same filterbank (0-8 kHz) on another window, so the bands agree up to a
    level that the clamp to 8 below each item's maximum and the comparison with the clip seen the same way absorb."""
    logs = mel * (2 / math.log(10))  # ln magnitude -> log10 power
    frames = max(1, round(mel.shape[2] * audio.hop_length / HOP_LENGTH * SAMPLE_RATE / audio.sample_rate))
    logs = F.interpolate(logs, size=frames, mode="linear", align_corners=True)
    logs = torch.maximum(logs, logs.amax(dim=(1, 2), keepdim=True) - 8.0)
    return (logs + 4.0) / 4.0 + VIEW_OFFSET


def speech_states(clip: torch.Tensor, speech_db: float, n_states: int) -> torch.Tensor:
    """Which of `n_states` encoder states (B, n_states, bool) hear a speech frame of `clip` (natural-log mels
    (B, 80, T)): one within `speech_db` dB of the clip's loudest, as the timbre match counts them (`vc.timbre`)."""
    level = frame_levels(clip)
    loud = (level > level.amax(dim=1, keepdim=True) - speech_db / 20 * math.log(10)).float()
    return F.adaptive_max_pool1d(loud[:, None], n_states)[:, 0] > 0


def word_loss(encoder: WhisperEncoder, converted: torch.Tensor, clip: torch.Tensor, audio: AudioConfig,
              normalize: bool = False, speech_db: float = 0.0) -> torch.Tensor:
    """Mean absolute difference of the encoder's states (all blocks and its final norm) of `converted` and of `clip`
    (both natural-log mels (B, 80, T)); the gradient reaches `converted` only. `normalize`: each item's states are
    first standardized per channel over its frames (instance norm), so that what stays the same over a segment, much
    of the voice, is not compared: only how the states move, the words. `speech_db` above 0: only the states of
    the clip's speech count (`speech_states`), so that the conversion is not pulled toward the noise of its pauses."""
    frames = converted.shape[2] * audio.hop_length * SAMPLE_RATE // (audio.sample_rate * HOP_LENGTH)
    frames = min(2 * encoder.dims.n_ctx, frames // 2 * 2)
    with torch.no_grad():
        target = encoder(whisper_view(clip.float(), audio)[:, :, :frames])
    heard = encoder(whisper_view(converted.float(), audio)[:, :, :frames])
    heard, target = heard.float(), target.float()
    if normalize:  # states are (B, frames, channels)
        heard, target = (F.instance_norm(x.transpose(1, 2)).transpose(1, 2) for x in (heard, target))
    error = (heard - target).abs().mean(dim=2)  # (B, states)
    if speech_db <= 0:
        return error.mean()
    speech = speech_states(clip.float(), speech_db, error.shape[1]).float()
    return (error * speech).sum() / speech.sum().clamp(min=1)


def voice_loss(speaker_encoder: torch.nn.Module, converted: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """1 - the cosine between the speaker encoder's embedding of `converted` (normalized mels (B, n_mels, T)) and
    `wanted` (the embeddings (B, speaker_dim) of the voices they were converted to), averaged. The encoder's weights
    are read as constants here, so the gradient reaches the conversion only: the encoder cannot satisfy the loss by
    hearing every voice alike. The word loss pulls a conversion toward what Whisper hears in the source, the voice
    included; this pulls it back toward the target's voice."""
    weights = {name: p.detach() for name, p in speaker_encoder.named_parameters()}
    heard = functional_call(speaker_encoder, (weights, dict(speaker_encoder.named_buffers())), (converted,))
    return (1 - F.cosine_similarity(heard.float(), wanted.detach().float(), dim=1)).mean()
