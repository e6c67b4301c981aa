"""A child ptcap forks while a runtime's gRPC channel is busy (the tcpdump decoder is started
through a preexec_fn, so by fork and not vfork) must reach its exec: with gRPC's fork support
on, its poller restarts in the child, finds its epoll descriptor closed and aborts the child
(seen as ptcap failing to start now and then in the kernel matrix's VMs)."""
from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

CHILDREN = r"""
import subprocess, sys, threading
from ptcap.meta.runtimes.grpcapi import GrpcEndpoint
end = GrpcEndpoint("containerd", sys.argv[1], "")
def busy():
    while True:
        try:
            end.call("/containerd.services.version.v1.Version/Version", b"", quiet=True)
        except Exception:
            pass
threading.Thread(target=busy, daemon=True).start()
failed = []
for _ in range(300):
    r = subprocess.run(["/bin/true"], capture_output=True, text=True, preexec_fn=lambda: None)
    if r.returncode:
        failed.append((r.returncode, r.stderr.strip()[:200]))
print(len(failed), failed[:1])
"""


def test_children_forked_beside_a_grpc_channel_reach_their_exec(tmp_path):
    res = subprocess.run([sys.executable, "-c", CHILDREN, f"unix://{tmp_path}/nobody.sock"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.stdout.startswith("0 "), res.stdout + res.stderr
