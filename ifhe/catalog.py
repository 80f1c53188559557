"""The catalogue of shipped models (`pretrained/`), read without torch or numpy: the manifest, the folder rule,
checksums, roles, the metadata of a teacher (zoo name or .safetensors file) and the architecture names.

This is the only module that reads `pretrained/` and its `manifest.json`; `ifhe.zoo` loads weights from the
paths it hands out, and the app's first page lists teachers from it without importing torch.

The folder is `$IFHE_PRETRAINED`, else `pretrained/` next to the package; tests point `PRETRAINED_DIR` elsewhere.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import CheckpointError, IfheError
from .fileio import atomic_write_text, read_meta, sha256_file

PRETRAINED_DIR = Path(os.environ.get("IFHE_PRETRAINED", Path(__file__).resolve().parent.parent / "pretrained"))
MANIFEST = "manifest.json"
ROLES = ("teacher", "student")  # a manifest entry without a role was published before roles: a teacher

# Every classifier architecture as (family, arguments of its builder); `ifhe.models.create_model` builds them.
# Another size of a known family is one line here; a new family is a class in ifhe/models/ and its builder there.
ARCHITECTURE_SPECS: dict[str, tuple[str, tuple]] = {
    "wrn16_1": ("wrn", (16, 1)),
    "wrn16_2": ("wrn", (16, 2)),
    "wrn40_1": ("wrn", (40, 1)),
    "wrn40_2": ("wrn", (40, 2)),
    "resnet18": ("resnet", ((2, 2, 2, 2),)),
    "resnet34": ("resnet", ((3, 4, 6, 3),)),
    "vgg11_bn": ("vgg", ()),
}
ARCHITECTURES = tuple(ARCHITECTURE_SPECS)

HEAD_SHAPE_KEYS = ("stages", "hidden", "in_features", "num_classes")   # what a head file's header must say
TEACHER_KEYS = ("arch", "dataset", "num_classes")                       # what a teacher file's header says


def folder(root: str | os.PathLike | None = None) -> Path:
    """The zoo's folder: `root`, else PRETRAINED_DIR (read at call time, so tests can point it elsewhere)."""
    return Path(root or PRETRAINED_DIR)


def path_of(file: str, root: str | os.PathLike | None = None) -> Path:
    """Where a shipped file (a manifest record's "file") lies."""
    return folder(root) / file


def read_manifest(root: str | os.PathLike | None = None) -> dict[str, dict]:
    """pretrained/manifest.json ({} when there is none)."""
    path = folder(root) / MANIFEST
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: cannot be read as the zoo's manifest ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not the zoo's manifest (a JSON object of records)")
    return data


def write_record(name: str, record: dict, root: str | os.PathLike | None = None) -> None:
    """Set the manifest record `name` (atomic; the other records are kept)."""
    manifest = read_manifest(root)
    manifest[name] = record
    atomic_write_text(folder(root) / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def available(root: str | os.PathLike | None = None) -> list[str]:
    return sorted(read_manifest(root))


def entry(name: str, root: str | os.PathLike | None = None) -> dict:
    """The manifest record of a shipped model; an IfheError naming the known ones if there is none."""
    manifest = read_manifest(root)
    if name not in manifest:
        known = ", ".join(manifest) or f"none ({folder(root) / MANIFEST} is empty or missing)"
        raise IfheError(f"unknown pretrained model {name!r}; available: {known}")
    return manifest[name]


def record_of(model) -> dict:
    """The manifest record a loaded teacher carries (`zoo.attach_dataset`); {} for a model without one."""
    return getattr(model, "zoo_entry", None) or {}


def sha256_of(model) -> str | None:
    """The zoo checksum of a loaded teacher's weights file, None when it has none recorded."""
    return record_of(model).get("sha256")


def role_of(record: dict) -> str:
    """A manifest record's role; records published before roles existed were all teachers."""
    return record.get("role", "teacher")


def teachers(dataset: str, root: str | os.PathLike | None = None) -> list[str]:
    """The shipped teachers of `dataset`, best test accuracy first (scratch-trained students left out)."""
    records = [(name, e) for name, e in read_manifest(root).items()
               if e.get("dataset") == dataset and role_of(e) == "teacher"]
    records.sort(key=lambda ne: (-(ne[1].get("test_accuracy") or 0.0), ne[0]))
    return [name for name, _ in records]


# The teacher a newcomer starts from: the one the CPU presets, the measured sweeps and the shipped feature banks
# are made for. The paper's WRN-40-2 scores higher but takes 3.2x the multiply-adds per forward pass (328 vs 101 M).
DEMO_TEACHERS = {"cifar10": "cifar10_wrn16_2"}


def default_teacher(dataset: str, root: str | os.PathLike | None = None) -> str | None:
    """The dataset's demo teacher when shipped, else its best shipped teacher."""
    names = teachers(dataset, root)
    demo = DEMO_TEACHERS.get(dataset)
    return demo if demo in names else (names[0] if names else None)


# `ifhe reproduce --table`: a table is a fixed list of (zoo teacher, student architecture) pairs: shipping a
# teacher must not change what a documented command runs (every `--table cifar10` figure of docs/RESULTS.md is of
# the demo pair, measured before the WRN-40-2 teacher shipped).
TABLES = {"cifar10": [("cifar10_wrn16_2", "wrn16_1")],
          # the paper's CIFAR-10 rows with its teacher, WRN-40-2
          "cifar10-paper": [("cifar10_wrn40_2", "wrn16_1"), ("cifar10_wrn40_2", "wrn40_1"),
                            ("cifar10_wrn40_2", "wrn16_2")],
          # across families: the student has no stage that mirrors the teacher's
          "cifar10-vgg": [("cifar10_vgg11_bn", "wrn16_1"), ("cifar10_vgg11_bn", "resnet18")],
          "cifar10-vgg-paper": [("cifar10_vgg11_bn", "resnet18")],   # the paper's cross-family pair alone
          # pilots that choose a rule (the budget split) on a pair the final tables do not use
          "cifar10-pilot": [("cifar10_wrn16_2", "wrn40_1")]}


def check_checksum(path: Path, record: dict) -> None:
    """A shipped file is the one its manifest record describes (`record["sha256"]`)."""
    if sha256_file(path) != record["sha256"]:
        raise CheckpointError(f"{path}: checksum does not match the manifest (corrupt or replaced file)")


def shipped_file(record: dict, root: str | os.PathLike | None = None, verify: bool = True) -> Path:
    """The path of a record's file (a model's, or the "head" record of a teacher), its checksum verified when it
    exists (a missing file is left for its reader to report)."""
    path = path_of(record["file"], root)
    if verify and path.exists():
        check_checksum(path, record)
    return path


def is_file_ref(ref: str | os.PathLike) -> bool:
    """Whether a teacher reference names a .safetensors file (else it is a zoo name)."""
    return str(ref).endswith(".safetensors")


def teacher_info(ref: str | os.PathLike, root: str | os.PathLike | None = None) -> dict:
    """A teacher's architecture, dataset and class count without loading its weights ({} when unknown); for a
    zoo name also its test accuracy, role and the record of the h shipped with it ("head")."""
    ref = str(ref)
    if is_file_ref(ref):
        try:
            meta = read_meta(ref)
        except (OSError, CheckpointError):
            return {}
        return {k: meta[k] for k in TEACHER_KEYS if k in meta}
    record = read_manifest(root).get(ref)
    keys = TEACHER_KEYS + ("test_accuracy", "role", "head")
    return {k: record[k] for k in keys if k in record} if record else {}
