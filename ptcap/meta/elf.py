"""Just enough ELF (64-bit little-endian) to place a uprobe: a function symbol's file offset,
and whether a binary was built by Go."""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass

_SHT_SYMTAB, _SHT_DYNSYM = 2, 11
_PT_LOAD = 1
_STT_FUNC = 2


@dataclass(slots=True)
class ElfFile:
    path: str
    sections: dict[str, tuple[int, int, int, int, int]]  # name → (type, offset, size, link, entsize)
    headers: list[tuple[int, int, int, int, int]]        # the same, by section index
    segments: list[tuple[int, int, int]]                 # PT_LOAD: (vaddr, offset, filesz)
    data: mmap.mmap

    @property
    def is_go(self) -> bool:
        return ".go.buildinfo" in self.sections or ".note.go.buildid" in self.sections

    @property
    def has_symtab(self) -> bool:
        return ".symtab" in self.sections

    def function_offsets(self, names: set[str]) -> dict[str, int]:
        """The file offsets of the named functions (from .symtab, then .dynsym)."""
        found: dict[str, int] = {}
        for table in (".symtab", ".dynsym"):
            sec = self.sections.get(table)
            if sec is None:
                continue
            _type, off, size, link, entsize = sec
            strtab = self.headers[link]
            for at in range(off, off + size, entsize or 24):
                name_off, info, _other, shndx, value, _size = struct.unpack_from("<IBBHQQ", self.data, at)
                if info & 0xF != _STT_FUNC or not value or shndx == 0:
                    continue
                start = strtab[1] + name_off
                name = self.data[start:self.data.find(b"\0", start)].decode(errors="replace")
                name = name.split("@", 1)[0]
                if name in names and name not in found:
                    offset = self.file_offset(value)
                    if offset is not None:
                        found[name] = offset
        return found

    def file_offset(self, vaddr: int) -> int | None:
        for seg_vaddr, seg_off, filesz in self.segments:
            if seg_vaddr <= vaddr < seg_vaddr + filesz:
                return vaddr - seg_vaddr + seg_off
        return None


def read(path: str) -> ElfFile | None:
    """The file's sections and load segments; None when it is not a 64-bit LE ELF file."""
    try:
        with open(path, "rb") as f:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)   # pages read as needed
    except (OSError, ValueError):
        return None
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    (phoff, shoff, _flags, _ehsize, phentsize, phnum, shentsize, shnum,
     shstrndx) = struct.unpack_from("<QQIHHHHHH", data, 0x20)
    segments = []
    for i in range(phnum):
        p_type, _pflags, p_off, p_vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == _PT_LOAD:
            segments.append((p_vaddr, p_off, p_filesz))
    raw = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    if not raw or shstrndx >= len(raw):
        return ElfFile(path, {}, [], segments, data)
    names_at = raw[shstrndx][4]
    sections: dict[str, tuple[int, int, int, int, int]] = {}
    headers = []
    for sh_name, sh_type, _f, _addr, sh_off, sh_size, sh_link, _info, _align, sh_entsize in raw:
        start = names_at + sh_name
        name = data[start:data.find(b"\0", start)].decode(errors="replace")
        headers.append((sh_type, sh_off, sh_size, sh_link, sh_entsize))
        sections.setdefault(name, headers[-1])
    return ElfFile(path, sections, headers, segments, data)
