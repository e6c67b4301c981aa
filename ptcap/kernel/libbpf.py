"""A thin binding over the system libbpf (libbpf.so.1): open, load and attach CO-RE objects.

Only what ptcap uses. Every object and link is closed by its owner (a capture Session).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from pathlib import Path
from typing import ContextManager, Iterable

from ptcap.errors import PtcapError

_lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
_libc = ctypes.CDLL(None, use_errno=True)

_p = ctypes.c_void_p
for _name, _res, _args in (
    ("bpf_object__open_file", _p, [ctypes.c_char_p, _p]),
    ("bpf_object__load", ctypes.c_int, [_p]),
    ("bpf_object__close", None, [_p]),
    ("bpf_object__find_program_by_name", _p, [_p, ctypes.c_char_p]),
    ("bpf_object__find_map_by_name", _p, [_p, ctypes.c_char_p]),
    ("bpf_object__next_program", _p, [_p, _p]),
    ("bpf_program__fd", ctypes.c_int, [_p]),
    ("bpf_program__name", ctypes.c_char_p, [_p]),
    ("bpf_program__set_autoload", ctypes.c_int, [_p, ctypes.c_bool]),
    ("bpf_program__attach", _p, [_p]),
    ("bpf_program__attach_cgroup", _p, [_p, ctypes.c_int]),
    ("bpf_program__attach_iter", _p, [_p, _p]),
    ("bpf_program__attach_uprobe_opts", _p, [_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, _p]),
    ("bpf_map__fd", ctypes.c_int, [_p]),
    ("bpf_map__set_max_entries", ctypes.c_int, [_p, ctypes.c_uint32]),
    ("bpf_map__reuse_fd", ctypes.c_int, [_p, ctypes.c_int]),
    ("bpf_map__set_initial_value", ctypes.c_int, [_p, ctypes.c_char_p, ctypes.c_size_t]),
    ("bpf_link__fd", ctypes.c_int, [_p]),
    ("bpf_link__destroy", ctypes.c_int, [_p]),
    ("bpf_iter_create", ctypes.c_int, [ctypes.c_int]),
    ("libbpf_major_version", ctypes.c_uint32, []),
    ("libbpf_minor_version", ctypes.c_uint32, []),
):
    _fn = getattr(_lib, _name)
    _fn.restype = _res
    _fn.argtypes = _args

# libbpf reports (the verifier log among it) through a printf-style callback; collect it
# per thread so a failed load can say why.
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
_log = threading.local()


_DEBUG = 2          # enum libbpf_print_level: WARN 0, INFO 1, DEBUG 2
_TEXT_SIZE = 1 << 24  # a verifier log can be megabytes, and its reason is at the end


@_PRINT_FN
def _print(level: int, fmt: bytes, args: int) -> int:
    lines = getattr(_log, "lines", None)
    if lines is None or level >= _DEBUG:
        return 0
    buf = getattr(_log, "buf", None)
    if buf is None:
        buf = _log.buf = ctypes.create_string_buffer(_TEXT_SIZE)
    _libc.vsnprintf(buf, _TEXT_SIZE, fmt, args)
    lines.append(buf.value.decode(errors="replace"))
    return 0


_lib.libbpf_set_print.restype = _p
_lib.libbpf_set_print.argtypes = [_PRINT_FN]
_lib.libbpf_set_print(_print)


def version() -> str:
    return f"{_lib.libbpf_major_version()}.{_lib.libbpf_minor_version()}"


def objects_dir() -> Path:
    """Where the compiled BPF objects are: $PTCAP_BPF_DIR, else bpf/build in the source tree."""
    env = os.environ.get("PTCAP_BPF_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "bpf" / "build"


def _errno_text() -> str:
    return os.strerror(ctypes.get_errno() or 1)


class _UprobeOpts(ctypes.Structure):
    """libbpf 1.1's struct bpf_uprobe_opts."""
    _fields_ = [("sz", ctypes.c_size_t), ("ref_ctr_offset", ctypes.c_size_t), ("bpf_cookie", ctypes.c_uint64),
                ("retprobe", ctypes.c_bool), ("func_name", ctypes.c_char_p)]


class Link:
    """An attachment owned through a bpf_link: destroying it (or dying) detaches it."""

    def __init__(self, ptr: int, what: str) -> None:
        self._ptr = ptr
        self.what = what

    @property
    def fd(self) -> int:
        return _lib.bpf_link__fd(self._ptr)

    def destroy(self) -> None:
        if self._ptr:
            _lib.bpf_link__destroy(self._ptr)
            self._ptr = None


class Program:
    def __init__(self, obj: "Object", ptr: int) -> None:
        self._obj = obj
        self._ptr = ptr

    @property
    def name(self) -> str:
        return _lib.bpf_program__name(self._ptr).decode()

    @property
    def fd(self) -> int:
        return _lib.bpf_program__fd(self._ptr)

    def set_autoload(self, on: bool) -> None:
        self._obj.set_autoload(self.name, on)

    def attach(self) -> Link:
        """Attach by section name (tp_btf, raw_tp, ...)."""
        return self._link(_lib.bpf_program__attach(self._ptr), "")

    def attach_cgroup(self, cgroup_fd: int, where: str = "") -> Link:
        return self._link(_lib.bpf_program__attach_cgroup(self._ptr, cgroup_fd), where)

    def attach_uprobe(self, path: str, offset: int, pid: int = -1, cookie: int = 0) -> Link:
        """A uprobe at file offset `offset` of `path`, in process `pid` only (-1: every process)."""
        opts = _UprobeOpts(ctypes.sizeof(_UprobeOpts), 0, cookie, False, None)
        ptr = _lib.bpf_program__attach_uprobe_opts(self._ptr, pid, path.encode(), offset, ctypes.byref(opts))
        return self._link(ptr, f"{path}+{offset:#x}" + (f" (pid {pid})" if pid >= 0 else ""))

    def run_iter(self, places: Iterable[ContextManager] = (contextlib.nullcontext(),)) -> None:
        """Run an iterator program to completion once in each place (its output is discarded).

        A place is entered while the iterator is created: socket iterators walk the network
        namespace current at that moment."""
        link = self._link(_lib.bpf_program__attach_iter(self._ptr, None), "")
        try:
            for place in places:
                try:
                    with place:
                        fd = _lib.bpf_iter_create(link.fd)
                except OSError:
                    continue          # the place went away (a namespace whose processes ended)
                if fd < 0:
                    raise PtcapError(f"running BPF iterator {self.name}: {os.strerror(-fd)}")
                try:
                    while os.read(fd, 65536):
                        pass
                finally:
                    os.close(fd)
        finally:
            link.destroy()

    def _link(self, ptr: int | None, where: str) -> Link:
        if not ptr:
            target = f" to {where}" if where else ""
            raise PtcapError(f"attaching BPF program {self.name}{target}: {_errno_text()}")
        return Link(ptr, f"{self.name}{' ' + where if where else ''}")


class Object:
    """A CO-RE object file opened and loaded through libbpf.

    What the caller sets before loading (map sizes, shared maps, which programs load) is
    remembered, so that load() can open the file again and retry without a program the
    kernel refused (see load)."""

    def __init__(self, name: str) -> None:
        self.path = objects_dir() / f"{name}.bpf.o"
        if not self.path.exists():
            raise PtcapError(f"BPF object {self.path} is missing: run ./install.sh (or make -C bpf)")
        self.name = name
        self._ptr = None
        self._setup: list[tuple[str, str, int | bytes]] = []     # (what, map or program, value)
        self.unavailable: dict[str, str] = {}            # program -> why this kernel refused it
        self.loaded = False
        self._open()

    def _open(self) -> None:
        self._ptr = _lib.bpf_object__open_file(str(self.path).encode(), None)
        if not self._ptr:
            raise PtcapError(f"opening BPF object {self.path}: {_errno_text()}")

    def program(self, name: str) -> Program:
        ptr = _lib.bpf_object__find_program_by_name(self._ptr, name.encode())
        if not ptr:
            raise PtcapError(f"BPF object {self.name} has no program {name}")
        return Program(self, ptr)

    def programs(self) -> list[Program]:
        out, ptr = [], None
        while True:
            ptr = _lib.bpf_object__next_program(self._ptr, ptr)
            if not ptr:
                return out
            out.append(Program(self, ptr))

    def _map(self, name: str) -> int:
        ptr = _lib.bpf_object__find_map_by_name(self._ptr, name.encode())
        if not ptr:
            raise PtcapError(f"BPF object {self.name} has no map {name}")
        return ptr

    def map_fd(self, name: str) -> int:
        return _lib.bpf_map__fd(self._map(name))

    def has_map(self, name: str) -> bool:
        return bool(_lib.bpf_object__find_map_by_name(self._ptr, name.encode()))

    def set_max_entries(self, map_name: str, n: int) -> None:
        self._apply("size", map_name, n)
        self._setup.append(("size", map_name, n))

    def reuse_map(self, map_name: str, fd: int) -> None:
        """Make this object use an existing map (shared between objects) instead of its own."""
        self._apply("reuse", map_name, fd)
        self._setup.append(("reuse", map_name, fd))

    def set_data(self, section: str, data: bytes) -> None:
        """Set the whole of a global data section (".rodata": what the verifier sees as
        constants) before load; `data` must be exactly its size."""
        self._apply("data", section, data)
        self._setup.append(("data", section, data))

    def set_autoload(self, prog: str, on: bool) -> None:
        self._apply("autoload", prog, int(on))
        self._setup.append(("autoload", prog, int(on)))

    def _apply(self, what: str, name: str, value) -> None:
        if what == "data":
            err = _lib.bpf_map__set_initial_value(self._map(name), value, len(value))
            if err < 0:
                raise PtcapError(f"setting BPF object {self.name}'s {name} ({len(value)} bytes): "
                                 f"{os.strerror(-err)}")
        elif what == "size":
            if _lib.bpf_map__set_max_entries(self._map(name), value) < 0:
                raise PtcapError(f"sizing BPF map {name}: {_errno_text()}")
        elif what == "reuse":
            err = _lib.bpf_map__reuse_fd(self._map(name), value)
            if err < 0:
                raise PtcapError(f"sharing BPF map {name}: {os.strerror(-err)}")
        else:
            ptr = _lib.bpf_object__find_program_by_name(self._ptr, name.encode())
            if not ptr and not value:
                return            # not in this object: it will not load anyway
            _lib.bpf_program__set_autoload(self.program(name)._ptr, bool(value))

    def load(self, optional: Iterable[str] = ()) -> None:
        """Load every program set to load. A program named in `optional` that the kernel (or
        libbpf, for this kernel) refuses does not fail the object: it is left out, with the
        reason in `unavailable`, and the others load without it. Any other failure raises,
        naming the kernel, the program and the verifier's or libbpf's reason."""
        optional = set(optional)
        while True:
            _log.lines = []
            try:
                err = _lib.bpf_object__load(self._ptr)
                lines = _log.lines
            finally:
                _log.lines = None
            if err >= 0:
                self.loaded = True
                return
            prog, message = load_failure(self.name, -err, lines)
            if prog not in optional or prog in self.unavailable:
                raise PtcapError(message)
            self.unavailable[prog] = message
            _lib.bpf_object__close(self._ptr)
            self._open()
            for what, name, value in self._setup:
                self._apply(what, name, value)
            for name in self.unavailable:
                self._apply("autoload", name, 0)

    def close(self) -> None:
        if self._ptr:
            _lib.bpf_object__close(self._ptr)
            self._ptr = None


def kernel_release() -> str:
    return os.uname().release


def load_failure(obj: str, err: int, lines: list[str]) -> tuple[str, str]:
    """(program, message): the program libbpf names as failing ("" if none) and a message
    with the kernel's version and the verifier's reason (the log's last lines) or, when the
    kernel never saw the program, libbpf's."""
    text = "".join(lines)
    prog = ""
    for line in text.splitlines():
        if "prog '" in line and "failed to load" in line:
            prog = line.split("prog '", 1)[1].split("'", 1)[0]
    what = f"program {prog} in {obj}" if prog else f"BPF object {obj}"
    head = f"loading {what} failed on Linux {kernel_release()}: {os.strerror(err)}"
    if "-- BEGIN PROG LOAD LOG --" in text:
        body = text.split("-- BEGIN PROG LOAD LOG --", 1)[1].split("-- END PROG LOAD LOG --", 1)[0]
        log = [l for l in body.strip().splitlines() if l.strip()][-6:]
        if log:
            return prog, head + "\n  verifier: " + "\n  ".join(log)
    reasons = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("libbpf: "):
            line = line[len("libbpf: "):]
        generic = ("failed to load object", "failed to load: -", "failed to prepare load attributes",
                   "BPF program load failed")
        if "ulimit -l" in line:        # libbpf's guess at any EPERM; memlock is not it since 5.11
            continue
        if any(g in line for g in generic) or not any(
                w in line for w in ("fail", "not found", "error", "invalid", "unsupported", "missing")):
            continue
        if prog and f"prog '{prog}'" not in line and "prog '" in line:
            continue
        reasons.append(line)
    if reasons:
        return prog, head + "\n  libbpf: " + reasons[0]
    return prog, head
