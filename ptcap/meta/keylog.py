"""TLS session keys, so that Wireshark decrypts what ptcap captured.

Two sources, one KeyLog:
  - `-- CMD`: the command starts with SSLKEYLOGFILE naming a fifo in a private directory
    (0700, the fifo 0600, owned by the user the command runs as); curl, Python's ssl, Node,
    Firefox and Chrome append a line per secret to it, and ptcap reads them.
  - Running programs: uprobes (bpf/keylog.bpf.c) on Go's crypto/tls key-log write path and
    on OpenSSL 3's SSL_read/SSL_write, whose secrets are found at offsets measured on the
    same libssl file (ptcap.meta.openssl_layout).
Lines are in the SSLKEYLOGFILE format (NSS key log). They are secrets: ptcap never prints
them; they go only to a --write-keylog-file FILE (created 0600) and into pcapng files as
Decryption Secrets Blocks (--embed-keylog-to-pcapng, or `-w` with `-- CMD`).
"""
from __future__ import annotations

import logging
import os
import shutil
import stat
import struct
import tempfile
from dataclasses import dataclass

from ptcap.errors import PtcapError
from ptcap.meta import elf, openssl_layout
from ptcap.meta.openssl_layout import TLS13_LABELS, digest_for, expand_label

log = logging.getLogger("ptcap")

GO_KEYLOG_SYMBOL = "crypto/tls.(*Config).writeKeyLog"
OPENSSL_PROBES = ("SSL_read", "SSL_read_ex", "SSL_write", "SSL_write_ex")
# TLS libraries whose keys ptcap cannot read in a running process (by mapped file name)
UNSUPPORTED = (("libssl.so.1.1", "OpenSSL 1.1"), ("libssl.so.1.0", "OpenSSL 1.0"),
               ("libgnutls.so", "GnuTLS"), ("libnss3.so", "NSS"), ("libwolfssl.so", "wolfSSL"),
               ("libmbedtls.so", "Mbed TLS"), ("libboringssl", "BoringSSL"))


# How long packets wait in a pcapng writer for the keys that decrypt them (a TLS 1.3
# client logs its handshake keys only after the server's reply has been captured).
KEY_HOLD_SECONDS = 0.5


def make_private(out) -> None:
    """A -w file that holds keys: 0600 before the first key goes in (not a fifo or stdout)."""
    try:
        fd = out.fileno()
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, 0o600)
    except (OSError, ValueError):
        pass


class KeyLog:
    """Every key line of this capture, each once, in the order seen; appended to a
    --write-keylog-file when one is given. Sinks take the lines they have not had yet."""

    def __init__(self, path: str | None = None) -> None:
        self.lines: list[str] = []
        self._seen: set[str] = set()
        self.sources: list = []
        self._fd = open_secret_file(path) if path else -1
        self.path = path

    def poll(self) -> None:
        for source in self.sources:
            self.add(source.poll())

    def add(self, lines: list[str]) -> None:
        new = []
        for line in lines:
            if line not in self._seen:
                self._seen.add(line)
                new.append(line)
        if not new:
            return
        self.lines.extend(new)
        if self._fd >= 0:
            try:
                os.write(self._fd, "".join(line + "\n" for line in new).encode())
            except OSError as e:
                raise PtcapError(f"{self.path}: {e.strerror}") from None

    def close(self) -> None:
        for source in self.sources:
            source.close()
        self.sources = []
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def open_secret_file(path: str) -> int:
    """A key log file: created 0600 (made 0600 if it was there), appended to."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise PtcapError(f"{path}: {e.strerror}") from None
    if stat.S_ISREG(os.fstat(fd).st_mode):
        os.fchmod(fd, 0o600)
    return fd


class CommandChannel:
    """SSLKEYLOGFILE for `-- CMD`: a fifo only ptcap and the command's user can open."""

    def __init__(self, uid: int | None = None, gid: int | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="ptcap-keys-")     # 0700
        self.path = os.path.join(self.dir, "sslkeylog")
        os.mkfifo(self.path, 0o600)
        if uid is not None:
            os.chown(self.dir, uid, gid if gid is not None else -1)
            os.chown(self.path, uid, gid if gid is not None else -1)
        # our own writer keeps the fifo open: reads say "nothing yet", never end of file
        self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._keep = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._partial = b""

    @property
    def env(self) -> dict[str, str]:
        return {"SSLKEYLOGFILE": self.path}

    def poll(self) -> list[str]:
        if self._fd < 0:
            return []
        data = self._partial
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        *lines, self._partial = data.split(b"\n")
        return [text for text in (line.decode(errors="replace").strip() for line in lines)
                if text and not text.startswith("#")]

    def close(self) -> None:
        for fd in (self._fd, self._keep):
            if fd >= 0:
                os.close(fd)
        self._fd = self._keep = -1
        shutil.rmtree(self.dir, ignore_errors=True)


def command_channel() -> CommandChannel:
    """The channel for a command that runs as the invoking user under sudo (ptcap.cli.command)."""
    uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    if os.geteuid() == 0 and uid and gid:
        return CommandChannel(int(uid), int(gid))
    return CommandChannel()


# struct keylog_event of bpf/keylog.bpf.c
_EVENT = struct.Struct("<IIIIII32s32s64s320s")
_LAYOUT = struct.Struct("<10I")      # struct ossl_layout
MAX_LAYOUTS = 64                     # ossl_layouts' max_entries
KIND_GO, KIND_OPENSSL = 1, 2


@dataclass(slots=True)
class Target:
    """One binary to probe: a Go executable or a libssl.so.3, in a process or in all (-1)."""

    path: str
    kind: int
    pid: int
    key: tuple[int, int]     # (device, inode) of the file


class ProcessKeys:
    """Keys of running processes, through uprobes. `pids` None: every process."""

    def __init__(self, pids: set[int] | None) -> None:
        self._pids = pids
        self._obj = None
        self._links: list = []
        self._ring = None
        self._layouts: dict[tuple[int, int], int | None] = {}
        self._told: set[str] = set()
        self.probed: list[Target] = []

    def open(self) -> None:
        from ptcap.kernel import libbpf
        from ptcap.kernel.ringbuf import RingBuffer
        self._obj = libbpf.Object("keylog")
        self._obj.load()
        self._ring = RingBuffer(self._obj.map_fd("keylog_events"), 1 << 18)
        for target in find_targets(self._pids, self._say):
            self.attach(target)

    def add_command(self, pid: int, path: str) -> None:
        """The `-- CMD` child, held before it execs `path`: a Go program's keys, through uprobes
        (Go ignores SSLKEYLOGFILE)."""
        e = elf.read(path)
        if e is not None and e.is_go and e.function_offsets({GO_KEYLOG_SYMBOL}):
            st = os.stat(path)
            self.attach(Target(path, KIND_GO, pid, (st.st_dev, st.st_ino)))

    def attach(self, target: Target) -> None:
        e = elf.read(target.path)
        if e is None:
            return
        if target.kind == KIND_GO:
            offsets = e.function_offsets({GO_KEYLOG_SYMBOL})
            if not offsets:
                return
            prog, cookie = self._obj.program("ptcap_keylog_go"), 0
        else:
            cookie = self._layout(target)
            if cookie is None:
                return
            offsets = e.function_offsets(set(OPENSSL_PROBES))
            prog = self._obj.program("ptcap_keylog_ossl")
        for offset in offsets.values():
            try:
                self._links.append(prog.attach_uprobe(target.path, offset, target.pid, cookie))
            except PtcapError as err:
                self._say(target.path, f"{target.path}: cannot place a uprobe ({err}); "
                                       "keys of its processes are not captured")
                return
        self.probed.append(target)

    def _layout(self, target: Target) -> int | None:
        """The index of this libssl's measured layout in ossl_layouts (measured once)."""
        from ptcap.kernel import bpf
        if target.key in self._layouts:
            return self._layouts[target.key]
        self._layouts[target.key] = None
        result = openssl_layout.measure_apart(target.path)
        if "error" in result:
            self._say(target.path, f"{target.path}: its OpenSSL layout is not understood "
                                   f"({result['error']}): keys of its processes are not captured "
                                   "(ptcap reads OpenSSL 3.0 to 3.x)")
            return None
        index = sum(1 for v in self._layouts.values() if v is not None)
        if index >= MAX_LAYOUTS:
            self._say("layouts", f"more than {MAX_LAYOUTS} different libssl files: the keys of "
                                 f"processes using {target.path} are not captured")
            return None
        value = _LAYOUT.pack(result["random"], result["session"], result["master"], result["cipher"],
                             result["cipher_id"], *result["tls13"])
        bpf.map_update(self._obj.map_fd("ossl_layouts"), struct.pack("<I", index), value)
        self._layouts[target.key] = index
        return index

    def _say(self, what: str, message: str) -> None:
        if what not in self._told:
            self._told.add(what)
            log.info(message)

    def poll(self) -> list[str]:
        if self._ring is None:
            return []
        buf, offsets = self._ring.batch()
        lines: list[str] = []
        for off in offsets:
            lines.extend(event_lines(_EVENT.unpack_from(buf, off)))
        self._ring.release()
        return lines

    def lost(self) -> int:
        """Keys the kernel could not queue (the ring was full)."""
        from ptcap.kernel import bpf
        if self._obj is None or not self._obj.loaded:
            return 0
        value = bpf.map_lookup(self._obj.map_fd(".bss"), struct.pack("<I", 0), 8)
        return struct.unpack("<Q", value)[0] if value else 0

    def close(self) -> None:
        for link in self._links:
            link.destroy()
        self._links = []
        lost = self.lost()
        if lost:
            log.info(f"{lost} TLS key event{'s' if lost != 1 else ''} lost (the key ring was full): "
                     "some connections may not decrypt")
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None


def event_lines(fields: tuple) -> list[str]:
    """A keylog_event as key log lines."""
    kind, _tgid, label_len, secret_len, cipher_id, _pad, label, random, secret, tls13 = fields
    if kind == KIND_GO:
        return [f"{label[:label_len].decode(errors='replace')} {random.hex()} {secret[:secret_len].hex()}"]
    if (cipher_id & 0xFF00) != 0x1300:       # TLS 1.2 and older: the master key
        return [f"CLIENT_RANDOM {random.hex()} {secret[:48].hex()}"]
    digest = digest_for(cipher_id)
    size = digest().digest_size
    slots = [tls13[i * 64:i * 64 + size] for i in range(5)]
    hs_secret, hs_hash = slots[3], slots[4]
    lines = [f"CLIENT_HANDSHAKE_TRAFFIC_SECRET {random.hex()} "
             f"{expand_label(hs_secret, 'c hs traffic', hs_hash, size, digest).hex()}",
             f"SERVER_HANDSHAKE_TRAFFIC_SECRET {random.hex()} "
             f"{expand_label(hs_secret, 's hs traffic', hs_hash, size, digest).hex()}"]
    lines += [f"{label} {random.hex()} {value.hex()}" for label, value in zip(TLS13_LABELS, slots)]
    return lines


def find_targets(pids: set[int] | None, say) -> list[Target]:
    """The Go executables and libssl.so.3 files of these processes (None: of every process,
    each file once, probed in every process that maps it)."""
    targets: dict[tuple, Target] = {}
    seen: set[tuple[int, int]] = set()
    for pid in sorted(pids) if pids is not None else _all_pids():
        for target in _process_targets(pid, say, explicit=pids is not None, seen=seen):
            if pids is None:
                target.pid = -1
            targets.setdefault((target.key, target.pid), target)
    return list(targets.values())


def _all_pids() -> list[int]:
    return sorted(int(name) for name in os.listdir("/proc") if name.isdigit())


def _process_targets(pid: int, say, explicit: bool, seen: set[tuple[int, int]]) -> list[Target]:
    """This process's Go executable and libssl.so.3 (when not explicit: those not `seen` yet)."""
    root = f"/proc/{pid}/root"
    out: list[Target] = []
    try:
        with open(f"/proc/{pid}/maps") as f:
            maps = f.read().splitlines()
        exe = os.readlink(f"/proc/{pid}/exe")
        comm = open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        return out
    files: dict[str, tuple[int, int]] = {}
    for line in maps:
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            major, minor = (int(x, 16) for x in parts[3].split(":"))
            files.setdefault(parts[5], (os.makedev(major, minor), int(parts[4])))
    tls = False
    exe_path = f"/proc/{pid}/exe"
    try:
        st = os.stat(exe_path)
    except OSError:
        return out
    e = None
    if explicit or (st.st_dev, st.st_ino) not in seen:
        seen.add((st.st_dev, st.st_ino))
        e = elf.read(exe_path)
    if e is not None and e.is_go:
        if e.function_offsets({GO_KEYLOG_SYMBOL}):
            out.append(Target(exe_path if explicit else root + exe, KIND_GO, pid, (st.st_dev, st.st_ino)))
            tls = True
        elif e.data.find(GO_KEYLOG_SYMBOL.encode()) >= 0:    # named, but neither symbol nor pclntab entry
            say(exe, f"{exe} (pid {pid}, {comm}): a Go binary whose pclntab ptcap cannot read: it cannot "
                     "find its crypto/tls, its keys are not captured")
    for path, key in files.items():
        name = os.path.basename(path)
        if name.startswith("libssl.so.3"):
            out.append(Target(root + path, KIND_OPENSSL, pid, key))
            tls = True
            continue
        for prefix, library in UNSUPPORTED:
            if name.startswith(prefix):
                say(library, f"pid {pid} ({comm}) uses {library}: ptcap reads keys only from OpenSSL 3 "
                             "(libssl.so.3) and Go's crypto/tls in running programs; start it with "
                             "`ptcap -- CMD` to have its keys through SSLKEYLOGFILE")
    if explicit and not tls:
        say(f"pid{pid}", f"pid {pid} ({comm}): no TLS library ptcap can read (OpenSSL 3, Go crypto/tls) "
                         "is loaded: its keys are not captured")
    return out
