"""ARP and RARP (print-arp.c)."""
from __future__ import annotations

_HRD = {1: "Ethernet", 6: "IEEE 802", 15: "Frame Relay", 16: "ATM", 19: "ATM", 24: "IEEE1394",
        32: "InfiniBand"}
_OPS = {1: "Request", 2: "Reply", 3: "Reverse Request", 4: "Reverse Reply", 8: "InVerse Request",
        9: "InVerse Reply", 10: "NAK Reply"}


def arp_print(nd, b: bytes, off: int, length: int) -> None:
    nd.proto = "arp"
    out = nd.out
    if len(b) - off < 8:
        out.append(" [|arp]")
        return
    hrd = (b[off] << 8) | b[off + 1]
    pro = (b[off + 2] << 8) | b[off + 3]
    hln, pln = b[off + 4], b[off + 5]
    op = (b[off + 6] << 8) | b[off + 7]
    if hrd in (16, 19):  # ATM ARP has its own layout; not decoded here
        out.append(f"ARP, atm-arp-#{hrd}, length {length}" if not nd.e else f"atm-arp-#{hrd}, length {length}")
        return
    sha = off + 8
    spa = sha + hln
    tha = spa + pln
    tpa = tha + hln
    if tpa + pln > len(b):
        out.append(" [|arp]")
        return
    if not nd.e:
        out.append("ARP, ")
    if (pro != 0x0800 and pro != 0x1000) or pln != 4 or hln == 0 or nd.v:
        out.append(f"{_HRD.get(hrd, f'Unknown Hardware ({hrd})')} (len {hln}), "
                   f"{'IPv4' if pro == 0x0800 else f'Unknown Protocol (0x{pro:04x})'} (len {pln})")
        if not nd.v or (pro != 0x0800 and pro != 0x1000) or pln != 4 or hln == 0:
            out.append(f", length {length}")
            return
        out.append(", ")
    names = nd.names

    def paddr(at: int) -> str:
        return names.ipaddr(bytes(b[at:at + 4]))

    def haddr(at: int) -> str:
        raw = bytes(b[at:at + hln])
        return names.etheraddr(raw) if hln == 6 else raw.hex(":")

    if op == 1:
        out.append(f"Request who-has {paddr(tpa)}")
        if any(b[tha:tha + hln]):
            out.append(f" ({haddr(tha)})")
        out.append(f" tell {paddr(spa)}")
    elif op == 2:
        out.append(f"Reply {paddr(spa)} is-at {haddr(sha)}")
    elif op == 3:
        out.append(f"Reverse Request who-is {haddr(tha)} tell {haddr(sha)}")
    elif op == 4:
        out.append(f"Reverse Reply {haddr(tha)} at {paddr(tpa)}")
    elif op == 8:
        out.append(f"InVerse Request who-is {haddr(tha)} tell {paddr(spa)}")
    elif op == 9:
        out.append(f"InVerse Reply {haddr(sha)} at {paddr(spa)}")
    else:
        out.append(f"Unknown ({op})")
        from .hexdump import hex_ascii_lines
        out.append(hex_ascii_lines(bytes(b[off:off + length])))
        return
    out.append(f", length {length}")
