"""Drives the real Wireshark GUI (wireshark-qt) under Xvfb and reports what it shows, as JSON.

Run by tests/test_wireshark_gui.py as an unprivileged member of group wireshark, with the
system's python (pyatspi, the AT-SPI client, is a Debian package), inside dbus-run-session:

    dbus-run-session -- /usr/bin/python3 wireshark_gui_driver.py CONFIG.json

It reads Wireshark's widgets through AT-SPI (Qt's accessibility bridge) and clicks with
xdotool; screenshots go to the config's directory. Nothing here decides pass or fail: the
test asserts on the report.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import pyatspi

MAIN_TITLE = "The Wireshark Network Analyzer"


class Gui:
    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.out = cfg["dir"]
        self.procs: list[subprocess.Popen] = []
        self.report: dict = {"steps": []}
        self.t0 = time.monotonic()

    # -- the display, the accessibility bus, Wireshark ------------------------------------------
    def start_display(self) -> None:
        # -noreset: by default Xvfb resets when its last client disconnects, which clears the
        # root window's properties, among them AT_SPI_BUS (see start_a11y)
        r, w = os.pipe()
        xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1600x1200x24", "-nolisten", "tcp",
                                 "-noreset"], pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(w)
        self.procs.append(xvfb)
        number = b""
        while not number.endswith(b"\n"):
            chunk = os.read(r, 16)
            if not chunk:
                raise SystemExit("Xvfb did not start")
            number += chunk
        os.close(r)
        os.environ["DISPLAY"] = f":{number.decode().strip()}"
        os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="ptcap-gui-rt-")
        # Help opens the page with xdg-open: this one notes what it was asked to open
        bindir = os.path.join(self.out, "bin")
        os.makedirs(bindir, exist_ok=True)
        with open(os.path.join(bindir, "xdg-open"), "w") as f:
            f.write(f'#!/bin/sh\nprintf "%s\\n" "$1" >> {self.out}/opened.txt\n')
        os.chmod(os.path.join(bindir, "xdg-open"), 0o755)
        os.environ["PATH"] = f"{bindir}:{os.environ['PATH']}"

    def start_a11y(self) -> None:
        """The accessibility bus and registry, ready before Wireshark starts.

        Qt 5.15's bridge connects to the accessibility bus at once only when the X root
        window names it (AT_SPI_BUS). Otherwise it asks the session bus for the address and,
        before the answer comes, already registers with the registry over the connection it
        does not have yet ("Error in contacting registry: Not connected to D-Bus server" in
        Wireshark's log) and never again. So: one bus launcher (started here, not also by
        D-Bus activation), which writes AT_SPI_BUS on the display (kept by -noreset), the
        registry up, accessibility on, and only then Wireshark."""
        self.procs.append(subprocess.Popen(["/usr/libexec/at-spi-bus-launcher", "--launch-immediately"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 15
        while "AT_SPI_BUS(STRING)" not in subprocess.run(["xprop", "-root", "AT_SPI_BUS"], capture_output=True,
                                                         text=True).stdout:
            if time.monotonic() > deadline:
                raise SystemExit("the accessibility bus launcher did not set AT_SPI_BUS on the display")
            time.sleep(0.05)
        self.a11y_bus = subprocess.run(
            ["dbus-send", "--session", "--print-reply=literal", "--dest=org.a11y.Bus", "/org/a11y/bus",
             "org.a11y.Bus.GetAddress"], capture_output=True, text=True).stdout.strip()
        subprocess.run(["dbus-send", "--session", "--print-reply", "--dest=org.a11y.Bus", "/org/a11y/bus",
                        "org.freedesktop.DBus.Properties.Set", "string:org.a11y.Status", "string:IsEnabled",
                        "variant:boolean:true"], stdout=subprocess.DEVNULL)
        # the registry: the first call to it starts it on the accessibility bus
        while self._registry_children() is None:
            if time.monotonic() > deadline:
                raise SystemExit("the AT-SPI registry did not start")
            time.sleep(0.1)
        os.environ["QT_LINUX_ACCESSIBILITY_ALWAYS_ON"] = "1"
        os.environ.pop("NO_AT_BRIDGE", None)

    def _registry_children(self) -> str | None:
        r = subprocess.run(["gdbus", "call", "--address", self.a11y_bus, "--dest", "org.a11y.atspi.Registry",
                            "--object-path", "/org/a11y/atspi/accessible/root",
                            "--method", "org.a11y.atspi.Accessible.GetChildren"], capture_output=True, text=True)
        return r.stdout if r.returncode == 0 else None

    def start_wireshark(self) -> None:
        # its temporary files (capture file, extcap fifo) in a folder of their own, read by live_capture
        self.tmp = os.path.join(self.out, "tmp")
        os.makedirs(self.tmp, exist_ok=True)
        ws = subprocess.Popen(["wireshark", *self.cfg.get("wireshark_args", [])], env={**os.environ, "TMPDIR": self.tmp},
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.out, "wireshark.log"), "a"))
        self.wireshark = ws
        self.procs.append(ws)
        deadline = time.monotonic() + 20
        while "accessible/root" not in (self._registry_children() or ""):
            if time.monotonic() > deadline or ws.poll() is not None:
                raise SystemExit("Wireshark never registered with the AT-SPI registry")
            time.sleep(0.1)
        self.report["registered_seconds"] = round(time.monotonic() - self.t0, 1)
        subprocess.run(["xdotool", "search", "--sync", "--name", MAIN_TITLE], stdout=subprocess.DEVNULL, timeout=30)
        subprocess.run(["xdotool", "search", "--name", MAIN_TITLE, "windowmove", "0", "0",
                        "windowsize", "1600", "1200"], stdout=subprocess.DEVNULL)
        self.app = self._app()

    def _app(self):
        deadline = time.time() + 10
        while time.time() < deadline:
            for a in pyatspi.Registry.getDesktop(0):
                if a is not None and (a.name or "").lower() == "wireshark":
                    return a
            time.sleep(0.2)
        raise SystemExit("no Wireshark on the AT-SPI desktop")

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    # -- reading and acting ------------------------------------------------------------------
    def walk(self, acc=None):
        """Depth first; below the root it skips what is not showing (Wireshark keeps many
        hidden dialogs) and big tables (the packet list, read on its own)."""
        acc = acc if acc is not None else self.app
        stack = [acc]
        while stack:
            x = stack.pop()
            try:
                if x is not acc and x.getRoleName() not in ("menu item", "popup menu", "menu", "table cell") \
                        and not x.getState().contains(pyatspi.STATE_SHOWING):
                    continue
                yield x
                n = x.childCount
                if n > 300 and x is not acc:
                    continue
                stack.extend(x.getChildAtIndex(i) for i in range(n - 1, -1, -1))
            except Exception:       # a widget that went away while walked
                continue

    def find(self, role=None, name=None, prefix=None, root=None, timeout=10.0):
        deadline = time.time() + timeout
        while True:
            for x in self.walk(root):
                try:
                    if x is None or (role and x.getRoleName() != role):
                        continue
                    if name is not None and x.name != name:
                        continue
                    if prefix is not None and not (x.name or "").startswith(prefix):
                        continue
                    return x
                except Exception:
                    continue
            if time.time() > deadline:
                return None
            time.sleep(0.2)

    def window_with(self, role: str, name: str, timeout: float = 10.0):
        """The top-level window (not the main one) holding a widget of this role and name."""
        deadline = time.time() + timeout
        while True:
            for i in range(self.app.childCount):
                top = self.app.getChildAtIndex(i)
                try:
                    if top is None or top.name == MAIN_TITLE:
                        continue
                    for x in self.walk(top):
                        if x is not None and x.getRoleName() == role and x.name == name:
                            return top
                except Exception:
                    continue
            if time.time() > deadline:
                return None
            time.sleep(0.2)

    @staticmethod
    def until(cond, timeout: float = 5.0) -> bool:
        """Poll `cond` until it holds (True) or `timeout` passes (False)."""
        deadline = time.time() + timeout
        while not cond():
            if time.time() > deadline:
                return False
            time.sleep(0.1)
        return True

    def gone(self, role=None, name=None, prefix=None) -> bool:
        """No widget of this role and name (or name prefix) is shown now."""
        return self.find(role, name, prefix, timeout=0) is None

    def names(self, role, root=None) -> list[str]:
        out = []
        for x in self.walk(root):
            try:
                if x is not None and x.getRoleName() == role:
                    out.append(x.name or "")
            except Exception:
                continue
        return out

    @staticmethod
    def extents(x):
        e = x.queryComponent().getExtents(pyatspi.DESKTOP_COORDS)
        return e.x, e.y, e.width, e.height

    def click(self, x=None, at=None, double=False) -> None:
        if at is None:
            ex, ey, w, h = self.extents(x)
            at = (ex + w // 2, ey + h // 2)
        subprocess.run(["xdotool", "mousemove", str(at[0]), str(at[1]), "click", "--repeat",
                        "2" if double else "1", "--delay", "80", "1"])

    def key(self, *keys: str) -> None:
        subprocess.run(["xdotool", "key", *keys])

    def menu_action(self, menu: str, item: str) -> bool:
        top = self.find("menu item", menu, timeout=5)
        entry = self.find("menu item", item, root=top, timeout=5) if top else None
        if entry is None:
            return False
        try:
            entry.queryAction().doAction(0)
        except Exception:       # no reply in time: the action (a retap, a dialog) is still running
            pass
        return True

    def shot(self, name: str) -> None:
        subprocess.run(["import", "-window", "root", os.path.join(self.out, name)], stderr=subprocess.DEVNULL)

    def step(self, name: str) -> None:
        self.report["steps"].append(name)
        self.report.setdefault("step_seconds", []).append(round(time.monotonic() - self.t0, 1))
        self.save()

    def save(self) -> None:
        with open(os.path.join(self.out, "report.json"), "w") as f:
            json.dump(self.report, f, indent=1)

    # -- what the test looks at ----------------------------------------------------------------
    def interfaces(self) -> None:
        listed = [n for n in self.names("table cell") if "ptcap" in n]
        self.report["interfaces"] = listed
        label = self.find("label", prefix="Profile:", timeout=2)
        self.report["profile_label"] = label.name if label else None
        self.shot("interfaces.png")
        self.step("interfaces")

    def profiles(self) -> None:
        if not self.menu_action("Edit", "Configuration Profiles…"):
            return
        dialog = self.window_with("table cell", "Global")     # a profile's type column
        if dialog is None:
            self.shot("profiles-missing.png")
            return
        self.until(lambda: "ptcap" in self.names("table cell", dialog))      # the rows filled in
        cells = self.names("table cell", dialog)
        # rows of (name, type): the cells after the column headers, two a row
        pairs = [(cells[i], cells[i + 1]) for i in range(0, len(cells) - 1)
                 if cells[i + 1] in ("Default", "Personal", "Global")]
        self.report["profiles"] = pairs
        self.shot("profiles.png")
        cancel = self.find("push button", "Cancel", root=dialog, timeout=1)
        if cancel is not None:
            cancel.queryAction().doAction(0)
        self.step("profiles")

    def _row_cell(self, name: str):
        cell = self.find("table cell", name, timeout=5)
        if cell is None:
            raise SystemExit(f"no interface row {name!r}")
        return cell

    def options_dialog(self) -> None:
        cell = self._row_cell("ptcap-processes: ptcap")
        x, y, w, h = self.extents(cell)
        dialog = None
        for _ in range(3):          # a click that only gave the window focus opens nothing
            self.click(at=(x - 16, y + h // 2))          # the gear at the start of the row
            dialog = self.window_with("page tab", "Capture", timeout=5)    # the dialog's first tab
            if dialog is not None:
                break
        if dialog is None:
            self.shot("options-missing.png")
            return
        self.find("table cell", "any (all interfaces)", root=dialog, timeout=5)    # the controls are in
        boxes, dump = {}, []
        for b in self.walk(dialog):
            try:
                state = b.getState()
                dump.append(f"{b.getRoleName()}|{b.name}|{state.contains(pyatspi.STATE_CHECKABLE)}|{state.contains(pyatspi.STATE_CHECKED)}")
                if state.contains(pyatspi.STATE_CHECKABLE) or b.getRoleName() == "check box":
                    boxes[b.name] = state.contains(pyatspi.STATE_CHECKED)
            except Exception:
                continue
        self.report["option_boxes"] = boxes
        self.shot("options.png")
        # Qt does not tell AT-SPI whether a multicheck's item is checked: the darkness of each
        # item's box in the screenshot does (a check mark is dark on the light box)
        darkness = {}
        for name in ("any (all interfaces)", "lo"):
            cell = self.find("table cell", name, root=dialog, timeout=2)
            if cell is not None:
                x, y, w, h = self.extents(cell)
                crop = subprocess.run(["convert", os.path.join(self.out, "options.png"), "-crop",
                                       f"{h}x{h}+{x}+{y}", "-colorspace", "Gray", "-format", "%[fx:1-mean]", "info:"],
                                      capture_output=True, text=True).stdout.strip()
                darkness[name] = float(crop) if crop else None
        self.report["option_box_darkness"] = darkness
        help_button = self.find("push button", "Help", root=dialog, timeout=2)
        if help_button is not None:
            help_button.queryAction().doAction(0)
            deadline = time.time() + 10
            opened = os.path.join(self.out, "opened.txt")
            while time.time() < deadline and not os.path.exists(opened):
                time.sleep(0.1)
            self.report["help_opened"] = open(opened).read().split() if os.path.exists(opened) else []
        cancel = self.find("push button", "Cancel", root=dialog, timeout=2)
        if cancel is not None:
            cancel.queryAction().doAction(0)
        else:
            self.key("Escape")
        self.until(lambda: self.window_with("page tab", "Capture", timeout=0) is None)    # closed
        self.step("options")

    def bad_filter(self) -> None:
        self.click(self._row_cell("ptcap-processes: ptcap"))
        entry = self.find("text", "Capture filter entry")
        entry.queryEditableText().setTextContents(self.cfg["bad_filter"])
        label = self.find("label", prefix="ptcap: ", timeout=15)
        self.report["filter_reason"] = label.name if label else None
        self.shot("bad-filter.png")
        self.step("bad filter")

    def live_capture(self) -> None:
        # typed, as a user types it: Wireshark checks a text set through AT-SPI, but captures
        # with what was typed (or with no filter)
        self.click(self.find("text", "Capture filter entry"))
        self.key("ctrl+a")
        subprocess.run(["xdotool", "type", "--delay", "10", self.cfg["good_filter"]])
        # the check of the new text has run: the bad filter's reason is gone
        self.until(lambda: self.gone("label", prefix="ptcap: "), timeout=10)
        started = None
        for _ in range(3):      # a double click that only took the focus from the entry starts nothing
            if self.find(prefix="Capturing from ptcap", timeout=0) is None:
                self.click(self._row_cell("ptcap-processes: ptcap"), double=True)
            started = self.find(prefix="Capturing from ptcap", timeout=8)
            if started is not None:
                break
        self.report["capturing_title"] = started.name if started else None
        sender = subprocess.Popen(self.cfg["sender"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(sender)
        comm = self.cfg["sender_comm"]
        deadline = time.time() + 25
        headers, rows = [], []
        packet_list = self.find("tree", "Packet list", timeout=10)
        while packet_list is not None and time.time() < deadline:
            try:
                headers, cells = [], []
                for i in range(min(packet_list.childCount, 800)):
                    c = packet_list.getChildAtIndex(i)
                    if c is None:
                        continue
                    (headers if c.getRoleName() == "table column header" else cells).append(c.name or "")
            except Exception:       # Wireshark busy with the capture: no reply in time
                time.sleep(0.5)
                continue
            rows = [cells[i:i + len(headers)] for i in range(0, len(cells), len(headers) or 1)]
            if any(comm in row for row in rows):
                break
            time.sleep(0.5)
        self.report["temporary_files"] = sorted(os.listdir(self.tmp))
        self.report["packet_list_headers"] = headers
        self.report["packet_list_rows"] = rows[:60]
        self.report["sender_pid"] = sender.pid
        self.shot("capture.png")
        self.step("capture")

    def statistics(self) -> None:
        top = self.find("menu item", "Statistics", timeout=5)
        self.report["statistics_menu"] = [n for n in self.names("menu item", top) if "ptcap" in n] if top else []
        if not self.menu_action("Statistics", "ptcap Processes"):
            return
        window = None
        deadline = time.time() + 10
        while window is None and time.time() < deadline:
            for i in range(self.app.childCount):
                top = self.app.getChildAtIndex(i)
                if top is not None and "ptcap Processes" in (top.name or ""):
                    window = top
            time.sleep(0.2)
        text, box = "", None
        deadline = time.time() + 10
        while window is not None and time.time() < deadline and "Process (comm, PID)" not in text:
            for x in self.walk(window):
                try:
                    if x.getRoleName() in ("text", "paragraph"):
                        box = x.queryText()
                        text = box.getText(0, -1)
                        break
                except Exception:
                    continue
            time.sleep(0.3)
        self.report["statistics_window"] = window.name if window else None
        self.report["statistics_text"] = text
        self.report["statistics_wrapped"] = self._wrapped(box, text) if box else None
        self.shot("statistics.png")
        self.step("statistics")

    @staticmethod
    def _wrapped(box, text: str) -> list[str]:
        """The lines of a text widget it shows wrapped: their last character is lower down
        than their first."""
        out, start = [], 0
        for line in text.split("\n"):
            if line:
                first = box.getCharacterExtents(start, pyatspi.DESKTOP_COORDS)
                last = box.getCharacterExtents(start + len(line) - 1, pyatspi.DESKTOP_COORDS)
                if last[1] > first[1]:
                    out.append(line)
            start += len(line) + 1
        return out

    def stop_capture(self) -> None:
        self.menu_action("Capture", "Stop")
        self.until(lambda: self.gone(prefix="Capturing from ptcap"), timeout=10)
        self.step("stopped")


def main() -> int:
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    gui = Gui(cfg)
    started = time.monotonic()
    try:
        gui.start_display()
        gui.start_a11y()
        gui.start_wireshark()
        gui.interfaces()
        gui.profiles()
        gui.options_dialog()
        gui.bad_filter()
        gui.live_capture()
        gui.statistics()
        gui.stop_capture()
    finally:
        gui.report["seconds"] = round(time.monotonic() - started, 1)
        gui.save()
        gui.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
