"""Ethernet II, 802.1Q tags, 802.3/LLC frames, and the ethertype demultiplexer shared by all links."""
from __future__ import annotations

from .hexdump import hex_ascii_lines
from .tables import ETHERTYPE_NAMES

_VLAN_TYPES = (0x8100, 0x88A8, 0x9100, 0x9200)


def ethertype_print(nd, etype: int, b: bytes, off: int, length: int) -> bool:
    """Print the payload of a known ethertype; False when the type is unknown here."""
    if etype == 0x0800:
        ip.ip_print(nd, b, off, length)
        return True
    if etype == 0x86DD:
        ip6.ip6_print(nd, b, off, length)
        return True
    if etype == 0x0806 or etype == 0x8035:
        arp.arp_print(nd, b, off, length)
        return True
    return False


def type_text(nd, etype: int) -> str:
    if nd.q:
        name = ETHERTYPE_NAMES.get(etype)
        return name if name else f"Unknown Ethertype (0x{etype:04x})"
    return f"ethertype {ETHERTYPE_NAMES.get(etype, 'Unknown')} (0x{etype:04x})"


def default_print(nd, b: bytes, off: int, caplen_end: int | None = None) -> None:
    """tcpdump's ND_DEFAULTPRINT: a hex and ASCII dump, unless -x/-X/-A will dump anyway."""
    if not nd.suppress_default and not nd.q:
        nd.out.append(hex_ascii_lines(b[off:caplen_end]))


def ether_if_print(nd, b: bytes, orig_len: int) -> int:
    nd.proto = "ether"
    caplen = len(b)
    if caplen < 14 or orig_len < 14:
        nd.out.append(" [|ether]")
        return min(caplen, orig_len)
    out = nd.out
    names = nd.names
    length = orig_len - 12
    eflag = nd.e
    if eflag:
        out.append(f"{names.etheraddr(b[6:12])} > {names.etheraddr(b[0:6])}, ")
    off = 12
    hdrlen = 14
    printed_length = False
    while True:
        etype = (b[off] << 8) | b[off + 1]
        off += 2
        length -= 2
        nd.ll_hdr_len = hdrlen
        if etype <= 1500:
            # 802.3: the type field is a length; an LLC header follows
            if eflag:
                out.append(f"802.3, length {length}: ")
            end = off + etype
            if not llc_print(nd, b[:end] if end < len(b) else b, off, length):
                if not eflag:
                    out.append(f"{names.etheraddr(b[6:12])} > {names.etheraddr(b[0:6])}, 802.3, length {orig_len}: ")
                default_print(nd, b, off)
            return hdrlen
        if etype in _VLAN_TYPES:
            if len(b) - off < 4:
                nd.proto = "vlan"
                nd.out.append(" [|vlan]")
                return len(b)
            if eflag:
                tag = (b[off] << 8) | b[off + 1]
                out.append(type_text(nd, etype))
                if not printed_length:
                    out.append(f", length {orig_len}: ")
                    printed_length = True
                else:
                    out.append(", ")
                out.append(f"vlan {tag & 0xFFF}, p {tag >> 13}{', DEI' if tag & 0x1000 else ''}, ")
                inner = (b[off + 2] << 8) | b[off + 3]
                if inner > 1500:
                    out.append(type_text(nd, inner))
                    out.append(", ")
            off += 2
            length -= 2
            hdrlen += 4
            nd.ll_hdr_len = hdrlen
            continue
        if eflag and not printed_length:
            out.append(type_text(nd, etype))
            out.append(f", length {orig_len}: ")
        if not ethertype_print(nd, etype, b, off, length):
            if not eflag:
                out.append(f"{names.etheraddr(b[6:12])} > {names.etheraddr(b[0:6])}, "
                           f"{type_text(nd, etype)}, length {orig_len}: ")
            default_print(nd, b, off)
        return hdrlen


_SAP_NAMES = {
    0x00: "Null", 0x02: "LLC Sublayer Management", 0x03: "Group LLC Sublayer Management",
    0x06: "IP", 0x0E: "Proway Network Management", 0x42: "STP", 0x4E: "EIA RS-511 MMS",
    0x7E: "ISO8208", 0x8E: "Proway Active Station List", 0xAA: "SNAP", 0xBC: "Banyan Vines",
    0xE0: "IPX", 0xF0: "NetBeui", 0xF4: "LanManager", 0xFE: "OSI", 0xFF: "Global",
}


def llc_print(nd, b: bytes, off: int, length: int) -> bool:
    """802.2 LLC, and SNAP with an Ethernet OUI handed back to the ethertype demultiplexer."""
    nd.proto = "llc"
    dsap_field, ssap_field = b[off], b[off + 1]
    ctrl = b[off + 2]
    dsap, ssap = dsap_field & 0xFE, ssap_field & 0xFE
    if nd.e:
        nd.out.append(
            f"LLC, dsap {_SAP_NAMES.get(dsap, 'Unknown')} (0x{dsap:02x}) "
            f"{'Group' if dsap_field & 1 else 'Individual'}, ssap {_SAP_NAMES.get(ssap, 'Unknown')} "
            f"(0x{ssap:02x}) {'Response' if ssap_field & 1 else 'Command'}, ctrl 0x{ctrl:02x}: ")
    if dsap == 0xAA and ssap == 0xAA and ctrl == 0x03:
        oui = (b[off + 3] << 16) | (b[off + 4] << 8) | b[off + 5]
        etype = (b[off + 6] << 8) | b[off + 7]
        if nd.e:
            from .names import OUI_NAMES
            nd.out.append(f"oui {OUI_NAMES.get(oui, 'Unknown')} (0x{oui:06x}), "
                          f"{type_text(nd, etype)}, length {length - 8}: ")
        if oui in (0, 0xF8):
            return ethertype_print(nd, etype, b, off + 8, length - 8)
        return False
    return False


from . import arp, ip, ip6  # noqa: E402  (after the definitions: ip6 -> ip -> ether cycles)
