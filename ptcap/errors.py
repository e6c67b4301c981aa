"""Errors a user sees as one line: 'ptcap: MESSAGE', exit code 1 (WRITE_FAILED for output
that cannot be written)."""

WRITE_FAILED = 14       # tcpdump's status when its output cannot be written (S_ERR_ND_WRITE_FILE)


class PtcapError(Exception):
    """A problem the user can act on; the message is printed after 'ptcap: '."""


class OutputError(PtcapError):
    """The output cannot be written (a full disk, its reader or terminal gone): what was
    captured until then is kept; exit WRITE_FAILED. `errno` is the write's."""

    def __init__(self, message: str, errno: int | None) -> None:
        super().__init__(message)
        self.errno = errno


def short_error(e: BaseException) -> str:
    """The first line of an error, at most 160 characters (for one-line log and error messages)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) < 160 else text[:157] + "..."
