"""What whisper content features cost on this CPU, against mel content of the same converter size.

    python benchmarks/content_cost.py --threads 2 --seconds 10

Training: seconds per optimizer step of the converter (recipes/default.yaml's model, batch 32 x 128 frames, bf16
autocast where it pays), the content input cut from cached features (mels, or Whisper states cached in float16 as
`vc train` caches them), plus the one-time cost of the Whisper states per second of audio. Conversion: the real-time
factor of `VoiceConverter.encode` + `decode` (the vocoder is the same for both and left out) on a synthetic clip.
Untrained weights: time does not depend on them. Prints a table; `uptime` first, as the machine is shared.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import synth_speech  # noqa: E402

from vc.api import VoiceConverter  # noqa: E402
from vc.config import load_recipe  # noqa: E402
from vc.content import whisper_states  # noqa: E402
from vc.model import VoiceConverterNet  # noqa: E402
from vc.pitch import features, track  # noqa: E402
from vc.runtime import fast_bf16  # noqa: E402
from vc.whisper import load_ct2_encoder  # noqa: E402


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def train_step(net: VoiceConverterNet, opt, x: torch.Tensor, mel: torch.Tensor, pitch: torch.Tensor) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast_bf16()):
        rec = net(x, mel, pitch)
        loss = F.l1_loss(rec.float(), mel)
    opt.zero_grad()
    loss.backward()
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the clip converted")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    ap.add_argument("--layers", type=int, default=0, help="whisper_layers: Whisper blocks run (0: all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("uptime:", os.popen("uptime").read().strip())
    cfg = load_recipe(ROOT / "recipes" / "whisper.yaml").replace(model={"whisper_layers": args.layers})
    encoder = load_ct2_encoder()
    wav = synth_speech(130, args.seconds)
    mel_cfg = cfg.replace(model={"content_features": "mel"})
    rows = []
    for name, c in (("mel", mel_cfg), ("whisper", cfg)):
        net = VoiceConverterNet(c.model, c.audio.n_mels, encoder.dims if name == "whisper" else None)
        if net.features is not None:
            net.features.load_state_dict(encoder.state_dict())
        channels = net.content_encoder.conv_in.in_channels
        b, t = c.train.batch_size, c.train.segment_frames
        x, mel, pitch = torch.randn(b, channels, t), torch.randn(b, 80, t), torch.randn(b, 2, t)
        opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
        step = best(lambda: train_step(net, opt, x, mel, pitch), args.repeats)
        model = VoiceConverter(net.eval(), c)
        content = model.encode(wav)
        p = features(track(wav, c.audio, c.pitch)[0], c.pitch)
        voice = model.net.speaker_encoder(model.mel(wav))[0].detach()
        enc = best(lambda: model.encode(wav), args.repeats)
        dec = best(lambda: model.decode(content, voice, p, timbre_match=0.0), args.repeats)
        rows.append((name, step, enc / args.seconds, (enc + dec) / args.seconds))
    frames = int(args.seconds * 80)
    cache = best(lambda: whisper_states(encoder, wav, cfg.model.whisper_layers, cfg.audio, frames), args.repeats)
    print(f"{'content':8} {'s/step':>8} {'RTF encode':>11} {'RTF enc+dec':>12}   ({args.threads} threads)")
    for name, step, rtf_enc, rtf in rows:
        print(f"{name:8} {step:8.3f} {rtf_enc:11.4f} {rtf:12.4f}")
    print(f"Whisper states for the cache: {cache / args.seconds:.4f} s per second of audio (whisper_layers {args.layers})")


if __name__ == "__main__":
    main()
