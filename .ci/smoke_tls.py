"""The kernel smoke check of TLS keys (run by .ci/kernel_smoke.py): a running Python program
(OpenSSL 3) that logs no keys has them read by ptcap's uprobes and written into the file, on
each kernel of the matrix (uprobes and the key ring are the kernel side of it)."""
from __future__ import annotations

import signal
import subprocess

from smoke_lib import ROOT, SENDER_PYTHON, TMP, Capture, sh

TLS_PEERS = ROOT / "tests" / "tls_peers.py"


def _peer(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([SENDER_PYTHON, str(TLS_PEERS), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, bufsize=1)
    line = proc.stdout.readline()
    assert line.startswith("ready"), f"tls peer {args[0]} said {line!r}"
    return proc, line.strip()


def check_tls_keys_of_a_running_program() -> None:
    """--pid of a running urllib client, --write-keylog-file: its TLS 1.3 keys (read at
    OpenSSL's key log point by a uprobe) are in the key file, and they are the server's."""
    cert, key, server_keys, keys = (TMP / n for n in ("tls.crt", "tls.key", "server.keys", "client.keys"))
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1")
    server, ready = _peer("server", str(cert), str(key), str(server_keys))
    client = None
    try:
        url = f"https://127.0.0.1:{ready.split()[1]}/k19tls"
        client, _ = _peer("client", url, "tls13", "1")
        cap = Capture("-i", "lo", "--pid", str(client.pid), "--write-keylog-file", str(keys),
                      "-w", str(TMP / "tls.pcapng"))
        cap.wait_listening()
        client.stdin.write("go\n")
        client.stdin.flush()
        said = client.stdout.readline().strip()
        assert said == "done you asked for /k19tls", said
        cap.proc.send_signal(signal.SIGINT)
        cap.finish()
    finally:
        for p in (client, server):
            if p is not None:
                p.kill()
                p.wait()
    got = set(keys.read_text().splitlines()) if keys.exists() else set()
    labels = {line.split()[0] for line in got}
    assert "CLIENT_TRAFFIC_SECRET_0" in labels, f"keys: {sorted(labels)}"
    assert got <= set(server_keys.read_text().splitlines()), "keys that are not the server's"


CHECKS = [check_tls_keys_of_a_running_program]
