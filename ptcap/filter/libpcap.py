"""A thin ctypes binding over the system libpcap: compile pcap-filter expressions, run them offline."""
from __future__ import annotations

import ctypes
import ctypes.util
import struct
import tempfile

from ptcap.errors import PtcapError

PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
_ERRBUF_SIZE = 256


class BpfInsn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte),
                ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class BpfProgramStruct(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(BpfInsn))]


class PcapPkthdr(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long),
                ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]


class PcapIf(ctypes.Structure):
    pass


PcapIf._fields_ = [("next", ctypes.POINTER(PcapIf)), ("name", ctypes.c_char_p),
                   ("description", ctypes.c_char_p), ("addresses", ctypes.c_void_p),
                   ("flags", ctypes.c_uint32)]


_lib: ctypes.CDLL | None = None


def lib() -> ctypes.CDLL:
    """Load libpcap once and declare the prototypes we use."""
    global _lib
    if _lib is not None:
        return _lib
    name = ctypes.util.find_library("pcap") or "libpcap.so.0.8"
    try:
        pcap = ctypes.CDLL(name)
    except OSError as e:
        raise PtcapError(f"cannot load libpcap ({name}): {e}") from None
    pcap.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
    pcap.pcap_open_dead.restype = ctypes.c_void_p
    pcap.pcap_open_offline.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    pcap.pcap_open_offline.restype = ctypes.c_void_p
    pcap.pcap_close.argtypes = [ctypes.c_void_p]
    pcap.pcap_close.restype = None
    pcap.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(BpfProgramStruct),
                                  ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32]
    pcap.pcap_compile.restype = ctypes.c_int
    pcap.pcap_geterr.argtypes = [ctypes.c_void_p]
    pcap.pcap_geterr.restype = ctypes.c_char_p
    pcap.pcap_offline_filter.argtypes = [ctypes.POINTER(BpfProgramStruct),
                                         ctypes.POINTER(PcapPkthdr), ctypes.c_char_p]
    pcap.pcap_offline_filter.restype = ctypes.c_int
    pcap.pcap_freecode.argtypes = [ctypes.POINTER(BpfProgramStruct)]
    pcap.pcap_freecode.restype = None
    pcap.pcap_lib_version.argtypes = []
    pcap.pcap_lib_version.restype = ctypes.c_char_p
    pcap.bpf_image.argtypes = [ctypes.POINTER(BpfInsn), ctypes.c_int]
    pcap.bpf_image.restype = ctypes.c_char_p
    pcap.pcap_datalink_val_to_name.argtypes = [ctypes.c_int]
    pcap.pcap_datalink_val_to_name.restype = ctypes.c_char_p
    pcap.pcap_datalink_val_to_description.argtypes = [ctypes.c_int]
    pcap.pcap_datalink_val_to_description.restype = ctypes.c_char_p
    pcap.pcap_datalink_name_to_val.argtypes = [ctypes.c_char_p]
    pcap.pcap_datalink_name_to_val.restype = ctypes.c_int
    pcap.pcap_tstamp_type_name_to_val.argtypes = [ctypes.c_char_p]
    pcap.pcap_tstamp_type_name_to_val.restype = ctypes.c_int
    pcap.pcap_findalldevs.argtypes = [ctypes.POINTER(ctypes.POINTER(PcapIf)), ctypes.c_char_p]
    pcap.pcap_findalldevs.restype = ctypes.c_int
    pcap.pcap_freealldevs.argtypes = [ctypes.POINTER(PcapIf)]
    pcap.pcap_freealldevs.restype = None
    _lib = pcap
    return pcap


def lib_version() -> str:
    return lib().pcap_lib_version().decode()


def devices() -> list[tuple[str, str, int]]:
    """libpcap's capture devices of ptcap's network namespace, in its order (tcpdump -D's):
    (name, description or "", PCAP_IF_* flags)."""
    pcap = lib()
    head = ctypes.POINTER(PcapIf)()
    errbuf = ctypes.create_string_buffer(_ERRBUF_SIZE)
    if pcap.pcap_findalldevs(ctypes.byref(head), errbuf) != 0:
        raise PtcapError(errbuf.value.decode(errors="replace"))
    found = []
    node = head
    try:
        while node:
            dev = node.contents
            found.append((dev.name.decode(errors="replace"),
                          dev.description.decode(errors="replace") if dev.description else "", dev.flags))
            node = dev.next
    finally:
        if head:
            pcap.pcap_freealldevs(head)
    return found


def datalink_name(linktype: int) -> tuple[str, str]:
    """(name, description) of a DLT as libpcap spells them, e.g. ('EN10MB', 'Ethernet')."""
    pcap = lib()
    # libpcap names DLTs; a few LINKTYPE_ values differ from their DLT_ values
    dlt = _LINKTYPE_TO_DLT.get(linktype, linktype)
    name = pcap.pcap_datalink_val_to_name(dlt)
    desc = pcap.pcap_datalink_val_to_description(dlt)
    return (name.decode() if name else str(dlt)), (desc.decode() if desc else "")


_LINKTYPE_TO_DLT = {101: 12}  # LINKTYPE_RAW -> DLT_RAW on Linux


class PcapHandle:
    """A 'dead' pcap handle: a link type and snaplen to compile filters against."""

    def __init__(self, linktype: int, snaplen: int = 262144) -> None:
        self._lib = lib()
        self.ptr = self._lib.pcap_open_dead(_LINKTYPE_TO_DLT.get(linktype, linktype), snaplen)
        if not self.ptr:
            raise PtcapError(f"pcap_open_dead failed for link-type {linktype}")

    def close(self) -> None:
        if self.ptr:
            self._lib.pcap_close(self.ptr)
            self.ptr = None

    def __enter__(self) -> "PcapHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def geterr(self) -> str:
        return self._lib.pcap_geterr(self.ptr).decode(errors="replace")


def open_dead(linktype: int, snaplen: int = 262144) -> PcapHandle:
    return PcapHandle(linktype, snaplen)


class SavefileHandle(PcapHandle):
    """A handle as tcpdump -r has it: a savefile of the link type, snaplen and byte order
    (struct prefix "<" or ">") of the file being read, made of its header alone. libpcap
    compiles some link types otherwise for a file than for a dead handle: for DLT_NULL it
    matches the address family in the writer's byte order and every BSD value of AF_INET6."""

    def __init__(self, linktype: int, snaplen: int, order: str) -> None:
        self._lib = lib()
        header = struct.pack(order + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)
        errbuf = ctypes.create_string_buffer(256)
        with tempfile.NamedTemporaryFile(prefix="ptcap-link-", suffix=".pcap") as f:
            f.write(header)
            f.flush()
            self.ptr = self._lib.pcap_open_offline(f.name.encode(), errbuf)
        if not self.ptr:
            raise PtcapError(f"pcap_open_offline failed for link-type {linktype}: "
                             f"{errbuf.value.decode(errors='replace')}")


def open_savefile(linktype: int, snaplen: int, order: str) -> PcapHandle:
    """A savefile handle, or a dead one where libpcap takes no file of that link type."""
    try:
        return SavefileHandle(linktype, snaplen, order)
    except PtcapError:
        return PcapHandle(linktype, snaplen)


class BpfProgram:
    """A compiled classic BPF program; free() (or garbage collection) releases it."""

    def __init__(self) -> None:
        self.prog = BpfProgramStruct()
        self._lib = lib()
        self._compiled = False
        self._hdr = PcapPkthdr()

    def instructions(self) -> list[tuple[int, int, int, int]]:
        return [(i.code, i.jt, i.jf, i.k)
                for i in (self.prog.bf_insns[n] for n in range(self.prog.bf_len))]

    def verdict(self, data: bytes, orig_len: int) -> int:
        """pcap_offline_filter's raw result: 0 = reject, otherwise the snap length to keep."""
        hdr = self._hdr
        hdr.caplen = len(data)
        hdr.len = orig_len
        return self._lib.pcap_offline_filter(ctypes.byref(self.prog), ctypes.byref(hdr), data) & 0xFFFFFFFF

    def matches(self, data: bytes, orig_len: int) -> bool:
        """Run the filter on one packet as pcap_offline_filter does."""
        hdr = self._hdr
        hdr.caplen = len(data)
        hdr.len = orig_len
        return self._lib.pcap_offline_filter(ctypes.byref(self.prog), ctypes.byref(hdr), data) != 0

    @classmethod
    def from_instructions(cls, insns: list[tuple[int, int, int, int]]) -> "BpfProgram":
        """A program from (code, jt, jf, k) tuples, to run hand-made or stored code offline."""
        prog = cls()
        array = (BpfInsn * max(len(insns), 1))(*(BpfInsn(c, jt, jf, k) for c, jt, jf, k in insns))
        prog._array = array  # keeps the memory alive; not ours to pcap_freecode
        prog.prog.bf_len = len(insns)
        prog.prog.bf_insns = ctypes.cast(array, ctypes.POINTER(BpfInsn))
        return prog

    def free(self) -> None:
        if self._compiled:
            self._lib.pcap_freecode(ctypes.byref(self.prog))
            self._compiled = False

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:
            pass


def compile(handle: PcapHandle, expression: str, optimize: bool = True,
            netmask: int = PCAP_NETMASK_UNKNOWN) -> BpfProgram:
    """Compile a pcap-filter expression; raise PtcapError in tcpdump's words on failure."""
    prog = BpfProgram()
    rc = lib().pcap_compile(handle.ptr, ctypes.byref(prog.prog), expression.encode(),
                            1 if optimize else 0, netmask)
    if rc != 0:
        # tcpdump prints pcap_geterr() as is: "can't parse filter expression: syntax error"
        # for grammar errors, plain messages ("illegal port number 99999 > 65535") otherwise
        raise PtcapError(handle.geterr())
    prog._compiled = True
    return prog


def insn_image(insn: tuple[int, int, int, int], index: int) -> str:
    """One instruction as tcpdump -d prints it (libpcap's bpf_image)."""
    return lib().bpf_image(ctypes.byref(BpfInsn(*insn)), index).decode()
