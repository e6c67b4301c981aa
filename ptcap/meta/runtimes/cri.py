"""Containers and pods from a Kubernetes node's runtime, through the CRI v1 API
(runtime.v1.RuntimeService: containerd's CRI plugin, CRI-O).

The kubelet creates every pod as a sandbox and its containers inside it, so the CRI knows
what the kubelet knows: container name and image, and the pod's name, namespace, uid,
labels and annotations, with no Kubernetes API needed. Optional like every runtime.
"""
from __future__ import annotations

import json
import os
from typing import Callable

from ptcap.meta.runtimes import protowire as pw
from ptcap.meta.containers import ContainerInfo
from ptcap.meta.runtimes.availability import RuntimeUnavailable
from ptcap.meta.runtimes.grpcapi import GrpcEndpoint
from ptcap.meta.runtimes.watch import Watcher
from ptcap.meta.runtimes.kubernetes import POD_NAME, POD_NAMESPACE, POD_UID, PodInfo

DEFAULT_ADDRESSES = ("/run/containerd/containerd.sock", "/run/crio/crio.sock")
_SERVICE = "/runtime.v1.RuntimeService/"
_RUNNING = 1        # runtime.v1 ContainerState CONTAINER_RUNNING
LIST_SECONDS = 0.25     # how often the CRI watcher lists the containers
_KUBELET_LABELS = {POD_NAME, POD_NAMESPACE, POD_UID}


def default_address() -> str:
    for path in DEFAULT_ADDRESSES:
        if os.path.exists(path):
            return path
    return DEFAULT_ADDRESSES[0]


class CRIResolver:
    def __init__(self, address: str | None = None) -> None:
        self._api = GrpcEndpoint("the CRI runtime", address or default_address(),
                                 "CRI container and pod details are left empty")
        self.address = self._api.address
        self._containers: dict[str, tuple[ContainerInfo, str] | None] = {}
        self._pods: dict[str, PodInfo | None] = {}

    def _call(self, method: str, request: bytes, quiet: bool = False) -> bytes:
        return self._api.call(_SERVICE + method, request, quiet=quiet)

    def container(self, container_id: str) -> tuple[ContainerInfo, str] | None:
        """(the container, its pod sandbox id) by full id; None when unknown or down."""
        if container_id in self._containers:
            return self._containers[container_id]
        try:
            status = pw.first(self._call("ContainerStatus", pw.string(1, container_id)), 1, b"")
            listed = self._call("ListContainers", pw.string(1, pw.string(1, container_id)))
        except LookupError:
            self._containers[container_id] = None
            return None
        except RuntimeUnavailable:
            return None
        sandbox = ""
        for f, c in pw.fields(listed):
            if f == 1 and pw.text(c, 1) == container_id:
                sandbox = pw.text(c, 2)
        info = ContainerInfo(id=container_id, name=pw.text(pw.first(status, 2, b""), 1),
                             image=pw.text(pw.first(status, 8, b""), 1),
                             labels=pw.string_map(status, 12), runtime="cri", sandbox=sandbox)
        found = self._containers[container_id] = (info, sandbox)
        return found

    def pod(self, sandbox_id: str) -> PodInfo | None:
        """The pod of a sandbox: name, namespace, uid, and its own labels and annotations."""
        if sandbox_id in self._pods:
            return self._pods[sandbox_id]
        try:
            status = pw.first(self._call("PodSandboxStatus", pw.string(1, sandbox_id)), 1, b"")
        except LookupError:
            self._pods[sandbox_id] = None
            return None
        except RuntimeUnavailable:
            return None
        meta = pw.first(status, 2, b"")
        labels = {k: v for k, v in pw.string_map(status, 7).items() if k not in _KUBELET_LABELS}
        pod = PodInfo(name=pw.text(meta, 1), uid=pw.text(meta, 2), namespace=pw.text(meta, 3),
                      labels=labels, annotations=pw.string_map(status, 8))
        self._pods[sandbox_id] = pod
        return pod

    def running(self, wanted: Callable[[ContainerInfo], bool] = lambda c: True) -> list[ContainerInfo]:
        """Running containers `wanted` accepts, with their pids (raises RuntimeUnavailable)."""
        state = pw.string(2, pw.varint(1, _RUNNING))        # ContainerFilter.state
        listed = self._call("ListContainers", pw.string(1, state))
        out = []
        for f, c in pw.fields(listed):
            if f != 1:
                continue
            info = _listed(c)
            cid = info.id
            if not wanted(info):
                continue
            try:
                reply = self._call("ContainerStatus", pw.string(1, cid) + pw.varint(2, 1))   # verbose
            except LookupError:
                continue
            verbose = pw.string_map(reply, 2).get("info", "")
            try:
                info.pid = int(json.loads(verbose).get("pid") or 0) if verbose else 0
            except (ValueError, AttributeError):
                info.pid = 0
            if info.pid:
                out.append(info)
        return out

    def listed(self) -> list[ContainerInfo]:
        """Every container the runtime has (any state), with its pod sandbox."""
        out = []
        # the watcher's listing: a runtime that is not here at all is not worth a line
        for f, c in pw.fields(self._call("ListContainers", b"", quiet=self._api.reach.absent())):
            if f == 1:
                out.append(_listed(c))
        return out

    def close(self) -> None:
        self._api.close()


def _listed(c: bytes) -> ContainerInfo:
    """A runtime.v1 Container message."""
    return ContainerInfo(id=pw.text(c, 1), name=pw.text(pw.first(c, 3, b""), 1),
                         image=pw.text(pw.first(c, 4, b""), 1), labels=pw.string_map(c, 8),
                         runtime="cri", sandbox=pw.text(c, 2))


class CRIWatcher(Watcher):
    """A CRI runtime's containers (with their pods): the v1 API's container events are not
    served by every runtime (containerd 1.6 has none), so it is a tight list: every
    LIST_SECONDS, new containers are learnt and removed ones let go."""

    name = "cri"

    def __init__(self, resolver: CRIResolver, registry) -> None:
        super().__init__(resolver._api.reach, registry)
        self.resolver = resolver

    def follow(self) -> None:
        known: set[str] = set()
        while not self.stopping.is_set():
            now = {}
            for info in self.resolver.listed():
                now[info.id] = info
                if info.id not in known:
                    self.registry.learn(info)
            for gone in known - now.keys():
                self.registry.gone(gone)
            if not self._following:
                self.listed()
            known = set(now)
            self.stopping.wait(LIST_SECONDS)
