"""Run folders on disk (config.yaml, metrics.jsonl, status.json, bank/) and the results.json files of sweeps:
read-only summaries for the pages.

Run folders are listed only directly under the runs base directory; symlinked entries are skipped, so a link
cannot pull a folder from elsewhere into the app.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ifhe.errors import IfheError

# ifhe.bank and ifhe.jsonl import torch, pandas takes a second: they are imported where used, as the first page
# reads this module (for the sweeps it lists) before it draws


@dataclass
class RunInfo:
    name: str
    path: Path
    config: dict
    status: dict = field(default_factory=dict)
    metrics: list = field(default_factory=list)

    @property
    def method(self) -> str:
        return self.config.get("method", "?")

    @property
    def teacher(self) -> str:
        return str(self.config.get("teacher", "?"))

    @property
    def student(self) -> str:
        return self.config.get("student", "?")

    @property
    def synth(self) -> dict:
        return self.config.get("synth") or {}

    @property
    def accuracy(self) -> list[dict]:
        return [{"kd_steps": r.get("kd_steps", 0), "round": r.get("round"), "elapsed_s": r.get("elapsed_s"),
                 "student_acc": r["student_acc"], "head_acc": r.get("head_acc")}
                for r in self.metrics if r.get("student_acc") is not None]

    @property
    def final_acc(self) -> float | None:
        if self.status.get("student_acc") is not None:
            return self.status["student_acc"]
        acc = self.accuracy
        return acc[-1]["student_acc"] if acc else None

    @property
    def final_head_acc(self) -> float | None:
        if self.status.get("head_acc") is not None:
            return self.status["head_acc"]
        acc = self.accuracy
        return acc[-1].get("head_acc") if acc else None

    @property
    def bank_dir(self) -> Path:
        return self.path / "bank"

    @property
    def bank_size(self) -> int:
        if self.status.get("bank_size") is not None:
            return int(self.status["bank_size"])
        from ifhe.bank import count_images
        try:
            return count_images(self.bank_dir)
        except IfheError:  # a damaged manifest: the run is listed, its bank counts as empty
            return 0

    @property
    def state(self) -> str:
        if self.status.get("state"):
            return self.status["state"]
        return "finished" if (self.path / "student.safetensors").exists() else "running or killed"

    def summary(self) -> dict:
        s = self.synth
        last = self.metrics[-1] if self.metrics else {}
        return {"run": self.name, "method": self.method, "teacher": Path(self.teacher).name,
                "student": self.student, "alpha": s.get("alpha"), "beta": s.get("beta"), "gamma": s.get("gamma"),
                "batch": s.get("batch_size"), "rounds": len(self.metrics), "kd_steps": last.get("kd_steps", 0),
                "bank": self.bank_size, "student_acc": self.final_acc, "h_acc": self.final_head_acc,
                "minutes": round((last.get("elapsed_s") or 0) / 60, 1), "state": self.state}


def read_run(path: Path) -> RunInfo | None:
    cfg_file = path / "config.yaml"
    if not cfg_file.is_file():
        return None
    try:
        config = yaml.safe_load(cfg_file.read_text()) or {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return None
    if not isinstance(config, dict):
        return None
    status = {}
    if (path / "status.json").is_file():
        try:
            status = json.loads((path / "status.json").read_text())
        except (OSError, ValueError):
            status = {}
    from ifhe.jsonl import JsonlLog
    try:
        metrics = JsonlLog(path / "metrics.jsonl").read()
    except (OSError, UnicodeDecodeError):
        metrics = []
    return RunInfo(path.name, path, config, status, metrics)


def list_runs(base: str | os.PathLike) -> list[RunInfo]:
    """Run folders directly under `base`, newest first."""
    base = Path(base)
    if not base.is_dir():
        return []
    out = []
    for p in base.iterdir():
        if p.is_symlink() or not p.is_dir():
            continue
        info = read_run(p)
        if info is not None:
            out.append(info)
    out.sort(key=lambda r: r.path.stat().st_mtime, reverse=True)
    return out


def flat_config(config: dict) -> dict:
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                out[f"{k}.{k2}"] = v2
        else:
            out[k] = v
    return out


def config_diff(runs: list[RunInfo]):
    """A table of the settings that differ between `runs` (one column per run)."""
    import pandas as pd
    flat = {r.name: flat_config(r.config) for r in runs}
    keys = sorted({k for f in flat.values() for k in f})
    differing = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat.values()}) > 1]
    rows = differing or keys[:12]
    return pd.DataFrame({name: [str(f.get(k)) for k in rows] for name, f in flat.items()}, index=rows)


# ---- sweeps of `ifhe reproduce` (results.json) ----------------------------------------------------------------

RESULTS_FILE = "results.json"


def results_dir():
    """Where the committed sweeps live: $IFHE_APP_RESULTS, else the checkout's results/."""
    env = os.environ.get("IFHE_APP_RESULTS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "results"


def find_sweeps(roots, max_depth: int = 3) -> list[tuple[str, Path]]:
    """(label, results.json) of every sweep folder under `roots`, at most `max_depth` folders down; symlinks
    are not followed, run folders (runs/, bank/) not entered."""
    found: list[tuple[str, Path]] = []
    seen = set()
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        stack = [(root, 0)]
        while stack:
            folder, depth = stack.pop()
            f = folder / RESULTS_FILE
            if f.is_file() and not f.is_symlink() and f.resolve() not in seen and _is_sweep(f):
                seen.add(f.resolve())
                found.append((f"{root.name}/{folder.relative_to(root)}".rstrip("/.") or root.name, f))
            if depth >= max_depth:
                continue
            try:
                children = sorted(p for p in folder.iterdir()
                                  if p.is_dir() and not p.is_symlink() and p.name not in ("runs", "bank", "cells"))
            except OSError:
                continue
            stack.extend((c, depth + 1) for c in reversed(children))
    return found


def _is_sweep(path: Path) -> bool:
    """Whether a results.json is a sweep's (other tools write files of that name too)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return True  # listed, so that the page can say what is wrong with it
    if isinstance(data, dict):
        return "cells" in data
    return isinstance(data, list) and bool(data) and all(isinstance(c, dict) and "variant" in c for c in data)
