"""Fitting the input check of `vc.input_check`: its auto-encoder on clean speech, then the logistic model on clean
clips of speakers the auto-encoder never heard against clips that are not one person speaking, made from them by
`anomaly` (music, tones, noise, two voices at once, speech buried in noise).

    python -m vc.training.input_check --data ../shared/data/train --out checkpoints/input_check.pt

The dev benchmark (`benchmarks/input_check_dev.py`) makes its own clips with other seeds from dev speakers.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from ..audio import load_wav, log_mel, prepare
from ..checkpoint import save_checkpoint
from ..config import AudioConfig, PitchConfig
from ..input_check import CUES, CheckAutoEncoder, InputChecker, cues
from .corrupt import colored_noise, mix
from .data import gather_utterances

KINDS = ("music", "tones", "noise", "overlap", "noisy")


def music(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Notes and chords of harmonic tones with plucked envelopes, one every 0.2-0.5 s, peak 0.5."""
    t = np.arange(n) / sr
    out = np.zeros(n)
    note = int(sr * rng.uniform(0.2, 0.5))
    for start in range(0, n, note):
        seg = t[:min(2 * note, n - start)]
        for _ in range(int(rng.integers(1, 4))):
            f0 = 110.0 * 2 ** (rng.integers(0, 36) / 12)
            tilt = rng.uniform(0.8, 2.0)
            tone = sum(np.sin(2 * np.pi * f0 * k * seg) / k ** tilt for k in range(1, 8) if f0 * k < sr / 2)
            out[start:start + len(seg)] += np.exp(-seg * rng.uniform(2, 8)) * tone
    return 0.5 * out / (np.abs(out).max() + 1e-9)


def tones(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A steady tone, a sweep or a dual tone (telephone keys), peak 0.3."""
    t = np.arange(n) / sr
    kind = int(rng.integers(3))
    if kind == 0:
        x = np.sin(2 * np.pi * rng.uniform(100, 3000) * t)
    elif kind == 1:
        f = np.geomspace(rng.uniform(100, 500), rng.uniform(1000, 6000), n)
        x = np.sin(2 * np.pi * np.cumsum(f) / sr)
    else:
        low, high = rng.choice([697, 770, 852, 941]), rng.choice([1209, 1336, 1477])
        x = np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)
    return 0.3 * x / np.abs(x).max()


def crop(wav: np.ndarray, rng: np.random.Generator, sr: int) -> np.ndarray:
    """A 2.5- to 5-s stretch from inside a clip, with no silence before or after (a reference cut from a longer
    recording, as the demo's examples are): still one person speaking."""
    n = min(len(wav), int(sr * rng.uniform(2.5, 5.0)))
    start = int(rng.integers(0, len(wav) - n + 1))
    return wav[start:start + n]


def anomaly(kind: str, speech: list[np.ndarray], speakers: list[str], rng: np.random.Generator,
            sr: int) -> np.ndarray:
    """One clip of `kind` (from KINDS); overlaps and noisy speech are made from `speech` (clips of `speakers`)."""
    n = int(sr * rng.uniform(3, 8))
    if kind == "music":
        return music(n, sr, rng)
    if kind == "tones":
        return tones(n, sr, rng)
    if kind == "noise":
        return colored_noise(n, float(rng.uniform(0, 2)), rng)
    i = int(rng.integers(len(speech)))
    if kind == "overlap":
        others = [j for j in range(len(speech)) if speakers[j] != speakers[i]]
        return mix(speech[i], speech[int(rng.choice(others))], float(rng.uniform(-3, 3)))
    if kind == "noisy":
        return mix(speech[i], colored_noise(len(speech[i]), float(rng.uniform(0, 2)), rng), float(rng.uniform(-8, -2)))
    raise ValueError(f"unknown kind {kind!r}")


def train_autoencoder(mels: list[torch.Tensor], steps: int, seed: int, segment: int = 128,
                      batch: int = 32) -> CheckAutoEncoder:
    """The check's auto-encoder, trained to reconstruct normalized log-mels (L1) of clean speech."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ae = CheckAutoEncoder(mels[0].shape[0])
    frames = torch.cat(mels, dim=1)
    ae.mel_mean.copy_(frames.mean(dim=1))
    ae.mel_std.copy_(frames.std(dim=1).clamp(min=1e-3))
    long = [m for m in mels if m.shape[1] >= segment]
    opt = torch.optim.Adam(ae.parameters(), lr=1e-3)
    for step in range(steps):
        picks = rng.integers(len(long), size=batch)
        x = torch.stack([long[i][:, s:s + segment] for i in picks
                         for s in [int(rng.integers(long[i].shape[1] - segment + 1))]])
        x = ae.normalize(x)
        loss = (ae(x) - x).abs().mean()
        for g in opt.param_groups:
            g["lr"] = 1e-3 * (0.1 + 0.9 * (1 - step / steps))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ae.eval()


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2) -> tuple[np.ndarray, float]:
    """Weights and bias of a logistic regression of `y` (0/1) on standardized `x` (L-BFGS, L2 penalty)."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float64))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def fit(data: list[str | Path], out: str | Path, *, steps: int = 2000, seed: int = 0, held_share: float = 0.2,
        per_kind: int = 60, false_alarms: float = 0.005, ae_from: str | Path | None = None, log=print) -> Path:
    """Fit the check on the utterances of `data` and write it to `out`: the auto-encoder on the speakers outside a
    held-apart `held_share` (or the one of the earlier fit `ae_from`, with the same seed and data), the logistic
    model on the held-apart speakers' clean clips, as many again with a little noise (15 to 35 dB below the
    speech: rooms, fans), and 2.5- to 5-s stretches cut from all of these (`crop`), against `per_kind` clips of each of
    KINDS made from them; the threshold passes all but `false_alarms` of the clean clips."""
    audio, pitch_cfg = AudioConfig(), PitchConfig()
    started = time.time()
    utts = gather_utterances([Path(d) for d in data])
    speakers = sorted({u.speaker for u in utts})
    rng = np.random.default_rng(seed)
    held = set(rng.choice(speakers, size=max(2, round(held_share * len(speakers))), replace=False).tolist())
    wavs = [load_wav(u.path, audio, trim=False) for u in utts]
    mels = [log_mel(w, audio) for w, u in zip(wavs, utts) if u.speaker not in held]
    if ae_from is not None:
        ae = InputChecker(torch.load(ae_from, map_location="cpu", weights_only=True)).ae
        log(f"auto-encoder: the one of {ae_from}")
    else:
        log(f"auto-encoder: {len(mels)} clips of {len(speakers) - len(held)} speakers, {steps} steps")
        ae = train_autoencoder(mels, steps, seed)
    base = [w for w, u in zip(wavs, utts) if u.speaker in held]
    who = [u.speaker for u in utts if u.speaker in held]
    clean = base + [mix(w, colored_noise(len(w), float(rng.uniform(0, 2)), rng), float(rng.uniform(15, 35))
                    ).astype(np.float32) for w in base]
    clean += [crop(w, rng, audio.sample_rate) for w in clean]
    bad = [anomaly(k, base, who, rng, audio.sample_rate).astype(np.float32) for k in KINDS for _ in range(per_kind)]
    prepared = [prepare(w, audio.sample_rate, audio, trim=False) for w in clean + bad]
    x = np.stack([cues(w, ae, audio, pitch_cfg) for w in prepared])
    y = np.r_[np.zeros(len(clean)), np.ones(len(bad))]
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    weights, bias = fit_logistic((x - mean) / std, y)
    state = {"ae": ae.state_dict(), "ae_dims": {"n_mels": audio.n_mels}, "cue_names": list(CUES),
             "cue_mean": mean.tolist(), "cue_std": std.tolist(), "weights": weights.tolist(), "bias": bias,
             "threshold": 0.5, "audio": dataclasses.asdict(audio), "pitch": dataclasses.asdict(pitch_cfg)}
    checker = InputChecker(state)
    scores = np.array([checker.score_cues(v) for v in x])
    state["threshold"] = float(np.quantile(scores[:len(clean)], 1 - false_alarms))
    state["fit"] = {"data": [str(d) for d in data], "clean_clips": len(clean), "held_speakers": len(held),
                    "anomalies_per_kind": per_kind, "ae_steps": steps, "seconds": round(time.time() - started)}
    caught = (scores[len(clean):] > state["threshold"]).mean()
    log(f"fit on {len(clean)} clean clips and {len(bad)} others: threshold {state['threshold']:.3f} "
        f"catches {caught:.1%} of the others")
    return save_checkpoint(out, {"kind": "input-check", **state})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="fit the input check (vc.input_check)")
    p.add_argument("--data", nargs="+", required=True, help="folders of clean speech (utterances.tsv or per speaker)")
    p.add_argument("--out", required=True, help="the check's file, e.g. checkpoints/input_check.pt")
    p.add_argument("--steps", type=int, default=2000, help="auto-encoder training steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--false-alarms", type=float, default=0.005,
                   help="the share of the fit's clean clips allowed above the threshold")
    p.add_argument("--ae-from", default=None, help="reuse the auto-encoder of this earlier fit (same data and seed)")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    fit(args.data, args.out, steps=args.steps, seed=args.seed, false_alarms=args.false_alarms, ae_from=args.ae_from)


if __name__ == "__main__":
    main()
