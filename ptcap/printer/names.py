"""Addresses and ports as text: numeric with -n, else resolved as tcpdump resolves them."""
from __future__ import annotations

import socket

# tcpdump's table of well-known OUIs, printed after a MAC address when names are on
OUI_NAMES = {
    0x000000: "Ethernet", 0x00000C: "Cisco", 0x00005E: "IANA", 0x000081: "Nortel Networks SONMP",
    0x0000F8: "Cisco bridged", 0x0019A7: "ITU-T", 0x0080C2: "Ethernet bridged", 0x00A03E: "ATM Forum",
    0x00E02F: "DOCSIS Spanning Tree", 0x080007: "Appletalk", 0x009069: "Juniper",
    0x080009: "Hewlett-Packard", 0x00120F: "IEEE 802.3 Private", 0x0012BB: "ANSI/TIA",
    0x001B21: "DCBX", 0x002320: "Nicira Networks", 0x5C16C7: "Big Switch Networks",
    0xB0D2F5: "Vello Systems", 0x002481: "HP", 0x0004EA: "HP-Labs", 0x748771: "Infoblox Inc",
    0xA42305: "Open Networking Lab", 0x00049F: "Freescale", 0x0015AD: "Netronome",
    0x001018: "Broadcom", 0x00E004: "PMC-Sierra", 0xD0F0DB: "Ericsson",
}


class Names:
    """Caches every conversion: the same few addresses recur on every line."""

    def __init__(self, numeric: int) -> None:
        self.numeric = numeric
        self._ip: dict[bytes, str] = {}
        self._ip6: dict[bytes, str] = {}
        self._mac: dict[bytes, str] = {}
        self._tcp: dict[int, str] = {}
        self._udp: dict[int, str] = {}

    def ipaddr(self, raw: bytes) -> str:
        s = self._ip.get(raw)
        if s is None:
            s = socket.inet_ntoa(raw)
            if not self.numeric:
                s = _lookup(s)
            self._ip[raw] = s
        return s

    def ip6addr(self, raw: bytes) -> str:
        s = self._ip6.get(raw)
        if s is None:
            s = socket.inet_ntop(socket.AF_INET6, raw)
            if not self.numeric:
                s = _lookup(s)
            self._ip6[raw] = s
        return s

    def etheraddr(self, raw: bytes) -> str:
        s = self._mac.get(raw)
        if s is None:
            s = raw.hex(":")
            if not self.numeric:
                oui = int.from_bytes(raw[:3], "big")
                s = f"{s} (oui {OUI_NAMES.get(oui, 'Unknown')})"
            self._mac[raw] = s
        return s

    def tcpport(self, port: int) -> str:
        if self.numeric:
            return str(port)
        s = self._tcp.get(port)
        if s is None:
            s = self._tcp[port] = _service(port, "tcp")
        return s

    def udpport(self, port: int) -> str:
        if self.numeric:
            return str(port)
        s = self._udp.get(port)
        if s is None:
            s = self._udp[port] = _service(port, "udp")
        return s


def _lookup(text: str) -> str:
    try:
        return socket.gethostbyaddr(text)[0]
    except (OSError, UnicodeError):
        return text


def _service(port: int, proto: str) -> str:
    try:
        return socket.getservbyport(port, proto)
    except (OSError, OverflowError):
        return str(port)
