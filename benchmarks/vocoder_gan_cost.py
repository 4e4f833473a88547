"""Seconds per `vc train-vocoder` step with and without the discriminators (`--adversarial`, `--mpd`).

    python benchmarks/vocoder_gan_cost.py [--data ../shared/data/tiny] [--steps 8] [--threads 1]

The default vocoder, batch 16 x 64 frames (the defaults of `VocoderTrainConfig`), one variant after the other at
each step so that a load that comes and goes touches them alike; the median over the steps after a first, warm-up
one. Set VC_BF16=0 for float32.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vc.audio import log_mel
from vc.config import AudioConfig, Config, VocoderConfig
from vc.training.vocoder import Segments, VocoderTrainConfig, VocoderTrainer, load_corpus, with_adversary
from vc.vocoder import Vocos

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tiny"))
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    audio = AudioConfig()
    with tempfile.TemporaryDirectory() as tmp:
        wavs = load_corpus(args.data, audio, Path(tmp) / "audio.pt")
    mels = [log_mel(w.float() / 32767, audio).to(torch.float16) for w in wavs]
    plain = VocoderTrainConfig()
    variants = {"plain": plain, "adversarial, discriminator alone (before --disc-start)": with_adversary(plain),
                "adversarial": with_adversary(plain, disc_start=0),
                "adversarial --mpd": with_adversary(plain, disc_start=0, mpd=True)}
    trainers = {}
    for name, cfg in variants.items():
        torch.manual_seed(0)
        trainers[name] = VocoderTrainer(Vocos(audio, VocoderConfig()), cfg, Config(audio=audio),
                                        Segments(wavs, mels, None, audio, cfg), ([], []))
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for step in range(args.steps + 1):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            trainer.step(step)
            if step:
                seconds[name].append(time.perf_counter() - start)
    base = np.median(seconds["plain"])
    for name, times in seconds.items():
        print(f"{name}: {np.median(times):.3f} s/step ({np.median(times) / base:.2f}x; "
              f"{min(times):.3f} to {max(times):.3f})")


if __name__ == "__main__":
    main()
