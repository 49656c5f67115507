"""A worker on the launching machine yields the CPU to the person: the app and the browser.

A worker runs at a lower priority than the app beside it, so a key press is served before a
training step (`ACTIVELAB_WORKER_NICE`, default 10; 0 keeps the launcher's priority).

A process's nice value only orders it against the processes of its own *session* where the
kernel groups the CPU by session (Linux's autogroup, on by default in most distributions:
`/proc/sys/kernel/sched_autogroup_enabled`). A worker leads a session of its own (a stop in
the app's terminal must not end a run), so there its nice value alone changed nothing: its
session got the same share as the app's and the browser's. Measured on 2 cores against two
busy processes: a nice-10 process in its own session took 90 % of a core, the same process
with its session at nice 10 took 23 %. So a worker sets its session's niceness as well.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

log = logging.getLogger(__name__)

NICE_ENV = "ACTIVELAB_WORKER_NICE"
DEFAULT_NICE = 10
LOWEST_NICE = 19
AUTOGROUP_SWITCH = Path("/proc/sys/kernel/sched_autogroup_enabled")
# Linux lets a process without CAP_SYS_ADMIN change an autogroup's niceness once per 100 ms,
# machine-wide (EAGAIN otherwise): two workers starting together retry, a bounded number of times.
AUTOGROUP_TRIES = 5
AUTOGROUP_RETRY_S = 0.12


def yield_to_the_person(launcher_nice: int | None = None) -> None:
    """Lower this worker's priority below its launcher's, and its session's if it leads one.
    `launcher_nice`: the launcher's own niceness, when this process does not start from it
    (a worker forked by the warm worker)."""
    increment = _increment()
    now = os.nice(0)
    wanted = min((now if launcher_nice is None else launcher_nice) + increment, LOWEST_NICE)
    if wanted != now:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, wanted)
        except PermissionError:  # a higher priority than the warm worker's needs privileges
            log.warning(
                "This worker runs at nice %d, not %d: the warm worker it came from was started "
                "with a larger %s; start the app (or script) with the value you want.",
                now, wanted, NICE_ENV,
            )  # fmt: skip
    if os.getsid(0) == os.getpid():  # never the launcher's session: that is the person's app
        _set_session_nice(os.nice(0))


def step_aside() -> None:
    """The lowest priority for this worker's remaining work (a run's follow-ups, once its
    results are out): the next round's training, started meanwhile, comes first."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, LOWEST_NICE)
    except OSError as exc:
        log.debug("Left this worker at nice %d: %s", os.nice(0), exc)
    if os.getsid(0) == os.getpid():
        _set_session_nice(LOWEST_NICE)


def autogroup_enabled() -> bool:
    """Whether this kernel shares the CPU out by session (Linux's autogroup)."""
    try:
        return AUTOGROUP_SWITCH.read_text().strip() == "1"
    except OSError:
        return False


def session_nice(pid: int | str = "self") -> int | None:
    """The niceness of a process's session's CPU group, or None when it has none.

    None also where autogroup is on but the process's session never got a group of its own: a
    session that began at boot (pid 1's, and a process started from it without `setsid`, as a
    CI runner may be) sits in the root group, and the kernel's file for it is empty."""
    try:
        text = _autogroup_file(pid).read_text()
    except OSError:
        return None
    found = re.search(r"\bnice (-?\d+)", text)  # "/autogroup-2768 nice 0"
    return int(found.group(1)) if found else None


def _autogroup_file(pid: int | str = "self") -> Path:
    """The kernel's file for a process's session's CPU group (read: "/autogroup-N nice K";
    written: a niceness)."""
    return Path(f"/proc/{pid}/autogroup")


def _increment() -> int:
    raw = os.environ.get(NICE_ENV, str(DEFAULT_NICE))
    try:
        return max(int(raw), 0)
    except ValueError:
        log.warning("%s=%r is not a whole number; using %d", NICE_ENV, raw, DEFAULT_NICE)
        return DEFAULT_NICE


def _set_session_nice(nice: int) -> None:
    current = session_nice()
    if current is None or current == nice:
        return
    for attempt in range(AUTOGROUP_TRIES):
        try:
            _autogroup_file().write_text(str(nice))
            return
        except BlockingIOError:  # another process changed one in the last 100 ms
            if attempt + 1 < AUTOGROUP_TRIES:
                time.sleep(AUTOGROUP_RETRY_S)  # the kernel's own rate limit, not a state
        except OSError as exc:
            log.debug("Left this worker's session at nice %d: %s", current, exc)
            return
    log.info("Left this worker's session at nice %d: the kernel said to try again", current)
