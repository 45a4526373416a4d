"""Background services: whether they answer on a port, and their processes found and stopped
by what marks them as ours, never by their names.

A process belongs to a started service when it is the service's leader (its pid, checked by
start time against a reused pid), in the leader's process group, carries the service's mark
in its environment, or descends from one of those (Ray's agents and workers rename
themselves, which hides their environment from a search by name).
"""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from contextlib import suppress

import psutil

SAME_START = 0.05  # seconds: a pid whose start time differs more is another process
POLL_SECONDS = 0.1


def leader(pid: int, started: float) -> psutil.Process | None:
    """The process ``pid`` while it runs and is the one started at ``started``."""
    with suppress(psutil.Error):
        proc = psutil.Process(pid)
        if abs(proc.create_time() - started) < SAME_START:
            return proc if proc.status() != psutil.STATUS_ZOMBIE else None
    return None


def members(pid: int, started: float, marker: tuple[str, str]) -> dict[int, psutil.Process]:
    """The live processes of the service whose leader is ``pid`` and whose environment mark
    is ``marker`` (name, value): see the module's docstring."""
    try:  # the pid is another process's now: the group of that number is not ours
        reused = abs(psutil.Process(pid).create_time() - started) >= SAME_START
    except psutil.Error:
        reused = False
    name, value = marker
    found = {}
    for proc in psutil.process_iter():
        with suppress(psutil.Error, OSError):
            in_group = not reused and os.getpgid(proc.pid) == pid
            if in_group or proc.environ().get(name) == value:
                found[proc.pid] = proc
    for proc in list(found.values()):
        with suppress(psutil.Error):
            found |= {child.pid: child for child in proc.children(recursive=True)}
    return {number: proc for number, proc in found.items() if running(proc)}


def running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until the processes have exited (zombies count as gone); the survivors."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(POLL_SECONDS)


def send(procs: list[psutil.Process], number: int) -> None:
    for proc in procs:
        with suppress(psutil.Error):
            proc.send_signal(number)


def stop(
    pid: int, started: float, marker: tuple[str, str], *, drain: float, grace: float
) -> list[psutil.Process]:
    """Stop a service; the processes that outlived SIGKILL. With ``drain`` > 0 its leader gets
    SIGTERM first and that long to stop the rest itself (a Ray head drains its node); then
    every process of the service left gets SIGTERM and, after ``grace`` seconds, SIGKILL."""
    procs = members(pid, started, marker)
    first = leader(pid, started)
    if drain > 0 and first is not None:
        send([first], signal.SIGTERM)
        gone([first], drain)
    procs |= members(pid, started, marker)
    send(list(procs.values()), signal.SIGTERM)
    left = gone(list(procs.values()), grace)
    left += [p for number, p in members(pid, started, marker).items() if number not in procs]
    send(left, signal.SIGKILL)
    return gone(left, grace)


def answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
