"""The shipped model zoo (`pretrained/`): safetensors weights plus `manifest.json`, and safe model loading."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from .checkpoint import atomic_write_text, load_tensors, load_weights_into, save_tensors, sha256_file
from .data import NUM_CLASSES, Normalizer, class_names, normalization
from .device import fast_layout
from .errors import CheckpointError, IfheError
from .models import create_model

PRETRAINED_DIR = Path(os.environ.get("IFHE_PRETRAINED", Path(__file__).resolve().parent.parent / "pretrained"))
MANIFEST = "manifest.json"


def read_manifest(root: Path | None = None) -> dict[str, dict]:
    path = Path(root or PRETRAINED_DIR) / MANIFEST
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def available(root: Path | None = None) -> list[str]:
    return sorted(read_manifest(root))


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients: halves the cost of an inversion step on CPU."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def save_model(path: str | os.PathLike, model: nn.Module, dataset: str, extra: dict | None = None) -> None:
    meta = {"arch": model.arch, "num_classes": model.num_classes, "dataset": dataset,
            "normalization": normalization(dataset)} | (extra or {})
    save_tensors(path, model.state_dict(), meta)


def load_model(path: str | os.PathLike, arch: str | None = None, num_classes: int | None = None,
               device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """A classifier from a safetensors file; `arch`/`num_classes` default to the file's own metadata."""
    tensors, meta = load_tensors(path)
    arch = arch or meta.get("arch")
    if not arch:
        raise CheckpointError(f"{path}: no architecture recorded in the file; pass one explicitly")
    num_classes = num_classes or meta.get("num_classes")
    if num_classes is None:
        fc = tensors.get("fc.weight")
        if fc is None:
            raise CheckpointError(f"{path}: cannot tell the class count; pass num_classes")
        num_classes = int(fc.shape[0])
    if meta.get("num_classes") and meta["num_classes"] != num_classes:
        raise CheckpointError(f"{path}: file says {meta['num_classes']} classes, {num_classes} were asked for")
    model = create_model(arch, int(num_classes))
    load_weights_into(model, tensors, str(path))
    return model.to(device), meta


def load_teacher(name: str, device: torch.device | str = "cpu", root: Path | None = None,
                 verify: bool = True) -> nn.Module:
    """A shipped model by zoo name (e.g. ``cifar10_wrn16_2``), frozen, in eval mode.

    The model carries `.dataset`, `.normalizer` and `.zoo_entry` (its manifest record).
    """
    root = Path(root or PRETRAINED_DIR)
    manifest = read_manifest(root)
    if name not in manifest:
        known = ", ".join(manifest) or "none (pretrained/manifest.json is empty)"
        raise IfheError(f"unknown pretrained model {name!r}; available: {known}")
    entry = manifest[name]
    path = root / entry["file"]
    if verify and path.exists():
        check_checksum(path, entry)
    model, _ = load_model(path, entry["arch"], entry["num_classes"], device)
    return attach_dataset(freeze(fast_layout(model)), entry["dataset"], entry)


def check_checksum(path: Path, record: dict) -> None:
    """A shipped file is the one its manifest record describes (`record["sha256"]`)."""
    if sha256_file(path) != record["sha256"]:
        raise CheckpointError(f"{path}: checksum does not match the manifest (corrupt or replaced file)")


def attach_dataset(model: nn.Module, dataset: str, entry: dict | None = None) -> nn.Module:
    """Give a model what a teacher carries: `.dataset`, `.classes`, `.normalizer` and `.zoo_entry`."""
    model.dataset = dataset
    model.classes = class_names(dataset, model.num_classes)
    model.normalizer = Normalizer(*normalization(dataset)).to(next(model.parameters()).device)
    model.zoo_entry = entry or {}
    return model


def resolve_teacher(ref: str, arch: str | None = None, device: torch.device | str = "cpu",
                    dataset: str | None = None, root: Path | None = None) -> nn.Module:
    """The one way to turn what a user names as a teacher into one: a zoo name (`ifhe zoo`) or a
    .safetensors file (its architecture and dataset from the file, or `arch`/`dataset`). The model comes
    frozen, in eval mode, channels_last, with `.arch`, `.dataset`, `.classes`, `.normalizer`, `.zoo_entry`."""
    ref = str(ref)
    if not ref.endswith(".safetensors"):
        return load_teacher(ref, device, root)
    model, meta = load_model(ref, arch, device=device)
    dataset = dataset or meta.get("dataset")
    if not dataset:
        raise IfheError(f"teacher: {ref} does not record its dataset; pass it explicitly")
    if meta.get("dataset") and meta["dataset"] != dataset:
        raise IfheError(f"teacher: {ref} is a {meta['dataset']} model, not {dataset}")
    return attach_dataset(freeze(fast_layout(model)), dataset, meta)


def teacher_info(ref: str, root: Path | None = None) -> dict:
    """A teacher's architecture, dataset and class count without loading its weights ({} when unknown)."""
    ref = str(ref)
    if ref.endswith(".safetensors"):
        from .checkpoint import read_meta
        try:
            meta = read_meta(ref)
        except (OSError, CheckpointError):
            return {}
        return {k: meta[k] for k in ("arch", "dataset", "num_classes") if k in meta}
    entry = read_manifest(root).get(ref)
    return {k: entry[k] for k in ("arch", "dataset", "num_classes", "test_accuracy", "role") if k in entry} \
        if entry else {}


ROLES = ("teacher", "student")  # a manifest entry without a role was published before roles: a teacher


def publish(model: nn.Module, name: str, dataset: str, accuracy: float, epochs: float, recipe: str,
            root: Path | None = None, extra: dict | None = None, role: str = "teacher") -> dict:
    """Write `<name>.safetensors` and its manifest record (atomic; other records are kept).

    `role`: "teacher" (offered as a teacher by the app), or "student" (a scratch-trained student kept to compare
    against, e.g. the accuracy a distilled student should approach)."""
    if role not in ROLES:
        raise IfheError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if dataset not in NUM_CLASSES or model.num_classes != NUM_CLASSES[dataset]:
        raise IfheError(f"model has {model.num_classes} classes, {dataset} has {NUM_CLASSES.get(dataset)}")
    root = Path(root or PRETRAINED_DIR)
    root.mkdir(parents=True, exist_ok=True)
    file = f"{name}.safetensors"
    save_model(root / file, model, dataset)
    entry = {"file": file, "arch": model.arch, "dataset": dataset, "num_classes": model.num_classes,
             "normalization": {"mean": normalization(dataset)[0], "std": normalization(dataset)[1]},
             "test_accuracy": round(accuracy, 2), "epochs": epochs, "recipe": recipe,
             "sha256": sha256_file(root / file), "role": role} | (extra or {})
    manifest = read_manifest(root)
    manifest[name] = entry
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return entry


def publish_head(teacher_name: str, head_file: str | os.PathLike, accuracy: float, recipe: str,
                 root: Path | None = None) -> dict:
    """Ship a trained h with the zoo teacher whose features it reads, as `<teacher>.ifhe-head.safetensors` and
    the teacher's manifest record's "head" (synth.h_init=pretrained loads it). `accuracy`: h's top-1 on the real
    test set, measured by the caller."""
    root = Path(root or PRETRAINED_DIR)
    manifest = read_manifest(root)
    if teacher_name not in manifest:
        raise IfheError(f"unknown pretrained model {teacher_name!r}; available: {', '.join(manifest) or 'none'}")
    tensors, meta = load_tensors(head_file)
    if meta.get("teacher") not in (None, teacher_name):
        raise IfheError(f"{head_file}: an h of teacher {meta['teacher']!r}, not {teacher_name!r}")
    from .heads import HEAD_SHAPE_KEYS
    missing = [k for k in HEAD_SHAPE_KEYS if k not in meta]
    if missing:
        raise IfheError(f"{head_file}: not a head file (its header lacks {missing})")
    file = f"{teacher_name}.ifhe-head.safetensors"
    keep = {k: meta[k] for k in (*HEAD_SHAPE_KEYS, "head_training", "head_updates") if k in meta}
    save_tensors(root / file, tensors, keep | {"teacher": teacher_name, "head_acc": round(accuracy, 2)})
    record = {"file": file, "sha256": sha256_file(root / file), "test_accuracy": round(accuracy, 2),
              "stages": meta["stages"], "hidden": meta["hidden"], "recipe": recipe}
    manifest[teacher_name] = manifest[teacher_name] | {"head": record}
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return record
