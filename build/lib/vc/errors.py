"""The one exception users see: a one-line message that names the file and the reason."""


class VCError(Exception):
    """Bad input or a bad file. The CLI prints ``str(err)`` on one line and exits non-zero."""


def reason(err: BaseException) -> str:
    """The first line of an exception's message (or its type), for one-line errors."""
    text = str(err)
    return text.splitlines()[0] if text.strip() else type(err).__name__
