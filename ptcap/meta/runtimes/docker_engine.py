"""Container names, images and labels from the Docker engine (the docker SDK).

Optional: when the engine cannot be reached the fields stay empty; that is said once, at
info level. Answers are cached per container id. DockerWatcher follows the engine's events.
"""
from __future__ import annotations

import os
from typing import Callable

from ptcap.errors import short_error
from ptcap.meta.containers import ContainerInfo
from ptcap.meta.runtimes.availability import Reach, RuntimeUnavailable
from ptcap.meta.runtimes.watch import Watcher

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
        self.reach = Reach("docker", self.address, "container names, images and labels are left empty")
        self._client = None
        self._cache: dict[str, ContainerInfo | None] = {}

    def _connect(self):
        if self._client is not None:
            return self._client
        self.reach.check()
        try:
            client = connect(self.address)
        except Exception as e:      # noqa: BLE001 (ImportError, connection or API error)
            raise self.reach.failed(short_error(e)) from None
        self._client = client
        self.reach.ok()
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
            raise RuntimeUnavailable(f"docker at {self.address}: {short_error(e)}",
                                     f"docker at {self.address}") from None
        return out

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:       # noqa: BLE001
                pass
            self._client = None


def connect(address: str):
    import docker
    client = docker.DockerClient(base_url=address, timeout=5)
    client.ping()
    return client


class DockerWatcher(Watcher):
    """The engine's containers: listed, then followed through its events (create, start,
    destroy). A create event comes before the container's first process runs, so its name,
    image and labels are known before its first packet; they are kept a while after destroy."""

    name = "docker"

    def __init__(self, resolver: DockerResolver, registry) -> None:
        super().__init__(resolver.reach, registry)
        self.address = resolver.address
        self._stream = None

    def follow(self) -> None:
        client = connect(self.address)       # (the SDK reads the event stream without a deadline)
        try:
            # subscribed before listing: a container made in between is seen by one or both
            self._stream = client.api.events(decode=True, filters={"type": "container"})
            if self.stopping.is_set():
                return
            live = {"status": ["created", "running", "restarting", "paused"]}
            for c in client.api.containers(all=True, filters=live):
                self._inspect(client, c["Id"])
            self.listed()
            for event in self._stream:
                action = event.get("Action") or event.get("status") or ""
                cid = event.get("id") or (event.get("Actor") or {}).get("ID", "")
                if action in ("create", "start"):
                    self.registry.learn(_from_event(cid, event))
                elif action == "destroy":
                    self.registry.gone(cid)
        finally:
            self._stream = None
            client.close()

    def _inspect(self, client, cid: str) -> None:
        try:
            self.registry.learn(_info(client.api.inspect_container(cid)))
        except Exception:       # noqa: BLE001 (gone between the list and the inspect)
            pass

    def interrupt(self) -> None:
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:       # noqa: BLE001
                pass


def _from_event(cid: str, event: dict) -> ContainerInfo:
    """A container as its event describes it: name, image and labels are the attributes.
    (Inspecting it instead would wait for the engine's lock on the container, which a start
    holds until the container runs: too late for its first packets.)"""
    attrs = dict((event.get("Actor") or {}).get("Attributes") or {})
    name, image = attrs.pop("name", ""), attrs.pop("image", "")
    return ContainerInfo(id=cid, name=name, image=image, labels=attrs)


def _info(attrs: dict) -> ContainerInfo:
    config = attrs.get("Config") or {}
    state = attrs.get("State") or {}
    return ContainerInfo(id=attrs["Id"], name=(attrs.get("Name") or "").lstrip("/"),
                         image=config.get("Image") or "", labels=dict(config.get("Labels") or {}),
                         pid=int(state.get("Pid") or 0))


def _is_not_found(e: Exception) -> bool:
    return getattr(getattr(e, "response", None), "status_code", None) == 404
