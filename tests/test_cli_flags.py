"""A tcpdump user trying ptcap as a drop-in: the same command line gets tcpdump's answer,
its words for bad flags, its exit code. tcpdump itself is the oracle, on the same files."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from conftest import ROOT, ptcap_argv

TCPDUMP = shutil.which("tcpdump")
PCAP = str(ROOT / "tests/data/live/lo.pcap")

pytestmark = pytest.mark.skipif(TCPDUMP is None, reason="tcpdump is the oracle")


def both(*args: str) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    ours = subprocess.run(ptcap_argv(*args), capture_output=True, text=True, timeout=60)
    theirs = subprocess.run([TCPDUMP, *args], capture_output=True, text=True, timeout=60)
    return ours, theirs


BAD = [("-c", "abc"), ("-c", "0"), ("-c", "-3"), ("-c", "0x2"), ("-s", "abc"), ("-s", "99999999"),
       ("-B", "abc"), ("-B", "0"), ("-W", "abc"), ("-W", "0"), ("-C", "abc"), ("-C", "0"),
       ("-G", "-1"), ("-Q", "sideways"), ("-g",), ("-ng",), ("--bogus",), ("--bogus=3",),
       ("--print=3",), ("-c",), ("-y",)]


@pytest.mark.parametrize("bad", BAD, ids=" ".join)
def test_bad_flags_get_tcpdumps_first_line_and_exit_1(bad):
    ours, theirs = both("-r", PCAP, *bad)
    assert theirs.returncode == 1
    first = re.sub(r"^(\S*/)?tcpdump: ", "", theirs.stderr.splitlines()[0])     # getopt names argv[0]
    assert (ours.returncode, ours.stderr) == (1, f"ptcap: {first}\n")
    assert ours.stdout == ""


@pytest.mark.parametrize("good", [("-s", "0x40"), ("-G", "abc"), ("-c", "010")], ids=" ".join)
def test_numbers_tcpdump_takes_are_taken(good):
    ours, theirs = both("-n", "-r", PCAP, *good)
    assert theirs.returncode == 0
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, theirs.stdout, theirs.stderr)
