"""Container names, images and labels from containerd (its gRPC API, over its unix socket).

containerd keeps containers per namespace (k8s.io for the kubelet's CRI containers, moby
for Docker's, default for ctr, ...). A container's cgroup is /<namespace>/<id> under the
cgroupfs driver, or cri-containerd-<id>.scope under systemd. Optional like every runtime:
when the socket does not answer, the fields stay empty, said once at info level.
"""
from __future__ import annotations

from typing import Callable

from ptcap.meta.runtimes import protowire as pw
from ptcap.meta.containers import ContainerInfo
from ptcap.meta.runtimes.availability import RuntimeUnavailable
from ptcap.meta.runtimes.grpcapi import GrpcEndpoint

DEFAULT_ADDRESS = "/run/containerd/containerd.sock"
_NAMESPACES = "/containerd.services.namespaces.v1.Namespaces/List"
_GET = "/containerd.services.containers.v1.Containers/Get"
_LIST = "/containerd.services.containers.v1.Containers/List"
_TASK = "/containerd.services.tasks.v1.Tasks/Get"
SKIP_NAMESPACES = {"moby"}       # Docker's containers: the Docker engine describes them better


class ContainerdResolver:
    def __init__(self, address: str | None = None) -> None:
        self._api = GrpcEndpoint("containerd", address or DEFAULT_ADDRESS,
                                 "its containers' names, images and labels are left empty")
        self.address = self._api.address
        self._namespaces: set[str] | None = None
        self._cache: dict[tuple[str, str], ContainerInfo | None] = {}

    def _call(self, method: str, request: bytes, namespace: str = "", quiet: bool = False) -> bytes:
        metadata = (("containerd-namespace", namespace),) if namespace else None
        return self._api.call(method, request, metadata, quiet)

    def namespaces(self) -> set[str]:
        if self._namespaces is None:
            try:
                # asked for every host process's cgroup: no runtime here is nothing to report
                reply = self._call(_NAMESPACES, b"", quiet=True)
            except RuntimeUnavailable:
                return set()
            self._namespaces = {pw.text(ns, 1) for f, ns in pw.fields(reply) if f == 1}
        return self._namespaces

    def container(self, container_id: str, namespace: str = "") -> ContainerInfo | None:
        """A container by id, in `namespace` (or in any namespace when not given)."""
        spaces = [namespace] if namespace else sorted(self.namespaces() - SKIP_NAMESPACES)
        for ns in spaces:
            key = (ns, container_id)
            if key not in self._cache:
                try:
                    reply = self._call(_GET, pw.string(1, container_id), ns)
                except LookupError:
                    self._cache[key] = None
                    continue
                except RuntimeUnavailable:
                    return None
                self._cache[key] = _info(pw.first(reply, 1, b""))
            if self._cache[key] is not None:
                return self._cache[key]
        return None

    def running(self, wanted: Callable[[ContainerInfo], bool] = lambda c: True) -> list[ContainerInfo]:
        """Containers `wanted` accepts that have a running task, with their pids, in every
        namespace (raises RuntimeUnavailable)."""
        self._namespaces = None
        if not self.namespaces():
            self._call(_NAMESPACES, b"")        # raises when down
        out = []
        for ns in sorted(self.namespaces() - SKIP_NAMESPACES):
            reply = self._call(_LIST, b"", ns)
            for f, raw in pw.fields(reply):
                if f != 1:
                    continue
                info = _info(raw)
                if not wanted(info):
                    continue
                try:
                    task = self._call(_TASK, pw.string(1, info.id), ns)
                except LookupError:
                    continue            # created, not started
                info.pid = pw.first(pw.first(task, 1, b""), 3, 0)
                if info.pid:
                    out.append(info)
        return out

    def close(self) -> None:
        self._api.close()


def _info(raw: bytes) -> ContainerInfo:
    labels = pw.string_map(raw, 2)
    cid = pw.text(raw, 1)
    name = labels.get("nerdctl/name") or labels.get("io.kubernetes.container.name") or cid
    return ContainerInfo(id=cid, name=name, image=pw.text(raw, 3), labels=labels, runtime="containerd")
