"""`ptcap -- CMD ARGS`: start a command whose traffic (and its descendants') is captured.

The command is forked first and held before exec until its pid is in the kernel's
selector, so not even its first packet is missed. Under sudo it runs as the invoking user.
"""
from __future__ import annotations

import ctypes
import os
import pwd
import signal

PR_SET_PDEATHSIG = 1


def _end_with_parent(parent: int) -> None:
    """SIGTERM the command if ptcap dies, even by SIGKILL (set after the user changes:
    a change of credentials clears it)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:      # ptcap already gone
        os._exit(127)



class Command:
    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.status: int | None = None
        read_end, self._go = os.pipe()
        parent = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:       # child: wait for the go, become the user, exec
            try:
                os.close(self._go)
                os.read(read_end, 1)
                os.close(read_end)
                # as the shell would start it: Python ignores SIGPIPE and SIGXFSZ, and an
                # ignored signal stays ignored across exec (`yes | head -1` wrote "Broken pipe")
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGXFSZ):
                    signal.signal(sig, signal.SIG_DFL)
                _drop_to_invoking_user()
                _end_with_parent(parent)
                os.environ.update(env or {})
                os.execvp(argv[0], argv)
            except BaseException as e:  # noqa: BLE001 (the child must never return)
                os.write(2, f"ptcap: {argv[0]}: {e}\n".encode())
            os._exit(127)
        os.close(read_end)

    def start(self) -> None:
        """Let the held child exec its command."""
        os.write(self._go, b"g")
        os.close(self._go)
        self._go = -1

    def poll(self) -> int | None:
        """The command's exit status once it has exited (128+N if killed by signal N)."""
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                if self.status < 0:
                    self.status = 128 - self.status
        return self.status

    def stop(self) -> None:
        """Capture is ending for another reason: end the command too (never leave it behind)."""
        if self._go >= 0:
            os.close(self._go)      # EOF: the held child exits without exec
            self._go = -1
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)


def _drop_to_invoking_user() -> None:
    uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    if os.geteuid() != 0 or not uid or not gid:
        return
    user = os.environ.get("SUDO_USER")
    try:
        groups = os.getgrouplist(user, int(gid)) if user else [int(gid)]
    except KeyError:
        groups = [int(gid)]
    os.setgroups(groups)
    os.setgid(int(gid))
    os.setuid(int(uid))
    if user:
        try:
            os.environ["HOME"] = pwd.getpwnam(user).pw_dir
        except KeyError:
            pass
