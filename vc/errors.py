"""What users see when something is wrong: one line that names the file and the reason.

`VCError` stops the command (the CLI prints ``error: ...`` and exits 1). `warn` is for what can go on but must not go
unsaid (a truncated file, telephone-band audio): it raises a `VCWarning` through Python's `warnings`, which the CLI
prints as one ``warning: ...`` line and batch mode also records in the report's `warnings` column.
"""
from __future__ import annotations

import warnings


class VCError(Exception):
    """Bad input or a bad file. The CLI prints ``str(err)`` on one line and exits non-zero."""


class VCWarning(UserWarning):
    """Something the user should know about a result that was still produced."""


def reason(err: BaseException) -> str:
    """The first line of an exception's message (or its type), for one-line errors."""
    text = str(err)
    return text.splitlines()[0] if text.strip() else type(err).__name__


def warn(message: str) -> None:
    """Say on one line that a result may not be what the user expects, and go on."""
    warnings.warn(VCWarning(" ".join(message.split())), stacklevel=2)
