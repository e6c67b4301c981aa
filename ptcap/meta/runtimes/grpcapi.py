"""A runtime's gRPC API over its unix socket (containerd, CRI): raw protobuf bytes in and
out (ptcap.protowire), a short timeout, and a runtime that does not answer is left alone
for a while and reported once, at info level."""
from __future__ import annotations

from ptcap.meta.runtimes.availability import Outage, RuntimeUnavailable


class GrpcEndpoint:
    def __init__(self, what: str, address: str, consequence: str) -> None:
        self.what = what                    # "containerd", "the CRI runtime"
        self.address = address if address.startswith("unix:") else "unix://" + address
        self._consequence = consequence     # what stays empty when it is down
        self._channel = None
        self._outage = Outage()

    def call(self, method: str, request: bytes, metadata: tuple | None = None, quiet: bool = False) -> bytes:
        """The reply's bytes; LookupError for NOT_FOUND, RuntimeUnavailable otherwise."""
        if self._outage.resting():
            raise RuntimeUnavailable(f"cannot reach {self.what} at {self.address}")
        try:
            import grpc
            if self._channel is None:
                self._channel = grpc.insecure_channel(self.address)
            reply = self._channel.unary_unary(method)(request, timeout=5, metadata=metadata)
        except Exception as e:      # noqa: BLE001 (ImportError, RpcError)
            code = getattr(e, "code", lambda: None)()
            if code is not None and code.name == "NOT_FOUND":
                raise LookupError(method) from None
            details = getattr(e, "details", None)
            detail = ((details() if callable(details) else "") or str(e) or type(e).__name__)
            detail = detail.splitlines()[0][:160]
            self._outage.failed("%s: cannot reach %s (%s): %s", self.what, self.address, detail,
                                self._consequence, quiet=quiet)
            raise RuntimeUnavailable(f"cannot reach {self.what} at {self.address}: {detail}") from None
        self._outage.recovered()
        return reply

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
