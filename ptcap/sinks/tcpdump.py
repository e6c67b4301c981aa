"""tcpdump as ptcap's one decoder: packets go as pcap over a pipe to `tcpdump -r -` children
running unprivileged, and ptcap merges its own fields (interface, process, direction, the
ParentProc/Container/Pod suffixes, the -v blocks) into their lines.

Alignment never depends on the text tcpdump prints for a packet. After every packet ptcap
sends a *marker*: a tiny packet of the same link type whose printed line carries secrets drawn
for this run (random locally administered MAC addresses, or ICMP ids). The child's output is
cut at the markers' lines, so packet N's text is exactly what tcpdump printed between marker
N-1 and marker N; a payload (-A of a packet that reproduces tcpdump's own lines, numbers and
time stamps) cannot forge a marker it does not know. A marker carries the previous packet's
time stamp (so -ttt deltas stay right), its lines are removed, and packet numbers (-#) are
ptcap's own count. The first two markers of every child also tell how many lines a marker
prints with the user's flags (-xx, -XX and -AA add one).

The children are fed and read by one I/O thread: the capture thread only queues packets,
so a slow or dead tcpdump never stalls it. Beyond a bounded backlog, packets are counted
and not printed; a child that dies is restarted; either gap is said on the output, where it
happened.
"""
from __future__ import annotations

import collections
import ctypes
import fcntl
import grp
import os
import pwd
import secrets
import select
import shutil
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from ptcap.errors import PtcapError

TCPDUMP = shutil.which("tcpdump") or "/usr/bin/tcpdump"
DEFAULT_USER = "tcpdump"        # Debian's tcpdump drops to this user (its WITH_USER)
FALLBACK_USER = "nobody"
BACKLOG_BYTES = 16 << 20        # queued for a child beyond this: counted, not printed
PIPE_SIZE = 1 << 20
STUCK_SECONDS = 5.0             # at the end of a live capture, a child silent this long is left
_PR_SET_NO_NEW_PRIVS = 38
_F_SETPIPE_SZ = 1031
_REC = struct.Struct("<IIII")
_NSEC_MAGIC = 0xA1B23C4D         # classic pcap, nanosecond time stamps


@dataclass
class PrintFlags:
    """tcpdump's printing flags, as given, and how ptcap runs its children."""

    argv: list[str] = field(default_factory=list)   # every printing flag, for the child
    numeric: int = 0
    tstamp: int = 0
    number: bool = False
    nano: bool = False
    verbose: int = 0
    line_buffered: bool = False
    user: str | None = None     # -Z

    @classmethod
    def from_args(cls, args) -> "PrintFlags":
        g = lambda name, default=0: getattr(args, name, default) or default  # noqa: E731
        argv: list[str] = []
        for flag, dest in (("-A", "ascii"), ("-e", "link_header"), ("-n", "numeric"), ("-N", "no_domain"),
                           ("-q", "quiet"), ("-t", "tstamp"), ("-v", "verbose"), ("-x", "hex"),
                           ("-X", "hex_ascii")):
            argv += [flag] * int(g(dest))
        for flag, dest in (("-b", "asdot"), ("-f", "foreign"), ("-H", "mesh"), ("-K", "no_checksum"),
                           ("-S", "absolute_seq"), ("-u", "nfs_handles")):
            if g(dest, False):
                argv.append(flag)
        for flag, dest in (("-E", "esp_secret"), ("-M", "md5_secret"), ("-T", "packet_type")):
            if g(dest, None):
                argv += [flag, g(dest, None)]
        for module in g("mib_modules", []) or []:
            argv += ["-m", module]
        nano = g("ts_precision", "micro") == "nano"
        if nano:
            argv.append("--time-stamp-precision=nano")
        return cls(argv, int(g("numeric")), int(g("tstamp")), bool(g("number", False)), nano,
                   int(g("verbose")), bool(g("line_buffered", False)), g("relinquish_user", None))


def child_user(requested: str | None) -> pwd.struct_passwd:
    """The user the decoder runs as: -Z USER, else 'tcpdump' as tcpdump itself chooses,
    else 'nobody'; never root (tcpdump's '-Z root' keeps root: ptcap refuses it)."""
    names = [requested] if requested else [DEFAULT_USER, FALLBACK_USER]
    for name in names:
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        if pw.pw_uid == 0 or pw.pw_gid == 0:
            raise PtcapError(f"-Z {name}: the decoder never runs as root or with group root")
        return pw
    if requested:
        raise PtcapError(f"Couldn't find user '{requested}'")
    raise PtcapError(f"no user '{DEFAULT_USER}' or '{FALLBACK_USER}' to run tcpdump as (give -Z USER)")


def _unprivileged(pw: pwd.struct_passwd):
    """What runs in the child between fork and exec: the user's groups and ids (which drops
    every capability of a root process), and no way to gain any back through exec."""
    groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def drop() -> None:
        os.setgroups(groups)
        os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
        os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
        if prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            os._exit(126)
        if os.getuid() == 0 or os.geteuid() == 0:
            os._exit(126)
    return drop


def child_env() -> dict[str, str]:
    """A clean environment; TZ set, so the C library does not stat /etc/localtime for every
    time stamp (that is what an unset TZ costs; the zone is the same)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TZ": os.environ.get("TZ") or ":/etc/localtime"}
    for key in ("LANG", "LC_ALL", "LC_CTYPE"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def spawn(argv: list[str], user: pwd.struct_passwd, stdin, stdout, stderr) -> subprocess.Popen:
    """Start tcpdump with `argv` as `user`, no capabilities, in /."""
    if os.geteuid() != 0:       # nothing to drop: run as we are (tests as a user, say)
        preexec = None
    else:
        preexec = _unprivileged(user)
    try:
        return subprocess.Popen([TCPDUMP, *argv], stdin=stdin, stdout=stdout, stderr=stderr, cwd="/",
                                env=child_env(), preexec_fn=preexec, close_fds=True)
    except OSError as e:
        raise PtcapError(f"cannot run {TCPDUMP}: {e.strerror}") from None


def check_flags(flags: PrintFlags, user: pwd.struct_passwd, linktype: int = 1) -> None:
    """Run tcpdump once on an empty capture with the user's flags: a flag it refuses is the
    user's error, said as tcpdump says it."""
    head = struct.pack("<IHHiIII", _NSEC_MAGIC, 2, 4, 0, 0, 262144, linktype)
    proc = spawn([*flags.argv, "-r", "-"], user, subprocess.PIPE, subprocess.DEVNULL, subprocess.PIPE)
    _out, err = proc.communicate(head, timeout=30)
    if proc.returncode != 0:
        lines = [ln for ln in err.decode(errors="replace").splitlines()
                 if ln and not ln.startswith("reading from file")]
        text = lines[0] if lines else f"tcpdump exited with status {proc.returncode}"
        raise PtcapError(text.removeprefix("tcpdump: "))


# ---- markers ----------------------------------------------------------------------------------

def _mac_text(mac: bytes) -> bytes:
    return ":".join(f"{b:02x}" for b in mac).encode()


def _random_mac() -> bytes:
    first = (secrets.randbits(8) & 0xFC) | 0x02        # locally administered, unicast
    return bytes([first]) + secrets.token_bytes(5)


def _ipv4_marker(numeric: bool) -> tuple[bytes, bytes]:
    """An ICMP echo request: id and sequence are secrets; with -n the addresses too (without
    it tcpdump would look names up: 127.0.0.1 is /etc/hosts' localhost)."""
    ident, seq = secrets.randbits(16), secrets.randbits(16)
    if numeric:
        src = bytes([127]) + secrets.token_bytes(3)
        dst = bytes([127]) + secrets.token_bytes(3)
        text = ".".join(str(b) for b in src).encode() + b" > "
    else:
        src = dst = bytes([127, 0, 0, 1])
        text = f"id {ident}, seq {seq}".encode()
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    csum = _checksum(icmp)
    icmp = icmp[:2] + struct.pack("!H", csum) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0x4000, 64, 1, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    if numeric:
        text = text + ".".join(str(b) for b in dst).encode()
    return ip + icmp, text


def _ipv6_marker(numeric: bool) -> tuple[bytes, bytes]:
    ident, seq = secrets.randbits(16), secrets.randbits(16)
    loop = b"\0" * 15 + b"\1"
    icmp = struct.pack("!BBHHH", 128, 0, 0, ident, seq)
    ip = struct.pack("!IHBB16s16s", 0x60000000, len(icmp), 58, 64, loop, loop)
    return ip + icmp, f"id {ident}, seq {seq}".encode()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def make_marker(linktype: int, numeric: bool) -> tuple[bytes, bytes]:
    """(frame, secret text its printed line contains) for a link type; PtcapError if ptcap
    cannot mark packets of that type."""
    if linktype == 1:
        dst, src = _random_mac(), _random_mac()
        return dst + src + b"\x88\xb5", _mac_text(src)      # 0x88b5: local experimental
    if linktype in (12, 14, 101, 228):
        return _ipv4_marker(numeric)
    if linktype == 229:
        return _ipv6_marker(numeric)
    ip, text = _ipv4_marker(numeric)
    if linktype == 0:
        return struct.pack("=I", 2) + ip, text
    if linktype == 108:
        return struct.pack("!I", 2) + ip, text
    if linktype == 9:                                   # PPP: address, control, protocol IP
        return b"\xff\x03\x00\x21" + ip, text
    if linktype == 113:
        return struct.pack("!HHH8sH", 4, 772, 0, b"", 0x0800) + ip, text
    if linktype == 276:
        return struct.pack("!HHIHBB8s", 0x0800, 0, 1, 772, 4, 0, b"") + ip, text
    raise PtcapError(f"link-type {linktype}: ptcap cannot add its fields to tcpdump's lines for "
                     "this link type (--context= prints tcpdump's lines alone)")


# ---- one child --------------------------------------------------------------------------------

class _Child:
    """One `tcpdump -r -` for one link type: what was sent to it and its unparsed output."""

    def __init__(self, decoder: "Decoder", linktype: int) -> None:
        self.linktype = linktype
        self.frame, self.secret = make_marker(linktype, decoder.flags.numeric > 0)
        n = len(self.frame)
        frame = self.frame
        mark = struct.Struct("<IIII")
        self._mark_pack = lambda sec, nsec: mark.pack(sec, nsec, n, n) + frame
        argv = [*decoder.flags.argv, "-r", "-"]
        if decoder.flags.line_buffered:
            argv.insert(0, "-l")
        self.proc = spawn(argv, decoder.user, subprocess.PIPE, subprocess.PIPE, subprocess.PIPE)
        self.stdin = self.proc.stdin.fileno()
        self.stdout = self.proc.stdout.fileno()
        self.stderr = self.proc.stderr.fileno()
        for fd in (self.stdin, self.stdout, self.stderr):
            os.set_blocking(fd, False)
        for fd in (self.stdin, self.stdout):
            try:
                fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass
        self.pending: collections.deque[bytes] = collections.deque([struct.pack(
            "<IHHiIII", _NSEC_MAGIC, 2, 4, 0, 0, max(decoder.snaplen, 128), linktype)])
        self.pending_bytes = len(self.pending[0])
        self.expect: collections.deque = collections.deque()  # one entry per marker sent
        self.buf = b""
        self.token: bytes | None = None     # the marker line from its secret on, newline included
        self.extra = 0                      # lines a marker prints after that one
        self.lead = 0                       # and before it
        self.last_ts = 0
        self.err = b""
        self.stdin_open = True
        self.eof = False
        first = decoder.first_ts
        self.marker(first, None)
        self.marker(first, None)            # two: calibration
        if decoder.last_ts != first:
            self.marker(decoder.last_ts, None)  # -ttt: the delta of the next packet

    def marker(self, ts: int, entry) -> None:
        sec, nsec = divmod(ts, 1_000_000_000)
        rec = _REC.pack(sec, nsec, len(self.frame), len(self.frame)) + self.frame
        self.pending.append(rec)
        self.pending_bytes += len(rec)
        self.expect.append(entry)
        self.last_ts = ts

    def packet(self, ts: int, data: bytes, orig_len: int, entry) -> None:
        """The packet's record and, after it, a marker with its time stamp (the hot path)."""
        sec, nsec = divmod(ts, 1_000_000_000)
        mark = self._mark_pack(sec, nsec)
        self.pending.append(_REC.pack(sec, nsec, len(data), orig_len) + data + mark)
        self.pending_bytes += len(data) + len(mark) + 16
        self.expect.append(entry)
        self.last_ts = ts

    def flush_input(self) -> int:
        """Write what the pipe takes, a megabyte at a time; the bytes written."""
        pending = self.pending
        written = 0
        while pending and self.stdin_open:
            if len(pending) > 1 and len(pending[0]) < (1 << 20):
                take, size = [], 0
                while pending and size < (1 << 20):
                    chunk = pending.popleft()
                    take.append(chunk)
                    size += len(chunk)
                data = b"".join(take)
            else:
                data = pending.popleft()
            try:
                n = os.write(self.stdin, data)
            except BlockingIOError:
                n = 0
            except OSError:             # the child is gone: _died() says so
                self.stdin_open = False
                n = 0
            written += n
            self.pending_bytes -= n
            if n < len(data):
                pending.appendleft(data[n:])
                break
        return written

    def close_input(self) -> None:
        if self.stdin_open:
            self.stdin_open = False
            try:
                os.close(self.stdin)
            except OSError:
                pass
            self.proc.stdin = None

    def parse(self, data: bytes):
        """Yield (entry, text) for every packet whose marker has been printed."""
        buf = self.buf + data
        if self.token is None:
            buf = self._calibrate(buf)
            if self.token is None:
                self.buf = buf
                return
        pieces = buf.split(self.token)
        self.buf = pieces.pop()
        extra = self.extra
        lead = self.lead
        expect = self.expect.popleft
        for piece in pieces:
            start = 0
            for _ in range(extra):
                start = piece.index(b"\n", start) + 1
            end = piece.rfind(b"\n") + 1        # the rest is the marker's line up to its secret
            for _ in range(lead):               # and the marker's lines before that one
                end = piece.rfind(b"\n", 0, end - 1) + 1
            entry = expect()
            if entry is not None:
                yield entry, piece[start:end] if end > start else b""

    def _calibrate(self, buf: bytes) -> bytes:
        """The first two markers: which line carries the secret (`lead` lines before it), the
        text from the secret to that line's end (the token), and the lines after it (`extra`)."""
        at = buf.find(self.secret)
        if at < 0:
            if buf.count(b"\n") > 8:
                raise PtcapError("tcpdump's output does not show ptcap's marker packets: "
                                 f"{buf[:200].decode(errors='replace')!r}")
            return buf
        line = buf.rfind(b"\n", 0, at) + 1
        eol = buf.find(b"\n", at)
        if eol < 0:
            return buf
        token = buf[at:eol + 1]
        second = buf.find(token, eol + 1)
        if second < 0:
            return buf
        lead = buf.count(b"\n", 0, line)
        start2 = buf.rfind(b"\n", 0, second) + 1
        for _ in range(lead):
            start2 = buf.rfind(b"\n", 0, start2 - 1) + 1
        self.extra = buf.count(b"\n", eol + 1, start2)
        self.lead = lead
        self.token = token
        self.expect.popleft()
        self.expect.popleft()
        return buf[second + len(token):]       # the second marker's extra lines start it


# ---- the decoder -------------------------------------------------------------------------------

class Decoder:
    """Feed packets with ptcap's additions; their lines come out on `out`, in order.

    put() queues a packet for its link type's child; pump() moves bytes between ptcap and
    the children without blocking (the capture calls it after every batch and when idle). A
    live capture (lossless=False) never waits: beyond `backlog` bytes queued for a child, a
    packet is counted and not printed. A file (lossless=True) waits instead. Lines are written
    to `out` by a thread of their own, so a slow terminal or pipe never blocks the capture.
    """

    def __init__(self, flags: PrintFlags, out, snaplen: int = 262144, lossless: bool = False,
                 backlog: int = BACKLOG_BYTES) -> None:
        self.flags = flags
        self.user = child_user(flags.user)
        self.out = out
        self.snaplen = snaplen
        self.lossless = lossless
        self.backlog = backlog
        self.first_ts = 0
        self.last_ts = 0
        self.children: dict[int, _Child] = {}
        self._skipped = 0               # packets not printed: a child or the output behind
        self._skipped_said = 0
        self._seq = 0
        self._next = 0                  # next sequence number to write out
        self._done: dict[int, bytes] = {}
        self._number = 0
        self._ts_words = 0 if flags.tstamp == 1 else (2 if flags.tstamp == 4 else 1)
        self.restarts = 0
        self._closed = False
        self._writer = _Writer(out)

    # ---- the capture's side
    def put(self, ts_ns: int, linktype: int, data: bytes, orig_len: int,
            pre: bytes = b"", suf: bytes = b"", after: bytes = b"") -> bool:
        """Queue one packet; False when it will not be printed (a child or the output behind)."""
        writer = self._writer
        while True:
            child = self.children.get(linktype)
            if child is None:
                if self._seq == 0:
                    self.first_ts = self.last_ts = ts_ns
                child = self.children[linktype] = _Child(self, linktype)
            if child.pending_bytes <= self.backlog and writer.queued <= self.backlog:
                break
            if not self.lossless:
                self._skipped += 1
                return False
            self.pump(0.05)
        if child.last_ts != self.last_ts:
            child.marker(self.last_ts, None)        # another child printed the previous packet
        note = b""
        if self._skipped != self._skipped_said:
            note = self._skip_note()
        seq = self._seq
        self._seq += 1
        child.packet(ts_ns, data, orig_len, (seq, pre, suf, after, note))
        self.last_ts = ts_ns
        if child.pending_bytes > (1 << 18):
            self.pump(0)
        return True

    def _skip_note(self) -> bytes:
        n = self._skipped - self._skipped_said
        self._skipped_said = self._skipped
        return f"ptcap: {n} packet{'s' if n != 1 else ''} not printed: tcpdump fell behind\n".encode()

    def wake(self) -> None:
        self.pump(0)

    def pump(self, timeout: float = 0.0) -> None:
        """Write what the children take, read what they printed, write it out in order;
        wait at most `timeout` seconds for a child."""
        self._writer.check()
        children = list(self.children.values())
        if not children:
            return
        poller = select.poll()
        fds: dict[int, tuple[_Child, str]] = {}
        for child in children:
            if child.pending:
                child.flush_input()
            if not child.eof:
                poller.register(child.stdout, select.POLLIN)
                poller.register(child.stderr, select.POLLIN)
                fds[child.stdout] = (child, "out")
                fds[child.stderr] = (child, "err")
            if child.pending and child.stdin_open:
                poller.register(child.stdin, select.POLLOUT)
                fds[child.stdin] = (child, "in")
        for fd, _ev in poller.poll(int(timeout * 1000)):
            child, kind = fds[fd]
            if kind == "out":
                self._read_out(child)
            elif kind == "err":
                self._read_err(child)
            else:
                child.flush_input()
        self._write_out()
        for child in children:
            if child.eof and (child.expect or not self._closed):
                self._died(child)

    def close(self) -> None:
        """Print everything queued, stop the children."""
        self._closed = True
        try:
            progress, since = None, time.monotonic()
            while any(c.pending for c in self.children.values() if c.stdin_open) or \
                    any(not c.eof for c in self.children.values()):
                if not any(c.pending for c in self.children.values() if c.stdin_open):
                    for child in self.children.values():
                        child.close_input()
                self.pump(0.05)
                now = (sum(c.pending_bytes for c in self.children.values()), self._seq - self._next)
                if now != progress:
                    progress, since = now, time.monotonic()
                elif not self.lossless and time.monotonic() - since > STUCK_SECONDS:
                    self._give_up()
                    break
            self._write_out()
            if self._skipped != self._skipped_said:
                self._writer.put(self._skip_note())
        finally:
            for child in self.children.values():
                child.close_input()
                if child.proc.poll() is None:
                    child.proc.kill()
                child.proc.wait()
                for f in (child.proc.stdout, child.proc.stderr):
                    f.close()
            self.children.clear()
            self._writer.close()

    def _give_up(self) -> None:
        """At the end of a live capture, a child that prints nothing more is not waited for."""
        lost = sum(1 for c in self.children.values() for e in c.expect if e is not None)
        for child in self.children.values():
            for entry in child.expect:
                if entry is not None:
                    self._done.setdefault(entry[0], b"")
            child.expect.clear()
            child.eof = True
        self._write_out()
        self._writer.put(f"ptcap: {lost} packet{'s' if lost != 1 else ''} not printed: "
                         f"tcpdump stopped printing\n".encode())

    @property
    def skipped(self) -> int:
        return self._skipped

    # ---- output
    def _read_out(self, child: _Child) -> None:
        done = self._done
        words = self._ts_words
        number = self.flags.number
        while True:
            try:
                data = os.read(child.stdout, 1 << 18)
            except BlockingIOError:
                return
            if not data:
                child.eof = True
                return
            for (seq, pre, suf, after, note), text in child.parse(data):
                if pre or suf or after or note or number:
                    text = self._merge(text, pre, suf, after, note, words)
                done[seq] = text

    def _merge(self, text: bytes, pre: bytes, suf: bytes, after: bytes, note: bytes, words: int) -> bytes:
        if pre:
            i = 0
            n = len(text)
            while i < n and text[i] == 32:
                i += 1
            for _ in range(words):
                j = text.find(b" ", i)
                if j < 0:
                    break
                i = j + 1
            text = text[:i] + pre + text[i:]
        if suf:
            nl = text.find(b"\n")
            text = text[:nl] + suf + text[nl:] if nl >= 0 else text + suf
        if after:
            text = text + after
        if self.flags.number:
            self._number += 1
            text = b"%5d  " % self._number + text
        if note:
            text = note + text
        return text

    def _read_err(self, child: _Child) -> None:
        while True:
            try:
                data = os.read(child.stderr, 1 << 16)
            except BlockingIOError:
                return
            if not data:
                return
            child.err += data
            lines = child.err.split(b"\n")
            child.err = lines.pop()
            for line in lines:
                if line.startswith(b"reading from file -,") or not line:
                    continue
                sys.stderr.write(line.decode(errors="replace") + "\n")
                sys.stderr.flush()

    def _write_out(self) -> None:
        done = self._done
        if not done:
            return
        parts = []
        nxt = self._next
        while nxt in done:
            parts.append(done.pop(nxt))
            nxt += 1
        self._next = nxt
        if parts:
            self._writer.put(b"".join(parts))

    def _died(self, child: _Child) -> None:
        """A child exited before it printed everything it was sent: say so, start another."""
        status = child.proc.wait()
        lost = [e for e in child.expect if e is not None]
        how = f"signal {-status}" if status < 0 else f"status {status}"
        if child.token is None:         # it never printed a marker: restarting would not help
            err = child.err.decode(errors="replace").strip()
            raise PtcapError(f"tcpdump (the decoder) exited ({how}) before it printed anything"
                             + (f": {err}" if err else ""))
        for f in (child.proc.stdout, child.proc.stderr):
            f.close()
        del self.children[child.linktype]
        self.restarts += 1
        n = len(lost)
        note = (f"ptcap: tcpdump (the decoder) exited ({how}) and was restarted; "
                f"{n} packet{'s' if n != 1 else ''} not printed\n").encode()
        if lost:
            for i, entry in enumerate(lost):
                self._done[entry[0]] = note if i == 0 else b""
        else:
            self._write_out()
            if not self._done:
                self._writer.put(note)
        if not self._closed:
            self.children[child.linktype] = _Child(self, child.linktype)


class _Writer:
    """Writes the lines to ptcap's stdout from a thread of its own; `queued` is what waits."""

    def __init__(self, out) -> None:
        self.out = out
        self._queue: collections.deque = collections.deque()
        self._put = 0                   # bytes queued: the capture's thread only
        self._done = 0                  # bytes written: the writer thread only
        self._ready = threading.Event()
        self._stop = False
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ptcap-lines", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return self._put - self._done

    def put(self, data: bytes) -> None:
        self._put += len(data)
        self._queue.append(data)
        self._ready.set()

    def check(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _run(self) -> None:
        queue = self._queue
        while True:
            self._ready.wait()
            self._ready.clear()
            while queue:
                parts = [queue.popleft()]
                while queue and len(parts) < 1024:
                    parts.append(queue.popleft())
                data = b"".join(parts)
                try:
                    self.out.write(data)
                    self.out.flush()
                except BaseException as e:      # a closed pipe: said to the capture
                    self.failure = e
                    return
                self._done += len(data)
            if self._stop and not queue:
                return

    def close(self) -> None:
        self._stop = True
        self._ready.set()
        self._thread.join()
        self.check()
