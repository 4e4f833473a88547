"""The one exception users see: a one-line message that names the file and the reason."""


class VCError(Exception):
    """Bad input or a bad file. The CLI prints ``str(err)`` on one line and exits non-zero."""
