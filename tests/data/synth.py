"""Build small synthetic captures covering link types and protocols the public corpus lacks.

Run as a script to (re)write tests/data/synth/*.pcap; tests import build_all() directly.
"""
from __future__ import annotations

import random
import struct
from pathlib import Path

TS0 = 1_700_000_000


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip4(src: str, dst: str, proto: int, payload: bytes, ident: int = 1, ttl: int = 64,
        flags: int = 0x4000, tos: int = 0, options: bytes = b"", total: int | None = None) -> bytes:
    ihl = 5 + len(options) // 4
    length = total if total is not None else 4 * ihl + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, tos, length, ident, flags, ttl, proto, 0,
                      bytes(map(int, src.split("."))), bytes(map(int, dst.split(".")))) + options
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + payload


def _a6(addr: str) -> bytes:
    import socket
    return socket.inet_pton(socket.AF_INET6, addr)


def ip6(src: str, dst: str, nh: int, payload: bytes, hlim: int = 64, tc: int = 0, flow: int = 0) -> bytes:
    return struct.pack("!IHBB16s16s", (6 << 28) | (tc << 20) | flow, len(payload), nh, hlim,
                       _a6(src), _a6(dst)) + payload


def _pseudo4(src: str, dst: str, proto: int, length: int) -> bytes:
    return (bytes(map(int, src.split("."))) + bytes(map(int, dst.split(".")))
            + struct.pack("!BBH", 0, proto, length))


def _pseudo6(src: str, dst: str, proto: int, length: int) -> bytes:
    return _a6(src) + _a6(dst) + struct.pack("!IxxxB", length, proto)


def tcp(sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"",
        win: int = 64240, options: bytes = b"", pseudo=None, urg: int = 0) -> bytes:
    off = (20 + len(options)) // 4
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, off << 4, flags, win, 0, urg) + options + payload
    if pseudo is not None:
        c = csum(pseudo(len(seg)) + seg)
        seg = seg[:16] + struct.pack("!H", c) + seg[18:]
    return seg


def udp(sport: int, dport: int, payload: bytes, pseudo=None, length: int | None = None) -> bytes:
    dg = struct.pack("!HHHH", sport, dport, length if length is not None else 8 + len(payload), 0) + payload
    if pseudo is not None:
        c = csum(pseudo(len(dg)) + dg) or 0xFFFF
        dg = dg[:6] + struct.pack("!H", c) + dg[8:]
    return dg


def eth(payload: bytes, etype: int = 0x0800, src: str = "02:00:00:00:00:01",
        dst: str = "02:00:00:00:00:02") -> bytes:
    mac = lambda m: bytes(int(x, 16) for x in m.split(":"))  # noqa: E731
    return mac(dst) + mac(src) + struct.pack("!H", etype) + payload


def dns_query(qid: int, name: str, qtype: int = 1, rd: bool = True) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100 if rd else 0, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, 1)


def dns_answer_a(qid: int, name: str, addrs: list[str]) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    body = q + struct.pack("!HH", 1, 1)
    for a in addrs:
        body += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + bytes(map(int, a.split(".")))
    return struct.pack("!HHHHHH", qid, 0x8180, 1, len(addrs), 0, 0) + body


def icmp4(typ: int, code: int, rest: bytes) -> bytes:
    msg = struct.pack("!BBH", typ, code, 0) + rest
    return msg[:2] + struct.pack("!H", csum(msg)) + msg[4:]


def icmp6(src: str, dst: str, typ: int, code: int, rest: bytes) -> bytes:
    msg = struct.pack("!BBH", typ, code, 0) + rest
    c = csum(_pseudo6(src, dst, 58, len(msg)) + msg)
    return msg[:2] + struct.pack("!H", c) + msg[4:]


def write_pcap(path: Path, linktype: int, packets: list[tuple[int, bytes]], snaplen: int = 262144,
               nano: bool = False) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype))
        for ts_ns, data in packets:
            cap = data[:snaplen]
            frac = ts_ns % 1_000_000_000 if nano else (ts_ns % 1_000_000_000) // 1000
            f.write(struct.pack("<IIII", ts_ns // 1_000_000_000, frac, len(cap), len(data)) + cap)


def _ts(i: int) -> int:
    return (TS0 + i // 10) * 1_000_000_000 + (i % 10) * 123_457_000


def ipv4_mix() -> list[bytes]:
    """TCP conversations, UDP, DNS, ICMP, fragments, IP options, ARP, over Ethernet."""
    pk: list[bytes] = []
    a, b = "10.1.1.1", "10.1.1.2"
    p_ab = lambda n: _pseudo4(a, b, 6, n)  # noqa: E731
    p_ba = lambda n: _pseudo4(b, a, 6, n)  # noqa: E731
    mss = b"\x02\x04\x05\xb4"
    opts = mss + b"\x04\x02\x08\x0a" + struct.pack("!II", 1000, 0) + b"\x01\x03\x03\x07"
    pk.append(eth(ip4(a, b, 6, tcp(40000, 80, 1000, 0, 0x02, options=opts, pseudo=p_ab))))
    pk.append(eth(ip4(b, a, 6, tcp(80, 40000, 5000, 1001, 0x12, options=opts, pseudo=p_ba))))
    pk.append(eth(ip4(a, b, 6, tcp(40000, 80, 1001, 5001, 0x10, pseudo=p_ab))))
    req = b"GET /index.html HTTP/1.1\r\nHost: example\r\nUser-Agent: synth\r\n\r\n"
    pk.append(eth(ip4(a, b, 6, tcp(40000, 80, 1001, 5001, 0x18, req, pseudo=p_ab))))
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    pk.append(eth(ip4(b, a, 6, tcp(80, 40000, 5001, 1001 + len(req), 0x18, resp, pseudo=p_ba))))
    sack = b"\x01\x01\x05\x0a" + struct.pack("!II", 5001 + 10, 5001 + 20)
    pk.append(eth(ip4(a, b, 6, tcp(40000, 80, 1001 + len(req), 5001 + len(resp), 0x10, options=sack, pseudo=p_ab))))
    pk.append(eth(ip4(a, b, 6, tcp(40000, 80, 1001 + len(req), 5001 + len(resp), 0x11, pseudo=p_ab))))
    pk.append(eth(ip4(b, a, 6, tcp(80, 40000, 5001 + len(resp), 1002 + len(req), 0x14, pseudo=p_ba))))
    # bad TCP checksum, urgent, ECN flags, unknown option
    bad = bytearray(tcp(1234, 22, 7, 9, 0xF8 | 0x10, b"SSH-2.0-x\r\n", options=b"\x1e\x04\xab\xcd", pseudo=p_ab, urg=3))
    bad[16] ^= 0xFF
    pk.append(eth(ip4(a, b, 6, bytes(bad), tos=0x03)))
    # UDP generic, DNS query/answer, bad length
    p_udp = lambda n: _pseudo4(a, b, 17, n)  # noqa: E731
    pk.append(eth(ip4(a, b, 17, udp(5555, 6666, b"x" * 33, pseudo=p_udp), flags=0)))
    q = dns_query(0x1234, "www.example.com")
    pk.append(eth(ip4(a, "8.8.8.8", 17, udp(33000, 53, q, pseudo=lambda n: _pseudo4(a, "8.8.8.8", 17, n)))))
    r = dns_answer_a(0x1234, "www.example.com", ["93.184.216.34", "93.184.216.35"])
    pk.append(eth(ip4("8.8.8.8", a, 17, udp(53, 33000, r, pseudo=lambda n: _pseudo4("8.8.8.8", a, 17, n)))))
    pk.append(eth(ip4(a, "8.8.8.8", 17, udp(33001, 53, dns_query(7, "example.org", 28)))))
    pk.append(eth(ip4(a, b, 17, udp(5555, 6666, b"y" * 10, length=100))))
    # ICMP echo, unreachable carrying UDP, time exceeded
    pk.append(eth(ip4(a, b, 1, icmp4(8, 0, struct.pack("!HH", 77, 1) + b"ping" * 8))))
    pk.append(eth(ip4(b, a, 1, icmp4(0, 0, struct.pack("!HH", 77, 1) + b"ping" * 8))))
    inner = ip4(a, b, 17, udp(5555, 6666, b"zz"))
    pk.append(eth(ip4(b, a, 1, icmp4(3, 3, b"\0\0\0\0" + inner))))
    pk.append(eth(ip4(b, a, 1, icmp4(3, 1, b"\0\0\0\0" + ip4(a, "1.2.3.4", 6, tcp(1, 2, 3, 4, 2)[:8])))))
    pk.append(eth(ip4(b, a, 1, icmp4(11, 0, b"\0\0\0\0" + inner))))
    pk.append(eth(ip4(b, a, 1, icmp4(13, 0, struct.pack("!HHIII", 1, 2, 3, 4, 5)))))
    # fragments
    big = udp(47000, 47001, b"f" * 100)
    pk.append(eth(ip4(a, b, 17, big[:48], ident=99, flags=0x2000, total=20 + 108)))
    pk.append(eth(ip4(a, b, 17, big[48:], ident=99, flags=6)))
    # IP options (record route, router alert), other protocol
    pk.append(eth(ip4(a, b, 2, b"\x11\x64\xee\x9b\x00\x00\x00\x00", options=b"\x94\x04\x00\x00")))
    pk.append(eth(ip4(a, b, 47, b"\x00\x00\x08\x00" + b"\0" * 20)))
    pk.append(eth(ip4(a, b, 253, b"experimental")))
    # ARP request/reply, unknown ethertype, IPv6 over Ethernet
    arp = lambda op, sha, spa, tha, tpa: struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + sha + bytes(map(int, spa.split("."))) + tha + bytes(map(int, tpa.split(".")))  # noqa: E731
    pk.append(eth(arp(1, b"\x02\0\0\0\0\x01", a, b"\0" * 6, b), 0x0806, dst="ff:ff:ff:ff:ff:ff") + b"\0" * 18)
    pk.append(eth(arp(2, b"\x02\0\0\0\0\x02", b, b"\x02\0\0\0\0\x01", a), 0x0806))
    pk.append(eth(b"\x01\x02\x03\x04" * 12, 0x88B5))
    pk.append(eth(b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + b"\0" * 30, 46))  # 802.3 + SNAP
    vlan = struct.pack("!HH", 100, 0x0800) + ip4(a, b, 17, udp(1, 2, b"v"))
    pk.append(eth(vlan, 0x8100))
    return pk


def ipv6_mix() -> list[bytes]:
    pk: list[bytes] = []
    a, b = "2001:db8::1", "2001:db8::2"
    p = lambda s, d: (lambda n: _pseudo6(s, d, 6, n))  # noqa: E731
    opts = b"\x02\x04\x05\xa0\x04\x02\x08\x0a" + struct.pack("!II", 1, 0) + b"\x01\x03\x03\x07"
    pk.append(ip6(a, b, 6, tcp(50000, 443, 111, 0, 0x02, options=opts, pseudo=p(a, b))))
    pk.append(ip6(b, a, 6, tcp(443, 50000, 999, 112, 0x12, options=opts, pseudo=p(b, a))))
    pk.append(ip6(a, b, 6, tcp(50000, 443, 112, 1000, 0x10, pseudo=p(a, b))))
    pk.append(ip6(a, b, 6, tcp(50000, 443, 112, 1000, 0x18, b"\x16\x03\x01" + b"\0" * 40, pseudo=p(a, b))))
    pk.append(ip6(b, a, 6, tcp(443, 50000, 1000, 155, 0x10, pseudo=p(b, a))))
    pk.append(ip6(a, b, 17, udp(5353, 5353, b"\0" * 12, pseudo=lambda n: _pseudo6(a, b, 17, n))))
    pk.append(ip6(a, b, 17, udp(40000, 53, dns_query(9, "ipv6.example", 28), pseudo=lambda n: _pseudo6(a, b, 17, n))))
    pk.append(ip6(a, b, 58, icmp6(a, b, 128, 0, struct.pack("!HH", 5, 6) + b"abcdefgh")))
    pk.append(ip6(b, a, 58, icmp6(b, a, 129, 0, struct.pack("!HH", 5, 6) + b"abcdefgh")))
    ns = struct.pack("!I", 0) + _a6(b) + b"\x01\x01\x02\0\0\0\0\x01"
    pk.append(ip6(a, "ff02::1:ff00:2", 58, icmp6(a, "ff02::1:ff00:2", 135, 0, ns), hlim=255))
    na = struct.pack("!I", 0x60000000) + _a6(b) + b"\x02\x01\x02\0\0\0\0\x02"
    pk.append(ip6(b, a, 58, icmp6(b, a, 136, 0, na), hlim=255))
    pk.append(ip6("fe80::1", "ff02::2", 58, icmp6("fe80::1", "ff02::2", 133, 0, b"\0" * 4), hlim=255))
    inner = ip6(a, b, 17, udp(1, 2, b"x"))
    pk.append(ip6(b, a, 58, icmp6(b, a, 1, 4, b"\0" * 4 + inner)))
    pk.append(ip6(b, a, 58, icmp6(b, a, 2, 0, struct.pack("!I", 1280) + inner)))
    pk.append(ip6(b, a, 58, icmp6(b, a, 3, 0, b"\0" * 4 + inner)))
    hbh = bytes([58, 0, 5, 2, 0, 0, 1, 0])
    pk.append(ip6("fe80::1", "ff02::16", 0, hbh + icmp6("fe80::1", "ff02::16", 143, 0, b"\0\0\0\0"), hlim=1))
    frag = bytes([17, 0]) + struct.pack("!HI", 1, 0xABCD)
    pk.append(ip6(a, b, 44, frag + udp(1, 2, b"q" * 20)))
    pk.append(ip6(a, b, 59, b""))
    pk.append(ip6(a, b, 6, tcp(1, 2, 3, 4, 0x10)[:10]))  # truncated TCP header
    pk.append(ip6("::ffff:1.2.3.4", "::1", 17, udp(1, 2, b"")))
    return pk


def build_all(outdir: Path) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    v4 = ipv4_mix()
    path = outdir / "synth-ether.pcap"
    write_pcap(path, 1, [(_ts(i), p) for i, p in enumerate(v4)])
    written.append(path)
    v6 = ipv6_mix()
    path = outdir / "synth-ether6.pcap"
    write_pcap(path, 1, [(_ts(i), eth(p, 0x86DD)) for i, p in enumerate(v6)], nano=True)
    written.append(path)
    # raw IP, loopback (NULL and LOOP), Linux cooked v1/v2: the same packets in other frames
    ip_packets = [p[14:] for p in v4 if p[12:14] == b"\x08\x00"] + v6
    path = outdir / "synth-raw.pcap"
    write_pcap(path, 101, [(_ts(i), p) for i, p in enumerate(ip_packets)])
    written.append(path)
    path = outdir / "synth-null.pcap"
    write_pcap(path, 0, [(_ts(i), struct.pack("<I", 2 if p[0] >> 4 == 4 else 30) + p) for i, p in enumerate(ip_packets)])
    written.append(path)
    path = outdir / "synth-loop.pcap"
    write_pcap(path, 108, [(_ts(i), struct.pack(">I", 2 if p[0] >> 4 == 4 else 24) + p) for i, p in enumerate(ip_packets)])
    written.append(path)
    rnd = random.Random(4)
    sll = []
    for i, p in enumerate(ip_packets):
        etype = 0x0800 if p[0] >> 4 == 4 else 0x86DD
        pkttype = rnd.choice([0, 1, 2, 3, 4])
        sll.append((_ts(i), struct.pack("!HHH8sH", pkttype, 1, 6, b"\x02\0\0\0\0\x09\0\0", etype) + p))
    path = outdir / "synth-sll.pcap"
    write_pcap(path, 113, sll)
    written.append(path)
    sll2 = []
    for i, p in enumerate(ip_packets):
        etype = 0x0800 if p[0] >> 4 == 4 else 0x86DD
        sll2.append((_ts(i), struct.pack("!HHIHBB8s", etype, 0, 1, 1, rnd.choice([0, 4]), 6, b"\x02\0\0\0\0\x09\0\0") + p))
    path = outdir / "synth-sll2.pcap"
    write_pcap(path, 276, sll2)
    written.append(path)
    # truncated captures: the same Ethernet packets cut by a small snaplen
    path = outdir / "synth-snap60.pcap"
    write_pcap(path, 1, [(_ts(i), p) for i, p in enumerate(v4 + [eth(x, 0x86DD) for x in v6])], snaplen=60)
    written.append(path)
    path = outdir / "synth-snap40.pcap"
    write_pcap(path, 1, [(_ts(i), p) for i, p in enumerate(v4 + [eth(x, 0x86DD) for x in v6])], snaplen=40)
    written.append(path)
    return written


if __name__ == "__main__":
    for p in build_all(Path(__file__).parent / "synth"):
        print(p)
