"""Which Kubernetes pod a container belongs to, and the pod's labels and annotations.

The kubelet labels every container it starts (io.kubernetes.pod.name, .namespace, .uid,
io.kubernetes.container.name): that gives the pod's identity with no API at all. Labels and
annotations of the pod itself come from the Kubernetes API (the kubernetes client) when a
kubeconfig ($KUBECONFIG, ~/.kube/config) or an in-cluster service account exists.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

from ptcap.errors import short_error as _short
from ptcap.meta.runtimes.availability import Outage

log = logging.getLogger("ptcap")

POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_UID = "io.kubernetes.pod.uid"
CONTAINER_NAME = "io.kubernetes.container.name"


@dataclass(slots=True)
class PodInfo:
    name: str
    namespace: str = ""
    uid: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


def pod_from_labels(labels: dict[str, str]) -> PodInfo | None:
    """The pod a container's runtime labels name, or None for a container outside Kubernetes."""
    name = labels.get(POD_NAME)
    if not name:
        return None
    return PodInfo(name=name, namespace=labels.get(POD_NAMESPACE, ""), uid=labels.get(POD_UID, ""))


def parse_pod_selector(text: str) -> tuple[str, str]:
    """--pod-name NAME.NAMESPACE (NAME alone means the default namespace). Pod names may hold
    dots, namespaces may not: the namespace is after the last dot."""
    name, dot, namespace = text.rpartition(".")
    if not dot:
        return text, "default"
    if not name or not namespace:
        raise ValueError(f"--pod-name {text!r}: expected NAME.NAMESPACE")
    return name, namespace


def configuration_present() -> bool:
    """A kubeconfig ($KUBECONFIG's files, else ~/.kube/config) or a pod's service account: where
    the client would look (without importing it)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    paths = os.environ.get("KUBECONFIG") or "~/.kube/config"
    return any(os.path.isfile(os.path.expanduser(p)) for p in paths.split(os.pathsep) if p)


class KubernetesAPI:
    """Pod labels and annotations from the API server; optional and cached per pod."""

    def __init__(self) -> None:
        self._api = None
        self._tried = False
        self._connecting = threading.Lock()
        self._cache: dict[tuple[str, str], PodInfo | None] = {}
        self._outage = Outage()     # per pod

    def prepare(self) -> None:
        """With a cluster configuration, load the client on a thread now: importing it costs
        0.2 s of CPU, which the first packet of a pod must not wait for (nor, meanwhile, the
        runtimes' watchers, which need the interpreter to read a brief container's record)."""
        if configuration_present():
            threading.Thread(target=self._connect, name="ptcap-kubernetes-client", daemon=True).start()

    def _connect(self):
        with self._connecting:
            if not self._tried:
                self._api = self._load()
                self._tried = True
        return self._api

    def _load(self):
        if not configuration_present():
            log.info("kubernetes: no cluster configuration (no kubeconfig at %s, not in a cluster): pod "
                     "labels and annotations are left empty", os.environ.get("KUBECONFIG") or "~/.kube/config")
            return None
        try:
            from kubernetes import client, config
        except ImportError as e:
            log.info("kubernetes: client library missing (%s): pod labels and annotations are left empty", e)
            return None
        try:
            if os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config()
            else:
                config.load_kube_config()
        except Exception as e:      # noqa: BLE001 (no kubeconfig: a normal case)
            log.info("kubernetes: no cluster configuration (%s): pod labels and annotations are left "
                     "empty", _short(e))
            return None
        return client.CoreV1Api()

    @property
    def configured(self) -> bool:
        return self._connect() is not None

    def pod(self, name: str, namespace: str) -> PodInfo | None:
        key = (name, namespace)
        if key in self._cache:
            return self._cache[key]
        if self._outage.resting(key):
            return None
        api = self._connect()
        if api is None:
            return None
        try:
            pod = api.read_namespaced_pod(name, namespace, _request_timeout=5)
        except Exception as e:      # noqa: BLE001
            if getattr(e, "status", None) == 404:
                self._cache[key] = None
                return None
            self._outage.failed("kubernetes: reading pod %s/%s: %s", namespace, name, _short(e), key=key)
            return None
        meta = pod.metadata
        info = PodInfo(name=meta.name, namespace=meta.namespace or namespace, uid=meta.uid or "",
                       labels=dict(meta.labels or {}), annotations=dict(meta.annotations or {}))
        self._cache[key] = info
        return info

