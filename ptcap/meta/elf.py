"""Just enough ELF (64-bit little-endian) to place a uprobe: a function symbol's file offset
(from the symbol tables, or for Go from its pclntab, which stripping leaves), and whether a
binary was built by Go."""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass

_SHT_SYMTAB, _SHT_DYNSYM = 2, 11
_PT_LOAD = 1
_STT_FUNC = 2
_PCLN_GO118 = (0xFFFFFFF0, 0xFFFFFFF1)     # Go 1.18-1.19, 1.20 and later
_PCLN_GO116 = 0xFFFFFFFA                   # Go 1.16-1.17


@dataclass(slots=True)
class ElfFile:
    path: str
    sections: dict[str, tuple[int, int, int, int, int]]  # name → (type, offset, size, link, entsize)
    headers: list[tuple[int, int, int, int, int]]        # the same, by section index
    segments: list[tuple[int, int, int]]                 # PT_LOAD: (vaddr, offset, filesz)
    data: mmap.mmap
    addresses: dict[str, int] | None = None             # name → sh_addr

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
        if self.is_go and len(found) < len(names):
            found = {**self.go_functions(names - found.keys()), **found}
        return found

    def go_functions(self, names: set[str]) -> dict[str, int]:
        """The file offsets of the named functions from Go's pclntab (the runtime's own table
        of functions, there in a stripped binary too): each entry's name and start."""
        sec = self.sections.get(".gopclntab") or self.sections.get(".data.rel.ro.gopclntab")
        text = (self.addresses or {}).get(".text")
        d, found = self.data, {}
        if sec is None or text is None or not any(d.find(n.encode()) >= 0 for n in names):
            return found
        base, size = sec[1], sec[2]
        magic, _pad1, _pad2, _min_lc, ptr_size = struct.unpack_from("<IBBBB", d, base)
        if ptr_size != 8 or size < 72:
            return found
        if magic in _PCLN_GO118:        # entries: (uint32 offset from the text's start, uint32 _func)
            nfunc, _nfiles, _text, names_off, _cu, _files, _pc, pcln = struct.unpack_from("<8Q", d, base + 8)
            step, entry_fmt, start = 8, "<II", text
        elif magic == _PCLN_GO116:      # entries: (pc, _func offset), both uintptr
            nfunc, _nfiles, names_off, _cu, _files, _pc, pcln = struct.unpack_from("<7Q", d, base + 8)
            step, entry_fmt, start = 16, "<QQ", 0
        else:
            return found
        wanted = {n.encode(): n for n in names}
        table, strings = base + pcln, base + names_off
        for i in range(nfunc):
            entry, func = struct.unpack_from(entry_fmt, d, table + i * step)
            name_off = struct.unpack_from("<i", d, table + func + (4 if step == 8 else 8))[0]
            at = strings + name_off
            name = wanted.get(d[at:d.find(b"\0", at)])
            if name is not None and name not in found:
                offset = self.file_offset(start + entry)
                if offset is not None:
                    found[name] = offset
                if len(found) == len(names):
                    break
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
        return ElfFile(path, {}, [], segments, data, {})
    names_at = raw[shstrndx][4]
    sections: dict[str, tuple[int, int, int, int, int]] = {}
    headers, addresses = [], {}
    for sh_name, sh_type, _f, sh_addr, sh_off, sh_size, sh_link, _info, _align, sh_entsize in raw:
        start = names_at + sh_name
        name = data[start:data.find(b"\0", start)].decode(errors="replace")
        headers.append((sh_type, sh_off, sh_size, sh_link, sh_entsize))
        sections.setdefault(name, headers[-1])
        addresses.setdefault(name, sh_addr)
    return ElfFile(path, sections, headers, segments, data, addresses)
