"""Containers and pods: a real Docker engine and a real containerd, containers from a locally
built busybox image, traffic on loopback (--network host) or inside the container's own
namespace (--network none).

The engines are started by the tests (tests/engines.py: a private containerd and a dockerd
on it, with their own sockets, data roots, containerd namespaces and bridge, no iptables
rules), stopped with everything they ran once the module is done, and the host's own engines
are checked to be untouched.
"""
from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import comments, engine_unavailable, free_port, ptcap_argv, tcp_settled, tshark_fields, wait_clean, \
    wait_for, wait_received
from engines import IMAGE, PrivateEngines, docker0 as docker0_of_host, host_engines, \
    stop_daemon as _stop_daemon, unmount_below as _unmount_below

from ptcap.meta.containers import parse_cgroup_path, parse_proc_cgroup, proc_container

pytestmark = pytest.mark.root      # real BPF, namespaces, daemons

ID = "3f" * 32


# -- cgroup layouts (no engine needed) ----------------------------------------------------
@pytest.mark.parametrize("path, runtime, pod_uid", [
    (f"/docker/{ID}", "docker", ""),
    (f"/system.slice/docker-{ID}.scope", "docker", ""),
    (f"/system.slice/cri-containerd-{ID}.scope", "containerd", ""),
    (f"/default/{ID}", "", ""),                                     # ctr / nerdctl, cgroupfs
    (f"/machine.slice/libpod-{ID}.scope/container", "podman", ""),
    (f"/system.slice/crio-{ID}.scope", "cri-o", ""),
    (f"/kubepods/burstable/pod0b1c2d3e-aaaa-bbbb-cccc-0123456789ab/{ID}", "kubernetes",
     "0b1c2d3e-aaaa-bbbb-cccc-0123456789ab"),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0b1c2d3e_aaaa_bbbb_cccc_0123456789ab"
     f".slice/cri-containerd-{ID}.scope", "containerd", "0b1c2d3e-aaaa-bbbb-cccc-0123456789ab"),
    (f"/kubepods.slice/kubepods-pod0b1c2d3e_aaaa_bbbb_cccc_0123456789ab.slice/crio-{ID}.scope", "cri-o",
     "0b1c2d3e-aaaa-bbbb-cccc-0123456789ab"),
])
def test_container_id_from_every_cgroup_layout(path, runtime, pod_uid):
    found = parse_cgroup_path(path)
    assert (found.id, found.runtime, found.pod_uid) == (ID, runtime, pod_uid)


def test_host_processes_and_monitors_are_no_container():
    assert parse_cgroup_path("/") is None
    assert parse_cgroup_path("/user.slice/user-0.slice/session-1.scope") is None
    assert parse_cgroup_path(f"/system.slice/crio-conmon-{ID}.scope") is None
    assert proc_container(os.getpid()) is None


def test_proc_cgroup_v1_and_v2_lines():
    v1 = f"12:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/\n"     # hybrid: v2 at root
    v2 = f"0::/system.slice/docker-{ID}.scope\n"
    assert parse_proc_cgroup(v1).id == ID and parse_proc_cgroup(v2).id == ID


# -- a real engine -------------------------------------------------------------------------
class Engine:
    def __init__(self, engines: PrivateEngines) -> None:
        self.engines = engines
        self.base = engines.base
        self.address = engines.address
        self.env = engines.env
        self.containerd = engines.containerd
        self.docker = engines.docker

    def run(self, name: str, *, network: str = "host", labels: dict[str, str] | None = None) -> "Container":
        args = ["run", "-d", "--name", name, "--network", network]
        for k, v in (labels or {}).items():
            args += ["--label", f"{k}={v}"]
        cid = self.docker(*args, IMAGE, "sleep", "600")
        pid = int(self.docker("inspect", "-f", "{{.State.Pid}}", cid))
        return Container(self, name, cid, pid)


def listening(pid: int, port: int) -> bool:
    """A TCP socket listens on `port` in the network namespace of process `pid`."""
    for table in ("tcp", "tcp6"):
        try:
            rows = [line.split() for line in open(f"/proc/{pid}/net/{table}").read().splitlines()[1:]]
        except OSError:
            continue
        if any(r[1].endswith(f":{port:04X}") and r[3] == "0A" for r in rows):      # 0A: LISTEN
            return True
    return False


class Container:
    def __init__(self, engine: Engine, name: str, cid: str, pid: int) -> None:
        self.engine, self.name, self.id, self.pid = engine, name, cid, pid

    def listen(self, port: int, into: str = "/tmp/got") -> None:
        """nc listening on `port` in the container, writing what it gets to `into`; returns
        once the socket listens (docker exec -d returns before nc has even started). Its input
        never ends: busybox nc half-closes when its input does, and a client whose `echo` had
        not yet written took that FIN for the end and left without sending anything."""
        self.engine.docker("exec", "-d", self.name, "sh", "-c", f"sleep 600 | nc -l -p {port} > {into}")
        wait_for(lambda: listening(self.pid, port), what=f"nc listening on {port} in {self.name}")

    def tcp(self, port: int, payload: str = "hello", addr: str = "127.0.0.1") -> None:
        """A new process joins the container (docker exec) and talks TCP to addr:port."""
        self.engine.docker("exec", self.name, "sh", "-c", f"echo {payload} | nc -w 1 {addr} {port}")


@pytest.fixture(scope="module")
def engine():
    saved = os.environ.get("DOCKER_HOST")
    engines = PrivateEngines(f"{os.getpid() % 100000}")
    try:
        engines.start()
        engines.import_image()
        os.environ["DOCKER_HOST"] = engines.address       # the engine ptcap talks to in these tests
        yield Engine(engines)
    finally:
        engines.stop()
        if saved is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = saved


@pytest.fixture
def containers(engine):
    started: list[str] = []

    def run(name: str, **kw) -> Container:
        name = f"{name}-{os.getpid()}"
        c = engine.run(name, **kw)
        started.append(c.id)
        return c

    yield run
    if started:
        engine.docker("rm", "-f", *started, check=False, timeout=120)


@pytest.fixture
def no_kubeconfig(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


POD = {"io.kubernetes.pod.name": "web-0", "io.kubernetes.pod.namespace": "shop",
       "io.kubernetes.pod.uid": "0b1c2d3e-aaaa-bbbb-cccc-0123456789ab",
       "io.kubernetes.container.name": "nginx"}


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_capture_outlives_its_test():
    """A test that fails before stop_capture() must not leave its capture running."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start_capture(*args: str, env=None) -> subprocess.Popen:
    proc = subprocess.Popen(ptcap_argv(*args), stderr=subprocess.PIPE, text=True, env=env)
    _STARTED.append(proc)
    deadline = time.time() + 30
    lines = []
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if line.removeprefix("ptcap: ").startswith("listening on"):
            proc.early = "".join(lines)
            return proc
    proc.kill()
    raise AssertionError("ptcap did not start: " + "".join(lines) + proc.stderr.read())


def stop_capture(proc: subprocess.Popen, port: int | str | None = None, netns: str | None = None) -> str:
    """Stop once no packet of the TCP connections of `port` is on its way (in `netns`, a
    container's own, or the host's): they are all in the ring, which the stop drains."""
    if port is not None:
        wait_for(lambda: tcp_settled(int(port), *([netns] if netns else [])),
                 what=f"the connections of port {port} settled")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    return proc.early + err


def rows(path: Path) -> list[dict[str, str]]:
    """Each packet's process keys; a loopback packet's one copy names both ends, and when its
    own process is in no container but the other end is, that end's (a reply to a container)."""
    out = []
    for (c,) in tshark_fields(path, "frame.comment"):
        r = comments(c)
        if "ContainerId" not in r:
            for role in ("Receiver", "Sender"):
                peer = {k[len(role):]: v for k, v in r.items() if k.startswith(role)}
                if "ContainerId" in peer:
                    r = peer
                    break
        out.append(r)
    return out


def test_container_metadata_on_every_packet(engine, containers, peers, tmp_path, no_kubeconfig):
    port = str(free_port())
    peers("tcp-server", port, "127.0.0.1")
    web = containers("web", labels={"app": "shop", "tier": "front"})
    out = tmp_path / "o.pcapng"
    cap = start_capture("-i", "lo", "-w", str(out), f"tcp port {port}")
    web.tcp(int(port))
    host = peers("tcp-client", "127.0.0.1", port)       # a host process: no container
    host.say("send 10")
    stop_capture(cap, port)
    got = rows(out)
    inside = [r for r in got if r.get("ContainerId")]
    assert inside, got
    for r in inside:
        assert r["ContainerId"] == web.id
        assert r["ContainerName"] == web.name
        assert r["ContainerImage"] == IMAGE
        assert json.loads(r["ContainerLabels"]) == {"app": "shop", "tier": "front"}
        assert "PodName" not in r
    client = [r for r in inside if r["Args"].startswith("nc ")]
    assert client and all(r["PID"] != str(web.pid) for r in client)     # the exec'd process
    hosts = [r for r in got if r.get("PID") == str(host.pid)]
    assert hosts and not any("ContainerId" in r for r in hosts)


def test_pod_from_runtime_labels(engine, containers, peers, tmp_path, no_kubeconfig):
    port = str(free_port())
    peers("tcp-server", port, "127.0.0.1")
    pod = containers("k8s_nginx_web-0", labels=POD)
    out = tmp_path / "o.pcapng"
    cap = start_capture("-i", "lo", "-w", str(out), "-Q", "out", "--container-name", pod.name)
    pod.tcp(int(port))
    err = stop_capture(cap, port)
    got = rows(out)
    assert got and all(r["PodName"] == "web-0" and r["PodNamespace"] == "shop" for r in got)
    assert all(r["PodUID"] == POD["io.kubernetes.pod.uid"] for r in got)
    assert all(r["PodLabels"] == "{}" and r["PodAnnotations"] == "{}" for r in got)   # no API here
    assert err.count("kubernetes: no cluster configuration") == 1, err


def test_no_kubeconfig_leaves_the_kubernetes_client_unloaded(no_kubeconfig):
    """Without a cluster configuration, a pod's first packet does not load the kubernetes client
    (0.2 s of CPU holding the interpreter, during which the runtimes' watchers missed brief
    containers); with one, it is loaded at start, on a thread."""
    probe = ("import sys; from ptcap.meta.runtimes.kubernetes import KubernetesAPI; k = KubernetesAPI(); "
             "k.prepare(); print(k.pod('web-0', 'shop'), 'kubernetes' in sys.modules)")
    got = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert got.stdout.split() == ["None", "False"], got


class FakeAPIServer(http.server.BaseHTTPRequestHandler):
    """The one call the kubernetes client makes here: GET a v1 Pod, answered as the API does."""

    pods: dict[tuple[str, str], dict] = {}
    requests: list[str] = []

    def do_GET(self):
        self.requests.append(self.path)
        parts = self.path.split("?")[0].strip("/").split("/")
        # api/v1/namespaces/NS/pods/NAME
        if len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
            pod = self.pods.get((parts[3], parts[5]))
            if pod is not None:
                return self._reply(200, pod)
            return self._reply(404, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                     "status": "Failure", "message": f'pods "{parts[5]}" not found',
                                     "reason": "NotFound", "details": {"name": parts[5], "kind": "pods"},
                                     "code": 404})
        self._reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404})

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def kube_api(tmp_path, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeAPIServer)     # an ephemeral port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    FakeAPIServer.requests = []
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "test", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield FakeAPIServer
    server.shutdown()
    server.server_close()


def test_pod_labels_and_annotations_from_the_kubernetes_api(engine, containers, peers, tmp_path, kube_api):
    kube_api.pods[("shop", "web-0")] = {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": "web-0", "namespace": "shop", "uid": POD["io.kubernetes.pod.uid"],
                     "resourceVersion": "4711", "creationTimestamp": "2026-11-25T07:00:00Z",
                     "labels": {"app": "web", "pod-template-hash": "5d9c"},
                     "annotations": {"kubernetes.io/psp": "restricted", "team": "payments"}},
        "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}], "nodeName": "node-1"},
        "status": {"phase": "Running", "podIP": "10.1.2.3"},
    }
    port = str(free_port())
    peers("tcp-server", port, "127.0.0.1")
    pod = containers("k8s_nginx_web-0-api", labels=POD)
    out = tmp_path / "o.pcapng"
    cap = start_capture("-i", "lo", "-w", str(out), "-Q", "out", "--pod-name", "web-0.shop")
    pod.tcp(int(port))
    stop_capture(cap, port)
    got = rows(out)
    assert got
    for r in got:
        assert json.loads(r["PodLabels"]) == {"app": "web", "pod-template-hash": "5d9c"}
        assert json.loads(r["PodAnnotations"]) == {"kubernetes.io/psp": "restricted", "team": "payments"}
        assert r["PodUID"] == POD["io.kubernetes.pod.uid"]
    assert kube_api.requests == ["/api/v1/namespaces/shop/pods/web-0"]     # asked once, cached


def test_container_name_selects_only_that_container(engine, containers, peers, tmp_path, no_kubeconfig):
    port = str(free_port())
    server = peers("tcp-server", port, "127.0.0.1")
    a = containers("sel-a")
    b = containers("sel-b")
    out = tmp_path / "o.pcapng"
    cap = start_capture("-i", "lo", "-w", str(out), "--container-name", a.name)
    for _ in range(2):
        b.tcp(int(port), "from-b")
        a.tcp(int(port), "from-a")     # a new process joining a after start (docker exec)
    host = peers("tcp-client", "127.0.0.1", port)
    host.say("send 10")
    late = containers("sel-a-late")       # another name: not selected
    late.tcp(int(port))
    stop_capture(cap, port)
    got = rows(out)
    assert got and {r["ContainerName"] for r in got} == {a.name}
    assert {r["PID"] for r in got}.isdisjoint({str(server.pid), str(host.pid)})
    assert len({r["PID"] for r in got}) == 2     # the two nc processes exec'd into a


# A host process that moves into a container's cgroup (as runc does for `docker exec`, before
# it execs) and goes on sending on the socket it had: each payload says where it was sent from.
MOVES = r"""
import os, socket, sys
port, pid = int(sys.argv[1]), sys.argv[2]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.connect(("127.0.0.1", port))
u.send(b"host")
v2 = next(line.split()[1] for line in open("/proc/self/mounts") if line.split()[2] == "cgroup2")
cgroup = next(line for line in open(f"/proc/{pid}/cgroup") if line.startswith("0::")).split("::", 1)[1].strip()
with open(f"{v2}{cgroup}/cgroup.procs", "w") as f:
    f.write(str(os.getpid()))
u.send(b"inside")
"""


def test_process_moved_into_a_container_is_selected_from_its_next_packet(
        engine, containers, tmp_path, no_kubeconfig):
    port = free_port()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)       # receives, never reads
    sink.bind(("127.0.0.1", port))
    a = containers("moved-a")
    out = tmp_path / "o.pcapng"
    script = tmp_path / "moves.py"
    script.write_text(MOVES)
    try:
        cap = start_capture("-i", "lo", "-w", str(out), "-Q", "out", "--container-name", a.name,
                            f"udp dst port {port}")
        subprocess.run([sys.executable, str(script), str(port), str(a.pid)], check=True, timeout=30)
        wait_received(cap.pid, 1)
        stop_capture(cap)
    finally:
        sink.close()
    payloads = [bytes.fromhex(p).decode() for p, in tshark_fields(out, "data.data") if p]
    assert payloads == ["inside"]


def test_container_started_after_the_capture_is_selected(engine, containers, peers, tmp_path, no_kubeconfig):
    port = str(free_port())
    peers("tcp-server", port, "127.0.0.1")
    out = tmp_path / "o.pcapng"
    name = f"later-{os.getpid()}"
    cap = start_capture("-i", "lo", "-w", str(out), "--container-name", name)
    assert "no such running container yet; waiting for one to start" in cap.early
    c = containers("later")       # admitted at its cgroup's mkdir: no waiting
    c.tcp(int(port))
    stop_capture(cap, port)
    got = rows(out)
    assert got and {r["ContainerName"] for r in got} == {c.name}


def test_container_id_prefix_and_pod_name(engine, containers, peers, tmp_path, no_kubeconfig):
    port = str(free_port())
    peers("tcp-server", port, "127.0.0.1")
    app = containers("k8s_app_web-0", labels=POD)
    sidecar = containers("k8s_proxy_web-0", labels={**POD, "io.kubernetes.container.name": "proxy"})
    other = containers("k8s_app_db-0", labels={**POD, "io.kubernetes.pod.name": "db-0",
                                               "io.kubernetes.pod.uid": "11111111-2222-3333-4444-555555555555"})
    by_id, by_pod = tmp_path / "id.pcapng", tmp_path / "pod.pcapng"
    cap_id = start_capture("-i", "lo", "-w", str(by_id), "--container-id", app.id[:12])
    cap_pod = start_capture("-i", "lo", "-w", str(by_pod), "--pod-name", "web-0.shop")
    for c in (app, sidecar, other):
        c.tcp(int(port))
    stop_capture(cap_id, port)
    stop_capture(cap_pod, port)
    assert {r["ContainerId"] for r in rows(by_id)} == {app.id}
    pod_rows = rows(by_pod)
    assert {r["ContainerName"] for r in pod_rows} == {app.name, sidecar.name}
    assert {r["PodName"] for r in pod_rows} == {"web-0"}


def test_container_with_its_own_network_namespace(engine, containers, tmp_path, no_kubeconfig):
    """--network none: the traffic stays on the container's loopback; capture it there."""
    c = containers("isolated", network="none")
    out = tmp_path / "o.pcapng"
    port = str(free_port())
    c.listen(int(port))
    cap = start_capture("--netns", f"/proc/{c.pid}/ns/net", "-i", "lo", "-w", str(out),
                        "--container-id", c.id)
    c.tcp(int(port), "inside")
    stop_capture(cap, port, f"/proc/{c.pid}/ns/net")
    got = rows(out)
    assert got and {r["ContainerId"] for r in got} == {c.id}
    assert {r["ContainerImage"] for r in got} == {IMAGE}
    # nc in the container may write what it got a moment after the client is done
    wait_for(lambda: engine.docker("exec", c.name, "cat", "/tmp/got") == "inside", what="nc's file")


def test_selected_containers_own_network_is_captured_without_netns(engine, containers, tmp_path,
                                                                  no_kubeconfig):
    """--container-name alone (no --netns, no -i): a container with a network namespace of
    its own has its interfaces captured there, named after it; the host's carry nothing of it."""
    c = containers("ownnet", network="none")
    out = tmp_path / "o.pcapng"
    port = str(free_port())
    c.listen(int(port))
    cap = start_capture("-w", str(out), "--container-name", c.name, f"tcp port {port}")
    assert f"lo@{c.name}" in cap.early.splitlines()[-1]        # the "listening on" line
    c.tcp(int(port), "inside")
    stop_capture(cap, port, f"/proc/{c.pid}/ns/net")
    got = tshark_fields(out, "frame.interface_name", "frame.comment")
    assert got and {iface for iface, _ in got} == {f"lo@{c.name}"}
    assert {comments(text)["ContainerId"] for _, text in got} == {c.id}
    wait_for(lambda: engine.docker("exec", c.name, "cat", "/tmp/got") == "inside", what="nc's file")
    assert wait_clean() == []


def test_later_containers_own_network_is_captured_too(engine, containers, tmp_path, no_kubeconfig):
    """A matching container that starts after ptcap, on a network of its own: its namespace
    is taken when the selector finds it, its interfaces announced in the file."""
    name = f"ownlater-{os.getpid()}"
    out = tmp_path / "o.pcapng"
    port = str(free_port())
    cap = start_capture("-w", str(out), "--container-name", name, f"tcp port {port}")
    c = containers("ownlater", network="none")
    c.listen(int(port))
    deadline = time.time() + 30      # its namespace is taken when its start is reported
    while f"lo@{c.name}".encode() not in out.read_bytes():
        assert time.time() < deadline, "the container's namespace was never captured"
        time.sleep(0.05)
    c.tcp(int(port), "later")
    stop_capture(cap, port, f"/proc/{c.pid}/ns/net")
    got = tshark_fields(out, "frame.interface_name", "frame.comment")
    assert got and {iface for iface, _ in got} == {f"lo@{c.name}"}
    assert {comments(text)["ContainerName"] for _, text in got} == {c.name}
    assert wait_clean() == []


def test_unreachable_runtime_leaves_fields_empty(engine, containers, peers, tmp_path, no_kubeconfig):
    port = str(free_port())
    peers("tcp-server", port, "127.0.0.1")
    c = containers("nodocker")
    out = tmp_path / "o.pcapng"
    cap = start_capture("-i", "lo", "-w", str(out), "-Q", "out", f"tcp port {port}",
                        "--docker-address", str(tmp_path / "no.sock"))
    c.tcp(int(port))
    c.tcp(int(port))
    err = stop_capture(cap, port)
    got = [r for r in rows(out) if r.get("ContainerId")]
    assert got and {r["ContainerId"] for r in got} == {c.id}          # known from the cgroup
    assert {r["ContainerName"] for r in got} == {""}
    assert err.count("docker: cannot reach") == 1, err
    assert "Traceback" not in err


def test_a_runtime_that_hangs_up_is_named_in_one_whole_line(tmp_path):
    """A socket that accepts and closes at once (not a runtime): each API is said unreachable
    once, with its whole address and the system's reason, not gRPC's cut-off text that
    repeats the address. The CRI is looked for at --containerd-address (the same socket)."""
    sock = tmp_path / "containerd.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    server.listen()
    done = threading.Event()

    def hang_up():
        server.settimeout(0.2)
        while not done.is_set():
            try:
                server.accept()[0].close()
            except OSError:
                pass
    t = threading.Thread(target=hang_up, daemon=True)
    t.start()
    try:
        err = stop_capture(start_capture("-i", "lo", "--containerd-address", str(sock),
                                         "--docker-address", str(tmp_path / "no.sock"), "udp port 9"))
    finally:
        done.set()
        t.join()
        server.close()
    said = [line for line in err.splitlines() if "cannot reach" in line]
    assert sorted(line.split(":")[1] for line in said) == [" containerd", " the CRI runtime"], err
    for line in said:
        assert line.count(str(sock)) == 1 and line.endswith("are left empty"), line
        assert "last error" not in line and "Traceback" not in err, line


def test_context_selects_the_blocks(engine, containers, peers, tmp_path, no_kubeconfig):
    port = str(free_port())
    peers("tcp-server", port, "127.0.0.1")
    c = containers("ctx", labels=POD)
    out = tmp_path / "o.pcapng"
    cap = start_capture("-i", "lo", "-w", str(out), "-Q", "out", "--container-id", c.id,
                        "--context", "process,container")
    c.tcp(int(port))
    stop_capture(cap, port)
    got = rows(out)
    assert got
    for r in got:
        assert {"PID", "ContainerName", "ContainerId"} <= r.keys()
        assert not {"ThreadId", "UserId", "ParentPID", "PodName"} & r.keys()


def test_container_selector_errors(engine, tmp_path):
    def ptcap(*args):
        return subprocess.run(ptcap_argv("-i", "lo", *args), capture_output=True, text=True, timeout=30,
                              env={**os.environ, "DOCKER_HOST": engine.address})

    res = ptcap("--container-id", "not-hex!")
    assert res.returncode == 1 and res.stderr.startswith("ptcap: --container-id 'not-hex!': ")
    res = ptcap("--container-name", "x", "--docker-address", str(tmp_path / "no.sock"),
                "--containerd-address", str(tmp_path / "nor.sock"))
    assert res.returncode == 1, res.stderr
    assert res.stderr == (f"ptcap: --container-name x: no container runtime answers (docker at unix://{tmp_path}/no.sock, "
                          f"containerd at unix://{tmp_path}/nor.sock, the CRI runtime at unix://{tmp_path}/nor.sock)\n")
    res = ptcap("--pod-name", "web-0.shop", "--docker-address", str(tmp_path / "no.sock"),
                "--containerd-address", str(tmp_path / "nor.sock"))
    assert res.returncode == 1 and res.stderr.startswith("ptcap: --pod-name web-0.shop: no container runtime answers ("), \
        res.stderr
    res = ptcap("--container-name", "x", "--pod-name", "a.b")
    assert res.stderr == "ptcap: --container-name and --pod-name cannot be used together\n"
    assert wait_clean() == []


def test_containerd_containers_metadata_and_selector(engine, containers, peers, tmp_path, no_kubeconfig):
    """A container of containerd itself (ctr, in a namespace of its own): names, image and
    labels from containerd's API; --container-name finds it there."""
    if shutil.which("ctr") is None:
        engine_unavailable("ctr (Debian's containerd package) is not installed")
    sock = engine.containerd
    ctr = ["ctr", "-a", sock, "-n", "ptcap-test"]
    saved = subprocess.Popen(["docker", "save", IMAGE], stdout=subprocess.PIPE, env=engine.env)
    subprocess.run(ctr + ["images", "import", "-"], stdin=saved.stdout, check=True, capture_output=True,
                   timeout=120)
    saved.wait()
    name = f"box-{os.getpid()}"
    labels = {"nerdctl/name": name, "app": "ctr", "io.kubernetes.pod.name": "api-0",
              "io.kubernetes.pod.namespace": "prod", "io.kubernetes.pod.uid": "u-1"}
    subprocess.run(ctr + ["run", "-d", "--net-host"] + [a for k, v in labels.items() for a in ("--label", f"{k}={v}")]
                   + [f"docker.io/library/{IMAGE}", name, "sleep", "600"], check=True, capture_output=True, timeout=60)
    try:
        port = str(free_port())
        peers("tcp-server", port, "127.0.0.1")
        other = containers("not-ctr")
        out = tmp_path / "o.pcapng"
        cap = start_capture("-i", "lo", "-w", str(out), "--containerd-address", sock, "--container-name", name)
        subprocess.run(ctr + ["task", "exec", "--exec-id", "talk", name, "sh", "-c",
                              f"echo hi | nc -w 1 127.0.0.1 {port}"], check=True, capture_output=True, timeout=30)
        other.tcp(int(port))
        stop_capture(cap, port)
        got = rows(out)
        assert got
        for r in got:
            assert (r["ContainerId"], r["ContainerName"]) == (name, name)
            assert r["ContainerImage"] == f"docker.io/library/{IMAGE}"
            assert json.loads(r["ContainerLabels"])["app"] == "ctr"
            assert (r["PodName"], r["PodNamespace"], r["PodUID"]) == ("api-0", "prod", "u-1")
    finally:
        subprocess.run(ctr + ["task", "rm", "-f", name], capture_output=True, timeout=60)
        subprocess.run(ctr + ["containers", "rm", name], capture_output=True, timeout=60)


def test_containerd_namespace_layout():
    """/<namespace>/<id>: a container only when containerd has that namespace."""
    found = parse_cgroup_path("/default/web-1", lambda: {"default", "k8s.io"})
    assert (found.id, found.runtime, found.namespace) == ("web-1", "containerd", "default")
    assert parse_cgroup_path("/default/web-1", lambda: set()) is None
    assert parse_cgroup_path(f"/system.slice/cri-containerd-{ID}.scope").namespace == "k8s.io"


# -- a Kubernetes node's runtime: containerd's CRI plugin, driven like the kubelet drives it --
CRI_CONFIG = """version = 2
root = "{base}/root"
state = "{base}/state"
[grpc]
  address = "{base}/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/library/ptcap-test:pause"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{base}/cni-bin"
    conf_dir = "{base}/cni-conf"
"""


class Node:
    def __init__(self, base: Path) -> None:
        from cri_pods import Kubelet
        self.address = f"{base}/containerd.sock"
        self.kubelet = Kubelet(self.address)
        self.sandboxes: list[str] = []
        self.ctr = ["ctr", "-a", self.address, "-n", "k8s.io"]

    def pod(self, name: str, namespace: str, uid: str, labels: dict[str, str], annotations: dict[str, str],
            container: str) -> str:
        sandbox, config = self.kubelet.run_pod(name, namespace, uid, labels, annotations)
        self.sandboxes.append(sandbox)
        return self.kubelet.run_container(sandbox, config, container, f"docker.io/library/{IMAGE}",
                                          ["/bin/sleep", "600"], (name, namespace, uid))

    def tcp(self, cid: str, port: int) -> None:
        subprocess.run(self.ctr + ["task", "exec", "--exec-id", f"t{time.monotonic_ns()}", cid, "sh", "-c",
                                   f"echo hi | nc -w 1 127.0.0.1 {port}"], check=True, capture_output=True,
                       timeout=30)


@pytest.fixture(scope="module")
def node(engine):
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        engine_unavailable("containerd is not installed (Debian's containerd, a docker.io dependency)")
    base = Path(tempfile.mkdtemp(prefix="ptcap-cri-", dir="/tmp"))
    (base / "config.toml").write_text(CRI_CONFIG.format(base=base))
    log = open(base / "containerd.log", "w")
    proc = subprocess.Popen(["containerd", "--config", str(base / "config.toml")], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    n = None
    try:
        deadline = time.time() + 30
        while subprocess.run(["ctr", "-a", f"{base}/containerd.sock", "version"],
                             capture_output=True).returncode != 0:
            if proc.poll() is not None or time.time() > deadline:
                engine_unavailable("containerd cannot start here: " + (base / "containerd.log").read_text()[-400:])
            time.sleep(0.2)
        # the sandbox ("pause") image needs a command of its own
        tar = subprocess.Popen(["tar", "-C", str(engine.base / "image"), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "--change", 'CMD ["/bin/sleep", "100000"]', "-", "ptcap-test:pause"],
                       stdin=tar.stdout, env=engine.env, check=True, capture_output=True, timeout=60)
        tar.wait()
        n = Node(base)
        saved = subprocess.Popen(["docker", "save", IMAGE, "ptcap-test:pause"], stdout=subprocess.PIPE,
                                 env=engine.env)
        subprocess.run(n.ctr + ["images", "import", "-"], stdin=saved.stdout, check=True, capture_output=True,
                       timeout=120)
        saved.wait()
        yield n
    finally:
        if n is not None:
            for sandbox in n.sandboxes:
                try:
                    n.kubelet.remove_pod(sandbox)
                except Exception:       # noqa: BLE001 (teardown goes on)
                    pass
            n.kubelet.close()
        _stop_daemon(proc)
        log.close()
        _unmount_below(base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("flag", ["--cri-runtime-address", "--containerd-address"])
def test_pods_of_a_cri_runtime(node, peers, tmp_path, no_kubeconfig, flag):
    """Pods made through the CRI as the kubelet makes them: container and pod details
    (the pod's own labels and annotations included) come from the CRI; --pod-name selects.
    containerd's CRI plugin answers on containerd's socket: --containerd-address alone names
    where the CRI is too."""
    port = str(free_port())
    peers("tcp-server", port, "127.0.0.1")
    ns = "prod" if flag == "--cri-runtime-address" else "prod-c"    # the node lives on between them
    uid = f"6f1c2d3e-aaaa-bbbb-cccc-0123456789a{len(ns)}"
    api = node.pod("api-0", ns, uid, {"app": "api", "tier": "back"}, {"team": "payments"}, "app")
    db = node.pod("db-0", ns, f"7f1c2d3e-aaaa-bbbb-cccc-0123456789a{len(ns)}", {"app": "db"}, {}, "postgres")
    out = tmp_path / "o.pcapng"
    cap = start_capture("-i", "lo", "-w", str(out), flag, node.address, "--pod-name", f"api-0.{ns}")
    node.tcp(db, int(port))
    node.tcp(api, int(port))
    stop_capture(cap, port)
    got = rows(out)
    assert got
    for r in got:
        assert (r["ContainerId"], r["ContainerName"]) == (api, "app")
        assert r["ContainerImage"] == f"docker.io/library/{IMAGE}"
        assert (r["PodName"], r["PodNamespace"], r["PodUID"]) == ("api-0", ns, uid)
        assert json.loads(r["PodLabels"]) == {"app": "api", "tier": "back"}
        assert json.loads(r["PodAnnotations"]) == {"team": "payments"}


def test_container_found_by_cgroup_id_and_from_proc(containers):
    """The kernel's cgroup v2 id is the inode of the cgroup's directory: found by walking the
    hierarchy; an id that names nothing falls back to the process's /proc/PID/cgroup."""
    from ptcap.kernel.cgroup import v2_mount
    from ptcap.meta.containers import ContainerFinder
    c = containers("finder")
    v2 = [line[3:] for line in open(f"/proc/{c.pid}/cgroup").read().splitlines() if line.startswith("0::")][0]
    root = v2_mount()
    if root is not None and v2 != "/":
        cgroup_id = os.stat(root + v2).st_ino
        assert ContainerFinder().find(0, cgroup_id).id == c.id      # no pid: the path alone
    assert ContainerFinder().find(c.pid, 0).id == c.id


def test_the_cgroup_caches_stay_bounded(monkeypatch):
    """A host that makes and removes cgroups all day (a container, a systemd scope per
    session) must not grow ptcap's id → path and id → container caches without end: they keep
    the newest MAX_CGROUPS ids, and a dropped one is found again when asked for."""
    import ptcap.meta.containers as containers_module
    from ptcap.kernel.cgroup import v2_mount
    from ptcap.meta.containers import ContainerFinder
    root = v2_mount()
    assert root is not None
    monkeypatch.setattr(containers_module, "MAX_CGROUPS", 16)
    top = Path(root) / f"ptcap-bounded-{os.getpid()}"
    ids = [f"{n:064x}" for n in range(1, 41)]
    made = []
    try:
        top.mkdir()
        made.append(top)
        finder = ContainerFinder()
        for cid in ids:
            d = top / f"docker-{cid}.scope"
            d.mkdir()
            made.append(d)
            assert finder.find(0, d.stat().st_ino).id == cid
            assert len(finder._cgroups) <= 16 and len(finder._by_cgroup) <= 16
        first = top / f"docker-{ids[0]}.scope"
        assert finder.find(0, first.stat().st_ino).id == ids[0]       # dropped, found again
    finally:
        for d in reversed(made):
            d.rmdir()


def test_container_id_without_a_runtime(engine, containers, peers, tmp_path, no_kubeconfig):
    """--container-id needs no runtime: the container's processes are found by their cgroups."""
    port = str(free_port())
    peers("tcp-server", port, "127.0.0.1")
    c = containers("noruntime")
    other = containers("noruntime-other")
    out = tmp_path / "o.pcapng"
    nowhere = str(tmp_path / "no.sock")
    cap = start_capture("-i", "lo", "-w", str(out), "--container-id", c.id[:16], "--docker-address", nowhere,
                        "--containerd-address", nowhere, "--cri-runtime-address", nowhere)
    other.tcp(int(port))
    c.tcp(int(port))
    stop_capture(cap, port)
    got = rows(out)
    assert got and {r["ContainerId"] for r in got} == {c.id}


# -- containers that live for a second ------------------------------------------------------
RUNS = 20


class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def web():
    """An HTTP server on loopback, on an ephemeral port (a host process: no container)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def connections(path: Path, port: int) -> dict[str, list[dict[str, str]]]:
    """Every connection to the server, by the path it asked for: the context of each packet
    whose local end is the client (sent by it, or received for it)."""
    got = tshark_fields(path, "tcp.srcport", "tcp.dstport", "frame.packet_flags_direction",
                        "http.request.uri", "frame.comment", display_filter=f"tcp.port == {port}")
    by_port: dict[str, list] = {}
    uris: dict[str, str] = {}
    for sport, dport, direction, uri, text in got:
        client = sport if dport == str(port) else dport
        if uri:
            uris[client] = uri
        outbound = direction in ("2", "0x00000002", "0x2")
        if (outbound and sport == client) or (not outbound and dport == client):
            by_port.setdefault(client, []).append(comments(text))
    return {uris.get(client, f"?{client}"): ctxs for client, ctxs in by_port.items()}


def _cid(path: Path) -> str:
    return path.read_text().strip()


BRIEF_POD = {"io.kubernetes.pod.name": "web-0", "io.kubernetes.pod.namespace": "shop"}


def _docker_brief(engine, port: int, run: int, tmp_path: Path, name: str | None = None,
                  labels: dict[str, str] = BRIEF_POD) -> str:
    """`docker run --rm`: a container that makes one request and is gone; its id."""
    cidfile = tmp_path / f"cid-{run}-{time.monotonic_ns()}"
    args = ["run", "--rm", "--network", "host", "--cidfile", str(cidfile)]
    if name:
        args += ["--name", name]
    for k, v in labels.items():
        args += ["--label", f"{k}={v}"]
    engine.docker(*args, IMAGE, "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{port}/run-{run}")
    return _cid(cidfile)


def test_brief_docker_containers_carry_their_metadata(engine, web, tmp_path, no_kubeconfig):
    """20 `docker run --rm` containers of one request each, started after ptcap: every packet
    of each carries its container and pod, the SYN included (the name is known from the
    create event, the cgroup named after the container is gone)."""
    out = tmp_path / "o.pcapng"
    cap = start_capture("-i", "lo", "-w", str(out), f"tcp port {web}")
    ids = [_docker_brief(engine, web, run, tmp_path) for run in range(RUNS)]
    stop_capture(cap, web)
    got = connections(out, web)
    assert set(got) == {f"/run-{run}" for run in range(RUNS)}, sorted(got)
    for run, cid in enumerate(ids):
        ctxs = got[f"/run-{run}"]
        assert len(ctxs) >= 5, ctxs        # SYN, ACK, request, ..., FIN
        for ctx in ctxs:
            assert ctx.get("ContainerId") == cid, (run, ctx)
            assert ctx["ContainerName"] and ctx["ContainerImage"] == IMAGE, (run, ctx)
            assert (ctx["PodName"], ctx["PodNamespace"]) == ("web-0", "shop"), (run, ctx)
            assert ctx["Cmd"] == "/bin/wget" and ctx["Args"].startswith("wget -q"), (run, ctx)


def test_container_name_selects_brief_containers_from_their_first_packet(engine, web, tmp_path,
                                                                        no_kubeconfig):
    """--container-name given before the container exists: each of 20 `docker run --rm` with
    that name is captured from its SYN, and nothing of other containers or the host."""
    name = f"brief-{os.getpid()}"
    out = tmp_path / "o.pcapng"
    cap = start_capture("-i", "lo", "-w", str(out), "--container-name", name, f"tcp port {web}")
    assert "no such running container yet" in cap.early
    ids = []
    for run in range(RUNS):
        ids.append(_docker_brief(engine, web, run, tmp_path, name=name))
        if run % 5 == 0:
            _docker_brief(engine, web, 1000 + run, tmp_path, name=f"other-{name}")   # not selected
            subprocess.run(["wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{web}/host-{run}"],
                           check=False, timeout=10)
    stop_capture(cap, web)
    got = connections(out, web)
    assert set(got) == {f"/run-{run}" for run in range(RUNS)}, sorted(got)
    for run, cid in enumerate(ids):
        ctxs = got[f"/run-{run}"]
        assert len(ctxs) >= 5
        assert {c.get("ContainerId") for c in ctxs} == {cid}
        assert {c.get("ContainerName") for c in ctxs} == {name}
    every = rows(out)
    assert every and {r.get("ContainerName") for r in every} == {name}     # the server's side too


@pytest.fixture(scope="module")
def ctr_image(engine):
    """The test image in a containerd namespace of its own (for ctr)."""
    ns = f"ptcap-test-{os.getpid()}"
    ctr = ["ctr", "-a", engine.containerd, "-n", ns]
    saved = subprocess.Popen(["docker", "save", IMAGE], stdout=subprocess.PIPE, env=engine.env)
    subprocess.run(ctr + ["images", "import", "-"], stdin=saved.stdout, check=True, capture_output=True,
                   timeout=120)
    saved.wait()
    return ctr


def _ctr_brief(ctr: list[str], cid: str, port: int, run: int, labels: dict[str, str]) -> None:
    """`ctr run --rm`: one request, then gone."""
    subprocess.run(ctr + ["run", "--rm", "--net-host"] + [a for k, v in labels.items() for a in ("--label", f"{k}={v}")]
                   + [f"docker.io/library/{IMAGE}", cid, "wget", "-q", "-O", "/dev/null",
                      f"http://127.0.0.1:{port}/run-{run}"], check=True, capture_output=True, timeout=60)


def test_brief_containerd_containers_carry_their_metadata(engine, ctr_image, web, tmp_path, no_kubeconfig):
    """20 `ctr run --rm` containers, started after ptcap: names, image and pod labels from
    containerd's create events, on every packet."""
    out = tmp_path / "o.pcapng"
    cap = start_capture("-i", "lo", "-w", str(out), "--containerd-address", engine.containerd,
                        f"tcp port {web}")
    tag = f"ctr-{os.getpid()}"
    for run in range(RUNS):
        _ctr_brief(ctr_image, f"{tag}-{run}", web, run,
                   {"nerdctl/name": f"box-{run}", **BRIEF_POD, "app": "brief"})
    stop_capture(cap, web)
    got = connections(out, web)
    assert set(got) == {f"/run-{run}" for run in range(RUNS)}, sorted(got)
    for run in range(RUNS):
        for ctx in got[f"/run-{run}"]:
            assert (ctx.get("ContainerId"), ctx.get("ContainerName")) == (f"{tag}-{run}", f"box-{run}"), ctx
            assert ctx["ContainerImage"] == f"docker.io/library/{IMAGE}"
            assert json.loads(ctx["ContainerLabels"])["app"] == "brief"
            assert (ctx["PodName"], ctx["PodNamespace"]) == ("web-0", "shop")


def _thread_nices(pid: int) -> dict[int, tuple[str, int]]:
    """Each thread of `pid`: its name and nice value."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            out[int(task.name)] = comm, int((task / "stat").read_text().rsplit(")", 1)[1].split()[16])
        except (OSError, IndexError, ValueError):
            continue        # a thread that ended meanwhile
    return out


def test_runtime_watchers_outrun_busy_cores(engine, web, no_kubeconfig):
    """A brief container can be described only while it exists: the threads that follow the
    runtimes (ptcap's own and gRPC's, which read the sockets) run at a raised priority, the
    packet path at the default one (on a host with busy cores, the default priority woke the
    containerd watcher 120 ms late, after a `ctr run --rm` container was gone)."""
    cap = start_capture("-i", "lo", "-w", "/dev/null", "--containerd-address", engine.containerd,
                        f"tcp port {web}")
    threads = _thread_nices(cap.pid)
    stop_capture(cap)
    grpc = [nice for comm, nice in threads.values() if comm.startswith(("grpc", "event_engine"))]
    assert grpc and set(grpc) == {-10}, threads
    assert threads[cap.pid][1] == 0, threads            # the packets' thread
    # the docker, containerd and CRI watchers: Python threads, named as the process
    watchers = [tid for tid, (comm, nice) in threads.items() if comm == threads[cap.pid][0] and nice == -10]
    assert len(watchers) >= 3, threads


def test_container_name_selects_brief_containerd_containers(engine, ctr_image, web, tmp_path, no_kubeconfig):
    """--container-name given before 20 `ctr run --rm` containers named so (nerdctl's name
    label): each captured from its SYN, others not."""
    name = f"ctrbox-{os.getpid()}"
    out = tmp_path / "o.pcapng"
    cap = start_capture("-i", "lo", "-w", str(out), "--containerd-address", engine.containerd,
                        "--container-name", name, f"tcp port {web}")
    tag = f"ctrsel-{os.getpid()}"
    for run in range(RUNS):
        _ctr_brief(ctr_image, f"{tag}-{run}", web, run, {"nerdctl/name": name})
        if run % 5 == 0:
            _ctr_brief(ctr_image, f"{tag}-other-{run}", web, 1000 + run, {"nerdctl/name": f"x{name}"})
    stop_capture(cap, web)
    got = connections(out, web)
    assert set(got) == {f"/run-{run}" for run in range(RUNS)}, sorted(got)
    for run in range(RUNS):
        ctxs = got[f"/run-{run}"]
        assert len(ctxs) >= 5
        assert {(c.get("ContainerId"), c.get("ContainerName")) for c in ctxs} == {(f"{tag}-{run}", name)}


def test_container_id_prefix_admitted_in_the_kernel(engine, ctr_image, web, tmp_path, no_kubeconfig):
    """--container-id with no runtime reachable, before the containers exist: the kernel
    admits each new cgroup named by that prefix at mkdir, from the first packet."""
    tag = f"pfx{os.getpid()}"
    nowhere = str(tmp_path / "no.sock")
    out = tmp_path / "o.pcapng"
    cap = start_capture("-i", "lo", "-w", str(out), "--container-id", tag, "--docker-address", nowhere,
                        "--containerd-address", nowhere, "--cri-runtime-address", nowhere, f"tcp port {web}")
    for run in range(5):
        _ctr_brief(ctr_image, f"{tag}-{run}", web, run, {})
        _ctr_brief(ctr_image, f"x{tag}-{run}", web, 100 + run, {})      # another id: not selected
    stop_capture(cap, web)
    got = connections(out, web)
    assert set(got) == {f"/run-{run}" for run in range(5)}, sorted(got)
    for run in range(5):
        assert {c.get("ContainerId") for c in got[f"/run-{run}"]} == {f"{tag}-{run}"}


def test_printed_line_and_verbose_blocks_of_a_brief_container(engine, web, tmp_path, no_kubeconfig):
    """The default line ends with Container [NAME], Pod [NAME.NAMESPACE]; -v prints the
    Container and Pod blocks; Wireshark's fields (the Lua dissector) have the same values."""
    name = f"line-{os.getpid()}"
    cap = subprocess.Popen(ptcap_argv("-i", "lo", "-Q", "out", "--container-name", name, "-v",
                                      f"tcp port {web}"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    _STARTED.append(cap)
    _wait_listening(cap)
    cid = _docker_brief(engine, web, 0, tmp_path, name=name)
    verbose = _stop(cap)
    assert f"Container (name {name}, id {cid}, image {IMAGE}, labels " in verbose
    assert "Pod (name web-0, namespace shop, " in verbose

    out = tmp_path / "o.pcapng"
    plain = subprocess.Popen(ptcap_argv("-i", "lo", "-Q", "out", "--container-name", name, "--print",
                                        "-w", str(out), f"tcp port {web}"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _STARTED.append(plain)
    _wait_listening(plain)
    cid = _docker_brief(engine, web, 1, tmp_path, name=name)
    lines = [line for line in _stop(plain).splitlines() if f".{web}" in line]
    assert lines and all(line.endswith(f", Container [{name}], Pod [web-0.shop]") for line in lines), lines
    lua = Path(__file__).resolve().parent.parent / "lua" / "ptcap.lua"
    res = subprocess.run(["tshark", "-X", f"lua_script:{lua}", "-r", str(out), "-T", "fields", "-E",
                          "separator=\t", "-e", "ptcap.container", "-e", "ptcap.container.id", "-e",
                          "ptcap.pod", "-e", "ptcap.pod.namespace"], capture_output=True, text=True,
                         env={**os.environ, "HOME": str(tmp_path)})
    fields = {tuple(line.split("\t")) for line in res.stdout.splitlines()}
    assert fields == {(name, cid, "web-0", "shop")}, res.stderr


def _wait_listening(proc: subprocess.Popen) -> None:
    lines = []
    while True:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError("ptcap did not start: " + "".join(lines))
        lines.append(line)
        if line.removeprefix("ptcap: ").startswith("listening on"):
            return


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    return out


def test_process_details_inside_brief_containers(engine, web, tmp_path, no_kubeconfig):
    """busybox's sh runs applets by exec'ing /proc/self/exe: the packets name the applet's
    path; a container's init names its parent, the runtime's shim, with its arguments."""
    out = tmp_path / "o.pcapng"
    cap = start_capture("-i", "lo", "-w", str(out), "-Q", "out", f"tcp port {web}")
    url = f"http://127.0.0.1:{web}"
    engine.docker("run", "--rm", "--network", "host", IMAGE, "sh", "-c", f"wget -q -O /dev/null {url}/init")
    engine.docker("run", "--rm", "--network", "host", IMAGE, "sh", "-c",
                  f"wget -q -O /dev/null {url}/child; true")
    stop_capture(cap, web)
    got = connections(out, web)
    init, child = got["/init"], got["/child"]
    for ctx in init + child:
        assert (ctx["Cmd"], ctx["Args"].split()[0]) == ("/bin/wget", "wget"), ctx
    for ctx in init:        # sh exec'd wget in its place: the container's init
        assert ctx["ParentCmd"] == "/usr/bin/containerd-shim-runc-v2", ctx
        assert f"-namespace {engine.engines.moby_namespace} -id {ctx['ContainerId']}" in ctx["ParentArgs"], ctx
    for ctx in child:       # sh forked, the child exec'd wget
        assert (ctx["ParentCmd"], ctx["ParentArgs"]) == ("/bin/sh", f"sh -c wget -q -O /dev/null {url}/child; true")


def test_capture_goes_on_when_the_mkdir_program_does_not_load(engine, containers, peers, tmp_path,
                                                              no_kubeconfig):
    """A cgroups object the kernel refuses (here: one that is not an object at all) costs the
    admission at mkdir only: ptcap says so, captures, and a container that starts later is
    still selected once its runtime reports it."""
    objects = tmp_path / "bpf"
    shutil.copytree(Path(__file__).resolve().parent.parent / "bpf" / "build", objects)
    (objects / "cgroups.bpf.o").write_bytes(b"not an ELF object")
    port = str(free_port())
    peers("tcp-server", port, "127.0.0.1")
    name = f"nomkdir-{os.getpid()}"
    out = tmp_path / "o.pcapng"
    cap = start_capture("-i", "lo", "-w", str(out), "--container-name", name, f"tcp port {port}",
                        env={**os.environ, "PTCAP_BPF_DIR": str(objects)})
    assert f"--container-name {name}: cgroup_mkdir admission unavailable" in cap.early
    empty = out.stat().st_size      # the file's header and interfaces
    c = containers("nomkdir")
    other = containers("nomkdir-other")
    deadline = time.time() + 30
    while out.stat().st_size == empty:     # selected once its start is reported: talk until kept
        assert time.time() < deadline, "the later container was never selected"
        c.tcp(int(port))
        other.tcp(int(port))
    stop_capture(cap, port)
    got = rows(out)
    assert got and {r["ContainerName"] for r in got} == {c.name}


def test_a_gone_containers_namespace_does_not_select_the_next(engine, containers, web, tmp_path,
                                                              no_kubeconfig):
    """A container selected at start exits; the containers made after it (which may be given
    its mount namespace's inode again) are not captured: it was selected by its cgroup."""
    first = containers("gone")
    out = tmp_path / "o.pcapng"
    cap = start_capture("-i", "lo", "-w", str(out), "--container-name", first.name, f"tcp port {web}")
    engine.docker("exec", first.name, "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{web}/first")
    engine.docker("rm", "-f", first.name)
    for run in range(5):
        _docker_brief(engine, web, run, tmp_path)
    stop_capture(cap, web)
    got = connections(out, web)
    assert set(got) == {"/first"}, sorted(got)
    assert {c["ContainerName"] for c in got["/first"]} == {first.name}


def _wait_for(path: Path, text: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while text not in path.read_text():
        assert time.time() < deadline, f"{text!r} never came: {path.read_text()}"
        time.sleep(0.05)


def test_a_restarted_engine_is_followed_again(engine, web, tmp_path, no_kubeconfig):
    """dockerd restarts during a capture: ptcap subscribes to its events again (and says so),
    and brief containers after the restart carry their names."""
    out, err = tmp_path / "o.pcapng", tmp_path / "err"
    with open(err, "w") as stderr:
        cap = subprocess.Popen(ptcap_argv("-i", "lo", "-w", str(out), f"tcp port {web}"), stderr=stderr)
    _STARTED.append(cap)
    _wait_for(err, "listening on")
    before = _docker_brief(engine, web, 0, tmp_path)
    engine.engines.restart_dockerd()
    _wait_for(err, f"docker: reached {engine.address} again: following its containers")
    after = [_docker_brief(engine, web, run, tmp_path) for run in range(1, 4)]
    cap.send_signal(signal.SIGINT)
    assert cap.wait(timeout=30) == 0
    got = connections(out, web)
    for run, cid in enumerate([before, *after]):
        assert {(c.get("ContainerId"), c.get("ContainerImage")) for c in got[f"/run-{run}"]} == {(cid, IMAGE)}
        assert all(c.get("ContainerName") for c in got[f"/run-{run}"])
    assert err.read_text().count("again: following") == 1


def test_the_hosts_engines_are_left_alone(tmp_path):
    """Private engines leave the host's docker0 and the host's containers as they were. With
    no docker0 here, a stand-in is made for the check (dockerd --bridge=none deletes it)."""
    made = None
    if docker0_of_host() is None:
        made = "docker0"
        subprocess.run(["ip", "link", "add", "docker0", "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", "198.18.255.1/30", "dev", "docker0"], check=True)
    try:
        before = host_engines()
        engines = PrivateEngines(f"h{os.getpid() % 10000}")
        try:
            engines.start()
            engines.docker("network", "ls")
        finally:
            engines.stop()
        assert host_engines() == before
    finally:
        if made:
            subprocess.run(["ip", "link", "del", made], check=False)
