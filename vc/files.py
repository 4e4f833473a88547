"""The one home of file writing and of file-system errors.

Every output goes to a temporary name beside it and is renamed into place only when complete, with the permissions a
plain `open` would give it. Temporary names carry the writer's process id and host, so that a later run can remove
those of a killed writer (`remove_stale`) without touching those of a writer still at work. `describe` turns any
OSError into one line that names the path and the reason.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import VCError

# The output side cannot take more files: a batch stops instead of failing every remaining input on it.
FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
                          errno.EIO})
REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (file-system or file-size limit reached)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENAMETOOLONG: "file name too long",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENOENT: "no such file or folder",
    errno.EIO: "input/output error (failing disk or lost network share)",
    errno.ELOOP: "too many levels of symbolic links",
    errno.EMFILE: "too many open files",
}
_TMP = re.compile(r"^\..+\.vc(\d+)-([A-Za-z0-9_-]*)\.[a-z0-9_]+\.tmp$")  # what `atomic_path` names


def describe(err: OSError, path: str | os.PathLike | None = None) -> str:
    """'PATH: reason' for a file-system error, PATH being `path` or the one the error names."""
    where = path if path is not None else (err.filename if err.filename is not None else "")
    why = REASONS.get(err.errno) or err.strerror or str(err) or type(err).__name__
    return f"{where}: {why}" if str(where) else why


def fs_error(err: OSError, path: str | os.PathLike | None = None) -> VCError:
    return VCError(describe(err, path))


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:32]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on success it replaces `path` in one rename, on any error
    the temporary file is removed and `path` is left as it was (a kill between the two leaves a temporary file that
    `remove_stale` removes later).

        with atomic_path("out.csv") as tmp:
            tmp.write_text(...)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the name is cut so that the temporary name fits wherever the final one does
    prefix = f".{path.name[:120]}.vc{os.getpid()}-{_host()}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs get the usual permissions
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _alive(pid: int) -> bool:
    """Whether process `pid` still runs: a zombie (dead, not yet reaped by its parent) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    with contextlib.suppress(OSError, ValueError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] not in "ZX"
    return True


def remove_stale(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Remove the temporary files of killed writers in `folder`: those of this host whose process is gone. Returns
    the paths removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host, removed = _host(), []
    for p in folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"):
        m = _TMP.match(p.name)
        if m and m.group(2) == host and not _alive(int(m.group(1))) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")
    return path


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, computed once per process for a given file, size and modification time (a
    batch names its model to the registry, the manifest and the loader)."""
    st = os.stat(path)
    return _sha256(os.path.realpath(path), st.st_size, st.st_mtime_ns)
