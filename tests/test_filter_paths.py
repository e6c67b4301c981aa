"""One filter path: every expression of the libpcap corpus behaves as in tcpdump whether it
filters a file (-r), is printed (-d) or is loaded for a live capture (interfaces and hooks)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ptcap.cli import filterdump, main as cli, offline  # noqa: F401 (imported once, before the forks)


CORPUS = Path("/work/shared/corpus/filters")
PACKETS = CORPUS / "packets.pcap"
TCPDUMP = shutil.which("tcpdump")

pytestmark = pytest.mark.skipif(TCPDUMP is None, reason="tcpdump is the oracle")


def expressions() -> list[str]:
    lines = (CORPUS / "expressions.txt").read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")] + ["ip broadcast"]


def tcpdump(*argv: str) -> tuple[int, str, str]:
    """(exit status, stdout, its error without the program name)."""
    run = subprocess.run([TCPDUMP, *argv], capture_output=True, text=True, timeout=30)
    errors = [l for l in run.stderr.splitlines() if l.startswith("tcpdump: ")]
    return run.returncode, run.stdout, errors[-1][len("tcpdump: "):] if errors else ""


def ptcap(*argv: str) -> tuple[int, str, str]:
    """The ptcap command in a forked child of this process (a new interpreter per expression
    would cost most of the test's time): its exit status, stdout and last error."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            rc = cli.main(list(argv))
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:       # noqa: BLE001 (the parent sees the status)
            rc = 99
        os._exit(rc)
    os.close(out_w)
    os.close(err_w)
    with open(out_r) as out, open(err_r) as err:
        stdout, stderr = out.read(), err.read()
    rc = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    errors = [l for l in stderr.splitlines() if l.startswith("ptcap: ")]
    return rc, stdout, errors[-1][len("ptcap: "):] if errors else ""


def test_reading_a_file_filters_as_tcpdump_reads():
    """`ptcap -r FILE EXPR` keeps the packets `tcpdump -r FILE EXPR` keeps ('ip broadcast' too)."""
    kept = 0
    for expr in expressions():
        theirs = tcpdump("-r", str(PACKETS), "--count", expr)
        mine = ptcap("-r", str(PACKETS), "--count", expr)
        assert (mine[0] != 0, mine[1], mine[2]) == (theirs[0] != 0, theirs[1], theirs[2]), expr
        kept += theirs[0] == 0 and theirs[1] != "0 packets\n"
    assert kept > len(expressions()) // 4, "the corpus must keep packets, not only reject them"


def test_dumping_prints_what_tcpdump_prints():
    for expr in expressions():
        theirs = tcpdump("-d", expr)
        mine = ptcap("-d", expr)
        assert (mine[0] != 0, mine[1], mine[2]) == (theirs[0] != 0, theirs[1], theirs[2]), expr


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="loading BPF needs root")
def test_live_captures_load_what_tcpdump_accepts():
    """The session compiles, translates and loads each expression on lo and at a hook; one
    tcpdump rejects fails in its words."""
    from ptcap.errors import PtcapError
    from ptcap.kernel.session import CaptureConfig, Session
    loaded = 0
    for expr in expressions():
        rc, _out, error = tcpdump("-d", expr)
        for config in (CaptureConfig(interfaces=["lo"], expression=expr),
                       CaptureConfig(hooks=["kfree_skb"], expression=expr)):
            session = Session(config)
            try:
                session.open()
                got = ""
            except PtcapError as e:
                got = str(e)
            finally:
                session.close()
            assert got == (error if rc else ""), (expr, config.hooks)
            loaded += not got
    assert loaded > len(expressions())
