"""TLS keys: `-w FILE -- CMD` embeds the command's SSLKEYLOGFILE keys, uprobes read the keys
of running Go and OpenSSL 3 programs, and tshark decrypts the HTTP inside with no option.
Real servers and clients on loopback (a certificate made here), TLS 1.2 and 1.3."""
from __future__ import annotations

import os
import select
import shutil
import signal
import stat
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PYTHON, ROOT, Peer, run, wait_clean

TLS_PEERS = ROOT / "tests" / "tls_peers.py"
VERSIONS = ("tls12", "tls13")
CURL_VERSION = {"tls12": ["--tlsv1.2", "--tls-max", "1.2"], "tls13": ["--tlsv1.3", "--tls-max", "1.3"]}
DSB = 0x0000000A


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("cert")
    cert, key = where / "cert.pem", where / "key.pem"
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"])
    return cert, key


class TlsServer:
    def __init__(self, peer: Peer, keylog: Path) -> None:
        self.peer = peer
        self.port = int(peer.ready.split()[1])
        self.keylog = keylog

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def lines(self) -> set[str]:
        """The server's own key log: the oracle for what ptcap found."""
        return {l for l in self.keylog.read_text().splitlines() if l and not l.startswith("#")}

    def secrets(self) -> set[str]:
        return {l.split()[2] for l in self.lines()}


@pytest.fixture
def tls_server(certificate, tmp_path):
    cert, key = certificate
    keylog = tmp_path / "server-keys.txt"
    p = Peer([PYTHON, str(TLS_PEERS), "server", str(cert), str(key), str(keylog)])
    yield TlsServer(p, keylog)
    p.stop()


@pytest.fixture(scope="session")
def goclient(tmp_path_factory) -> Path:
    """tests/goclient built with Debian's golang-go."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("go is missing (apt-get install golang-go): the Go key tests need it")
    out = tmp_path_factory.mktemp("go") / "goclient"
    env = dict(os.environ, GOCACHE=str(out.parent / "cache"), GOFLAGS="-mod=mod", CGO_ENABLED="0")
    run([go, "build", "-o", str(out), "."], cwd=ROOT / "tests" / "goclient", env=env)
    return out


def ptcap(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "ptcap.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, **kw)


def http_rows(path: Path) -> list[list[str]]:
    """Decrypted HTTP as tshark sees it, with no key option: (uri, status code, body)."""
    res = run(["tshark", "-r", str(path), "-Y", "http", "-T", "fields", "-E", "separator=\t",
               "-e", "http.request.uri", "-e", "http.response.code", "-e", "http.file_data"])
    return [line.split("\t") for line in res.stdout.splitlines()]


def assert_decrypted(path: Path, uri: str, times: int = 1) -> None:
    rows = http_rows(path)
    requests = [r for r in rows if r[0] == uri]
    responses = [r for r in rows if r[1] == "200"]
    assert len(requests) >= times, rows
    assert len(responses) >= times, rows
    body = responses[0][2].replace("\\n", "\n")            # tshark escapes the newline
    assert body == f"you asked for {uri}\n"


def block_types(path: Path) -> list[int]:
    data, off, out = path.read_bytes(), 0, []
    while off + 12 <= len(data):
        btype, length = struct.unpack_from("<II", data, off)
        out.append(btype)
        off += length
    return out


def dsb_lines(path: Path) -> set[str]:
    data, off, out = path.read_bytes(), 0, set()
    while off + 12 <= len(data):
        btype, length = struct.unpack_from("<II", data, off)
        if btype == DSB:
            kind, size = struct.unpack_from("<II", data, off + 8)
            assert kind == 0x544C534B
            out |= set(data[off + 16:off + 16 + size].decode().splitlines())
        off += length
    return out


def assert_not_printed(server: TlsServer, *outputs: str) -> None:
    for secret in server.secrets():
        for text in outputs:
            assert secret not in text.lower(), "a TLS secret was printed"


# -- 1. `-- CMD` gets its keys through SSLKEYLOGFILE -------------------------------------------
@pytest.mark.parametrize("version", VERSIONS)
def test_command_curl_is_decrypted_with_no_tshark_option(tls_server, tmp_path, version):
    out = tmp_path / "curl.pcapng"
    res = ptcap("-i", "lo", "-w", str(out), "--", "curl", "-sk", *CURL_VERSION[version],
                tls_server.url(f"/curl-{version}"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"you asked for /curl-{version}"
    assert_decrypted(out, f"/curl-{version}")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600           # the file holds secrets
    assert dsb_lines(out) and dsb_lines(out) <= tls_server.lines()
    assert_not_printed(tls_server, res.stdout, res.stderr)
    # the DSB comes before the first packet of the connection's encrypted part
    types = block_types(out)
    assert DSB in types and types.index(DSB) < len(types) - types[::-1].index(6) - 1


@pytest.mark.parametrize("version", VERSIONS)
def test_command_python_urllib_is_decrypted(tls_server, tmp_path, version):
    out = tmp_path / "py.pcapng"
    res = ptcap("-i", "lo", "-w", str(out), "--", PYTHON, str(TLS_PEERS), "get",
                tls_server.url(f"/urllib-{version}"), version)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"you asked for /urllib-{version}\n"
    assert_decrypted(out, f"/urllib-{version}")
    labels = {line.split()[0] for line in dsb_lines(out)}
    assert labels == ({"CLIENT_RANDOM"} if version == "tls12" else
                      {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                       "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET"})


def test_keys_that_come_after_their_packets_still_go_before_them(tls_server, tmp_path):
    """A TLS 1.3 client logs its handshake keys only once it has read the server's reply,
    which ptcap has captured by then: here 0.3 s later. The packets wait for their keys."""
    out = tmp_path / "slow.pcapng"
    res = ptcap("-i", "lo", "-w", str(out), "--", PYTHON, str(TLS_PEERS), "slow-get",
                tls_server.url("/slow"), "tls13", "0.3")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "you asked for /slow\n"
    assert_decrypted(out, "/slow")


@pytest.mark.parametrize("version", VERSIONS)
def test_command_go_program_is_decrypted(tls_server, goclient, tmp_path, version):
    """Go ignores SSLKEYLOGFILE: a Go command is probed from before its exec."""
    out = tmp_path / "go.pcapng"
    uri = f"/go-command-{version}"
    res = ptcap("-i", "lo", "-w", str(out), "--", str(goclient), tls_server.url(uri), version, "1", input="go\n")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == f"done you asked for {uri}"
    assert_decrypted(out, uri)
    assert dsb_lines(out) <= tls_server.lines()
    assert_not_printed(tls_server, res.stdout, res.stderr)


@pytest.fixture(scope="session")
def goclient_stripped(goclient) -> dict[str, Path]:
    """tests/goclient stripped (`-ldflags=-s -w`: no symbol table, as Debian builds its Go
    daemons), as a static and as a PIE binary."""
    env = dict(os.environ, GOCACHE=str(goclient.parent / "cache"), GOFLAGS="-mod=mod", CGO_ENABLED="0")
    out = {}
    for name, extra in (("stripped", []), ("stripped-pie", ["-buildmode=pie"])):
        out[name] = goclient.parent / f"goclient-{name}"
        run([shutil.which("go"), "build", *extra, "-ldflags=-s -w", "-o", str(out[name]), "."],
            cwd=ROOT / "tests" / "goclient", env=env)
    return out


def test_go_functions_are_found_in_the_pclntab_as_in_the_symbols(goclient, goclient_stripped):
    from ptcap.meta import elf
    from ptcap.meta.keylog import GO_KEYLOG_SYMBOL
    full = elf.read(str(goclient))
    assert full.has_symtab and full.go_functions({GO_KEYLOG_SYMBOL}) == full.function_offsets({GO_KEYLOG_SYMBOL})
    for path in goclient_stripped.values():
        e = elf.read(str(path))
        assert not e.has_symtab and set(e.function_offsets({GO_KEYLOG_SYMBOL})) == {GO_KEYLOG_SYMBOL}


@pytest.mark.parametrize("build", ["stripped", "stripped-pie"])
def test_command_stripped_go_program_is_decrypted(tls_server, goclient_stripped, tmp_path, build):
    """ptcpdump's test_gotls_keylog_stripped*: a Go binary without symbols is probed through its
    pclntab; its keys go to a key log file (beside a classic pcap) and into a pcapng."""
    uri = f"/go-{build}"
    keys, pcap, out = tmp_path / "keys.txt", tmp_path / "go.pcap", tmp_path / "go.pcapng"
    client = [str(goclient_stripped[build]), tls_server.url(uri), "tls13", "1"]
    res = ptcap("-i", "lo", "--write-keylog-file", str(keys), "-w", str(pcap), "--", *client, input="go\n")
    assert res.returncode == 0, res.stderr
    lines = set(keys.read_text().splitlines())
    assert len(lines) == 4 and lines <= tls_server.lines(), lines
    res = ptcap("-i", "lo", "--embed-keylog-to-pcapng", "-w", str(out), "--", *client, input="go\n")
    assert res.returncode == 0, res.stderr
    assert_decrypted(out, uri)
    assert_not_printed(tls_server, res.stdout, res.stderr)


def test_command_channel_is_private_and_goes_away(tmp_path):
    out = tmp_path / "env.pcapng"
    script = ('import os, stat; p = os.environ["SSLKEYLOGFILE"]; d = os.path.dirname(p); '
              'print(stat.S_ISFIFO(os.stat(p).st_mode), oct(os.stat(p).st_mode & 0o777), '
              'oct(os.stat(d).st_mode & 0o777), p)')
    res = ptcap("-i", "lo", "-w", str(out), "--", PYTHON, "-c", script)
    assert res.returncode == 0, res.stderr
    is_fifo, mode, dir_mode, path = res.stdout.split()
    assert (is_fifo, mode, dir_mode) == ("True", "0o600", "0o700")
    assert not os.path.exists(os.path.dirname(path))


# -- 4. keys only when asked for ----------------------------------------------------------------
def test_no_keys_without_the_flag_or_a_file(tls_server, tmp_path):
    # printing: the command gets no SSLKEYLOGFILE
    res = ptcap("-i", "lo", "-c", "1", "--", PYTHON, "-c",
                'import os; print(os.environ.get("SSLKEYLOGFILE", "unset"))')
    assert res.stdout.splitlines()[0] == "unset", res.stdout
    # a plain -w capture of a TLS client it did not start: no key in the file
    out = tmp_path / "plain.pcapng"
    cap = subprocess.Popen([PYTHON, "-m", "ptcap.cli", "-i", "lo", "-w", str(out), f"tcp port {tls_server.port}"],
                           cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert cap.stderr.readline().removeprefix("ptcap: ").startswith("listening on")
    env = dict(os.environ, SSLKEYLOGFILE=str(tmp_path / "client-keys.txt"))
    run(["curl", "-sk", tls_server.url("/plain")], env=env)
    cap.send_signal(signal.SIGINT)
    cap.communicate(timeout=20)
    assert 6 in block_types(out) and DSB not in block_types(out)
    assert http_rows(out) == []
    assert stat.S_IMODE(out.stat().st_mode) == 0o644          # as tcpdump makes it


@pytest.mark.parametrize("args, message", [
    (["--embed-keylog-to-pcapng"], "ptcap: --embed-keylog-to-pcapng writes keys into a -w file: give -w FILE"),
    (["--embed-keylog-to-pcapng", "-w", "{tmp}/x.pcap"], "ptcap: {tmp}/x.pcap: a classic pcap file cannot hold "
     "TLS keys: write pcapng for --embed-keylog-to-pcapng"),
    (["--write-keylog-file", "-"], "ptcap: --write-keylog-file needs a file name: keys are never printed"),
])
def test_key_flags_misused_are_one_line(tmp_path, args, message):
    res = ptcap("-i", "lo", *[a.format(tmp=tmp_path) for a in args])
    assert res.returncode == 1
    assert res.stderr == message.format(tmp=tmp_path) + "\n"


# -- 2. running programs, through uprobes -------------------------------------------------------
def _run_clients(server: TlsServer, clients: list[Peer], tmp_path: Path, *selectors: str,
                 uri: str) -> tuple[Path, Path, str]:
    out, keys = tmp_path / "running.pcapng", tmp_path / "keys.txt"
    cap = subprocess.Popen([PYTHON, "-m", "ptcap.cli", "-i", "lo", *selectors, "--embed-keylog-to-pcapng",
                            "--write-keylog-file", str(keys), "-w", str(out)],
                           cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    err = []
    while not err or not err[-1].removeprefix("ptcap: ").startswith("listening on"):
        line = cap.stderr.readline()
        assert line, "ptcap did not start: " + "".join(err)
        err.append(line)
    for c in clients:
        assert c.say("go") == f"done you asked for {uri}"
    cap.send_signal(signal.SIGINT)
    stdout, rest = cap.communicate(timeout=20)
    assert cap.returncode == 0, rest
    text = "".join(err) + rest + stdout
    assert_not_printed(server, text)
    return out, keys, text


@pytest.mark.parametrize("version", VERSIONS)
def test_running_go_program_is_decrypted(tls_server, goclient, tmp_path, version):
    uri = f"/go-{version}"
    client = Peer([str(goclient), tls_server.url(uri), version, "2"])
    try:
        out, keys, _ = _run_clients(tls_server, [client], tmp_path, "--pid", str(client.pid), uri=uri)
    finally:
        client.stop()
    assert_decrypted(out, uri, times=2)
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    lines = set(keys.read_text().splitlines())
    assert lines and lines <= tls_server.lines() and dsb_lines(out) == lines
    assert len({l.split()[1] for l in lines}) == 2           # both connections' client randoms


@pytest.mark.parametrize("version", VERSIONS)
def test_running_openssl_program_is_decrypted(tls_server, tmp_path, version):
    uri = f"/openssl-{version}"
    client = Peer([PYTHON, str(TLS_PEERS), "client", tls_server.url(uri), version, "2"])
    try:
        out, keys, _ = _run_clients(tls_server, [client], tmp_path, "--pid", str(client.pid), uri=uri)
    finally:
        client.stop()
    assert_decrypted(out, uri, times=2)
    lines = set(keys.read_text().splitlines())
    assert lines and lines <= tls_server.lines()
    labels = {l.split()[0] for l in lines}
    assert labels == ({"CLIENT_RANDOM"} if version == "tls12" else
                      {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                       "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET"})


def test_keys_are_those_of_the_selected_process_only(tls_server, goclient, tmp_path):
    uri = "/selected"
    mine = Peer([str(goclient), tls_server.url(uri), "tls13", "1"])
    others = [Peer([str(goclient), tls_server.url(uri), "tls13", "1"]),      # the same binary
              Peer([PYTHON, str(TLS_PEERS), "client", tls_server.url(uri), "tls13", "1"])]
    try:
        # the others run first: a key of theirs would be in the log before mine
        out, keys, _ = _run_clients(tls_server, [*others, mine], tmp_path, "--pid", str(mine.pid), uri=uri)
    finally:
        for p in (mine, *others):
            p.stop()
    randoms = {l.split()[1] for l in keys.read_text().splitlines()}
    hellos = run(["tshark", "-r", str(out), "-Y", "tls.handshake.type == 1", "-T", "fields",
                  "-e", "tls.handshake.random"]).stdout.split()
    assert len({l.split()[1] for l in tls_server.lines()}) == 3
    assert randoms == {h.replace(":", "") for h in hellos} and len(randoms) == 1
    assert_decrypted(out, uri)


def test_process_name_selects_whose_keys(tls_server, goclient, tmp_path):
    uri = "/by-name"
    mine = Peer([str(goclient), tls_server.url(uri), "tls13", "1"])
    other = Peer([PYTHON, str(TLS_PEERS), "client", tls_server.url(uri), "tls13", "1"])
    try:
        out, keys, _ = _run_clients(tls_server, [other, mine], tmp_path, "--pname", "goclient", uri=uri)
    finally:
        mine.stop()
        other.stop()
    lines = keys.read_text().splitlines()
    # Go logs four secrets per TLS 1.3 connection, OpenSSL's five include the exporter's
    assert {l.split()[0] for l in lines} == {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                                             "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"}
    assert len({l.split()[1] for l in lines}) == 1 and set(lines) <= tls_server.lines()
    assert_decrypted(out, uri)


def test_unsupported_library_is_said_once(tmp_path):
    lib = next((p for p in ("/usr/lib/x86_64-linux-gnu/libgnutls.so.30",) if os.path.exists(p)), None)
    assert lib, "libgnutls.so.30 is missing (Debian's libgnutls30)"
    code = f"import ctypes, sys; ctypes.CDLL({lib!r}); print('ready', flush=True); sys.stdin.read()"
    users = [Peer([PYTHON, "-c", code]) for _ in range(2)]
    try:
        cap = subprocess.Popen([PYTHON, "-m", "ptcap.cli", "-i", "lo", "--write-keylog-file", str(tmp_path / "k.txt"),
                                *[a for u in users for a in ("--pid", str(u.pid))], "-w", str(tmp_path / "x.pcapng")],
                               cwd=ROOT, stderr=subprocess.PIPE, text=True)
        err = []
        while not err or not err[-1].removeprefix("ptcap: ").startswith("listening on"):
            line = cap.stderr.readline()
            assert line, "".join(err)
            err.append(line)
        cap.send_signal(signal.SIGINT)
        err.append(cap.communicate(timeout=20)[1])
    finally:
        for u in users:
            u.stop()
    text = "".join(err)
    said = [l for l in text.splitlines() if "GnuTLS" in l]
    assert len(said) == 1, text
    assert said[0].startswith("ptcap: ") and "ptcap -- CMD" in said[0] and "SSLKEYLOGFILE" in said[0]


def test_uprobes_go_away_when_ptcap_is_killed(tls_server, goclient, tmp_path):
    client = Peer([str(goclient), tls_server.url("/kill"), "tls13", "1"])
    try:
        cap = subprocess.Popen([PYTHON, "-m", "ptcap.cli", "-i", "lo", "--pid", str(client.pid),
                                "--embed-keylog-to-pcapng", "-w", str(tmp_path / "k.pcapng")],
                               cwd=ROOT, stderr=subprocess.PIPE, text=True)
        assert cap.stderr.readline().removeprefix("ptcap: ").startswith("listening on")
        links = run(["bpftool", "link", "show"]).stdout
        assert "uprobe" in links or "perf_event" in links, links
        cap.send_signal(signal.SIGKILL)
        cap.wait()
        assert wait_clean() == []       # its keylog programs too, not another capture's on the machine
        # the client is untouched: its next request still works
        assert client.say("go") == "done you asked for /kill"
    finally:
        client.stop()


# -- 3. the extcap: live decryption in Wireshark's own reader -----------------------------------
def test_extcap_dialog_offers_the_switch():
    res = run([str(ROOT / "extcap" / "ptcap"), "--extcap-interface", "ptcap", "--extcap-config"])
    line = next(l for l in res.stdout.splitlines() if "{call=--embed-keylog-to-pcapng}" in l)
    assert "{type=boolflag}" in line
    from ptcap.cli import extcap
    opts = extcap.build_parser().parse_args(["--capture", "--extcap-interface", "ptcap", "--fifo", "f",
                                             "--embed-keylog-to-pcapng"])
    assert "--embed-keylog-to-pcapng" in extcap.cli_arguments(opts, "f")


def test_live_capture_through_dumpcap_shows_decrypted_http_while_running(tls_server, goclient, tmp_path):
    """The extcap writes to a fifo that tshark (dumpcap) reads live: the HTTP inside TLS is
    shown decrypted before the capture ends."""
    fifo, log = tmp_path / "fifo", tmp_path / "extcap.log"
    os.mkfifo(fifo)
    uri = "/live"
    client = Peer([str(goclient), tls_server.url(uri), "tls13", "1"])
    shark = subprocess.Popen(["tshark", "-i", str(fifo), "-l", "-Y", "http", "-T", "fields",
                              "-e", "http.request.uri", "-e", "http.response.code"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    ext = subprocess.Popen([str(ROOT / "extcap" / "ptcap"), "--capture", "--extcap-interface", "ptcap",
                            "--fifo", str(fifo), "--interfaces", "lo", "--pid", str(client.pid),
                            "--embed-keylog-to-pcapng", "--log-level", "info", "--log-file", str(log)])
    try:
        deadline = time.time() + 30
        while not (log.exists() and "listening on" in log.read_text()):
            assert time.time() < deadline and ext.poll() is None, log.read_text() if log.exists() else ""
            time.sleep(0.05)
        assert client.say("go") == f"done you asked for {uri}"
        # raw reads: a buffered readline after select would keep a second line that came
        # in the same read (the request's and the response's often do) out of sight
        fd, got = shark.stdout.fileno(), b""
        deadline = time.time() + 40       # dumpcap and tshark under load are slow to show it
        while b"\n\t200\n" not in b"\n" + got and time.time() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                got += chunk
        seen = got.decode().splitlines()
        assert ext.poll() is None, "the capture ended before tshark showed the HTTP"
        assert f"{uri}\t" in seen and "\t200" in seen, seen
    finally:
        ext.send_signal(signal.SIGTERM)
        ext.wait(timeout=20)
        shark.kill()
        shark.wait()
        client.stop()
    assert wait_clean() == []
