"""Who is running a run: `--resume` must never take over a run that is still going.

A run records its owner (host, pid and the process's start time, so a recycled pid is not
mistaken for it).  On the same host the owner is alive when that process still exists with that
start time.  From another host there is no way to look, so a run whose last result is recent
counts as live.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

#: A run on another host with no result for this long is taken to be dead (plus its timeout).
REMOTE_SILENCE_S = 60.0


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name in parentheses may hold spaces


def current_owner() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _start_time(pid)}


def _alive_here(pid: int, start: str | None) -> bool:
    if Path("/proc").is_dir():
        return start is not None and _start_time(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def still_running(owner: dict | None, last_activity: float, timeout_s: float) -> str | None:
    """Why the run looks live (one line), or None when it is safe to resume."""
    if not owner:
        return None
    if owner.get("host") == socket.gethostname():
        if owner.get("pid") != os.getpid() and _alive_here(int(owner["pid"]), owner.get("start")):
            return f"is still running in process {owner['pid']} on this host"
        return None
    from deploykit.execution.harness import OWN_WORK_LIMIT_S  # a task may go quiet that long in deploykit's own work

    silence = time.time() - last_activity
    if silence < max(timeout_s, OWN_WORK_LIMIT_S) + REMOTE_SILENCE_S:
        return f"may still be running on host {owner.get('host')} (last result {silence:.0f} s ago)"
    return None
