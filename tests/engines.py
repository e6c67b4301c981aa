"""Private container engines for the tests: a containerd and a dockerd of their own that
leave the host's engines alone.

Everything is theirs: the containerd (root, state, sockets, and the containerd namespaces
Docker uses in it), dockerd's socket, data root, exec root and pidfile, and its default
network on a bridge the tests make (a free name and a free subnet). dockerd is never given
--bridge=none: started that way it deletes the host's docker0.

With netns=NAME, dockerd runs in that network namespace (the caller's) as a stock engine:
its own docker0, iptables rules, masquerade and forwarding, all inside that namespace.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path


from conftest import free_subnet, engine_unavailable, run

IMAGE = "ptcap-test:busybox"
APPLETS = ("sh", "nc", "sleep", "echo", "cat", "wget", "true")

CONTAINERD_CONFIG = """version = 2
root = "{base}/containerd/root"
state = "{base}/containerd/state"
[grpc]
  address = "{base}/containerd.sock"
[ttrpc]
  address = "{base}/containerd.sock.ttrpc"
[debug]
  address = "{base}/containerd-debug.sock"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
"""


def busybox_tree(root: Path) -> None:
    busybox = shutil.which("busybox")
    (root / "bin").mkdir(parents=True)
    (root / "tmp").mkdir()
    shutil.copy(busybox, root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")


def stop_daemon(proc: subprocess.Popen) -> None:
    """SIGTERM a daemon the tests started; its whole session if it does not go in 30 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def unmount_below(base: Path) -> None:
    """What an engine left mounted under its directories (its netns files, overlays)."""
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f if line.split()[1].startswith(f"{base}/")]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def _wait(what: str, ready, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None or time.time() > deadline:
            engine_unavailable(f"{what} cannot start here: {log.read_text()[-600:]}")
        time.sleep(0.2)


class PrivateEngines:
    """A containerd, and a dockerd on top of it, under one temporary directory."""

    def __init__(self, tag: str, netns: str | None = None) -> None:
        for tool in ("dockerd", "docker", "containerd", "ctr", "busybox"):
            if shutil.which(tool) is None:
                engine_unavailable(f"{tool} is not installed (./install.sh installs docker.io, containerd "
                            "and busybox-static)")
        if "statically linked" not in subprocess.run(["file", "-L", shutil.which("busybox")],
                                                     capture_output=True, text=True).stdout:
            engine_unavailable("busybox is not the static one (busybox-static): it cannot run in a bare image")
        self.tag = tag
        self.base = Path(tempfile.mkdtemp(prefix=f"ptcap-engines-{tag}-", dir="/tmp"))
        self.containerd = str(self.base / "containerd.sock")
        self.address = f"unix://{self.base}/docker.sock"
        self.env = {**os.environ, "DOCKER_HOST": self.address}
        self.moby_namespace = f"ptcap-{tag}-moby"       # Docker's containers in our containerd
        self.bridge = f"ptcbr{tag}"[:15]
        self.netns = netns
        self._procs: list[subprocess.Popen] = []
        self._logs = []

    def start(self) -> "PrivateEngines":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _daemon(self, name: str, argv: list[str]) -> tuple[subprocess.Popen, Path]:
        path = self.base / f"{name}.log"
        log = open(path, "w")
        self._logs.append(log)
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._procs.append(proc)
        return proc, path

    def _start(self) -> None:
        base = self.base
        (base / "containerd.toml").write_text(CONTAINERD_CONFIG.format(base=base))
        ctd, log = self._daemon("containerd", ["containerd", "--config", str(base / "containerd.toml")])
        _wait("containerd", lambda: run(["ctr", "-a", self.containerd, "version"], check=False).returncode == 0,
              ctd, log)
        self._dockerd_argv = [
            "dockerd", "--data-root", f"{base}/data", "--exec-root", f"{base}/exec",
            "--pidfile", f"{base}/dockerd.pid", "-H", self.address,
            "--containerd", self.containerd, "--containerd-namespace", self.moby_namespace,
            "--containerd-plugins-namespace", f"ptcap-{self.tag}-plugins"]
        if self.netns:
            # only the network namespace is entered (not `ip netns exec`, whose mount namespace
            # would hide dockerd's image mounts from containerd)
            self._dockerd_argv = ["nsenter", f"--net=/run/netns/{self.netns}", *self._dockerd_argv,
                                  "--ip6tables=false"]
        else:
            net = free_subnet()
            run(["ip", "link", "add", self.bridge, "type", "bridge"])
            run(["ip", "addr", "add", f"{net}.1/24", "dev", self.bridge])
            run(["ip", "link", "set", self.bridge, "up"])
            self._dockerd_argv += ["--bridge", self.bridge, "--iptables=false", "--ip6tables=false",
                                   "--ip-masq=false"]
        self._start_dockerd()

    def _start_dockerd(self) -> None:
        self.dockerd, log = self._daemon("dockerd", self._dockerd_argv)
        _wait("dockerd", lambda: subprocess.run(["docker", "info"], env=self.env,
                                                capture_output=True).returncode == 0, self.dockerd, log)

    def restart_dockerd(self) -> None:
        """Stop the engine and start it again (its containers stop with it)."""
        stop_daemon(self.dockerd)
        self._procs.remove(self.dockerd)
        self._start_dockerd()

    def docker(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        res = subprocess.run(["docker", *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {res.stderr.strip()}")
        return res.stdout.strip()

    def import_image(self) -> None:
        tree = self.base / "image"
        busybox_tree(tree)
        tar = subprocess.Popen(["tar", "-C", str(tree), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", IMAGE], stdin=tar.stdout, env=self.env, check=True,
                       capture_output=True, timeout=120)
        tar.wait()

    def stop(self) -> None:
        if self._procs:
            try:
                ids = self.docker("ps", "-aq", check=False, timeout=30).split()
                if ids:
                    self.docker("rm", "-f", *ids, check=False, timeout=120)
            except (subprocess.TimeoutExpired, OSError):
                pass
        for proc in reversed(self._procs):
            stop_daemon(proc)
        self._procs.clear()
        for log in self._logs:
            log.close()
        if not self.netns:
            run(["ip", "link", "del", self.bridge], check=False)
        unmount_below(self.base)
        shutil.rmtree(self.base, ignore_errors=True)


def host_engines() -> dict:
    """What the host's own engines look like: docker0 (its index and addresses), the
    containers the host's dockerd runs, the tasks of the host's containerd."""
    state: dict = {"docker0": docker0()}
    if os.path.exists("/var/run/docker.sock"):
        res = subprocess.run(["docker", "-H", "unix:///var/run/docker.sock", "ps", "-q", "--no-trunc"],
                             capture_output=True, text=True, timeout=30)
        state["docker"] = sorted(res.stdout.split()) if res.returncode == 0 else None
    if os.path.exists("/run/containerd/containerd.sock"):
        tasks = []
        spaces = run(["ctr", "namespaces", "ls", "-q"], check=False).stdout.split()
        for ns in spaces:
            tasks += [f"{ns}/{line}" for line in
                      run(["ctr", "-n", ns, "tasks", "ls", "-q"], check=False).stdout.split()]
        state["containerd"] = sorted(tasks)
    return state


def docker0() -> tuple[str, list[str]] | None:
    """docker0's interface index and addresses; None when there is none."""
    link = run(["ip", "-o", "link", "show", "dev", "docker0"], check=False)
    if link.returncode != 0:
        return None
    addrs = run(["ip", "-o", "addr", "show", "dev", "docker0"], check=False).stdout
    return link.stdout.split(":")[0], sorted(line.split()[3] for line in addrs.splitlines())
