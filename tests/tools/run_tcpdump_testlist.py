#!/usr/bin/env python3
"""Run tcpdump's whole test suite (tests/TESTLIST and tests/*.tests of its source, e.g.
Debian's tcpdump_4.99.3-1 source package: `dpkg-source -x tcpdump_4.99.3-1.dsc`) through
ptcap and through the installed tcpdump, with the same flags, file and filter, as TESTrun
runs them (-# -n, TZ=GMT0); diff stdout, stderr and exit status.

usage: TCPDUMP_TESTS=.../tcpdump-4.99.3/tests run_tcpdump_testlist.py VARIANT [NAME-SUBSTR]
variants:
  direct   ptcap -# -n -r IN OPTS            vs tcpdump -# -n -r IN OPTS
  stdin    ptcap -# -n -r - OPTS < IN        vs tcpdump same
  ng       IN converted to pcapng (editcap), fed on stdin (ptcap's own reader path)
  w        ptcap -r IN -w OUT.pcapng OPTS; tcpdump -# -n -r OUT OPTS vs tcpdump -# -n -r IN OPTS
  wpcap    same, OUT.pcap
  c        ptcap -# -n -r - -c 3 OPTS < IN(pcapng)  vs tcpdump same
  filt     ptcap -# -n -r - OPTS FILTER < IN(pcapng) for a few filters
"""
import concurrent.futures as cf
import os
import re
import struct
import subprocess
import sys
import tempfile

T = os.environ["TCPDUMP_TESTS"]
PTCAP = os.environ.get("PTCAP", os.path.join(os.path.dirname(__file__), "..", "..", ".venv", "bin", "ptcap"))
TCPDUMP = "/usr/bin/tcpdump"
ENV = dict(os.environ, TZ="GMT0")
WORK = tempfile.mkdtemp(prefix="ptcap-testlist-")
_PERL = r"""foreach $file (glob("*.tests")) { open(F, "<$file"); local $/; $d = <F>; close F;
  $testlist = undef; eval $d; foreach $t (@$testlist) { print join("\t", $t->{name}, $t->{input},
  $t->{output}, $t->{args}, $t->{config_set} // "", $t->{config_unset} // ""), "\n"; } }"""
FILTERS = ["ip", "tcp", "not ip6", "udp or arp", "ip6 and udp", "vlan", "len > 100"]


def tests():
    out = []
    with open(f"{T}/TESTLIST") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, inp, outp, *opts = line.split()
            out.append((name, inp, " ".join(opts)))
    dump = subprocess.run(["perl", "-e", _PERL], cwd=T, capture_output=True, text=True, check=True).stdout
    for line in dump.splitlines():
        name, inp, _outp, args, cset, _cunset = line.split("\t")
        if cset in ("IS_OPENBSD", "HAVE_FPTYPE2", "HAVE_NO_PRINTF_Z"):     # not this build's
            continue
        out.append((name, inp, args.replace("@TESTDIR@", T)))
    return out


def sh(cmd, stdin=None):
    try:
        p = subprocess.run(cmd, shell=True, capture_output=True, env=ENV, cwd=T, timeout=60,
                           stdin=open(stdin, "rb") if stdin else subprocess.DEVNULL)
        return p.stdout, p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        return e.stdout or b"", (e.stderr or b"") + b"\nTIMEOUT", -999


def norm_err(b, names=()):
    s = b.decode(errors="replace")
    s = s.replace("ptcap: ", "tcpdump: ")
    s = re.sub(r"reading from file .*?, link-type", "reading from file FILE, link-type", s)
    return s


def as_ng(inp):
    ng = os.path.join(WORK, os.path.basename(inp) + ".ng")
    if not os.path.exists(ng):
        r = subprocess.run(["editcap", "-F", "pcapng", f"{T}/{inp}", ng], capture_output=True)
        if r.returncode != 0 or not os.path.exists(ng):
            return None
    return ng


COMMENT = b"PID: 4242\nCmd: /usr/bin/sender\nArgs: sender --fast\n"


def with_comments(data: bytes) -> bytes:
    """A pcapng whose Enhanced Packet Blocks each carry a ptcpdump-style process comment."""
    out, off, order = [], 0, "<"
    while off + 12 <= len(data):
        if data[off:off + 4] == b"\x0a\x0d\x0d\x0a":
            order = "<" if data[off + 8:off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
        btype, total = struct.unpack_from(order + "II", data, off)
        if total < 12 or off + total > len(data):
            break
        blk = data[off:off + total]
        if btype == 6 and total >= 32:
            optat = 28 + ((struct.unpack_from(order + "I", blk, 20)[0] + 3) & ~3)
            opts = blk[optat:total - 4]
            opts = opts[:-4] if opts.endswith(b"\0\0\0\0") else opts
            opts += struct.pack(order + "HH", 1, len(COMMENT)) + COMMENT + b"\0" * (-len(COMMENT) % 4) + b"\0" * 4
            n = 12 + optat - 8 + len(opts)
            blk = struct.pack(order + "II", 6, n) + blk[8:optat] + opts + struct.pack(order + "I", n)
        out.append(blk)
        off += total
    return b"".join(out) + data[off:]


def one(variant, name, inp, opts):
    res = []
    if variant == "direct":
        a = sh(f"{TCPDUMP} -# -n -r {inp} {opts}")
        b = sh(f"{PTCAP} -# -n -r {inp} {opts}")
        res.append((name, a, b, ()))
    elif variant == "stdin":
        a = sh(f"{TCPDUMP} -# -n -r - {opts}", f"{T}/{inp}")
        b = sh(f"{PTCAP} -# -n -r - {opts}", f"{T}/{inp}")
        res.append((name, a, b, ()))
    elif variant in ("ng", "c", "filt"):
        src = f"{T}/{inp}" if inp.endswith(".pcapng") else as_ng(inp)
        if src is None:
            return [(name, (b"", b"", 0), (b"", b"", 0), ())]
        extra = {"ng": [""], "c": ["-c 3"], "filt": [f"'{x}'" for x in FILTERS]}[variant]
        if variant == "filt" and re.search(r"(^| )[a-z]", opts.replace("-T ", "-T_")):
            extra = [""]   # opts already has a filter
        for e in extra:
            a = sh(f"{TCPDUMP} -# -n -r - {opts} {e}", src)
            b = sh(f"{PTCAP} -# -n -r - {opts} {e}", src)
            res.append((f"{name} [{e}]", a, b, ()))
    elif variant in ("ctx", "ctxpid"):  # every packet with a process comment: ptcap's own printing
        src = f"{T}/{inp}" if inp.endswith(".pcapng") else as_ng(inp)
        if src is None:
            return [(name, (b"", b"", 0), (b"", b"", 0), ())]
        ctx = os.path.join(WORK, os.path.basename(inp) + ".ctx.pcapng")
        with open(src, "rb") as f:
            data = f.read()
        with open(ctx, "wb") as f:
            f.write(with_comments(data))
        a = sh(f"{TCPDUMP} -# -n -r {ctx} {opts}")
        b = sh(f"{PTCAP} -# -n -r {ctx} {'--pid 4242' if variant == 'ctxpid' else ''} {opts}")
        lines = [ln for ln in b[0].split(b"\n") if not ln.startswith(b"    Process (pid 4242")]
        theirs = a[0].split(b"\n")
        if len(lines) == len(theirs):   # ptcap's fields after the time stamp: taken out
            for i, (x, y) in enumerate(zip(theirs, lines)):
                m = re.match(rb"( *\d+  )?\S+ ", x)
                if x != y and m and y.startswith(m.group(0)) and y.endswith(x[m.end():]):
                    lines[i] = x
        res.append((name, a, (b"\n".join(lines), b[1], b[2]), ()))
    elif variant in ("w", "wpcap"):
        ext = ".pcapng" if variant == "w" else ".pcap"
        out = os.path.join(WORK, name + ext)
        # print flags are kept: tcpdump accepts them with -w
        w = sh(f"{PTCAP} -n -r {inp} -w {out} {opts}")
        a = sh(f"{TCPDUMP} -# -n -r {inp} {opts}")
        if w[2] != 0 and not os.path.exists(out):
            b = (b"", w[1], w[2])
        else:
            b = sh(f"{TCPDUMP} -# -n -r {out} {opts}")
            if w[2] != 0:
                b = (b[0], b[1] + b"\n[ptcap -w: " + w[1] + b"]", w[2])
        res.append((name, a, b, (inp, out)))
    return res


def main():
    variant = sys.argv[1]
    only = sys.argv[2] if len(sys.argv) > 2 else None
    todo = [t for t in tests() if not only or only in t[0]]
    bad = 0
    with cf.ThreadPoolExecutor(int(os.environ.get("J", "2"))) as ex:
        for res in ex.map(lambda t: one(variant, *t), todo):
            for name, a, b, names in res:
                diffs = []
                if a[0] != b[0]:
                    strip = lambda o: [re.sub(rb"^( *\d+  )\S+", rb"\1T", ln) for ln in o.splitlines()]
                    diffs.append("stdout(time only)" if strip(a[0]) == strip(b[0]) else "stdout")
                ea, eb = norm_err(a[1], names), norm_err(b[1], names)
                if ea != eb:
                    diffs.append("stderr")
                if a[2] != b[2]:
                    diffs.append(f"rc {a[2]} vs {b[2]}")
                if diffs:
                    bad += 1
                    print(f"DIFF {name}: {', '.join(diffs)}", flush=True)
                    if "stderr" in diffs:
                        print("   tcpdump err:", ea.strip().splitlines()[-3:])
                        print("   ptcap   err:", eb.strip().splitlines()[-3:])
                    if "stdout" in diffs or os.environ.get("SHOWALL"):
                        la, lb = a[0].splitlines(), b[0].splitlines()
                        for i, (x, y) in enumerate(zip(la, lb)):
                            if x != y:
                                print(f"   line {i}: tcpdump {x[:150]!r}\n   line {i}: ptcap   {y[:150]!r}")
                                break
                        print(f"   lines tcpdump {len(la)} ptcap {len(lb)}")
    print(f"{variant}: {len(todo)} tests, {bad} differences; work {WORK}")


main()
