"""Pictures of a conversion, for the demo: spectrograms, F0 contours and the speaker map (matplotlib, `demo` extra)."""
from __future__ import annotations

import librosa
import matplotlib

matplotlib.use("Agg")  # no display: figures are rendered to images
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .audio import log_mel  # noqa: E402
from .config import AudioConfig  # noqa: E402

COLORS = {"source": "#1f77b4", "target": "#d62728", "output": "#2ca02c", "target 2": "#ff7f0e"}


def mel_figure(clips: dict[str, np.ndarray], cfg: AudioConfig) -> plt.Figure:
    """Log-mel spectrograms of named clips (T,), side by side, on one colour scale."""
    mels = {k: log_mel(v, cfg).numpy() for k, v in clips.items()}
    top = max(m.max() for m in mels.values())
    fig, axes = plt.subplots(1, len(mels), figsize=(4 * len(mels), 2.8), squeeze=False, constrained_layout=True)
    for ax, (name, mel) in zip(axes[0], mels.items()):
        seconds = mel.shape[1] * cfg.hop_length / cfg.sample_rate
        ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", vmin=top - 11.5, vmax=top,
                  extent=(0, seconds, 0, cfg.n_mels))
        ax.set_title(name)
        ax.set_xlabel("seconds")
        ax.set_ylabel("mel band")
    return fig


def f0_contour(wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(times, F0 in Hz with NaN where unvoiced) from librosa's YIN, voiced where the frame is loud enough."""
    hop = 160
    f0 = librosa.yin(wav, fmin=50, fmax=600, sr=sample_rate, frame_length=1024, hop_length=hop)
    rms = librosa.feature.rms(y=wav, frame_length=1024, hop_length=hop)[0][: len(f0)]
    f0 = np.where(rms > 0.3 * np.median(rms[rms > 0]) if np.any(rms > 0) else False, f0, np.nan)
    return np.arange(len(f0)) * hop / sample_rate, f0


def f0_figure(clips: dict[str, np.ndarray], sample_rate: int) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(8, 2.8), constrained_layout=True)
    for name, wav in clips.items():
        t, f0 = f0_contour(wav, sample_rate)
        ax.plot(t, f0, ".", ms=2.5, color=COLORS.get(name), label=f"{name} (median {np.nanmedian(f0):.0f} Hz)")
    ax.set_yscale("log")
    ax.set_xlabel("seconds")
    ax.set_ylabel("F0 (Hz)")
    ax.legend(loc="upper right", markerscale=4)
    return fig


def speaker_map(reference: dict[str, torch.Tensor], points: dict[str, torch.Tensor]) -> plt.Figure:
    """2-D PCA of speaker embeddings: the reference speakers in grey, the conversion's clips in colour."""
    names = list(reference) + list(points)
    x = torch.stack([*(reference.values()), *(points.values())]).float()
    x = torch.nn.functional.normalize(x, dim=1)
    x = x - x[: len(reference)].mean(0)
    _, _, v = torch.pca_lowrank(x[: len(reference)] if len(reference) >= 3 else x, q=2, center=False)
    xy = (x @ v[:, :2]).numpy()
    fig, ax = plt.subplots(figsize=(5, 4), constrained_layout=True)
    for i, name in enumerate(names):
        ref = i < len(reference)
        ax.scatter(*xy[i], s=30 if ref else 90, color="#999999" if ref else COLORS.get(name, "k"),
                   marker="o" if ref else "*", zorder=3 if not ref else 2)
        ax.annotate(name, xy[i], textcoords="offset points", xytext=(5, 4), fontsize=8 if ref else 10)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def similarity_figure(scores: dict[str, float]) -> plt.Figure:
    """Horizontal bars of cosine similarities, e.g. output~target and output~source."""
    fig, ax = plt.subplots(figsize=(5, 1.2 + 0.35 * len(scores)), constrained_layout=True)
    names = list(scores)
    ax.barh(names, [scores[n] for n in names], color=[COLORS.get(n.split("~")[-1].strip(), "#777") for n in names])
    for i, n in enumerate(names):
        ax.text(scores[n], i, f" {scores[n]:.2f}", va="center")
    ax.set_xlim(min(0.0, *scores.values()), 1.1)
    ax.set_xlabel("cosine similarity of speaker embeddings")
    ax.invert_yaxis()
    return fig
