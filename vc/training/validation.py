"""What `vc train` measures on held-out speech at each validation: the dev reconstruction, how far apart the speaker
encoder puts dev speakers, and the leakage probe (the adversary's classifier naming held-out utterances' speakers from
their content code)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config
from ..model import SpeakerClassifier, VoiceConverterNet
from ..pitch import features
from .data import Utterance


def content_of(net: VoiceConverterNet, mel: torch.Tensor, states: torch.Tensor | None) -> torch.Tensor:
    """The content encoder's input for a normalized mel (B, n_mels, T): the mel, or the cached Whisper states of the
    same frames (B, C, T) standardized."""
    return mel if states is None else net.standardize(states.to(mel.device))


@torch.no_grad()
def validate(net: VoiceConverterNet, clf: SpeakerClassifier, cfg: Config, dev: tuple[list[Utterance], list, list],
             held: tuple[list[int], list], dev_states: list | None = None,
             held_states: list | None = None) -> dict[str, float]:
    """Dev reconstruction L1, speaker-embedding separation on dev, and the leakage probe on held-out utterances.
    `dev_states`, `held_states`: their Whisper states, for models with whisper content features."""
    net.eval(), clf.eval()
    device = net.mel_mean.device
    out: dict[str, float] = {}
    dev_utts, dev_mels, dev_f0s = dev
    if dev_utts:
        mels = [net.normalize(m.float()[None, :, :800].to(device)) for m in dev_mels]
        pitch = [features(f[:800].float(), cfg.pitch)[None].to(device) if cfg.model.pitch else None for f in dev_f0s]
        embs = torch.cat([net.speaker_encoder(m) for m in mels])
        spk = [u.speaker for u in dev_utts]
        losses = []
        for i, m in enumerate(mels):
            j = next((k for k in range(len(mels)) if k != i and spk[k] == spk[i]), i)
            x = content_of(net, m, dev_states[i][None, :, :800] if dev_states else None)
            rec = net.decoder(net.content_encoder(x), embs[j:j + 1], m.shape[2], pitch[i])
            losses.append((rec - m).abs().mean().item())
        out["dev_recon_l1"] = float(np.mean(losses))
        e = F.normalize(embs, dim=1)
        cos = e @ e.T
        same = torch.tensor([[a == b for b in spk] for a in spk], device=device)
        off = ~torch.eye(len(spk), dtype=torch.bool, device=device)
        if (same & off).any() and (~same).any():
            out["dev_spk_cos_same"] = cos[same & off].mean().item()
            out["dev_spk_cos_diff"] = cos[~same].mean().item()
            out["dev_spk_separation"] = out["dev_spk_cos_same"] - out["dev_spk_cos_diff"]
    ids, held_mels = held
    if ids:
        seg = cfg.train.segment_frames
        correct = total = 0
        for k, (spk_id, m) in enumerate(zip(ids, held_mels)):
            m = net.normalize(m.float()[None].to(device))
            m = content_of(net, m, held_states[k][None] if held_states else None)
            chunks = [m[:, :, s:s + seg] for s in range(0, m.shape[2] - seg + 1, seg)] or [m]
            pred = clf(net.content_encoder(torch.cat(chunks))).argmax(dim=1)
            correct += int((pred == spk_id).sum())
            total += len(chunks)
        out["leak_probe_acc"] = correct / total
        out["leak_probe_chance"] = 1.0 / cfg.model.n_speakers
    net.train(), clf.train()
    return out
