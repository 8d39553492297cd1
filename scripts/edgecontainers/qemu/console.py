"""Driving a serial console with pexpect.

* every wait is an expect-list with one deadline for the step, and a timeout
  says which step, what was expected and shows the last console lines;
* commands run as ``cmd; echo __RC<n>=$?__`` and the exit code is read from
  the marker with the ``\\r*\\n`` line end the serial console emits
  (``\\r\\r\\n``);
* everything QEMU prints goes to the per-test console log.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import pexpect

from .vm import GuestError, GuestPanicked, StepTimeout

TAIL_LINES = 50
PROMPT = "EDGE-PROMPT# "
# split so that the echo of the command that sets it does not match
_SET_PROMPT = "export PS1='EDGE-''PROMPT# ' PS2='' PROMPT_COMMAND=''"
LOGIN_PROMPT = r"login: "
PASSWORD_PROMPT = r"[Pp]assword: ?"
SHELL_PROMPT = r"[#$] $"
# A fault of the emulator, not of the guest: under multi-threaded TCG (QEMU 7.2
# here) a vCPU can run stale code while another patches the kernel's text
# (static keys; seen in the scheduler about when the containers start) and the
# kernel reports an int3 it did not place.  The harness counts these
# lines (_Tee.emulator_faults) so that a boot hit by one can be told apart.
EMULATOR_FAULT = re.compile(r"Oops: int3\b")
# What the console shows once a reboot is under way: the kernel's last words, or
# the first ones of the firmware, bootloader or kernel of the next boot.
RESTART_MARKERS = [r"reboot: Restarting system", r"BdsDxe", r"U-Boot \d{4}\.", r"GNU GRUB", r"Linux version \d"]
_RESTART = re.compile("|".join(RESTART_MARKERS))
PANIC_MARKER = "Kernel panic - not syncing"
_PANIC_LINE = re.escape(PANIC_MARKER) + r"[^\r\n]*"


@dataclass(frozen=True)
class Result:
    command: str
    rc: int
    output: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def check(self) -> Result:
        if self.rc != 0:
            raise GuestError(f"'{self.command}' exited {self.rc}: {self.output.strip()[-500:]}")
        return self


class _Tee:
    """pexpect logfile_read: the console log file plus the last lines in memory."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.file: TextIO | None = path.open("a", encoding="utf-8", errors="replace") if path else None
        self.lines: deque[str] = deque(maxlen=TAIL_LINES)
        self._partial = ""
        self.extra: TextIO | None = None  # a second log (the current test's)
        # what the console lines said, for the harness's watchdog and fault reports
        self.emulator_faults: list[str] = []  # lines matching EMULATOR_FAULT
        self.panicked_at: float | None = None  # monotonic time of a kernel panic not yet followed by a restart
        self.panics: list[tuple[float, str]] = []  # every panic line seen, with its monotonic time
        self.restarted_at = 0.0  # monotonic time of the last restart marker
        # the console reader thread writes while the harness attaches, notes and reads
        self._lock = threading.Lock()

    def attach(self, path: Path) -> None:
        """Also write to ``path`` (one test's console log) until :meth:`detach`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = path.open("a", encoding="utf-8", errors="replace")
        with self._lock:
            old, self.extra = self.extra, extra
        if old:
            old.close()

    def detach(self) -> None:
        with self._lock:
            old, self.extra = self.extra, None
        if old:
            old.close()

    def write(self, data: str) -> None:
        with self._lock:
            for f in (self.file, self.extra):
                if f:
                    f.write(data)
            text = (self._partial + data).replace("\r", "")
            parts = text.split("\n")
            self._partial = parts.pop()
            self.lines.extend(parts)
            for line in parts:
                if EMULATOR_FAULT.search(line):
                    self.emulator_faults.append(line)
                if PANIC_MARKER in line:
                    self.panicked_at = time.monotonic()
                    self.panics.append((self.panicked_at, line.strip()))
                elif _RESTART.search(line):
                    self.panicked_at = None
                    self.restarted_at = time.monotonic()

    def panic_since(self, since: float) -> str | None:
        """The first kernel panic line the console showed at or after ``since`` (monotonic)."""
        with self._lock:
            return next((line for at, line in self.panics if at >= since), None)

    def flush(self) -> None:
        with self._lock:
            for f in (self.file, self.extra):
                if f:
                    f.flush()

    def note(self, text: str) -> None:
        """A harness note in the log (not console output)."""
        line = f"\n[harness {time.strftime('%H:%M:%S')}] {text}\n"
        with self._lock:
            for f in (self.file, self.extra):
                if f:
                    f.write(line)
                    f.flush()

    def tail(self, n: int = TAIL_LINES) -> str:
        with self._lock:
            lines = [*self.lines, self._partial] if self._partial else list(self.lines)
        return "\n".join(lines[-n:])

    def close(self) -> None:
        self.detach()
        with self._lock:
            old, self.file = self.file, None
        if old:
            old.close()


class Console:
    """The guest's serial console on QEMU's stdio."""

    def __init__(self, spawn: pexpect.spawn, tee: _Tee) -> None:
        self.spawn = spawn
        self.tee = tee
        self._n = 0
        self.logged_in = False

    @property
    def log_path(self) -> Path | None:
        return self.tee.path

    def tail(self, n: int = TAIL_LINES) -> str:
        return self.tee.tail(n)

    def fail(self, message: str, cls: type[GuestError] = GuestError) -> GuestError:
        self.tee.flush()
        return cls(message, tail=self.tail(), log_path=self.log_path)

    def expect(self, patterns: Sequence[str | type], timeout: float, step: str) -> int:
        """Wait for one of ``patterns`` (regexes, or pexpect.EOF) within ``timeout`` s."""
        plist = [*patterns]
        if pexpect.EOF not in plist:
            plist.append(pexpect.EOF)
        try:
            index = self.spawn.expect(plist, timeout=timeout)
        except pexpect.TIMEOUT:
            shown = ", ".join(p if isinstance(p, str) else "EOF" for p in patterns)
            raise self.fail(f"{step}: none of [{shown}] within {timeout:.0f}s", StepTimeout) from None
        if plist[index] is pexpect.EOF and pexpect.EOF not in patterns:
            raise self.fail(f"{step}: QEMU exited (console closed)")
        return index

    @property
    def match(self) -> re.Match | None:
        m = self.spawn.match
        return m if isinstance(m, re.Match) else None

    @property
    def before(self) -> str:
        return self.spawn.before if isinstance(self.spawn.before, str) else ""

    def send(self, text: str) -> None:
        self.spawn.send(text)

    def sendline(self, text: str = "") -> None:
        self.spawn.send(text + "\r")

    def login(self, user: str = "root", password: str = "", timeout: float = 600) -> None:
        """Log in on the serial console (or take an already open shell) and set up
        a predictable prompt with echo off."""
        deadline = time.monotonic() + timeout
        sent_user = False
        while True:
            left = deadline - time.monotonic()
            i = self.expect(
                [LOGIN_PROMPT, PASSWORD_PROMPT, "Login incorrect", SHELL_PROMPT],
                timeout=max(1.0, left),
                step="login on the serial console",
            )
            if i == 0:
                self.sendline(user)
                sent_user = True
            elif i == 1:
                if not sent_user:
                    self.sendline("")
                    continue
                self.sendline(password)
            elif i == 2:
                raise self.fail(f"login as {user} refused on the serial console")
            else:
                break
        self.setup_shell()

    def setup_shell(self, timeout: float = 60) -> None:
        self.sendline("")
        self.sendline(f"stty -echo cols 500 2>/dev/null; {_SET_PROMPT}; export TERM=dumb SYSTEMD_PAGER= PAGER=cat")
        self.expect([re.escape(PROMPT)], timeout, "shell prompt after login")
        # drain anything queued behind the first prompt
        self.sendline("true")
        self.expect([re.escape(PROMPT) + r"\s*$"], timeout, "shell prompt after login")
        self.logged_in = True

    def run(self, command: str, timeout: float = 120, check: bool = False) -> Result:
        """Run ``command`` in the shell; return its exit code and output."""
        self._n += 1
        n = self._n
        self.tee.note(f"run: {command}")
        # The marker's text in the command differs from what echo prints.
        self.sendline(f'{command}; echo __RC{n}"="$?__')
        step = f"command '{command[:200]}'"
        if self.expect([rf"__RC{n}=(\d+)__\r*\n", _PANIC_LINE], timeout, step) == 1:
            self.logged_in = False
            panic = str(self.spawn.after).strip()
            raise self.fail(f"the guest kernel panicked during {step}: {panic}", GuestPanicked)
        match = self.match
        assert match is not None
        output = self.before.replace("\r", "")
        rc = int(match.group(1))
        # the next prompt
        self.expect([re.escape(PROMPT)], 30, f"prompt after '{command[:80]}'")
        result = Result(command, rc, _strip_first_newline(output))
        if check:
            try:
                result.check()
            except GuestError as exc:
                raise self.fail(exc.short) from None
        return result


def _strip_first_newline(text: str) -> str:
    return text[1:] if text.startswith("\n") else text
