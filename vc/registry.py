"""The shipped models, by name: `vc.load_model("default")`, `vc convert --checkpoint stream`.

The files are package data (`vc/checkpoints/` once installed, `checkpoints/` in a source tree), so that a regular
`pip install .` converts out of the box, and each is checked against its SHA-256 before it is read: a damaged or
replaced file is refused with one line rather than converting to noise.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import VCError
from .files import sha256

# name -> (file, SHA-256). Re-shipping a model replaces its file and its checksum here, in the same commit.
MODELS = {
    "default": ("default.pt", "b68e62bb73882c0b3e72f47fc681e42bc521c6d6ea13adf5793d8c39061b4d37"),
    "stream": ("stream.pt", "51bab46e97beb42958f469af71ff9eca16948e5aa10075e5033bfdff9fb97286"),  # causal: vc live
}
_PACKAGE = Path(__file__).resolve().parent
FOLDERS = (_PACKAGE / "checkpoints", _PACKAGE.parent / "checkpoints")  # installed; source tree


def shipped_path(name: str) -> Path:
    """Where the shipped model `name` is (not checked)."""
    file = MODELS[name][0]
    for folder in FOLDERS:
        if (folder / file).is_file():
            return folder / file
    return FOLDERS[-1] / file


def resolve_checkpoint(spec: str | os.PathLike | None = None) -> Path:
    """A shipped model's name -> its verified file; anything else is a path, returned as it is. None: the
    checkpoint $VC_CHECKPOINT names, else the shipped "default"."""
    if spec is None:
        spec = os.environ.get("VC_CHECKPOINT", "default")
    if not isinstance(spec, str) or spec not in MODELS:
        return Path(spec)
    path = shipped_path(spec)
    if not path.is_file():
        raise VCError(f"{path}: the shipped model '{spec}' is not installed (reinstall vc, or pass a checkpoint path)")
    if sha256(path) != MODELS[spec][1]:
        raise VCError(f"{path}: the shipped model '{spec}' is damaged or was replaced (its SHA-256 differs from "
                      "vc.registry's); reinstall vc or check out the file again")
    return path
