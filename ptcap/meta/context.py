"""Who is behind a packet: the process context a packet carries, and its text form.

The text form is ptcpdump's pcapng comment format, one comment per block, so ptcap,
ptcpdump, tshark and the Lua dissector read each other's files:

    PID: 123\nCmd: /usr/bin/curl\nArgs: curl http://x
    ThreadId: 124\nThreadName: curl
    UserId: 1000\nGroupId: 1000\nUserName: alice      (the name when the uid has one)
    ParentPID: 100\nParentCmd: /usr/bin/bash\nParentArgs: bash
    ContainerName: web\nContainerId: 3f…\nContainerImage: nginx\nContainerLabels: {"a":"b"}
    PodName: web-0\nPodNamespace: default\nPodUID: …\nPodLabels: {…}\nPodAnnotations: {…}

A packet's own process is its sender when it leaves, its receiver when it arrives. The
other local end of a local conversation (loopback, veth) follows in the same blocks with
every key prefixed by which end it is, `Receiver` or `Sender`:

    ReceiverPID: 456\nReceiverCmd: /usr/bin/python3\nReceiverArgs: python3 -m http.server
    ReceiverThreadId: 456\nReceiverThreadName: python3   (and so on for every block)

A process that is the last owner of a connection whose socket is gone (its teardown) is
marked `LastOwner: yes` (`ReceiverLastOwner: yes` / `SenderLastOwner: yes` for the peer);
one named for a forwarded or NATed packet (no socket of it where the packet was seen: found
through the flow and the connection tracking entry) is marked `Forwarded: yes`.

Once the kernel lost process events (the ring had no room for an exec, fork or exit), a
process may show an old command or parent: every packet's context then ends with
`MayBeStale: yes` (for the whole packet, both ends).
"""
from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field


class Part(enum.Flag):
    """The blocks of context a user can select with --context."""

    PROCESS = enum.auto()
    THREAD = enum.auto()
    PARENTPROC = enum.auto()
    USER = enum.auto()
    CONTAINER = enum.auto()
    POD = enum.auto()
    ALL = PROCESS | THREAD | PARENTPROC | USER | CONTAINER | POD

    @classmethod
    def parse(cls, text: str) -> "Part":
        """Parse a --context value such as 'process,thread,pod'."""
        parts = cls(0)
        for word in filter(None, (w.strip().lower() for w in text.split(","))):
            try:
                parts |= cls[word.upper()]
            except KeyError:
                names = ",".join(p.name.lower() for p in cls if p.name != "ALL")
                raise ValueError(f"invalid context '{word}' (choose from {names})") from None
        return parts


@dataclass(slots=True)
class ProcessContext:
    pid: int = 0
    cmd: str = ""
    args: str = ""
    tid: int = 0
    tname: str = ""
    uid: int = -1
    gid: int = -1
    username: str = ""
    ppid: int = 0
    pcmd: str = ""
    pargs: str = ""
    container_id: str = ""
    container_name: str = ""
    container_image: str = ""
    container_labels: dict[str, str] = field(default_factory=dict)
    pod_name: str = ""
    pod_namespace: str = ""
    pod_uid: str = ""
    pod_labels: dict[str, str] = field(default_factory=dict)
    pod_annotations: dict[str, str] = field(default_factory=dict)
    drop_reason: str = ""
    drop_location: str = ""
    name: str = ""          # the process's comm when known (ps shows it); not in comments
    pname: str = ""         # the parent's comm when known
    last_owner: bool = False        # the connection's last owner: its socket is gone
    forwarded: bool = False         # found for a forwarded (NATed) packet, through its flow
    peer: "ProcessContext | None" = None    # the other local end
    peer_role: str = ""             # which end the peer is: "Receiver" or "Sender"
    stale: bool = False             # process events were lost before: details may be stale

    @property
    def comm(self) -> str:
        """The command name as the kernel's comm would show it (at most 15 bytes)."""
        if self.name:
            return self.name
        name = self.cmd.rsplit("/", 1)[-1] if self.cmd else self.tname
        return name[:15]

    @property
    def pcomm(self) -> str:
        if self.pname:
            return self.pname
        return self.pcmd.rsplit("/", 1)[-1][:15]

    def comments(self, parts: Part = Part.ALL) -> list[str]:
        """The pcapng comments for this context, in ptcpdump's format."""
        out: list[str] = []
        if self.pid > 0 and parts & Part.PROCESS:
            out.append(f"PID: {self.pid}\nCmd: {self.cmd}\nArgs: {self.args}")
        if self.pid > 0 and self.tid > 0 and parts & Part.THREAD:
            out.append(f"ThreadId: {self.tid}\nThreadName: {self.tname}")
        if self.pid > 0 and self.uid >= 0 and parts & Part.USER:
            user = f"UserId: {self.uid}\nGroupId: {max(self.gid, 0)}"
            out.append(f"{user}\nUserName: {self.username}" if self.username else user)
        if self.pid > 0 and self.ppid > 0 and parts & Part.PARENTPROC:
            out.append(f"ParentPID: {self.ppid}\nParentCmd: {self.pcmd}\nParentArgs: {self.pargs}")
        if self.container_id and parts & Part.CONTAINER:
            out.append(
                f"ContainerName: {self.container_name}\nContainerId: {self.container_id}\n"
                f"ContainerImage: {self.container_image}\n"
                f"ContainerLabels: {_labels(self.container_labels)}"
            )
        if self.pod_name and parts & Part.POD:
            out.append(
                f"PodName: {self.pod_name}\nPodNamespace: {self.pod_namespace}\n"
                f"PodUID: {self.pod_uid}\nPodLabels: {_labels(self.pod_labels)}\n"
                f"PodAnnotations: {_labels(self.pod_annotations)}"
            )
        if self.drop_reason:
            out.append(f"DropReason: {self.drop_reason}\nDropLocation: {self.drop_location}")
        if self.last_owner and self.pid > 0:
            out.append("LastOwner: yes")
        if self.forwarded and self.pid > 0:
            out.append("Forwarded: yes")
        if self.peer is not None and self.peer_role:
            role = self.peer_role
            out += ["\n".join(role + line for line in c.split("\n")) for c in self.peer.comments(parts)]
        if self.stale and out:
            out.append("MayBeStale: yes")
        return out

    @classmethod
    def from_comments(cls, comments: list[str]) -> "ProcessContext | None":
        """Parse comments written by ptcap or ptcpdump; None when none carries context."""
        ctx = cls()
        found = False
        peer = None
        for comment in comments:
            for line in comment.splitlines():
                key, sep, value = line.partition(": ")
                if not sep:
                    key, sep, value = line.partition(":")
                key = key.strip()
                target = ctx
                for role in PEER_ROLES:
                    if key.startswith(role) and key != role:
                        if peer is None:
                            peer = cls()
                            ctx.peer, ctx.peer_role = peer, role
                        target, key = peer, key[len(role):]
                        break
                setter = _SETTERS.get(key)
                if setter is not None:
                    found = True
                    try:
                        setter(target, value)
                    except ValueError:
                        pass
        return ctx if found else None

    def ends(self) -> list["ProcessContext"]:
        """This process and the peer's, when there is one."""
        return [self] if self.peer is None else [self, self.peer]


PEER_ROLES = ("Receiver", "Sender")


def _labels(labels: dict[str, str]) -> str:
    return json.dumps(labels, separators=(",", ":"), sort_keys=True) if labels else "{}"


def _parse_labels(text: str) -> dict[str, str]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _set(name: str, conv=str):
    def setter(ctx: ProcessContext, value: str) -> None:
        setattr(ctx, name, conv(value.strip()) if conv is not str else value)
    return setter


_SETTERS = {
    "PID": _set("pid", int),
    "Cmd": _set("cmd"),
    "Args": _set("args"),
    "ThreadId": _set("tid", int),
    "ThreadName": _set("tname"),
    "UserId": _set("uid", int),
    "GroupId": _set("gid", int),
    "UserName": _set("username"),
    "ParentPID": _set("ppid", int),
    "ParentCmd": _set("pcmd"),
    "ParentArgs": _set("pargs"),
    "ContainerName": _set("container_name"),
    "ContainerId": _set("container_id"),
    "ContainerImage": _set("container_image"),
    "ContainerLabels": _set("container_labels", _parse_labels),
    "PodName": _set("pod_name"),
    "PodNamespace": _set("pod_namespace"),
    "PodUID": _set("pod_uid"),
    "PodLabels": _set("pod_labels", _parse_labels),
    "PodAnnotations": _set("pod_annotations", _parse_labels),
    "DropReason": _set("drop_reason"),
    "DropLocation": _set("drop_location"),
    "LastOwner": _set("last_owner", lambda v: v == "yes"),
    "Forwarded": _set("forwarded", lambda v: v == "yes"),
    "MayBeStale": _set("stale", lambda v: v == "yes"),
}
