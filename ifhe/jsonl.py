"""Append-only JSON-lines metric logs that stay consistent with the checkpoint they belong to."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable

from .checkpoint import atomic_write_text


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    return v


class JsonlLog:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything after it is not trusted
        return records

    def keep(self, predicate: Callable[[dict], bool]) -> list[dict]:
        """Drop records the checkpoint does not cover (written after the last save, before a kill)."""
        records = [r for r in self.read() if predicate(r)]
        if self.path.exists():
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in records))
        return records
