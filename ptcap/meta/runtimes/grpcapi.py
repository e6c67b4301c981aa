"""A runtime's gRPC API over its unix socket (containerd, CRI): raw protobuf bytes in and
out (ptcap.meta.runtimes.protowire), a short timeout, and a runtime that does not answer is
left alone for a while and reported once, at info level (availability.Reach)."""
from __future__ import annotations

import os
import re

from ptcap.meta.runtimes import priority
from ptcap.meta.runtimes.availability import Reach


class GrpcEndpoint:
    def __init__(self, what: str, address: str, consequence: str) -> None:
        self.address = address if address.startswith("unix:") else "unix://" + address
        self.path = self.address[len("unix://"):] if self.address.startswith("unix://") else self.address
        self.reach = Reach(what, self.address, consequence)
        self._channel = None

    @property
    def what(self) -> str:
        return self.reach.what

    def _chan(self):
        # gRPC's fork handlers make a child forked while a channel is busy (the tcpdump
        # decoder, started through a preexec_fn) restart gRPC's poller, which then finds its
        # epoll descriptor closed and aborts the child before its exec (grpc issue 43055).
        # ptcap's children never use gRPC: no fork support (read when grpc is imported).
        os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
        import grpc
        if self._channel is None:
            with priority.raised():     # gRPC's threads, started with the first channel
                self._channel = grpc.insecure_channel(self.address)
        return self._channel

    def call(self, method: str, request: bytes, metadata: tuple | None = None, quiet: bool = False) -> bytes:
        """The reply's bytes; LookupError for NOT_FOUND, RuntimeUnavailable otherwise."""
        self.reach.check(say=not quiet)
        try:
            reply = self._chan().unary_unary(method)(request, timeout=5, metadata=metadata)
        except Exception as e:      # noqa: BLE001 (ImportError, RpcError)
            raise self._failure(e, method, quiet) from None
        self.reach.ok()
        return reply

    def stream(self, method: str, request: bytes, metadata: tuple | None = None):
        """A server stream (no deadline): an iterator of reply messages that also has cancel().
        Errors while reading are grpc.RpcError (the watcher's loop handles them)."""
        self.reach.check(say=False)
        return self._chan().unary_stream(method)(request, metadata=metadata)

    def _failure(self, e: Exception, method: str, quiet: bool) -> Exception:
        code = getattr(e, "code", lambda: None)()
        if code is not None and code.name == "NOT_FOUND":
            return LookupError(method)
        details = getattr(e, "details", None)
        detail = ((details() if callable(details) else "") or str(e) or type(e).__name__)
        return self.reach.failed(short_detail(detail), quiet)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None



def short_detail(detail: str) -> str:
    """gRPC's reason for a failed call, without what the warning says already: "failed to
    connect to all addresses; last error: UNKNOWN: unix:/x.sock: connect failed: addr:
    unix:/x.sock error: No such file or directory" is "No such file or directory"."""
    first = detail.strip().splitlines()[0] if detail.strip() else detail
    if "last error: " in first:
        first = re.sub(r"^[A-Z_]+: (unix:[^ ]*: )?", "", first.rsplit(" error: ", 1)[1].strip())
    return first if len(first) <= 300 else first[:299] + "…"
