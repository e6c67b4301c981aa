"""Process context as ptcpdump prints it: 'COMM.PID' after the interface, ParentProc/Container/Pod
at the end of the line, or with -v one indented block per kind."""
from __future__ import annotations

import json

from ptcap.meta.context import Part, ProcessContext


def _args(ctx_args: str) -> str:
    return ctx_args


def _labels(labels: dict[str, str]) -> str:
    return json.dumps(labels, separators=(",", ":"), sort_keys=True) if labels else "{}"


def inline_prefix(ctx: ProcessContext | None, parts: Part) -> str:
    """'curl.1234 ' for the line's start, or ''."""
    if ctx is not None and ctx.pid > 0 and parts & Part.PROCESS:
        return f"{ctx.comm}.{ctx.pid}{' (last owner)' if ctx.last_owner else ''} "
    return ""


def _peer(ctx: ProcessContext, parts: Part) -> str:
    """', Receiver [python3.456]': the other local end of the packet."""
    peer = ctx.peer
    if peer is None or peer.pid <= 0 or not parts & Part.PROCESS:
        return ""
    return f", {ctx.peer_role} [{peer.comm}.{peer.pid}{' (last owner)' if peer.last_owner else ''}]"


def inline_suffix(ctx: ProcessContext | None, parts: Part) -> str:
    """', ParentProc [bash.100], Container [web], Pod [web-0.default]' for the line's end."""
    if ctx is None:
        return ""
    out = [_peer(ctx, parts)]
    if parts & Part.PARENTPROC and ctx.ppid > 0:
        out.append(f", ParentProc [{ctx.pcomm}.{ctx.ppid}]")
    if parts & Part.CONTAINER and ctx.container_id:
        out.append(f", Container [{ctx.container_name or ctx.container_id[:12]}]")
    if parts & Part.POD and ctx.pod_name:
        out.append(f", Pod [{ctx.pod_name}.{ctx.pod_namespace}]")
    if ctx.drop_reason:
        out.append(f", Drop [{ctx.drop_reason} at {ctx.drop_location}]")
    return "".join(out)


def verbose_blocks(ctx: ProcessContext | None, parts: Part) -> str:
    """The -v blocks, each on its own line indented by four spaces (no trailing newline)."""
    if ctx is None:
        return ""
    out = []
    if ctx.pid > 0 and parts & Part.PROCESS:
        out.append(f"\n    Process (pid {ctx.pid}, cmd {ctx.cmd}, args {ctx.args}"
                   f"{', last owner' if ctx.last_owner else ''})")
    if ctx.tid > 0 and parts & Part.THREAD:
        out.append(f"\n    Thread (tid {ctx.tid}, name {ctx.tname})")
    if ctx.uid >= 0 and parts & Part.USER and (ctx.pid > 0 or ctx.username):
        user = f"uid {ctx.uid}" + (f", name {ctx.username}" if ctx.username else "")
        out.append(f"\n    User ({user})")
    if ctx.ppid > 0 and parts & Part.PARENTPROC:
        out.append(f"\n    ParentProc (pid {ctx.ppid}, cmd {ctx.pcmd}, args {ctx.pargs})")
    if ctx.container_id and parts & Part.CONTAINER:
        out.append(f"\n    Container (name {ctx.container_name}, id {ctx.container_id}, "
                   f"image {ctx.container_image}, labels {_labels(ctx.container_labels)})")
    if ctx.pod_name and parts & Part.POD:
        out.append(f"\n    Pod (name {ctx.pod_name}, namespace {ctx.pod_namespace}, UID {ctx.pod_uid}, "
                   f"labels {_labels(ctx.pod_labels)}, annotations {_labels(ctx.pod_annotations)})")
    if ctx.drop_reason:
        out.append(f"\n    Drop (reason {ctx.drop_reason}, location {ctx.drop_location})")
    peer = ctx.peer
    if peer is not None and peer.pid > 0 and parts & Part.PROCESS:
        last = ", last owner" if peer.last_owner else ""
        out.append(f"\n    {ctx.peer_role} (pid {peer.pid}, cmd {peer.cmd}, args {peer.args}{last})")
    return "".join(out)
