"""What made each output: "already done" means made from the same source, targets, model and options, not merely
"the file exists".

Each output folder keeps `.vc-manifest.jsonl`, one JSON line per event, appended by the process that converts:
`{"output", "key", "before"}` just before an output is written, and `{"output", "key", "after"}` just after it is
renamed into place, where `before` and `after` are the file's (size, mtime, inode) then. An output is recorded as
made with a key when its file is the one seen `after`, or when it changed since `before` (the conversion renamed it
into place, and a kill came before the `after` line). A file that is neither was not made by vc here.

The key's parts are short digests: the source and the target clips by path, size and modification time (cheap for
thousands of files), the model by its bytes, the options by value.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

from .files import sha256

NAME = ".vc-manifest.jsonl"
PARTS = ("source", "targets", "model", "options")  # the parts of a key, named in messages when they differ


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_id(path: str | os.PathLike) -> list:
    """A file's identity for the key: its resolved path, size and modification time (no hashing of contents)."""
    try:
        st = os.stat(path)
    except OSError:
        return [os.path.realpath(path), None, None]
    return [os.path.realpath(path), st.st_size, st.st_mtime_ns]


def content_id(path: str | os.PathLike) -> str | None:
    """The SHA-256 of a file's bytes (the model: a copy, a checkout or a new download of the same weights is the
    same model), or None when it cannot be read."""
    try:
        return sha256(path)
    except OSError:
        return None


def recipe(targets: Sequence[Path], checkpoint: Path, options: dict[str, Any]) -> dict[str, str]:
    """The parts of the key that all outputs of a run share (the source is added per output by `key`)."""
    return {"targets": _digest(sorted(file_id(t) for t in targets)), "model": _digest(content_id(checkpoint)),
            "options": _digest(options)}


def key(source: Path, shared: dict[str, str]) -> dict[str, str]:
    return {"source": _digest(file_id(source)), **shared}


def _signature(path: Path) -> list | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


class Manifest:
    """The records of one output folder, read once (workers append with `mark`)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / NAME
        self.latest: dict[tuple[str, str], dict] = {}  # (output, "before" or "after") -> the last such entry
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines() if self.path.is_file() else []
        except OSError:
            lines = []
        for number, line in enumerate(lines):
            try:
                entry = {**json.loads(line), "line": number}
                self.latest[entry["output"], "after" if "after" in entry else "before"] = entry
            except (ValueError, KeyError, TypeError):  # a line cut by a kill
                continue

    def state(self, output: Path, wanted: dict[str, str]) -> str:
        """'todo' (no file), 'done' (made with `wanted`), 'foreign' (not made by vc here), or 'changed: the X'."""
        now = _signature(output)
        if now is None:
            return "todo"
        name = _name(self.folder, output)
        begun, made = self.latest.get((name, "before")), self.latest.get((name, "after"))
        if made is not None and made["after"] == now:
            entry = made
        elif begun is not None and begun["before"] != now and (made is None or made["line"] < begun["line"]):
            entry = begun  # the last conversion renamed it into place, and was killed before its "after" line
        else:
            return "foreign"
        changed = [part for part in PARTS if entry["key"].get(part) != wanted.get(part)]
        return "done" if not changed else "changed: the " + ", the ".join(changed)


def _name(folder: Path, output: Path) -> str:
    return os.path.relpath(os.path.abspath(output), os.path.abspath(folder))


def mark(folder: str | os.PathLike, output: Path, wanted: dict[str, str], stage: str) -> None:
    """Append the `stage` ("before" or "after" the output is written) of `output` to the manifest of `folder`."""
    entry = {"output": _name(Path(folder), output), "key": wanted, stage: _signature(output)}
    line = (json.dumps(entry, sort_keys=True) + "\n").encode()
    fd = os.open(Path(folder) / NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line)  # one write of a short line: the appends of parallel workers do not interleave
    finally:
        os.close(fd)


def explain(state: str) -> str:
    """Why an existing output is not taken as done, for the one-line refusal."""
    if state == "foreign":
        return "no record that vc made it here with these settings"
    return f"made with other settings ({state.split(': ', 1)[1]} changed)"

