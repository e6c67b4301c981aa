"""Errors a user sees as one line: 'ptcap: MESSAGE', exit code 1."""


class PtcapError(Exception):
    """A problem the user can act on; the message is printed after 'ptcap: '."""
