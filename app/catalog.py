"""What the pages offer to choose from, read without importing torch: the shipped models of the zoo (with their
role: a teacher, or a scratch-trained student kept for comparison) and the student architectures.

The Synthesize page is the first page a user sees; importing torch (2-3 s here) before drawing it made the first
page take 7-10 s. `ifhe.zoo` and `ifhe.models` import torch at module level, so this module reads the zoo's
manifest itself and mirrors the registry's architecture names (tests/test_app.py pins both to the engine's).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ifhe.errors import IfheError

ROOT = Path(__file__).resolve().parent.parent
# ifhe.models.ARCHITECTURES, in its order (test_catalog_matches_the_engine keeps them equal)
ARCHITECTURES = ("wrn16_1", "wrn16_2", "wrn40_1", "wrn40_2", "resnet18", "resnet34", "vgg11_bn")
ROLES = ("teacher", "student")


def pretrained_dir() -> Path:
    """The zoo's folder: ifhe.zoo.PRETRAINED_DIR once that is imported, else the same rule it follows."""
    zoo = sys.modules.get("ifhe.zoo")
    if zoo is not None:
        return Path(zoo.PRETRAINED_DIR)
    return Path(os.environ.get("IFHE_PRETRAINED", ROOT / "pretrained"))


def manifest() -> dict[str, dict]:
    """pretrained/manifest.json ({} when there is none)."""
    path = pretrained_dir() / "manifest.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise IfheError(f"{path}: cannot be read as the zoo's manifest ({e})") from None
    return data if isinstance(data, dict) else {}


def role_of(entry: dict) -> str:
    """A manifest entry's role; entries published before roles existed were all teachers."""
    return entry.get("role", "teacher")


def teachers(dataset: str) -> list[str]:
    """The shipped teachers of `dataset`, best test accuracy first (scratch-trained students left out)."""
    entries = [(name, e) for name, e in manifest().items()
               if e.get("dataset") == dataset and role_of(e) == "teacher"]
    entries.sort(key=lambda ne: (-(ne[1].get("test_accuracy") or 0.0), ne[0]))
    return [name for name, _ in entries]


def default_teacher(dataset: str) -> str | None:
    names = teachers(dataset)
    return names[0] if names else None


def arch_label(arch: str | None) -> str:
    """wrn40_2 -> WRN40-2, resnet18 -> ResNet18, vgg11_bn -> VGG11 (the paper's way of writing them)."""
    if not arch:
        return "?"
    a = arch.replace("_bn", "")
    if a.startswith("wrn"):
        depth, width = a[3:].split("_")
        return f"WRN{depth}-{width}"
    if a.startswith("resnet"):
        return f"ResNet{a[6:]}"
    return a.upper()


def teacher_label(name: str) -> str:
    e = manifest().get(name, {})
    acc = e.get("test_accuracy")
    arch = arch_label(e.get("arch"))
    return f"{name} ({arch}, {acc:.1f}% test)" if acc is not None else f"{name} ({arch})"
