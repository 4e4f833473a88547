"""Batch planning: which inputs become which outputs. Paths are resolved before anything is decided, and a plan that
would write over an input, a target clip, the model or the report is refused before any work (`check_paths`)."""
from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .config import AUDIO_EXTENSIONS
from .errors import VCError

OUTPUT_FORMATS = (".wav", ".flac")
# Names that look like an audio file: `-o out.mp3` is a file the user wants, not a folder to create.
AUDIO_LIKE = frozenset(AUDIO_EXTENSIONS) | {".m4a", ".aac", ".opus", ".wma", ".aif", ".aiff", ".au", ".webm"}


@dataclass(frozen=True)
class Job:
    source: Path
    output: Path
    rel: str  # the input's path relative to the folder its output tree mirrors; sharding hashes it


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(path))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def _audio_files(folder: Path, skip: Path | None = None) -> list[Path]:
    """Audio files below `folder`; none inside `skip` (the output folder, when it lies inside `folder`)."""
    files = (p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    return sorted(p for p in files if skip is None or not _inside(_resolved(p), skip))


def find_inputs(specs: Sequence[str], skip: str | os.PathLike | None = None) -> Iterator[tuple[Path, Path]]:
    """(file, base) for each input: files as given, folders searched recursively for audio, glob patterns expanded.

    `base` is the folder whose tree the output mirrors. Files that folders and patterns find inside `skip` (the
    output folder) are left out, so that outputs are never taken for inputs on a later run.
    """
    skip = _resolved(skip) if skip is not None else None
    for spec in specs:
        path = Path(spec)
        if glob.has_magic(spec):
            parts = path.parts
            fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
            base = Path(*parts[:fixed]) if fixed else Path(".")
            for f in sorted(glob.glob(spec, recursive=True)):
                if (Path(f).is_file() and Path(f).suffix.lower() in AUDIO_EXTENSIONS
                        and (skip is None or not _inside(_resolved(f), skip))):
                    yield Path(f), base
        elif path.is_dir():
            for f in _audio_files(path, skip):
                yield f, path
        else:
            yield path, path.parent  # a missing or unreadable file is reported when its turn comes


def output_kind(output: str | os.PathLike) -> str:
    """'file' for an output named like an audio file (.wav or .flac), else 'folder'; an audio name that vc cannot
    write (out.mp3), or a file name that is an existing folder, is an error."""
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix in AUDIO_LIKE and suffix not in OUTPUT_FORMATS:
        raise VCError(f"{output}: unsupported output format '{output.suffix}' (use .wav or .flac, or a folder name)")
    if suffix in OUTPUT_FORMATS:
        if output.is_dir():
            raise VCError(f"{output}: is a folder; give a file name, or a folder name without .wav or .flac")
        return "file"
    if output.exists() and not output.is_dir():
        raise VCError(f"{output}: is a file, not a folder (with several inputs, --output is a folder)")
    return "folder"


def plan_single(spec: str, output: str | os.PathLike, fmt: str | None = None) -> list[Job]:
    """One input file into the output file named: the single-file case of `vc convert`, as one Job."""
    output = Path(output)
    if glob.has_magic(spec) or Path(spec).is_dir():
        raise VCError(f"{spec}: a folder or a pattern of inputs needs a folder as --output, not the file {output}")
    if fmt is not None and output.suffix.lower() != f".{fmt}":
        raise VCError(f"{output}: --format {fmt} does not match the output's extension '{output.suffix}'")
    return [Job(Path(spec), output, Path(spec).name)]


def plan(specs: Sequence[str], out_dir: str | Path, fmt: str = "wav") -> list[Job]:
    """Map inputs to outputs under `out_dir`, mirroring their folder trees; no output can land outside `out_dir`."""
    out_dir = Path(out_dir)
    root = out_dir.resolve()
    for spec in specs:
        if not glob.has_magic(spec) and Path(spec).is_dir() and _resolved(spec) == root:
            raise VCError(f"{out_dir}: the output folder is the input folder {spec}; choose another --output")
    jobs, seen_inputs, taken = [], set(), set()
    for source, base in find_inputs(specs, skip=out_dir):
        key = os.path.abspath(source)
        if key in seen_inputs:
            continue
        seen_inputs.add(key)
        try:
            rel = Path(os.path.relpath(os.path.abspath(source), os.path.abspath(base)))
        except ValueError:  # another drive (Windows)
            rel = Path(source.name)
        # Only plain names survive: no '..', no root, no drive, whatever the input's name.
        parts = [p for p in rel.parts if p not in ("", ".", "..", os.sep) and not Path(p).anchor]
        rel = Path(*parts) if parts else Path(source.name or "audio")
        out = (out_dir / rel).with_suffix(f".{fmt}")
        n = 1
        while str(out) in taken:  # a.wav and a.flac in one folder: a.wav and a.flac.wav
            out = out_dir / rel.parent / f"{rel.name}{'' if n == 1 else f'-{n}'}.{fmt}"
            n += 1
        if not out.resolve().is_relative_to(root):
            raise VCError(f"{source}: output path would escape {out_dir}")
        taken.add(str(out))
        jobs.append(Job(source, out, rel.as_posix()))
    return jobs


def check_paths(jobs: Sequence[Job], reads: Sequence[tuple[str, Path]], writes: Sequence[tuple[str, Path]]) -> None:
    """Refuse, before any work, a plan whose output is an input or a file the run reads (`reads`: (what, path), e.g.
    target clips and the model), or whose other files written (`writes`: (option, path), e.g. the report) are one of
    those or an output. Paths are compared resolved, so links and '..' cannot hide a clash."""
    protected = {_resolved(j.source): f"the input {j.source}" for j in jobs}
    protected.update({_resolved(path): f"{what} {path}" for what, path in reads})
    for j in jobs:
        clash = protected.get(_resolved(j.output))
        if clash:
            raise VCError(f"{j.output}: the output would replace {clash}; choose another --output")
    outputs = {_resolved(j.output) for j in jobs}
    for option, path in writes:
        clash = protected.get(_resolved(path)) or ("an output" if _resolved(path) in outputs else None)
        if clash:
            raise VCError(f"{path}: {option} would replace {clash}; choose another {option}")


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (1-based) -> (I, N)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise VCError(f"--shard must look like I/N (e.g. 2/8), got '{text}'") from None
    if not 1 <= i <= n:
        raise VCError(f"--shard {text}: I must be between 1 and N")
    return i, n


def shard(jobs: list[Job], index: int, count: int) -> list[Job]:
    """The jobs of shard `index` of `count` (1-based): a stable hash of each input's relative path decides, so
    that N machines given the same inputs split them exactly, whatever order they list them in."""
    def owner(job: Job) -> int:
        return int(hashlib.sha1(job.rel.encode()).hexdigest(), 16) % count + 1
    return [j for j in jobs if owner(j) == index]


def target_clips(specs: Sequence[str]) -> list[Path]:
    """Target references: files, or folders of one speaker's clips."""
    clips: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = _audio_files(path)
            if not found:
                raise VCError(f"{path}: target folder holds no audio files")
            clips += found
        else:
            clips.append(path)
    return clips
