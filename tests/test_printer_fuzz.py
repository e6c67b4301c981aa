"""Robustness: mutated and cut packets from the corpus never make the printer raise.

Every packet of every corpus capture is mutated (bytes flipped, lengths cut, fields set to
extremes) and printed with several flag sets; the printer runs in strict mode, so anything but
a truncation mark (an exception from a printer bug) fails the test.
"""
from __future__ import annotations

import io
import random
import sys
from pathlib import Path

import pytest

from ptcap.pipeline.packet import Packet
from ptcap.printer import Printer, PrintOptions
from ptcap.formats.reader import read_packets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_printer_diff import cases  # noqa: E402

MUTATIONS = 12_000


def corpus_packets() -> list[Packet]:
    seen = set()
    packets = []
    for _name, pcap, _flags in cases():
        if pcap in seen or not pcap.exists():
            continue
        seen.add(pcap)
        packets.extend(read_packets(str(pcap)))
    return packets


def mutate(rnd: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    kind = rnd.randrange(5)
    if kind == 0 and b:  # flip a few bytes anywhere
        for _ in range(rnd.randint(1, 4)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
    elif kind == 1:  # cut the capture short
        del b[rnd.randrange(len(b) + 1):]
    elif kind == 2 and b:  # extreme values in the first 80 bytes (headers, length fields)
        for _ in range(rnd.randint(1, 3)):
            i = rnd.randrange(min(len(b), 80))
            b[i] = rnd.choice((0, 1, 0x7F, 0x80, 0xFF))
    elif kind == 3 and b:  # flip then cut
        b[rnd.randrange(len(b))] ^= 0xFF
        del b[rnd.randrange(len(b) + 1):]
    else:  # random bytes after a valid prefix
        keep = rnd.randrange(len(b) + 1)
        b[keep:] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(64)))
    return bytes(b)


FLAG_SETS = [
    dict(numeric=1),
    dict(numeric=1, verbose=3, link_header=True),
    dict(numeric=1, verbose=1, hex_ascii=1),
    dict(numeric=1, quiet=True, ascii=2),
    dict(numeric=1, verbose=2, hex=1, absolute_seq=True),
]


def test_mutated_packets_never_raise():
    packets = corpus_packets()
    assert len(packets) > 200
    rnd = random.Random(20240517)
    printers = [Printer(PrintOptions(**flags), io.StringIO(), strict=True) for flags in FLAG_SETS]
    done = 0
    while done < MUTATIONS:
        pkt = rnd.choice(packets)
        data = mutate(rnd, pkt.data)
        orig = rnd.choice((pkt.orig_len, len(data), max(0, len(data) - 7), 65535))
        linktype = pkt.linktype if rnd.random() < 0.9 else rnd.choice((0, 1, 9, 101, 108, 113, 276))
        mutated = Packet(pkt.ts_ns, data, orig, linktype)
        printer = printers[done % len(printers)]
        line = printer.format_packet(mutated)  # strict: a printer bug raises here
        assert line.endswith("\n")
        done += 1
    assert sum(p.count for p in printers) == MUTATIONS
    assert all(p.errors == 0 for p in printers)


@pytest.mark.parametrize("linktype", [0, 1, 9, 101, 108, 113, 228, 229, 276])
def test_every_prefix_of_every_packet_prints(linktype):
    """Cutting a packet at every byte gives a line (often ending in [|proto]), never an exception."""
    packets = [p for p in corpus_packets() if p.linktype == linktype][:40] or corpus_packets()[:20]
    printer = Printer(PrintOptions(numeric=1, verbose=2), io.StringIO(), strict=True)
    for pkt in packets:
        for cut in range(0, min(len(pkt.data), 120)):
            printer.format_packet(Packet(pkt.ts_ns, pkt.data[:cut], pkt.orig_len, linktype))
    assert printer.errors == 0
