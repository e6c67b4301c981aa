"""Container names, images and labels from the Docker engine (the docker SDK).

Optional: when the engine cannot be reached the fields stay empty; that is said once, at
info level. Answers are cached per container id.
"""
from __future__ import annotations

import logging
import os
from typing import Callable

from ptcap.errors import short_error
from ptcap.meta.containers import ContainerInfo
from ptcap.meta.runtimes.availability import Outage, RuntimeUnavailable

log = logging.getLogger("ptcap")

DEFAULT_ADDRESS = "unix:///var/run/docker.sock"


def address_from(value: str | None) -> str:
    """--docker-address as given, or $DOCKER_HOST, or the engine's usual socket; a bare path
    means a unix socket."""
    address = value or os.environ.get("DOCKER_HOST") or DEFAULT_ADDRESS
    if address.startswith("/"):
        address = "unix://" + address
    return address


class DockerResolver:
    def __init__(self, address: str | None = None) -> None:
        self.address = address_from(address)
        self._client = None
        self._outage = Outage()
        self._cache: dict[str, ContainerInfo | None] = {}

    def _connect(self):
        if self._client is not None:
            return self._client
        if self._outage.resting():
            raise RuntimeUnavailable(self.address)
        try:
            import docker
            client = docker.DockerClient(base_url=self.address, timeout=5)
            client.ping()
        except Exception as e:      # noqa: BLE001 (ImportError, connection or API error)
            self._outage.failed("docker: cannot reach %s (%s): container names, images and labels "
                                "are left empty", self.address, short_error(e))
            raise RuntimeUnavailable(f"cannot reach docker at {self.address}: {short_error(e)}") from None
        self._client = client
        self._outage.recovered()
        return client

    @property
    def available(self) -> bool:
        try:
            self._connect()
            return True
        except RuntimeUnavailable:
            return False

    def container(self, container_id: str) -> ContainerInfo | None:
        """The container with this full id; None when unknown or the engine is down."""
        if container_id in self._cache:
            return self._cache[container_id]
        try:
            client = self._connect()
        except RuntimeUnavailable:
            return None
        try:
            info = _info(client.api.inspect_container(container_id))
        except Exception as e:      # noqa: BLE001
            if _is_not_found(e):
                info = None
            else:
                log.info("docker: inspecting %s: %s", container_id[:12], short_error(e))
                return None
        self._cache[container_id] = info
        return info

    def running(self, wanted: Callable[[ContainerInfo], bool] = lambda c: True) -> list[ContainerInfo]:
        """The running containers that `wanted` accepts, with their pids (only those are
        inspected); raises RuntimeUnavailable when the engine is down."""
        client = self._connect()
        out = []
        try:
            for c in client.api.containers():
                listed = ContainerInfo(id=c["Id"], name=((c.get("Names") or [""])[0]).lstrip("/"),
                                       image=c.get("Image") or "", labels=dict(c.get("Labels") or {}))
                if not wanted(listed):
                    continue
                try:
                    out.append(_info(client.api.inspect_container(c["Id"])))
                except Exception as e:      # noqa: BLE001
                    if not _is_not_found(e):    # not found: gone between the list and the inspect
                        raise
        except Exception as e:      # noqa: BLE001
            raise RuntimeUnavailable(f"docker at {self.address}: {short_error(e)}") from None
        return out

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:       # noqa: BLE001
                pass
            self._client = None


def _info(attrs: dict) -> ContainerInfo:
    config = attrs.get("Config") or {}
    state = attrs.get("State") or {}
    return ContainerInfo(id=attrs["Id"], name=(attrs.get("Name") or "").lstrip("/"),
                         image=config.get("Image") or "", labels=dict(config.get("Labels") or {}),
                         pid=int(state.get("Pid") or 0))


def _is_not_found(e: Exception) -> bool:
    return getattr(getattr(e, "response", None), "status_code", None) == 404

