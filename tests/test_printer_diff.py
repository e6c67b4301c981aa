"""Differential proof: 'ptcap -r' prints what the installed 'tcpdump -r' prints, line for line.

The corpus is tcpdump's own test captures (shared/corpus/tcpdump, with each case's flags),
synthetic captures from tests/data/synth.py over every link type we decode, and captures
made live with tcpdump on loopback/veth (tests/data/live/*.pcap, see tests/data/capture_live.sh).
Process context is turned off (--context=) so the lines are tcpdump's alone.
"""
from __future__ import annotations

import csv
import difflib
import io
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PTCAP_SHARED", ROOT.parent / "shared"))
CORPUS = SHARED / "corpus" / "tcpdump"
DATA = Path(__file__).resolve().parent / "data"
TCPDUMP = shutil.which("tcpdump") or "/usr/bin/tcpdump"
THRESHOLD = 0.95

# flag sets run over every capture of our own
OWN_FLAGS = ["", "-v", "-vv", "-e", "-q", "-x", "-X", "-XX", "-A", "-tt", "-ttt", "-S", "-#", "-vvv -e"]


def cases() -> list[tuple[str, Path, list[str]]]:
    out = []
    tsv = CORPUS / "cases.tsv"
    if tsv.exists():
        with open(tsv) as f:
            for row in csv.DictReader(f, delimiter="\t"):
                out.append((row["name"], CORPUS / "pcaps" / row["pcap"], (row["options"] or "").split()))
    sys.path.insert(0, str(DATA))
    import synth  # noqa: E402
    synth_dir = Path(tempfile.gettempdir()) / f"ptcap-synth-{os.getuid()}"     # generated: any user can write it
    paths = synth.build_all(synth_dir)
    live = sorted((DATA / "live").glob("*.pcap*")) if (DATA / "live").exists() else []
    for path in paths + live:
        for flags in OWN_FLAGS:
            out.append((f"{path.stem}{flags.replace(' ', '')}", path, flags.split()))
    return out


def run_tcpdump(pcap: Path, flags: list[str]) -> list[str]:
    env = dict(os.environ, TZ="UTC")
    res = subprocess.run([TCPDUMP, "-n", "-r", str(pcap), *flags], capture_output=True, env=env)
    return res.stdout.decode("latin-1").splitlines()


def run_ptcap(pcap: Path, flags: list[str]) -> list[str]:
    """ptcap in-process (same code path as the console script) with process context off."""
    from ptcap.cli.main import main
    buf = io.TextIOWrapper(io.BytesIO(), encoding="latin-1", newline="\n")
    err = io.StringIO()
    with redirect_stdout(buf), redirect_stderr(err):
        main(["-n", "-r", str(pcap), "--context=", *flags])
    buf.flush()
    return buf.buffer.getvalue().decode("latin-1").splitlines()


def compare(expected: list[str], got: list[str]) -> int:
    """Lines identical in order (difflib's matching blocks)."""
    sm = difflib.SequenceMatcher(None, expected, got, autojunk=False)
    return sum(block.size for block in sm.get_matching_blocks())


def score() -> tuple[int, int, list[tuple[float, str, int, int]]]:
    os.environ["TZ"] = "UTC"
    import time
    time.tzset()
    total = same = 0
    per_case = []
    for name, pcap, flags in cases():
        exp = run_tcpdump(pcap, flags)
        got = run_ptcap(pcap, flags)
        ok = compare(exp, got)
        n = max(len(exp), len(got))
        total += n
        same += ok
        per_case.append((ok / n if n else 1.0, name, ok, n))
    per_case.sort()
    return same, total, per_case


@pytest.mark.skipif(not os.path.exists(TCPDUMP), reason="tcpdump is the oracle and is not installed")
def test_ptcap_prints_like_tcpdump():
    same, total, per_case = score()
    worst = "\n".join(f"  {ratio:6.1%} {name} ({ok}/{n})" for ratio, name, ok, n in per_case[:10])
    ratio = same / total
    print(f"\nidentical lines: {same}/{total} = {ratio:.2%}\nworst cases:\n{worst}")
    assert total > 2000, "the corpus is too small to prove anything"
    assert ratio >= THRESHOLD, f"only {ratio:.2%} of lines match tcpdump; worst cases:\n{worst}"


if __name__ == "__main__":
    if len(sys.argv) > 2:  # show one case's diff: test_printer_diff.py PCAP FLAGS...
        pcap, flags = Path(sys.argv[1]), sys.argv[2:] if sys.argv[2:] != [""] else []
        os.environ["TZ"] = "UTC"
        import time
        time.tzset()
        for line in difflib.unified_diff(run_tcpdump(pcap, flags), run_ptcap(pcap, flags), "tcpdump", "ptcap", lineterm="", n=0):
            print(line)
    else:
        same, total, per_case = score()
        for ratio, name, ok, n in per_case:
            if ratio < 1:
                print(f"{ratio:6.1%} {name} ({ok}/{n})")
        print(f"identical lines: {same}/{total} = {same / total:.2%}")
