"""Making pods the way the kubelet does: CRI v1 calls (RunPodSandbox, CreateContainer,
StartContainer, ...) to a real containerd, written with ptcap's protobuf wire helpers."""
from __future__ import annotations

import grpc

from ptcap.meta.runtimes import protowire as pw

NODE = 2        # runtime.v1 NamespaceMode: the host's network namespace


def _map(field: int, values: dict[str, str]) -> bytes:
    return b"".join(pw.string(field, pw.string(1, k) + pw.string(2, v)) for k, v in values.items())


class Kubelet:
    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel("unix://" + address)

    def call(self, method: str, request: bytes) -> bytes:
        return self.channel.unary_unary(f"/runtime.v1.RuntimeService/{method}")(request, timeout=60)

    def sandbox_config(self, name: str, namespace: str, uid: str, labels: dict[str, str],
                       annotations: dict[str, str]) -> bytes:
        metadata = pw.string(1, name) + pw.string(2, uid) + pw.string(3, namespace)
        kubelet_labels = {"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace,
                          "io.kubernetes.pod.uid": uid, **labels}
        security = pw.string(1, pw.varint(1, NODE) + pw.varint(3, NODE))   # network, ipc: the host's
        linux = pw.string(2, security)
        return (pw.string(1, metadata) + _map(6, kubelet_labels)
                + _map(7, annotations) + pw.string(8, linux))

    def run_pod(self, name: str, namespace: str, uid: str, labels: dict[str, str],
                annotations: dict[str, str]) -> tuple[str, bytes]:
        config = self.sandbox_config(name, namespace, uid, labels, annotations)
        reply = self.call("RunPodSandbox", pw.string(1, config))
        return pw.text(reply, 1), config

    def run_container(self, sandbox_id: str, sandbox_config: bytes, name: str, image: str,
                      command: list[str], pod: tuple[str, str, str]) -> str:
        labels = {"io.kubernetes.container.name": name, "io.kubernetes.pod.name": pod[0],
                  "io.kubernetes.pod.namespace": pod[1], "io.kubernetes.pod.uid": pod[2]}
        config = (pw.string(1, pw.string(1, name)) + pw.string(2, pw.string(1, image))
                  + b"".join(pw.string(3, c) for c in command) + _map(9, labels))
        reply = self.call("CreateContainer", pw.string(1, sandbox_id) + pw.string(2, config)
                          + pw.string(3, sandbox_config))
        cid = pw.text(reply, 1)
        self.call("StartContainer", pw.string(1, cid))
        return cid

    def remove_pod(self, sandbox_id: str) -> None:
        self.call("StopPodSandbox", pw.string(1, sandbox_id))
        self.call("RemovePodSandbox", pw.string(1, sandbox_id))

    def close(self) -> None:
        self.channel.close()
