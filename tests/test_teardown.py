"""A connection's teardown names its last owner after the socket is gone (FIN, RST, the
last ACKs of time-wait), TCP over IPv4 and IPv6."""
from __future__ import annotations

import subprocess

import pytest

from conftest import PYTHON, comments, tcp_settled, tshark_fields, wait_for

# The server (a forked child) answers and closes first; then in mode "rst" the client sends
# more (the server's kernel answers with a reset from its own socket: the server's is gone),
# in mode "tw" the client closes late (its FIN meets the server's time-wait socket).
TEARDOWN = """
import os, socket, sys, time
family = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
addr = "::1" if family == socket.AF_INET6 else "127.0.0.1"
mode = sys.argv[2]
srv = socket.socket(family, socket.SOCK_STREAM)
srv.bind((addr, 0))
port = srv.getsockname()[1]
srv.listen(1)
pid = os.fork()
if pid == 0:
    conn, _ = srv.accept()
    conn.recv(100)
    conn.sendall(b"response")
    conn.close()
    os._exit(0)
srv.close()
c = socket.socket(family, socket.SOCK_STREAM)
c.connect((addr, port))
c.sendall(b"request")
while c.recv(100):
    pass
os.waitpid(pid, 0)
time.sleep(0.2)                 # the server's socket is in time-wait (orphaned FIN_WAIT2)
if mode == "rst":
    try:
        c.sendall(b"more")
        time.sleep(0.2)
    except OSError:
        pass
c.close()
time.sleep(0.2)
print(os.getpid(), pid, port, flush=True)
"""


@pytest.mark.parametrize("family", ["4", "6"])
@pytest.mark.parametrize("mode", ["rst", "tw"])
def test_teardown_names_the_last_owner(capture, tmp_path, family, mode):
    out = tmp_path / "o.pcapng"
    cap = capture("-i", "lo", "-w", str(out), "ip6 and tcp" if family == "6" else "ip and tcp")
    done = subprocess.run([PYTHON, "-c", TEARDOWN, family, mode], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    client, server, port = done.stdout.split()
    port = int(port)
    wait_for(lambda: tcp_settled(port), what="the connection's last packet")
    cap.stop()
    rows = [(flags, int(sport), comments(c)) for flags, sport, c in
            tshark_fields(out, "tcp.flags.str", "tcp.srcport", "frame.comment",
                          display_filter=f"tcp.port == {port}")]
    # every packet names both ends, its sender and its receiver (until the server's first
    # receive, its connection is the listener's, which the client process made before it forked)
    assert len(rows) >= 10
    for flags, sport, c in rows:
        assert "PID" in c and "ReceiverPID" in c and {c["PID"], c["ReceiverPID"]} <= {client, server}, (flags, c)
    if mode == "rst":
        resets = [c for flags, sport, c in rows if "R" in flags]
        assert resets and all(c["PID"] == server and c["LastOwner"] == "yes" for c in resets), resets
        more = [c for flags, sport, c in rows if sport != port and "P" in flags][-1]
        assert more["ReceiverPID"] == server and more["ReceiverLastOwner"] == "yes"
    else:
        fin = [i for i, (flags, sport, c) in enumerate(rows) if "F" in flags and sport != port][-1]
        flags, sport, last_ack = rows[fin + 1]
        assert sport == port and "A" in flags and "F" not in flags
        assert last_ack["PID"] == server and last_ack["LastOwner"] == "yes"
        assert rows[fin][2]["ReceiverPID"] == server and rows[fin][2]["ReceiverLastOwner"] == "yes"
