"""Kernel addresses to `function+0xoffset` (`function+0xoffset [module]` in a module, as the
kernel prints its own addresses), from /proc/kallsyms (read once, bisected)."""
from __future__ import annotations

import bisect


_LONGEST_FUNCTION = 1 << 20


class KernelSymbols:
    def __init__(self, path: str = "/proc/kallsyms") -> None:
        entries = []
        try:
            with open(path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) < 3 or parts[1] not in "tTwW":
                        continue
                    addr = int(parts[0], 16)
                    if addr:
                        entries.append((addr, parts[2], f" {parts[3]}" if len(parts) > 3 else ""))
        except OSError:
            pass
        entries.sort()
        self._addrs = [a for a, _, _ in entries]
        self._names = [n for _, n, _ in entries]
        self._modules = [m for _, _, m in entries]

    def __bool__(self) -> bool:
        return bool(self._addrs)

    def name(self, addr: int) -> str:
        """'nf_hook_slow+0x9a', 'nft_do_chain+0x3e8 [nf_tables]', or the bare hex address when
        no symbol covers it."""
        i = bisect.bisect_right(self._addrs, addr) - 1
        # far past the nearest symbol: code kallsyms does not list (BPF trampolines)
        if i < 0 or not addr or addr - self._addrs[i] > _LONGEST_FUNCTION:
            return f"0x{addr:x}"
        return f"{self._names[i]}+0x{addr - self._addrs[i]:x}{self._modules[i]}"
