"""Locks held by one process at a time (the kernel's `flock`), with who holds them written inside for people and
messages: a sweep's cells and its record are run and written under them."""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from .errors import IfheError


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CellLock:
    """An exclusive lock on a file, held by one process at a time.

    The file holds the holder's pid and host for people and messages; exclusion itself is `fcntl.flock`, which
    the kernel drops when the holder dies, so a lock left by a killed process (its pid dead, the file still
    there) is simply taken over, and two processes that find the same stale file cannot both take it. The file
    is removed on release; a process that opened it just before the removal notices (another inode) and
    tries again."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self, timeout: float = 0.0) -> bool:
        if self.fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.05)
                continue
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # released and removed between our open and our flock: take the new file
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode())
            self.fd = fd
            return True

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    def __enter__(self) -> "CellLock":
        if not self.acquire():
            raise IfheError(f"{self.path} is held by {describe_holder(lock_holder(self.path))}")
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(path: str | os.PathLike) -> dict | None:
    """Who holds the lock at `path` ({"pid", "host", "since"}), or None when nobody does (no file, or a file
    left by a process that died)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            try:
                info = json.loads(os.read(fd, 4096).decode() or "{}")
            except ValueError:
                info = {}
            return info if isinstance(info, dict) else {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def describe_holder(info: dict | None) -> str:
    if not info:
        return "another process"
    alive = "" if info.get("host") != socket.gethostname() or _pid_alive(int(info.get("pid", 0) or 0)) \
        else " (not running)"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}{alive}, since {info.get('since', '?')}"
