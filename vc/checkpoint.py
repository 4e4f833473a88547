"""One file holds the config and the weights. Every checkpoint loads with `torch.load(weights_only=True)` and carries
the whole `Config` under "config"; inference checkpoints add the converter's weights ("model"), the vocoder's
("vocoder", float16) and "meta". The Whisper encoder's weight matrices are stored in int8 with a scale per output row
("scales"); `load_checkpoint` gives them back in float."""
from __future__ import annotations

import dataclasses
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .config import SECTIONS, Config
from .errors import VCError, reason
from .files import atomic_path
from .model import VoiceConverterNet
from .whisper import LICENCE as WHISPER_LICENCE
from .whisper import WhisperDims

FORMAT = "vc-checkpoint"
MEL_FIELDS = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "fmin", "fmax")  # what a mel depends on
VERSION = 3  # bump when the layout of the file changes; loading refuses versions it does not know
# Version 3 stores the Whisper encoder's matrices in int8 ("scales"); a version-2 reader would load them as numbers
# and refuses the file instead. Version 2 files read as version 3. Version 1 kept the vocoder's config beside its
# weights, n_mels in the model section, and the pitch and conversion settings as module constants (their defaults):
# `_upgrade` reads such files as version 2.
# Fields added to version 2 after files were written with it, and the value such files meant (what they computed):
# `_fill_added` puts them in, for version-1 files too. `Config.from_dict` itself stays strict.
ADDED_FIELDS = {"model": {"content_features": "mel", "whisper_layers": 0, "content": "in", "codebook_size": 64,
                          "norm": "instance", "code_norm": True, "decoder_norm": ""},
                "train": {"whisper_weights": "", "speaker_balance": 0.0, "speaker_warp": 0.0,
                          "speaker_warp_share": 0.5, "vq_commitment": 0.25, "denoise": 0.0,
                          "denoise_ref": 0.0, "denoise_copies": 2, "distill": 0.0, "voice_shift": 0.0,
                          "voice_shift_semitones": 4.0, "voice_shift_copies": 1, "mel_gan": 0.0,
                          "mel_gan_start": 0, "code_teacher": "", "code_distill": 1.0,
                          "teacher_code_share": 0.0, "word_loss": 0.0,
                          "word_loss_norm": False, "voice_loss": 0.0, "parts": (),
                          "word_loss_speech_db": 0.0, "code_hold": 0.0, "code_hold_db": 30.0,
                          "code_hold_clean": False, "voice_hold": 0.0, "voice_shift_model": "",
                          "voice_shift_target": 0.0},
                # how a conversion is synthesized, not what the weights learned: older files get the present default
                "convert": {"harmonic_phase": 4000.0, "mel_contrast": 1.1, "dereverb": False}}


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
        raise VCError(f"{path}: checkpoint not found" if not path.is_dir() else f"{path}: is a folder, not a checkpoint")
    if path.stat().st_size == 0:
        raise VCError(f"{path}: checkpoint is empty")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError, KeyError,
            UnicodeDecodeError) as e:
        raise VCError(f"{path}: corrupt, truncated or not a checkpoint ({reason(e)[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise VCError(f"{path}: not a vc checkpoint")
    if ckpt.get("version") == 1:
        ckpt = _upgrade(ckpt)
    if ckpt.get("version") == 2:  # as version 3 without int8 weights
        ckpt = {**ckpt, "version": VERSION}
    ckpt = _fill_added(ckpt)
    if ckpt.get("version") != VERSION:
        raise VCError(f"{path}: checkpoint format version {ckpt.get('version')} is not supported "
                      f"(this vc reads versions 1 to {VERSION})")
    if "scales" in ckpt:
        try:
            ckpt = {**ckpt, "model": dequantized(ckpt["model"], ckpt.pop("scales"))}
        except (KeyError, TypeError, RuntimeError, AttributeError) as e:
            raise VCError(f"{path}: damaged int8 weights ({reason(e)[:200]})") from None
    return ckpt


# Stored int8: the Whisper encoder's matrices (16 MB in float16, 8 in int8). Its states on 8 dev clips stay at a
# cosine of 0.9997 to those of the float16 weights (bf16 autocast moves them more, to 0.9992).
INT8 = ("features.",)


def quantized(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The weights of `state` named under INT8 with two or more dims as int8, symmetric per output row (the first
    dim), and each one's scales (float32, one per row): w ~ q * scale. The other weights are returned as they are."""
    out, scales = dict(state), {}
    for k, v in state.items():
        if k.startswith(INT8) and v.is_floating_point() and v.dim() >= 2:
            rows = v.detach().float().reshape(v.shape[0], -1)
            scale = rows.abs().amax(dim=1).clamp(min=1e-12) / 127
            out[k] = torch.round(rows / scale[:, None]).to(torch.int8).reshape(v.shape)
            scales[k] = scale
    return out, scales


def dequantized(state: dict[str, torch.Tensor], scales: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`quantized`'s weights back in float32."""
    out = dict(state)
    for k, scale in scales.items():
        q = state[k]
        out[k] = (q.float().reshape(q.shape[0], -1) * scale.float()[:, None]).reshape(q.shape)
    return out


def _upgrade(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A version-1 file as version 2 (see VERSION), which `load_checkpoint` then reads as 3. Only inference, training
    and vocoder files held configs."""
    ckpt = {**ckpt, "version": VERSION}
    vocoder = ckpt.get("vocoder")
    if ckpt.get("kind") in ("inference", "training"):
        d = {name: dict(ckpt["config"].get(name, {})) for name in SECTIONS}
        n_mels = d["model"].pop("n_mels", d["audio"].get("n_mels", 80))
        if n_mels != d["audio"].get("n_mels", 80):
            raise VCError(f"the model's n_mels ({n_mels}) differs from the audio's")
        d["model"].setdefault("pitch", False)  # written before the decoder took pitch
        for section, added in ADDED_FIELDS.items():
            d[section] = {**added, **d[section]}
        if isinstance(vocoder, dict) and "config" in vocoder:
            d["vocoder"], ckpt["vocoder"] = vocoder["config"], vocoder["weights"]
        ckpt["config"] = Config().replace(**d).to_dict()
    elif ckpt.get("kind") == "vocoder":
        ckpt["config"] = Config().replace(audio=ckpt.pop("audio", {}), vocoder=vocoder["config"]).to_dict()
        ckpt["vocoder"] = vocoder["weights"]
    return ckpt


def _fill_added(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A version-2 file written before the fields of ADDED_FIELDS, with their values filled in (nothing else)."""
    config = ckpt.get("config")
    if not isinstance(config, dict) or not all(isinstance(config.get(s), dict) for s in ADDED_FIELDS):
        return ckpt  # no config, or a damaged one: `read_config` says so
    config = {**config, **{s: {**added, **config[s]} for s, added in ADDED_FIELDS.items()}}
    return {**ckpt, "config": config}


def read_config(ckpt: dict[str, Any], path: str | os.PathLike = "<checkpoint>") -> Config:
    """The checkpoint's own config, checked: a missing section or an impossible value names the file."""
    try:
        return Config.from_dict(ckpt["config"])
    except KeyError:
        raise VCError(f"{path}: checkpoint has no config") from None
    except (VCError, TypeError) as e:
        raise VCError(f"{path}: bad config ({reason(e)[:200]})") from None


def check_weights(weights: dict[str, torch.Tensor], path: str | os.PathLike, what: str = "weights") -> None:
    """Refuse weights that are not all finite: such a model converts to noise."""
    for name, w in weights.items():
        if not isinstance(w, torch.Tensor):
            raise VCError(f"{path}: {what} entry {name} is not a tensor")
        if w.is_floating_point() and not bool(torch.isfinite(w).all()):
            raise VCError(f"{path}: {what} hold NaN or infinite values ({name}); the file is damaged")


def build_model(ckpt: dict[str, Any], path: str | os.PathLike = "<checkpoint>") -> tuple[VoiceConverterNet, Config]:
    """Rebuild the inference network from a checkpoint's own config and load its weights."""
    cfg = read_config(ckpt, path)
    try:
        check_weights(ckpt["model"], path)
        whisper = WhisperDims(**ckpt["whisper"]["dims"]) if cfg.model.content_features == "whisper" else None
        with torch.device("meta"):  # no random initialization of weights that the checkpoint replaces
            net = VoiceConverterNet(cfg.model, cfg.audio.n_mels, whisper)
        net.load_state_dict(float32(ckpt["model"]), assign=True)
    except (KeyError, TypeError, RuntimeError, AttributeError) as e:
        raise VCError(f"{path}: checkpoint does not match this model ({reason(e)[:200]})") from None
    return net.eval(), cfg


def export_inference(path: str | os.PathLike, net: VoiceConverterNet, cfg: Config,
                     meta: dict[str, Any] | None = None, vocoder: dict[str, torch.Tensor] | None = None) -> Path:
    """Weights and config only (no optimizer state): small, and safe to load with weights_only=True.

    `vocoder`: the vocoder's weights (its architecture is `cfg.vocoder`), bundled so that one file holds the whole
    converter; stored in float16 (half the size; it computes in float32 after loading). A model with whisper content
    features holds the Whisper encoder's weights too, its matrices in int8 (`quantized`), with its dims and OpenAI's
    MIT notice under "whisper"."""
    # Weights in float16: half the file and the repository's growth per re-shipped model, at no measured cost (the
    # networks compute in bf16 or float32 after loading; checkpoints/README.md). The mel statistics stay float32.
    state = {k: v.detach().to(torch.float32 if k.startswith(("mel_", "content_mean", "content_std"))
                               else torch.float16).clone()
             for k, v in net.state_dict().items()}
    payload = {"kind": "inference", "config": cfg.to_dict(), "model": state, "meta": dict(meta or {})}
    if net.features is not None:  # the states' statistics stay float32 like the mel's; Whisper's matrices are int8
        payload["model"], payload["scales"] = quantized(state)
        payload["whisper"] = whisper_entry(net)
    if vocoder is not None:
        payload["vocoder"] = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in vocoder.items()}
    return save_checkpoint(path, payload)


def whisper_entry(net: VoiceConverterNet) -> dict[str, Any]:
    """What a checkpoint of a model with whisper content features holds beside its weights (under "whisper"): the
    encoder's dims, which `build_model` needs, and OpenAI's MIT notice, which must travel with the weights."""
    return {"dims": dataclasses.asdict(net.features.dims), "licence": WHISPER_LICENCE}


def float32(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stored weights -> float32. numpy converts on one thread, where torch's parallel copy waits for a second core
    that a busy machine rarely gives it (0.9 s against 0.2 s under load, the same numbers)."""
    return {k: v if not v.is_floating_point() or v.dtype == torch.float32 else v.float() if v.dtype == torch.bfloat16
            else torch.from_numpy(v.numpy().astype("float32")) for k, v in weights.items()}


def with_vocoder(cfg: Config, vocoder_ckpt: str | os.PathLike) -> tuple[Config, dict[str, torch.Tensor]]:
    """A converter's config with the vocoder of a `vc train-vocoder` file, and that vocoder's weights. The two must
    share every audio setting (sample rate, STFT, mel bands): a vocoder fed other mels than it learned from
    garbles everything, silently."""
    ckpt = load_checkpoint(vocoder_ckpt)
    if ckpt.get("vocoder") is None:
        raise VCError(f"{vocoder_ckpt}: not a vocoder file (write one with `vc train-vocoder`)")
    theirs = read_config(ckpt, vocoder_ckpt)
    if theirs.audio != cfg.audio:
        diff = ", ".join(f"{k} {getattr(theirs.audio, k)} vs {getattr(cfg.audio, k)}" for k in MEL_FIELDS
                         if getattr(theirs.audio, k) != getattr(cfg.audio, k))
        if diff:
            raise VCError(f"{vocoder_ckpt}: the vocoder's audio settings differ from the converter's ({diff})")
    check_weights(ckpt["vocoder"], vocoder_ckpt, "vocoder weights")
    return dataclasses.replace(cfg, vocoder=theirs.vocoder), ckpt["vocoder"]
