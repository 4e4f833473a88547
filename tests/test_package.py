"""The package as a whole: every module imports on its own (no import cycle), and a regular (non-editable) install
converts with the shipped model."""
import os
import pkgutil
import shutil
import subprocess
import sys

import pytest

import vc
from conftest import ROOT

MODULES = sorted(m.name for m in pkgutil.walk_packages(vc.__path__, "vc.")
                 if not m.name.startswith(("vc.checkpoints", "vc.__main__")))


def test_every_module_imports_alone():
    # Each module imported first into an interpreter without any other vc module loaded (torch stays loaded, for
    # speed): an import cycle shows up as an ImportError whichever module comes first.
    code = ("import importlib, sys, torch\n"
            f"for name in {MODULES!r}:\n"
            "    for loaded in [m for m in sys.modules if m == 'vc' or m.startswith('vc.')]:\n"
            "        del sys.modules[loaded]\n"
            "    importlib.import_module(name)\n"
            "print('ok', len(sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr[-2000:]
    assert len(MODULES) > 25 and "vc.api" in MODULES and "vc.stream" in MODULES


def test_inference_never_imports_the_trainers():
    code = ("import sys, vc, vc.cli; m = vc.load_model(); "
            "print(sorted(n for n in sys.modules if n.startswith(('vc.train', 'vc.adapt', 'vc.vocoder_train', "
            "'vc.training', 'vc.evaluate', 'vc.judges', 'tensorboard'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr[-2000:]


def test_a_regular_install_converts_with_the_shipped_model(tmp_path):
    # Built from a copy of what git tracks, so that the build leaves nothing in the working tree.
    tree = tmp_path / "tree"
    files = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT).stdout.split()
    for f in files:
        if f.startswith(("vc/", "checkpoints/")) or f in ("pyproject.toml", "README.md"):
            (tree / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / f, tree / f)
    wheel = tmp_path / "wheel"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(tree),
                        "-w", str(wheel)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                        *map(str, wheel.glob("*.whl"))], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    code = ("import vc, numpy as np; m = vc.load_model(); print(vc.__file__); "
            f"w = m.convert({str(ROOT / 'examples' / 'm_1334.flac')!r}, {str(ROOT / 'examples' / 'f_SF1.flac')!r}); "
            "print(len(w), bool(np.isfinite(w).all()))")
    env = {**os.environ, "PYTHONPATH": str(site)}  # the installed copy, ahead of the editable one
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    where, result = r.stdout.split("\n")[:2]
    assert where.startswith(str(site)) and result.endswith("True") and int(result.split()[0]) > 16000
