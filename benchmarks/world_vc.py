"""A WORLD signal-processing baseline for one-shot voice conversion: the bar that needs no learning.

    python benchmarks/world_vc.py SOURCE TARGET [TARGET ...] --output OUT.wav

`world_convert` analyses the source with WORLD (Harvest F0, CheapTrick envelope, D4C aperiodicity; DIO is 50x
faster but put a 93 Hz dev speaker at 60 Hz), then
1. F0: moves the log-F0 of voiced frames to the target's mean and standard deviation, measured on the references'
   voiced frames;
2. envelope: stretches it along frequency by r = (f0_target / f0_source) ** WARP_EXPONENT, clipped to
   [1 / MAX_WARP, MAX_WARP], so that a formant at f moves to r * f. F0 stands in for vocal-tract length: women's
   formants sit about 15-20 % above men's where their F0 sits about 70-80 % above, and 1.75 ** 0.3 = 1.18. Warps
   measured on the envelopes themselves (centroid ratio, best-fitting warp of average envelopes) swung with the
   recording on dev speakers (two clips of one speaker came out 20 % apart); the F0 ratio did not;
3. equalizes: adds the smoothed difference between the target's and the warped source's average log-envelopes over
   voiced frames (its first EQ_LIFTER cepstral coefficients), which carries the target's spectral tilt and channel;
4. resynthesizes at the source's loudness.
"""
from __future__ import annotations

import argparse
import warnings
from typing import Sequence

import numpy as np

with warnings.catch_warnings():  # pyworld imports pkg_resources, which warns
    warnings.simplefilter("ignore")
    import pyworld as pw

F0_FLOOR, F0_CEIL = 50.0, 600.0  # Hz
FRAME_PERIOD = 5.0  # ms
WARP_EXPONENT = 0.3  # envelope warp = F0 ratio ** this
MAX_WARP = 1.2  # no more than a 20 % stretch or squeeze of the envelope
EQ_LIFTER = 12  # cepstral coefficients kept of the average-envelope difference: its broad shape only


def analyze(wav: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WORLD analysis of (T,): F0 (frames,) with 0 where unvoiced, envelope and aperiodicity (frames, n_fft // 2 + 1).
    """
    x = np.ascontiguousarray(wav, dtype=np.float64)
    f0, t = pw.harvest(x, sr, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=FRAME_PERIOD)
    return f0, pw.cheaptrick(x, f0, t, sr), pw.d4c(x, f0, t, sr)


def voice_stats(f0: np.ndarray, sp: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Mean and standard deviation of log-F0, and the mean log-envelope, over voiced frames."""
    voiced = f0 > 0
    if not voiced.any():
        raise ValueError("no voiced frames: is this speech?")
    lf0 = np.log(f0[voiced])
    return float(lf0.mean()), float(lf0.std()), np.log(sp[voiced]).mean(axis=0)


def warp_envelope(sp: np.ndarray, ratio: float) -> np.ndarray:
    """Stretch envelopes (frames, bins) along frequency: what sat at bin k moves to bin ratio * k."""
    bins = np.arange(sp.shape[1])
    log_sp = np.log(sp)
    return np.exp(np.stack([np.interp(bins / ratio, bins, frame) for frame in log_sp]))


def smooth(log_spectrum: np.ndarray, lifter: int = EQ_LIFTER) -> np.ndarray:
    """The broad shape of a log-spectrum (bins,): its first `lifter` cepstral coefficients."""
    cep = np.fft.irfft(log_spectrum)
    cep[lifter:len(cep) - lifter + 1] = 0
    return np.fft.rfft(cep).real


def world_convert(source: np.ndarray, targets: np.ndarray | Sequence[np.ndarray], sr: int) -> np.ndarray:
    """Convert `source` (T,) toward the voice of one reference clip or several, all float at `sr`; float32 (T,)."""
    targets = [targets] if isinstance(targets, np.ndarray) and targets.ndim == 1 else list(targets)
    f0, sp, ap = analyze(source, sr)
    mu_s, sd_s, _ = voice_stats(f0, sp)
    analyses = [analyze(t, sr)[:2] for t in targets]
    mu_t, sd_t, env_t = voice_stats(np.concatenate([a[0] for a in analyses]),
                                    np.concatenate([a[1] for a in analyses]))
    voiced = f0 > 0
    f0_new = f0.copy()
    f0_new[voiced] = np.exp((np.log(f0[voiced]) - mu_s) / max(sd_s, 1e-3) * sd_t + mu_t)
    ratio = float(np.clip(np.exp((mu_t - mu_s) * WARP_EXPONENT), 1 / MAX_WARP, MAX_WARP))
    sp_new = warp_envelope(sp, ratio)
    eq = smooth(env_t - np.log(sp_new[voiced]).mean(axis=0))
    sp_new = np.ascontiguousarray(sp_new * np.exp(eq)[None, :])
    y = pw.synthesize(f0_new, sp_new, ap, sr, FRAME_PERIOD)[:len(source)]
    y *= np.sqrt(np.mean(np.square(source)) / max(np.mean(np.square(y)), 1e-12))
    return np.clip(y, -1, 1).astype(np.float32)


def main() -> None:
    from vc.audio import load_wav, save_wav
    from vc.config import AudioConfig
    from vc.errors import VCError

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="clip to convert")
    p.add_argument("targets", nargs="+", help="one or more clips of the target voice")
    p.add_argument("--output", "-o", required=True, help="converted wav")
    p.add_argument("--sample-rate", type=int, default=16000, help="rate of the analysis and the output")
    args = p.parse_args()
    cfg = AudioConfig(sample_rate=args.sample_rate)
    try:
        source, targets = load_wav(args.source, cfg), [load_wav(t, cfg) for t in args.targets]
    except VCError as e:
        raise SystemExit(f"error: {e}") from None
    wav = world_convert(source, targets, args.sample_rate)
    print(f"{args.source} -> {save_wav(args.output, wav, args.sample_rate)}")


if __name__ == "__main__":
    main()
