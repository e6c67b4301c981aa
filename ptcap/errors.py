"""Errors a user sees as one line: 'ptcap: MESSAGE', exit code 1."""


class PtcapError(Exception):
    """A problem the user can act on; the message is printed after 'ptcap: '."""


def short_error(e: BaseException) -> str:
    """The first line of an error, at most 160 characters (for one-line log and error messages)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) < 160 else text[:157] + "..."
