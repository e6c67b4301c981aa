"""Container and pod metadata for owner records: cgroup → container id → runtime → pod.

The runtimes' containers are listed at start and followed through their event streams
(registry.py, runtimes/watch.py), so a container is known from its creation and for a while
after it is gone. One the registry does not know is asked for, by what the cgroup layout
says: the Docker engine, a CRI runtime (a kubelet's containers: the pod's labels and
annotations come with them), containerd's own API; then the Kubernetes API for a pod known
only by its runtime labels.

Each step is cached (per cgroup id, per container id, per pod), so a packet costs at most
one dict lookup once its owner has been seen; runtimes that are absent leave fields empty.
"""
from __future__ import annotations

from dataclasses import dataclass

from ptcap.meta.bounded import keep_newest
from ptcap.meta.containers import MAX_CGROUPS, CgroupContainer, ContainerFinder, ContainerInfo
from ptcap.meta.registry import ContainerRegistry
from ptcap.meta.runtimes.containerd import ContainerdResolver, ContainerdWatcher
from ptcap.meta.runtimes.cri import CRIResolver, CRIWatcher
from ptcap.meta.runtimes.docker_engine import DockerResolver, DockerWatcher
from ptcap.meta.runtimes.kubernetes import KubernetesAPI, PodInfo, pod_from_labels


@dataclass(slots=True)
class Workload:
    container: ContainerInfo
    pod: PodInfo | None = None


class Metadata:
    def __init__(self, docker_address: str | None = None, containerd_address: str | None = None,
                 cri_address: str | None = None, kubernetes: bool = True) -> None:
        self.docker = DockerResolver(docker_address)
        self.containerd = ContainerdResolver(containerd_address)
        self.cri = CRIResolver(cri_address or containerd_address)     # containerd's CRI plugin shares its socket
        self.registry = ContainerRegistry()
        self.finder = ContainerFinder(self._namespaces)
        self.finder.known = self._known
        self.selected_prefix = ""       # --container-id: a cgroup named so is a container
        self.kubernetes = KubernetesAPI() if kubernetes else None
        self._workloads: dict[str, Workload] = {}
        self.watchers = [DockerWatcher(self.docker, self.registry),
                         ContainerdWatcher(self.containerd, self.registry),
                         CRIWatcher(self.cri, self.registry)]

    def start(self, wait: float = 5.0) -> None:
        """Follow every runtime from now on; return once each has listed its running
        containers (or said it cannot be reached), `wait` seconds at most."""
        for w in self.watchers:
            w.start()
        if self.kubernetes is not None:
            self.kubernetes.prepare()
        for w in self.watchers:
            w.primed.wait(wait)

    def _known(self, name: str) -> bool:
        return self.registry.get(name) is not None or bool(self.selected_prefix) and \
            name.startswith(self.selected_prefix)

    def _namespaces(self) -> set[str]:
        return self.containerd.namespaces() | self.registry.namespaces

    def workload(self, pid: int, cgroup_id: int) -> Workload | None:
        """The container (and pod) of a process; None for a host process."""
        found = self.finder.find(pid, cgroup_id)
        if found is None:
            return None
        return self.for_container(found)

    def for_container(self, found: CgroupContainer) -> Workload:
        w = self._workloads.get(found.id)
        if w is not None:
            return w
        info = self.registry.get(found.id)
        sandbox_pod = None
        if info is not None and info.sandbox:
            sandbox_pod = self.cri.pod(info.sandbox)
        elif info is not None and info.runtime == "containerd" and info.namespace == "k8s.io":
            got = self.cri.container(found.id)      # a kubelet's container: its pod sandbox
            if got is not None and got[1]:
                sandbox_pod = self.cri.pod(got[1])
        if info is None and found.runtime in ("docker", ""):
            info = self.docker.container(found.id)
        if info is None and found.runtime in ("containerd", "cri-o", "kubernetes", ""):
            got = self.cri.container(found.id)      # a kubelet's container: the pod too
            if got is not None:
                info, sandbox = got
                sandbox_pod = self.cri.pod(sandbox) if sandbox else None
        if info is None and found.runtime in ("containerd", "kubernetes", ""):
            info = self.containerd.container(found.id, found.namespace)
        if info is None:
            info = ContainerInfo(id=found.id, runtime=found.runtime)
        pod = sandbox_pod if sandbox_pod is not None and sandbox_pod.name else pod_from_labels(info.labels)
        if pod is None and found.pod_uid:
            pod = PodInfo(name="", uid=found.pod_uid)
        if pod is not None and pod.name and self.kubernetes is not None and sandbox_pod is None:
            full = self.kubernetes.pod(pod.name, pod.namespace)
            if full is not None:
                pod = PodInfo(name=full.name, namespace=full.namespace, uid=full.uid or pod.uid,
                              labels=full.labels, annotations=full.annotations)
        w = Workload(info, pod)
        # a runtime that was down leaves a bare record: ask again next time (it is rate-limited)
        if info.name:
            self._workloads[found.id] = w
            keep_newest(self._workloads, MAX_CGROUPS)
        return w

    def runtimes(self) -> list:
        """The resolvers that can list running containers (for the container selectors)."""
        return [self.docker, self.containerd, self.cri]

    def close(self) -> None:
        for w in self.watchers:
            w.stopping.set()
            w.interrupt()
        for w in self.watchers:
            w.stop()
        self.docker.close()
        self.containerd.close()
        self.cri.close()
