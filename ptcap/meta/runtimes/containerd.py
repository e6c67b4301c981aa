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
from ptcap.meta.runtimes.watch import Watcher

DEFAULT_ADDRESS = "/run/containerd/containerd.sock"
_NAMESPACES = "/containerd.services.namespaces.v1.Namespaces/List"
_GET = "/containerd.services.containers.v1.Containers/Get"
_LIST = "/containerd.services.containers.v1.Containers/List"
_TASK = "/containerd.services.tasks.v1.Tasks/Get"
_SUBSCRIBE = "/containerd.services.events.v1.Events/Subscribe"
# the topics followed (filters are or'ed): containers made and removed, tasks started
_TOPICS = ('topic~="^/containers/"', 'topic=="/tasks/start"')
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
                self._cache[key] = _info(pw.first(reply, 1, b""), ns)
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
                info = _info(raw, ns)
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

    def get(self, container_id: str, namespace: str) -> ContainerInfo | None:
        """A container asked for afresh (no cache): None when it is gone."""
        try:
            reply = self._call(_GET, pw.string(1, container_id), namespace)
        except LookupError:
            return None
        info = self._cache[namespace, container_id] = _info(pw.first(reply, 1, b""), namespace)
        return info

    def listed(self, namespace: str) -> list[ContainerInfo]:
        reply = self._call(_LIST, b"", namespace, quiet=self._api.reach.absent())
        return [_info(raw, namespace) for f, raw in pw.fields(reply) if f == 1]

    def close(self) -> None:
        self._api.close()


class ContainerdWatcher(Watcher):
    """containerd's containers: listed in every namespace, then followed through its Events
    service (Subscribe). /containers/create comes before the container's task (and cgroup)
    is made: its labels are read then, so a container that lives for an instant is known."""

    name = "containerd"

    def __init__(self, resolver: ContainerdResolver, registry) -> None:
        super().__init__(resolver._api.reach, registry)
        self.resolver = resolver
        self._stream = None

    def follow(self) -> None:
        api = self.resolver._api
        request = b"".join(pw.string(1, f) for f in _TOPICS)
        self._stream = api.stream(_SUBSCRIBE, request)
        try:
            if self.stopping.is_set():
                return
            self.resolver._namespaces = None
            spaces = self.resolver.namespaces()
            if not spaces:
                # raises when down (said only if the runtime is here at all)
                self.resolver._call(_NAMESPACES, b"", quiet=api.reach.absent())
            for ns in sorted(spaces - SKIP_NAMESPACES):
                for info in self.resolver.listed(ns):
                    self.registry.learn(info)
            self.listed()
            for envelope in self._stream:
                self._event(envelope)
        finally:
            stream, self._stream = self._stream, None
            stream.cancel()

    def _event(self, envelope: bytes) -> None:
        ns, topic = pw.text(envelope, 2), pw.text(envelope, 3)
        body = pw.first(pw.first(envelope, 4, b""), 2, b"")     # google.protobuf.Any value
        cid = pw.text(body, 1)
        if not cid or ns in SKIP_NAMESPACES:
            return
        if self.resolver._namespaces is not None:
            self.resolver._namespaces.add(ns)
        if topic in ("/containers/create", "/containers/update", "/tasks/start"):
            try:
                info = self.resolver.get(cid, ns)
            except RuntimeUnavailable:
                info = None
            if info is None and topic == "/containers/create":
                # gone already: what the event says (its image)
                info = ContainerInfo(id=cid, name=cid, image=pw.text(body, 2), runtime="containerd",
                                     namespace=ns)
            if info is not None:
                if topic == "/tasks/start":
                    info.pid = pw.first(body, 2, 0)
                self.registry.learn(info)
        elif topic == "/containers/delete":
            self.registry.gone(cid)

    def interrupt(self) -> None:
        stream = self._stream
        if stream is not None:
            stream.cancel()


def _info(raw: bytes, namespace: str = "") -> ContainerInfo:
    labels = pw.string_map(raw, 2)
    cid = pw.text(raw, 1)
    name = labels.get("nerdctl/name") or labels.get("io.kubernetes.container.name") or cid
    return ContainerInfo(id=cid, name=name, image=pw.text(raw, 3), labels=labels, runtime="containerd",
                         namespace=namespace)
