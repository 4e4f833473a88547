"""Phase from magnitude: real-time phase-gradient heap integration (RTPGHI; Průša and Holighaus, 2017).

The neural vocoder predicts an STFT magnitude and a phase. Its magnitude is nearly as good as the original's, its phase
is not: on dev clips, its magnitude with the original phase scores DNSMOS within 0.01 of the original, its own phase
0.25 below (`benchmarks/vocoder_copy.py`, README "Vocoder"). For a Gaussian window the phase's derivatives follow
from the log-magnitude's: the instantaneous frequency from its slope across frequency, the group delay from its slope
across time. Integrating them from the loudest bins outwards, frame by frame, gives a phase consistent with the
magnitude, with no training and no iteration. A Hann window of length L is treated as the Gaussian of
`lambda = 0.25645 L^2` (samples squared), as in the paper.

Bins more than `floor_db` below the loudest get a random phase (seeded: the same magnitude gives the same audio).
"""
from __future__ import annotations

import math

import numba
import numpy as np
import torch

from .config import AudioConfig

GAUSSIAN_OF_HANN = 0.25645  # lambda / L^2 of the Gaussian closest to a Hann window of length L
FLOOR_DB = 50.0  # bins this far below the clip's loudest get a random phase


def derivatives(log_mag: np.ndarray, cfg: AudioConfig) -> tuple[np.ndarray, np.ndarray]:
    """Log-magnitude (F, T) of `vc.audio.stft` -> the phase's advance from each frame to the next (F, T), and its step
    from each bin to the next (F, T), both in radians, at each bin.

    The STFT's phase is measured from each frame's first sample (torch.stft), so a component at bin m advances by
    2 pi m hop / n_fft a frame, and an impulse at the frame's centre steps by -pi a bin."""
    lam = GAUSSIAN_OF_HANN * cfg.win_length ** 2
    a, m = cfg.hop_length, cfg.n_fft
    bins = np.arange(log_mag.shape[0])[:, None]
    along_freq = np.gradient(log_mag, axis=0)
    along_time = np.gradient(log_mag, axis=1) if log_mag.shape[1] > 1 else np.zeros_like(log_mag)
    advance = 2 * math.pi * a * bins / m + (a * m / lam) * along_freq
    step = -math.pi - (lam / (a * m)) * along_time
    return advance, step


@numba.njit(cache=True, nogil=True)
def _push(values, items, size, value, item):
    j = size
    while j > 0:
        parent = (j - 1) // 2
        if values[parent] <= value:
            break
        values[j], items[j] = values[parent], items[parent]
        j = parent
    values[j], items[j] = value, item
    return size + 1


@numba.njit(cache=True, nogil=True)
def _pop(values, items, size):
    top = items[0]
    size -= 1
    if size > 0:
        value, item = values[size], items[size]
        j = 0
        while True:
            child = 2 * j + 1
            if child >= size:
                break
            if child + 1 < size and values[child + 1] < values[child]:
                child += 1
            if values[child] >= value:
                break
            values[j], items[j] = values[child], items[child]
            j = child
        values[j], items[j] = value, item
    return top, size


@numba.njit(cache=True, nogil=True)
def _integrate(log_mag, advance, step, floor, phase, start):
    """Fill `phase` (F, T) from frame `start` on (the frames before it are given) for every bin at or above `floor`.

    Per frame: a min-heap on -log-magnitude holds the previous frame's loud bins (item f + F) and this frame's
    bins whose phase is known (item f). The loudest comes out first: from the previous frame it integrates along
    time into the same bin of this frame, from this frame along frequency into its two neighbours (trapezoidal rule).
    A frame whose loud bins have no known neighbour starts at its loudest, integrated along time as well."""
    n_bins, n_frames = log_mag.shape
    values = np.empty(2 * n_bins)
    items = np.empty(2 * n_bins, np.int64)
    done = np.zeros(n_bins, np.bool_)
    for t in range(start, n_frames):
        size = 0
        todo = 0
        for f in range(n_bins):
            done[f] = log_mag[f, t] < floor
            if not done[f]:
                todo += 1
            if t > 0 and log_mag[f, t - 1] >= floor:
                size = _push(values, items, size, -log_mag[f, t - 1], f + n_bins)
        while todo > 0:
            if size == 0:
                best, loudest = 0, -np.inf
                for f in range(n_bins):
                    if not done[f] and log_mag[f, t] > loudest:
                        best, loudest = f, log_mag[f, t]
                if t > 0:
                    phase[best, t] = phase[best, t - 1] + 0.5 * (advance[best, t - 1] + advance[best, t])
                done[best] = True
                todo -= 1
                size = _push(values, items, size, -log_mag[best, t], best)
                continue
            item, size = _pop(values, items, size)
            if item >= n_bins:  # the previous frame's bin: along time
                f = item - n_bins
                if not done[f]:
                    phase[f, t] = phase[f, t - 1] + 0.5 * (advance[f, t - 1] + advance[f, t])
                    done[f] = True
                    todo -= 1
                    size = _push(values, items, size, -log_mag[f, t], f)
            else:  # this frame's bin: along frequency, to both neighbours
                f = item
                if f > 0 and not done[f - 1]:
                    phase[f - 1, t] = phase[f, t] - 0.5 * (step[f, t] + step[f - 1, t])
                    done[f - 1] = True
                    todo -= 1
                    size = _push(values, items, size, -log_mag[f - 1, t], f - 1)
                if f + 1 < n_bins and not done[f + 1]:
                    phase[f + 1, t] = phase[f, t] + 0.5 * (step[f, t] + step[f + 1, t])
                    done[f + 1] = True
                    todo -= 1
                    size = _push(values, items, size, -log_mag[f + 1, t], f + 1)
    return phase


def pghi(log_mag: torch.Tensor, cfg: AudioConfig, init: torch.Tensor | None = None,
         floor_db: float = FLOOR_DB) -> torch.Tensor:
    """STFT log-magnitude (F, frames), natural log, of the framing of `vc.audio.stft` -> phase (F, frames), radians.

    `init`: the phases (F, n) of the first n frames, e.g. the end of the previous chunk, kept as they are so that
    consecutive chunks join in phase; integration continues from them."""
    lm = np.ascontiguousarray(log_mag.detach().cpu().double().numpy())
    advance, step = derivatives(lm, cfg)
    gen = torch.Generator().manual_seed(0)  # the phase of the quiet bins: random, the same for the same magnitude
    phase = ((torch.rand(lm.shape, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi).numpy()
    start = 0
    if init is not None:
        start = min(init.shape[-1], lm.shape[1])
        phase[:, :start] = init[:, :start].detach().cpu().double().numpy()
    floor = float(lm.max()) - floor_db / 20 * math.log(10)
    phase = _integrate(lm, np.ascontiguousarray(advance), np.ascontiguousarray(step), floor, phase, start)
    return torch.from_numpy(phase).float()
