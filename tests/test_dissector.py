"""lua/ptcap.lua with the real tshark, on files written here: ptcap's comments (from
ptcap.context.ProcessContext), ptcpdump's, and the kernel drop comments of --hook kfree_skb.

tshark runs with this tree's lua/ptcap.lua and an empty home, so what is tested is the file
in the tree, whatever is installed."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root      # as another user tshark fails in lua/ptcap.lua's Proto() here (not investigated)

from conftest import ROOT
from ptcap.meta.context import ProcessContext
from ptcap.formats.pcapng import OPT_COMMENT, EPB_FLAGS, Interface, interface_block, option, section_header

LUA = ROOT / "lua" / "ptcap.lua"


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def _global_lua() -> Path | None:
    for line in subprocess.run(["tshark", "-G", "folders"], capture_output=True, text=True).stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Global Lua Plugins":
            return Path(value.strip()) / "ptcap.lua"
    return None


def _lua_option() -> list[str]:
    """This tree's lua/ptcap.lua: loaded with -X, unless install.sh put this very file in
    Wireshark's global plugin folder (every tshark loads it; a second load would clash)."""
    installed = _global_lua()
    if installed is None or not installed.exists():
        return ["-X", f"lua_script:{LUA}"]
    assert installed.read_bytes() == LUA.read_bytes(), f"{installed} is not this tree's {LUA}: run ./install.sh"
    return []


def tshark(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HOME=str(home))
    res = subprocess.run(["tshark", *_lua_option(), *args], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert "Lua: Error" not in res.stderr and "lua_script" not in res.stderr, res.stderr
    return res


def fields(home: Path, path: Path, *names: str, display_filter: str | None = None) -> list[list[str]]:
    args = ["-r", str(path), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|"]
    for n in names:
        args += ["-e", n]
    if display_filter:
        args += ["-Y", display_filter]
    return [l.split("\t") for l in tshark(home, *args).stdout.splitlines()]


def udp_frame(sport: int, dport: int, payload: bytes = b"hello") -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp


def epb(data: bytes, comments: list[str], ts_ns: int = 1_700_000_000_000_000_000, flags: int = 2) -> bytes:
    opts = b"".join(option(OPT_COMMENT, c.encode()) for c in comments)
    opts += option(EPB_FLAGS, struct.pack("<I", flags)) + option(0, b"")
    body = struct.pack("<IIIII", 0, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(data), len(data))
    body += data + b"\0" * (-len(data) & 3) + opts
    return struct.pack("<II", 6, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


def write(path: Path, packets: list[tuple[bytes, list[str]]]) -> Path:
    blob = section_header() + interface_block(Interface("eth0", 1))
    for i, (data, comments) in enumerate(packets):
        blob += epb(data, comments, ts_ns=1_700_000_000_000_000_000 + i * 1000)
    path.write_bytes(blob)
    return path


CURL = ProcessContext(pid=4242, cmd="/usr/bin/curl", args="curl -s http://10.0.0.2/", tid=4242, tname="curl",
                      uid=1000, gid=1000, ppid=4000, pcmd="/usr/bin/bash", pargs="bash -l",
                      container_id="3f" * 32, container_name="web", container_image="nginx:1.25",
                      container_labels={"app": "web", "tier": "front"},
                      pod_name="web-0", pod_namespace="shop", pod_uid="1b4e28ba-2fa1-11d2-883f-0016d3cca427",
                      pod_labels={"app": "web"}, pod_annotations={"note": "x"})
WORKER = ProcessContext(pid=77, cmd="/usr/bin/python3.11", args="python3 worker.py", tid=80, tname="pool-1",
                        uid=0, gid=0, ppid=1, pcmd="/sbin/init", pargs="/sbin/init")


@pytest.fixture
def sample(tmp_path) -> Path:
    return write(tmp_path / "sample.pcapng", [
        (udp_frame(40000, 9), CURL.comments()),
        (udp_frame(40001, 9), WORKER.comments()),
        (udp_frame(40002, 9), []),
        (udp_frame(40000, 9, b"x" * 100), CURL.comments()),
    ])


def test_every_field_from_ptcaps_comments(home, sample):
    names = ["ptcap.pid", "ptcap.tid", "ptcap.comm", "ptcap.cmd", "ptcap.args", "ptcap.thread", "ptcap.ppid",
             "ptcap.pcmd", "ptcap.uid", "ptcap.container", "ptcap.container.id", "ptcap.container.image",
             "ptcap.container.labels", "ptcap.pod", "ptcap.pod.namespace", "ptcap.pod.uid", "ptcap.pod.labels"]
    rows = fields(home, sample, *names)
    assert dict(zip(names, rows[0])) == {
        "ptcap.pid": "4242", "ptcap.tid": "4242", "ptcap.comm": "curl", "ptcap.cmd": "/usr/bin/curl",
        "ptcap.args": "curl -s http://10.0.0.2/", "ptcap.thread": "curl", "ptcap.ppid": "4000",
        "ptcap.pcmd": "/usr/bin/bash", "ptcap.uid": "1000", "ptcap.container": "web",
        "ptcap.container.id": "3f" * 32, "ptcap.container.image": "nginx:1.25",
        "ptcap.container.labels": '{"app":"web","tier":"front"}', "ptcap.pod": "web-0",
        "ptcap.pod.namespace": "shop", "ptcap.pod.uid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "ptcap.pod.labels": '{"app":"web"}',
    }
    # comm is the task's own: a renamed thread's name (what --pname matches)
    assert rows[1][:6] == ["77", "80", "pool-1", "/usr/bin/python3.11", "python3 worker.py", "pool-1"]
    assert rows[1][9:] == [""] * 8
    assert rows[2] == [""] * len(names)


def test_fields_are_typed_and_filterable(home, sample):
    def frames(expr: str) -> list[str]:
        return [r[0] for r in fields(home, sample, "frame.number", display_filter=expr)]

    assert frames("ptcap.pid == 4242") == ["1", "4"]
    assert frames("ptcap.pid > 100 && ptcap.pid < 5000") == ["1", "4"]
    assert frames("ptcap.uid == 0") == ["2"]
    assert frames('ptcap.comm == "curl"') == ["1", "4"]
    assert frames('ptcap.container == "web" && ptcap.pod.namespace == "shop"') == ["1", "4"]
    assert frames('ptcap.container.labels contains "tier"') == ["1", "4"]
    assert frames("ptcap") == ["1", "2", "4"]
    assert frames("!ptcap") == ["3"]
    assert frames("ptcap.thread matches \"^pool\"") == ["2"]


def test_tree_and_info_column(home, sample):
    detail = tshark(home, "-r", str(sample), "-V", "-Y", "frame.number == 1").stdout
    assert "ptcap: curl 4242, container web, pod web-0.shop" in detail
    assert "    [PID: 4242]" in detail and "    [Container image: nginx:1.25]" in detail
    summary = tshark(home, "-r", str(sample)).stdout.splitlines()
    assert summary[0].endswith("[curl 4242, container web, pod web-0.shop]")
    assert summary[1].endswith("[pool-1 77]")
    assert summary[2].endswith("Len=5")


def test_ptcpdump_files(home, tmp_path):
    # ptcpdump writes these blocks (internal/writer/pcapng.go), each key on its own line;
    # its first releases wrote only PID and COMMAND
    path = write(tmp_path / "ptcpdump.pcapng", [
        (udp_frame(41000, 80), ["PID: 1234\nCmd: /usr/bin/wget\nArgs: wget 1.1.1.1",
                                "ThreadId: 1234\nThreadName: wget",
                                "UserId: 1001\nGroupId: 1001",
                                "ParentPID: 99\nParentCmd: /bin/sh\nParentArgs: sh -c wget 1.1.1.1",
                                "ContainerName: test\nContainerId: abcdef0123456789\nContainerImage: busybox\n"
                                "ContainerLabels: {}",
                                "PodName: p1\nPodNamespace: default\nPodUID: u-1\nPodLabels: {\"a\":\"b\"}\n"
                                "PodAnnotations: {}"]),
        (udp_frame(41001, 80), ["PID: 55\nCOMMAND: nginx"]),
    ])
    rows = fields(home, path, "ptcap.pid", "ptcap.comm", "ptcap.cmd", "ptcap.uid", "ptcap.ppid", "ptcap.pcmd",
                  "ptcap.container", "ptcap.container.id", "ptcap.pod", "ptcap.pod.uid", "ptcap.pod.labels")
    assert rows == [
        ["1234", "wget", "/usr/bin/wget", "1001", "99", "/bin/sh", "test", "abcdef0123456789", "p1", "u-1",
         '{"a":"b"}'],
        ["55", "nginx", "", "", "", "", "", "", "", "", ""],
    ]


def test_drop_fields(home, tmp_path):
    dropped = ProcessContext(drop_reason="NETFILTER_DROP", drop_location="nf_hook_slow+0xa1")
    owned = ProcessContext(pid=10, cmd="/usr/bin/nc", args="nc -u 10.0.0.2 9", tid=10, tname="nc",
                           drop_reason="NO_SOCKET", drop_location="__udp4_lib_rcv+0x4bc")
    assert dropped.comments() == ["DropReason: NETFILTER_DROP\nDropLocation: nf_hook_slow+0xa1"]
    path = write(tmp_path / "drops.pcapng", [
        (udp_frame(42000, 9), dropped.comments()),
        (udp_frame(42001, 9), owned.comments()),
        (udp_frame(42002, 9), []),
    ])
    rows = fields(home, path, "ptcap.drop.reason", "ptcap.drop.location", "ptcap.pid")
    assert rows == [["NETFILTER_DROP", "nf_hook_slow+0xa1", ""],
                    ["NO_SOCKET", "__udp4_lib_rcv+0x4bc", "10"],
                    ["", "", ""]]
    hits = fields(home, path, "frame.number", display_filter='ptcap.drop.reason == "NETFILTER_DROP"')
    assert hits == [["1"]]
    summary = tshark(home, "-r", str(path)).stdout.splitlines()
    assert summary[0].endswith("[drop NETFILTER_DROP]")
    assert summary[1].endswith("[nc 10, drop NO_SOCKET]")


def test_processes_statistics(home, sample):
    out = tshark(home, "-q", "-r", str(sample), "-z", "ptcap,procs").stdout
    size = {n: len(udp_frame(0, 0, p)) for n, p in (("small", b"hello"), ("big", b"x" * 100))}
    lines = out.splitlines()
    row = lambda key: next(l for l in lines if l.startswith(key)).split()[-2:]
    assert row("curl (4242)") == ["2", str(size["small"] + size["big"])]
    assert row("pool-1 (77)") == ["1", str(size["small"])]
    assert row("(no process)") == ["1", str(size["small"])]
    assert row("web ") == ["2", str(size["small"] + size["big"])]
    assert row("web-0.shop") == ["2", str(size["small"] + size["big"])]
    # with a display filter of its own
    out = tshark(home, "-q", "-r", str(sample), "-z", "ptcap,procs,ptcap.uid == 0").stdout
    assert "pool-1 (77)" in out and "curl (4242)" not in out


def test_processes_statistics_one_row_per_process(home, tmp_path):
    import dataclasses
    main = dataclasses.replace(WORKER, tid=77, tname="python3")
    path = write(tmp_path / "threads.pcapng", [(udp_frame(1, 9), WORKER.comments()),
                                               (udp_frame(1, 9), main.comments()),
                                               (udp_frame(1, 9), WORKER.comments())])
    out = tshark(home, "-q", "-r", str(path), "-z", "ptcap,procs").stdout
    rows = [l.split() for l in out.splitlines() if "(77)" in l]
    assert rows == [["python3", "(77)", "3", str(3 * len(udp_frame(1, 9)))]]


def test_field_list(home):
    plugins = home / ".local/lib/wireshark/plugins"     # -G takes no -X: the plugin folder then
    plugins.mkdir(parents=True)
    (plugins / "ptcap.lua").write_bytes(LUA.read_bytes())
    listed = subprocess.run(["tshark", "-G", "fields"], capture_output=True, text=True,
                            env=dict(os.environ, HOME=str(home))).stdout
    for name in ("ptcap.pid", "ptcap.comm", "ptcap.container.id", "ptcap.pod.labels", "ptcap.drop.reason",
                 "ptcap.drop.location"):
        assert f"\t{name}\t" in listed


PYSHARK = """
import json, sys, pyshark
cap = pyshark.FileCapture(sys.argv[1], custom_parameters=["-X", "lua_script:" + sys.argv[2]])
out = []
for p in cap:
    layer = getattr(p, "ptcap", None)
    out.append(None if layer is None else {"layers": [l.layer_name for l in p.layers],
               "pid": layer.pid, "comm": layer.comm, "image": layer.get_field_value("container.image")})
cap.close()
print(json.dumps(out))
"""


def test_pyshark_reads_the_ptcap_layer(home, sample):
    # in its own process: pyshark leaves an asyncio child watcher behind in the one using it
    import json
    res = subprocess.run([sys.executable, "-c", PYSHARK, str(sample), str(LUA)], capture_output=True, text=True,
                         env=dict(os.environ, HOME=str(home)), timeout=60)
    assert res.returncode == 0, res.stderr
    packets = json.loads(res.stdout)
    assert len(packets) == 4
    assert packets[0]["layers"][-1] == "ptcap"
    assert packets[0] | {"layers": None} == {"layers": None, "pid": "4242", "comm": "curl", "image": "nginx:1.25"}
    assert packets[2] is None


def test_damaged_or_forged_comments_never_raise_a_lua_error(home, tmp_path):
    """Found by fuzzing files: an ID that is no uint32 ('PID: 99999999999999999999' made
    string.format('%d') raise in the Info column) is left out; the rest of the comment still
    counts, and no packet shows a Lua error (in the tree, the statistics or stderr)."""
    forged = [
        ["PID: 99999999999999999999\nCmd: /usr/bin/big"],
        ["PID: 1e9\nCmd: /usr/bin/float"],
        ["PID: -1\nCmd: /usr/bin/negative"],
        ["PID: 0x10\nCmd: %s%d%n"],
        ["PID: 12\nReceiverPID: 4294967296\nReceiverCmd: /usr/bin/peer"],
        [bytes(range(1, 256)).decode("latin-1")],
        ["PID: 4294967295\nCmd: /usr/bin/max"],
    ]
    path = write(tmp_path / "forged.pcapng", [(udp_frame(40000 + i, 9), c) for i, c in enumerate(forged)])
    tree = tshark(home, "-r", str(path), "-V").stdout
    assert "Lua Error" not in tree, tree
    stats = tshark(home, "-q", "-r", str(path), "-z", "ptcap,procs").stdout
    assert "Lua Error" not in stats and "ptcap Processes" in stats, stats
    rows = fields(home, path, "ptcap.pid", "ptcap.cmd", "ptcap.receiver.cmd")
    assert [r[0] for r in rows] == ["", "", "", "", "12", "", "4294967295"], rows
    assert [r[1] for r in rows[:4]] == ["/usr/bin/big", "/usr/bin/float", "/usr/bin/negative", "%s%d%n"], rows
    assert rows[4][2] == "/usr/bin/peer", rows
