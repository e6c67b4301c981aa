"""Wireshark on a desktop: the system-wide install, capture by members of group wireshark
through the privileged helper (and what it refuses), and no orphan when tshark dies.

These tests run real unprivileged users (made here with useradd, removed after) through the
install that ./install.sh (extcap/install-wireshark.sh) made."""
from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import stat
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, _descendants, free_port, run, wait_clean

pytestmark = pytest.mark.root      # installs system-wide, makes users, namespaces

PREFIX = Path("/opt/ptcap")
HELPER = PREFIX / "libexec" / "ptcap-capture"


def folders() -> dict[str, str]:
    out = {}
    for line in run(["tshark", "-G", "folders"]).stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out.setdefault(key.strip(), value.strip())
    return out


@pytest.fixture(scope="module")
def installed():
    """The system-wide install, of this tree."""
    f = folders()
    extcap = Path(f["Extcap path"]) / "ptcap"
    assert extcap.exists(), f"{extcap} is missing: run ./install.sh"
    assert HELPER.exists(), f"{HELPER} is missing: run ./install.sh"
    for src in (ROOT / "ptcap").rglob("*.py"):
        dst = PREFIX / src.relative_to(ROOT)
        assert dst.exists() and dst.read_bytes() == src.read_bytes(), \
            f"{dst} is not this tree's {src}: run extcap/install-wireshark.sh {ROOT}"
    lua = Path(f["Global Lua Plugins"]) / "ptcap.lua"
    assert lua.read_bytes() == (ROOT / "lua/ptcap.lua").read_bytes(), f"{lua} is not this tree's: run ./install.sh"
    return f


def userdel(name: str, timeout: float = 15) -> None:
    """userdel refuses while a process of the user is still exiting (a session's dbus-daemon):
    try again until it is gone."""
    deadline = time.time() + timeout
    while run(["userdel", name], check=False).returncode not in (0, 6) and time.time() < deadline:
        time.sleep(0.2)


class User:
    def __init__(self, name: str, home: Path, groups: list[str]) -> None:
        self.name, self.home = name, home
        cmd = ["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh"]
        if groups:
            cmd += ["-G", ",".join(groups)]
        run(cmd + [name])
        home.mkdir()
        entry = pwd.getpwnam(name)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        os.chown(home, self.uid, self.gid)

    def argv(self, *cmd: str, env: dict[str, str] | None = None) -> list[str]:
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        return ["runuser", "-u", self.name, "--", "env", f"HOME={self.home}", *extra, *cmd]

    def run(self, *cmd: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*cmd, env=env), capture_output=True, text=True, cwd=self.home, **kw)

    def popen(self, *cmd: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*cmd, env=env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=self.home, **kw)


@pytest.fixture(scope="module")
def users(installed):
    """A member of group wireshark and a user outside it, with homes of their own."""
    top = Path(tempfile.mkdtemp(prefix="ptcap-users-", dir="/tmp"))
    top.chmod(0o755)
    tag = os.getpid() % 100000
    made = []
    try:
        member = User(f"ptcwm{tag}", top / "member", ["wireshark"])
        made.append(member)
        outsider = User(f"ptcwo{tag}", top / "outsider", [])
        made.append(outsider)
        yield member, outsider
    finally:
        for u in made:
            userdel(u.name)
        shutil.rmtree(top, ignore_errors=True)


def _tshark(user: User, *args: str, log: Path | None = None, duration: int = 6) -> subprocess.Popen:
    opts = ["-o", "extcap.ptcap.loglevel:info", "-o", f"extcap.ptcap.logfile:{log}"] if log else []
    return user.popen("tshark", "-i", "ptcap", "-a", f"duration:{duration}", *opts, *args)


def _wait_listening(log: Path, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and "listening on" in log.read_text():
            return
        time.sleep(0.05)
    proc.kill()
    out, err = proc.communicate()
    raise AssertionError(f"the capture did not start: {err}\n{log.read_text() if log.exists() else ''}")


# -- the install ---------------------------------------------------------------------------------
def test_helper_is_narrow_and_no_interpreter_holds_capabilities(installed):
    st = HELPER.stat()
    assert (st.st_uid, grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)) == (0, "wireshark", 0o750)
    caps = run(["getcap", str(HELPER)]).stdout.split()[-1]
    assert sorted(caps.removesuffix("=ep").split(",")) == ["cap_bpf", "cap_net_admin", "cap_perfmon"]
    python = os.path.realpath(PREFIX / ".venv/bin/python")
    for exe in {python, str(PREFIX / ".venv/bin/python"), "/usr/bin/python3"}:
        assert run(["getcap", exe]).stdout.strip() == "", f"{exe} holds capabilities"
    # a root-owned install no user can change
    for path in [PREFIX, *PREFIX.rglob("*")]:
        if path.is_symlink():
            continue
        st = path.lstat()
        assert st.st_uid == 0 and not st.st_mode & 0o022, f"{path} is writable by others"


def test_installed_in_wiresharks_global_folders_for_every_user(installed, users):
    member, outsider = users
    for user in (member, outsider):
        listed = user.run("tshark", "-D").stdout.splitlines()
        assert any(l.endswith(". ptcap (ptcap-processes)") for l in listed), listed
        assert any(l.endswith(". ptcap-drops (ptcap-kernel-drops)") for l in listed), listed
        fields = user.run("tshark", "-G", "fields").stdout
        assert "\tptcap.pid\t" in fields and "\tptcap.comm\t" in fields
        # nothing of ptcap in the user's own folders
        assert not list(user.home.rglob("*ptcap*")), list(user.home.rglob("*ptcap*"))


def test_profile_columns_and_coloring_keep_wiresharks_own(installed, users, tmp_path):
    member, _ = users
    profile = Path(installed["Global configuration"]) / "profiles" / "ptcap"
    rules = [l for l in (profile / "colorfilters").read_text().splitlines() if l.startswith(("@", "!@"))]
    default = [l for l in (Path(installed["Global configuration"]) / "colorfilters").read_text().splitlines()
               if l.startswith(("@", "!@"))]
    assert rules[0].startswith("@ptcap: kernel drop@ptcap.drop.reason@")
    assert rules[1:] == default         # every rule of Wireshark's, enabled, in its order
    # tshark -C ptcap: the profile's columns, for a user who never had the profile
    sample = member.home / "sample.pcapng"
    _sample_with_comment(sample)
    sample.chmod(0o644)
    out = member.run("tshark", "-C", "ptcap", "-r", str(sample), "-T", "fields", "-e", "_ws.col.Process",
                     "-e", "_ws.col.PID", "-e", "_ws.col.Container", "-e", "_ws.col.Pod")
    assert out.stdout.splitlines() == ["curl\t4242\tweb\tweb-0"], out.stderr
    # the Default profile is left as it is: no ptcap column
    plain = member.run("tshark", "-r", str(sample), "-T", "fields", "-e", "_ws.col.Process").stdout
    assert plain.strip() == ""


def _sample_with_comment(path: Path) -> None:
    """One UDP packet whose comment carries a process, a container and a pod, written by
    ptcap's own pcapng writer."""
    frame = bytes(12) + b"\x08\x00" + bytes.fromhex(
        "4500001c000100004011f9ce7f0000017f000001d431003500080000")
    comment = ("PID: 4242\nCmd: /usr/bin/curl\nArgs: curl x\nContainerName: web\n"
               "PodName: web-0\nPodNamespace: shop").encode()

    def block(btype: int, body: bytes) -> bytes:
        body += bytes(-len(body) & 3)
        return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = block(1, struct.pack("<HHI", 1, 0, 262144))
    opt = struct.pack("<HH", 1, len(comment)) + comment + bytes(-len(comment) & 3) + bytes(4)
    epb = block(6, struct.pack("<IIIII", 0, 0, 0, len(frame), len(frame)) + frame + bytes(-len(frame) & 3) + opt)
    path.write_bytes(shb + idb + epb)


# -- a member captures; everyone else is told why not --------------------------------------------
def test_member_captures_with_processes_without_sudo(installed, users, peers):
    member, _ = users
    port = free_port()
    peers("udp-server", str(port), "127.0.0.1")
    client = peers("udp-client", "127.0.0.1", str(port))
    log = member.home / f"extcap-{port}.log"
    t = _tshark(member, "-o", "extcap.ptcap.interfaces:lo", "-f", f"udp port {port}", "-T", "fields",
                "-e", "ptcap.pid", "-e", "udp.srcport", "-e", "udp.dstport", log=log)
    _wait_listening(log, t)
    # the privileged capture: the user's uid, capabilities, none ambient, not dumpable
    extcaps = [p for p in _descendants(t.pid) if b"ptcap.cli.extcap" in _cmdline(p)]
    assert len(extcaps) == 1
    status = dict(l.split(":", 1) for l in Path(f"/proc/{extcaps[0]}/status").read_text().splitlines())
    assert status["Uid"].split()[0] == str(member.uid)
    assert int(status["CapEff"], 16) == (1 << 39) | (1 << 38) | (1 << 12)
    assert int(status["CapAmb"], 16) == 0
    assert int(status["NoNewPrivs"]) == 1
    # ptrace is refused to the user himself (commoncap: more capabilities than the caller)
    peek = member.run("cat", f"/proc/{extcaps[0]}/environ")
    assert peek.returncode != 0
    for _ in range(3):
        client.say("send 64")
    out, err = t.communicate(timeout=30)
    rows = [l.split("\t") for l in out.splitlines() if l.strip()]
    assert rows, err
    assert all(str(port) in r[1:] for r in rows)
    assert str(client.pid) in {pid for r in rows for pid in r[0].split(",")}     # both ends named
    assert wait_clean() == []


def test_outsider_gets_one_line_naming_the_group(installed, users):
    _, outsider = users
    t = _tshark(outsider, duration=20)
    out, err = t.communicate(timeout=30)
    lines = [l for l in err.splitlines() if "ptcap:" in l]
    assert lines == [f"tshark: Error by extcap pipe: ptcap: capturing needs membership in group wireshark "
                     f"(an administrator runs `usermod -aG wireshark {outsider.name}`; then log in again), or root"]
    direct = outsider.run(str(HELPER), "--capture")
    assert direct.returncode != 0 and "Permission denied" in direct.stderr


# -- what the helper refuses --------------------------------------------------------------------
def _fifo(user: User, name: str) -> Path:
    path = user.home / name
    os.mkfifo(path)
    os.chown(path, user.uid, user.gid)
    return path


def _capture_once(user: User, *args: str, env: dict[str, str] | None = None, log: Path | None = None) -> tuple[int, str]:
    """The helper run as Wireshark runs it, its fifo read as dumpcap reads it; with a log,
    a capture that starts is ended (SIGTERM, as Wireshark ends it) once it listens."""
    fifo = _fifo(user, f"fifo-{time.monotonic_ns()}")
    more = ["--log-level", "info", "--log-file", str(log)] if log else []
    proc = user.popen(str(HELPER), "--capture", "--extcap-interface", "ptcap", "--fifo", str(fifo), *args, *more, env=env)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        deadline = time.time() + 30
        while proc.poll() is None and time.time() < deadline:
            if log and log.exists() and "listening on" in log.read_text():
                for pid in _descendants(proc.pid):
                    if b"ptcap.cli.extcap" in _cmdline(pid):
                        os.kill(pid, signal.SIGTERM)
                break
            time.sleep(0.05)
        _, err = proc.communicate(timeout=10)
    finally:
        os.close(fd)
    return proc.returncode, err


@pytest.mark.parametrize("args, message", [
    (("--", "sh", "-c", "id"), "ptcap: not an option of the ptcap extcap: --\n"),
    (("-w", "/etc/ptcap-test"), "ptcap: not an option of the ptcap extcap: -w\n"),
    (("--hook", "kfree_skb"), "ptcap: not an option of the ptcap extcap: --hook\n"),
    (("-I",), "ptcap: not an option of the ptcap extcap: -I\n"),
    (("--pid",), "ptcap: needs a value: --pid\n"),
    (("--netns", "/proc/1/ns/net"),
     "ptcap: --netns: capturing in another network namespace needs root (the wireshark group's capture enters none)\n"),
    # the dialog's "Decrypt TLS (embed keys)": an option of the extcap's, but its uprobes would
    # read the keys of every user's processes
    (("--embed-keylog-to-pcapng",),
     "ptcap: --embed-keylog-to-pcapng: reading the TLS keys of running processes needs root "
     "(the wireshark group's capture reads no process's keys)\n"),
    (("--embed-keylog-to-pcapng=yes",), "ptcap: takes no value: --embed-keylog-to-pcapng=yes\n"),
])
def test_helper_refuses_what_is_not_the_extcaps(installed, users, args, message):
    member, _ = users
    status, err = _capture_once(member, *args)
    assert (status, err) == (1, message)
    assert not Path("/etc/ptcap-test").exists()


def test_helper_first_argument_must_be_capture(installed, users):
    member, _ = users
    res = member.run(str(HELPER), "-c", "import os; os.system('id')")
    assert res.returncode == 1
    assert res.stderr == ("ptcap: this helper only runs captures for the ptcap extcap: "
                          "its first argument must be --capture\n")


def test_helper_writes_only_what_the_user_may(installed, users):
    """The fifo and the log file are opened with the user's rights: a root-owned file is
    neither written nor created, whatever path Wireshark is given."""
    member, _ = users
    target = Path(tempfile.mkdtemp(prefix="ptcap-root-", dir="/tmp"))
    target.chmod(0o755)
    victim = target / "victim"
    victim.write_text("root's\n")
    try:
        res = member.run(str(HELPER), "--capture", "--extcap-interface", "ptcap", "--fifo", str(victim), timeout=20)
        assert (res.returncode, res.stderr) == (1, f"ptcap: fifo {victim}: not a fifo\n")
        fifo = target / "rootfifo"
        os.mkfifo(fifo, 0o600)
        res = member.run(str(HELPER), "--capture", "--extcap-interface", "ptcap", "--fifo", str(fifo), timeout=20)
        assert (res.returncode, res.stderr) == (1, f"ptcap: fifo {fifo}: Permission denied\n")
        status, err = _capture_once(member, "--log-file", str(target / "made-by-root.log"))
        assert status == 1 and err == f"ptcap: log file {target}/made-by-root.log: Permission denied\n"
        assert victim.read_text() == "root's\n"
        assert sorted(p.name for p in target.iterdir()) == ["rootfifo", "victim"]
    finally:
        shutil.rmtree(target, ignore_errors=True)


def test_helper_ignores_the_users_environment_and_site(installed, users):
    """PYTHONPATH, PYTHONSTARTUP, LD_PRELOAD, a user site's usercustomize and a sitecustomize
    in the current directory would run the user's code: none of them runs."""
    member, _ = users
    marker = member.home / "ran-as-privileged"
    evil = member.home / "evil"
    evil.mkdir()
    code = f"import os; open({str(marker)!r}, 'w').write(str(os.geteuid()))\n"
    for name in ("sitecustomize.py", "usercustomize.py", "ptcap.py", "startup.py"):
        (evil / name).write_text(code)
    site = member.home / ".local/lib/python3.11/site-packages"
    site.mkdir(parents=True)
    (site / "usercustomize.py").write_text(code)
    (member.home / "sitecustomize.py").write_text(code)
    for path in [evil, *evil.iterdir(), member.home / ".local", *(member.home / ".local").rglob("*"),
                 member.home / "sitecustomize.py"]:
        os.chown(path, member.uid, member.gid)
    env = {"PYTHONPATH": str(evil), "PYTHONSTARTUP": str(evil / "startup.py"), "PYTHONUSERBASE": str(member.home / ".local"),
           "PYTHONHOME": str(evil), "LD_PRELOAD": str(evil / "nothing.so"), "PTCAP_BPF_DIR": str(evil),
           "PYTHONINSPECT": "1"}
    log = member.home / "env.log"
    status, err = _capture_once(member, "--interfaces", "lo", "--extcap-capture-filter", "udp port 9", env=env, log=log)
    assert status == 0, err
    assert "listening on" in log.read_text()
    assert not marker.exists()


# -- no orphans ---------------------------------------------------------------------------------
def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize("who", ["root", "member"])
def test_sigkill_of_tshark_ends_the_capture_within_two_seconds(installed, users, tmp_path, who):
    """A filter that matches nothing: no packet is ever written that would meet a broken pipe."""
    member, _ = users
    if who == "root":
        log = tmp_path / "extcap.log"
        t = subprocess.Popen(["tshark", "-i", "ptcap", "-o", "extcap.ptcap.interfaces:lo", "-f", "udp port 9",
                              "-o", "extcap.ptcap.loglevel:info", "-o", f"extcap.ptcap.logfile:{log}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        tshark = t.pid
    else:
        log = member.home / "orphan.log"
        t = _tshark(member, "-o", "extcap.ptcap.interfaces:lo", "-f", "udp port 9", log=log, duration=120)
    _wait_listening(log, t)
    if who == "member":
        tshark = next(p for p in _descendants(t.pid) if _cmdline(p).startswith(b"tshark\0"))
    family = _descendants(tshark) - {tshark}
    names = {p: _cmdline(p).split(b"\0")[0] for p in family}
    assert any(b"python" in n for n in names.values()) and any(n.endswith(b"dumpcap") for n in names.values()), names
    os.kill(tshark, signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < 5 and any(_cmdline(p) for p in family):
        time.sleep(0.05)
    took = time.monotonic() - killed
    left = {p: _cmdline(p) for p in family if _cmdline(p)}
    assert not left, f"still running {took:.1f} s after kill -9 of tshark: {left}"
    assert took < 2.0, f"took {took:.2f} s"
    t.communicate(timeout=10)
    assert wait_clean() == []
