"""The loader of the model zoo: zoo names and .safetensors files become frozen teachers (`resolve_teacher`, the one
way every caller gets a teacher), classifiers are saved and loaded safely, and models are published to the zoo.

What is shipped (the manifest, the folder, checksums, roles) is `ifhe.catalog`'s, read without torch.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from . import catalog
from .checkpoint import load_tensors, load_weights_into, save_tensors, sha256_file
from .data import NUM_CLASSES, Normalizer, class_names, normalization
from .device import fast_layout
from .errors import CheckpointError, IfheError
from .models import create_model


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
    """A shipped model by zoo name (e.g. ``cifar10_wrn16_2``), frozen, in eval mode, checksum verified.

    The model carries `.dataset`, `.normalizer` and `.zoo_entry` (its manifest record).
    """
    entry = catalog.entry(name, root)
    path = catalog.shipped_file(entry, root, verify)
    model, _ = load_model(path, entry["arch"], entry["num_classes"], device)
    return attach_dataset(freeze(fast_layout(model)), entry["dataset"], entry)


def attach_dataset(model: nn.Module, dataset: str, entry: dict | None = None) -> nn.Module:
    """Give a model what a teacher carries: `.dataset`, `.classes`, `.normalizer` and `.zoo_entry`."""
    model.dataset = dataset
    model.classes = class_names(dataset, model.num_classes)
    model.normalizer = Normalizer(*normalization(dataset)).to(next(model.parameters()).device)
    model.zoo_entry = entry or {}
    return model


def resolve_teacher(ref: str | os.PathLike, arch: str | None = None, device: torch.device | str = "cpu",
                    dataset: str | None = None, root: Path | None = None) -> nn.Module:
    """The one way to turn what a user names as a teacher into one: a zoo name (`ifhe zoo`) or a .safetensors
    file (its architecture and dataset from the file, or `arch`/`dataset`; its class count must be the
    dataset's). The model comes frozen, in eval mode, channels_last, with `.arch`, `.dataset`, `.classes`,
    `.normalizer`, `.zoo_entry`."""
    ref = str(ref)
    if not catalog.is_file_ref(ref):
        return load_teacher(ref, device, root)
    model, meta = load_model(ref, arch, NUM_CLASSES.get(dataset) if dataset else None, device)
    dataset = dataset or meta.get("dataset")
    if not dataset:
        raise IfheError(f"teacher: {ref} does not record its dataset; pass it explicitly")
    if meta.get("dataset") and meta["dataset"] != dataset:
        raise IfheError(f"teacher: {ref} is a {meta['dataset']} model, not {dataset}")
    if dataset in NUM_CLASSES and model.num_classes != NUM_CLASSES[dataset]:
        raise IfheError(f"teacher: {ref} has {model.num_classes} classes, {dataset} has {NUM_CLASSES[dataset]}")
    return attach_dataset(freeze(fast_layout(model)), dataset, meta)


def random_teacher(arch: str, dataset: str = "cifar10", device: torch.device | str = "cpu") -> nn.Module:
    """A randomly initialised stand-in teacher, prepared as `resolve_teacher` prepares a real one (for
    mechanics and timings where no trained teacher is shipped)."""
    model = create_model(arch, NUM_CLASSES[dataset]).to(device)
    return attach_dataset(freeze(fast_layout(model)), dataset)


def teacher_or_random(name: str, arch: str, device: torch.device | str = "cpu",
                      dataset: str = "cifar10") -> tuple[nn.Module, str]:
    """The zoo teacher `name` if it is shipped, else a random `arch` of the same cost; with a label saying
    which it is."""
    if name and name in catalog.available():
        return resolve_teacher(name, device=device), name
    return random_teacher(arch, dataset, device), f"random {arch} (no {name} published)"


# with its stages and teachers, so a finished run's file continues a history as a zoo entry does (--init-from FILE)
FILE_PROVENANCE = ("test_accuracy", "epochs", "recipe", "cpu_minutes", "wall_minutes", "threads", "precision",
                   "stage_cpu_minutes", "distilled_from", "recipe_sources")


def save_with_provenance(path: str | os.PathLike, model: nn.Module, dataset: str, accuracy: float, epochs: float,
                         recipe: str, extra: dict | None = None) -> dict:
    """Write a trained model with its provenance (FILE_PROVENANCE) in the file's own metadata, so a copy taken
    out of the zoo still says what it scored and cost; returns the whole provenance (`extra` included)."""
    provenance = {"test_accuracy": round(accuracy, 2), "epochs": epochs, "recipe": recipe} | (extra or {})
    save_model(path, model, dataset, {k: provenance[k] for k in FILE_PROVENANCE if k in provenance})
    return provenance


def publish(model: nn.Module, name: str, dataset: str, accuracy: float, epochs: float, recipe: str,
            root: Path | None = None, extra: dict | None = None, role: str = "teacher") -> dict:
    """Write `<name>.safetensors` and its manifest record (atomic; other records are kept).

    `role`: "teacher" (offered as a teacher by the app), or "student" (a scratch-trained student kept to compare
    against, e.g. the accuracy a distilled student should approach)."""
    if role not in catalog.ROLES:
        raise IfheError(f"role must be one of {', '.join(catalog.ROLES)}, not {role!r}")
    if dataset not in NUM_CLASSES or model.num_classes != NUM_CLASSES[dataset]:
        raise IfheError(f"model has {model.num_classes} classes, {dataset} has {NUM_CLASSES.get(dataset)}")
    catalog.folder(root).mkdir(parents=True, exist_ok=True)
    path = catalog.path_of(f"{name}.safetensors", root)
    provenance = save_with_provenance(path, model, dataset, accuracy, epochs, recipe, extra)
    entry = {"file": path.name, "arch": model.arch, "dataset": dataset, "num_classes": model.num_classes,
             "normalization": {"mean": normalization(dataset)[0], "std": normalization(dataset)[1]},
             "sha256": sha256_file(path), "role": role} | provenance
    catalog.write_record(name, entry, root)
    return entry


def publish_head(teacher_name: str, head_file: str | os.PathLike, accuracy: float, recipe: str,
                 root: Path | None = None) -> dict:
    """Ship a trained h with the zoo teacher whose features it reads, as `<teacher>.ifhe-head.safetensors` and
    the teacher's manifest record's "head" (synth.h_init=pretrained loads it). `accuracy`: h's top-1 on the real
    test set, measured by the caller."""
    teacher = catalog.entry(teacher_name, root)
    tensors, meta = load_tensors(head_file)
    if meta.get("teacher") not in (None, teacher_name):
        raise IfheError(f"{head_file}: an h of teacher {meta['teacher']!r}, not {teacher_name!r}")
    missing = [k for k in catalog.HEAD_SHAPE_KEYS if k not in meta]
    if missing:
        raise IfheError(f"{head_file}: not a head file (its header lacks {missing})")
    path = catalog.path_of(f"{teacher_name}.ifhe-head.safetensors", root)
    keep = {k: meta[k] for k in (*catalog.HEAD_SHAPE_KEYS, "head_training", "head_updates") if k in meta}
    save_tensors(path, tensors, keep | {"teacher": teacher_name, "head_acc": round(accuracy, 2)})
    record = {"file": path.name, "sha256": sha256_file(path), "test_accuracy": round(accuracy, 2),
              "stages": meta["stages"], "hidden": meta["hidden"], "recipe": recipe}
    catalog.write_record(teacher_name, teacher | {"head": record}, root)
    return record
