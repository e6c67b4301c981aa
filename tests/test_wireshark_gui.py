"""The real Wireshark GUI (wireshark-qt under Xvfb), run by a member of group wireshark:
ptcap's interfaces in the list, the profile, the options dialog ("any" checked, Help opens
the installed page), the reason of a bad capture filter, a live capture whose packet list
shows the profile's Process column, and Statistics > ptcap Processes.

tests/wireshark_gui_driver.py drives Wireshark (AT-SPI and xdotool) and reports what it
saw; this test asserts on that report. It runs in a network namespace of its own, so the
interface list does not change under it while other captures make and remove interfaces.
Screenshots stay in the test's directory (shown in the failure message)."""
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, run, wait_clean
from test_wireshark_desktop import userdel

pytestmark = pytest.mark.root      # installs system-wide, makes users, namespaces

DRIVER = ROOT / "tests" / "wireshark_gui_driver.py"
TOOLS = ("Xvfb", "wireshark", "xdotool", "xprop", "dbus-run-session", "convert", "import", "gdbus")


@pytest.fixture
def desktop():
    missing = [t for t in TOOLS if shutil.which(t) is None]
    missing += [p for p in ("/usr/libexec/at-spi-bus-launcher",) if not os.path.exists(p)]
    if run(["/usr/bin/python3", "-c", "import pyatspi"], check=False).returncode != 0:
        missing.append("python3-pyatspi")
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the GUI test needs {', '.join(missing)} (./install.sh installs them)")
        pytest.skip(f"no display server here: {', '.join(missing)} missing (./install.sh installs them)")
    if not Path("/opt/ptcap/libexec/ptcap-capture").exists():
        pytest.fail("ptcap is not installed for Wireshark: run ./install.sh")
    tag = os.getpid() % 100000
    user, ns = f"ptcwg{tag}", f"ptcwsgui{tag}"
    top = Path(tempfile.mkdtemp(prefix="ptcap-gui-", dir="/tmp"))
    top.chmod(0o755)
    home = top / "home"
    run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh", "-G", "wireshark", user])
    run(["ip", "netns", "add", ns])
    try:
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        entry = pwd.getpwnam(user)
        home.mkdir()
        out = top / "out"
        out.mkdir()
        for d in (home, out):
            os.chown(d, entry.pw_uid, entry.pw_gid)
        yield user, ns, home, out
    finally:
        userdel(user)
        run(["ip", "netns", "del", ns], check=False)
        for p in sorted(out.glob("*.png")):
            shutil.copy(p, Path(tempfile.gettempdir()) / f"ptcap-gui-last-{p.name}")
        shutil.rmtree(top, ignore_errors=True)


def test_wireshark_gui_for_a_member_of_group_wireshark(desktop):
    user, ns, home, out = desktop
    port = 20455
    sender_name = "ptcgui-sender"           # the comm the Process column must show
    sender = home / sender_name
    sender.symlink_to("/usr/bin/python3")
    script = home / "send.py"
    script.write_text("import socket, sys, time\n"
                      "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                      "for _ in range(600):\n"
                      f"    s.sendto(b'ptcap-gui', ('127.0.0.1', {port}))\n"
                      "    time.sleep(0.05)\n")
    cfg = {"dir": str(out), "wireshark_args": ["-C", "ptcap"], "bad_filter": "udp portx 9",
           "good_filter": f"udp port {port}", "sender": [str(sender), str(script)], "sender_comm": sender_name}
    (out / "cfg.json").write_text(json.dumps(cfg))
    started = time.monotonic()
    res = subprocess.run(["ip", "netns", "exec", ns, "runuser", "-u", user, "--", "env", f"HOME={home}",
                          "dbus-run-session", "--", "/usr/bin/python3", str(DRIVER), str(out / "cfg.json")],
                         capture_output=True, text=True, timeout=240, cwd=home)
    took = time.monotonic() - started
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    where = f"(screenshots: {tempfile.gettempdir()}/ptcap-gui-last-*.png; driver: {res.stderr[-2000:]})"
    assert report.get("steps", [])[-1:] == ["stopped"], f"{report} {where}"

    # the ptcap interfaces are listed for the member; the ptcap profile is the one in use
    assert report["interfaces"] == ["ptcap-processes: ptcap", "ptcap-kernel-drops: ptcap-drops"], where
    assert report["profile_label"] == "Profile: ptcap"
    assert ["ptcap", "Global"] in report["profiles"], report["profiles"]
    # the options dialog: "any" checked at first (a check mark darkens its box), Help opens
    # the installed HTML page
    dark = report["option_box_darkness"]
    assert dark["any (all interfaces)"] > dark["lo"] + 0.03, dark
    assert report["help_opened"] == ["file:///opt/ptcap/extcap/help.html"]
    assert "<title>ptcap in Wireshark" in Path("/opt/ptcap/extcap/help.html").read_text()
    # the reason of a bad capture filter, as the extcap gave it
    assert report["filter_reason"] == "ptcap: can't parse filter expression: syntax error"
    # a live capture: the packet list has the profile's columns, and the sender's process
    # the capture filter typed in the main window is the capture's (Wireshark names it in the title)
    assert report["capturing_title"] == f"Capturing from ptcap-processes: ptcap (udp port {port})"
    # the capture's temporary file has a short name, without spaces (beside it: the extcap's fifo)
    files = [f for f in report["temporary_files"] if not f.startswith("wireshark_extcap_")]
    assert len(files) == 1 and re.fullmatch(r"wireshark_ptcap-processes[A-Z0-9]{6}\.pcapng", files[0]), \
        report["temporary_files"]
    headers = report["packet_list_headers"]
    assert headers[6:10] == ["Process", "PID", "Container", "Pod"], headers
    rows = report["packet_list_rows"]
    mine = [r for r in rows if len(r) == len(headers) and r[headers.index("Process")] == sender_name]
    assert mine, f"no packet of {sender_name} in the packet list: {rows[:5]} {where}"
    pid = {r[headers.index("PID")] for r in mine}
    assert {r[headers.index("Protocol")] for r in rows if len(r) == len(headers)} == {"UDP"}, rows[:5]
    assert len(pid) == 1 and pid.pop().isdigit()
    # Statistics > ptcap Processes: a menu item the Qt UI shows, and its window counts the sender
    assert report["statistics_menu"] == ["ptcap Processes"]
    assert report["statistics_window"] and "ptcap Processes" in report["statistics_window"]
    assert f"{sender_name} (" in report["statistics_text"], report["statistics_text"]
    assert report["statistics_wrapped"] == [], "the window wraps the table's lines"     # it fits
    # Wireshark registers with AT-SPI on its first start (the driver starts it once), and the
    # whole test stays under a minute
    print(f"GUI test: {took:.0f} s, registered at {report['registered_seconds']} s, steps at {report['step_seconds']} s")
    assert took < 60, f"the GUI test took {took:.0f} s"
    assert wait_clean() == []
