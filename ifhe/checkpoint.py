"""Safe persistence: tensors in safetensors, everything else as JSON inside the same file's header.

Nothing is ever unpickled. Files are written to a temporary name and renamed, so a kill never leaves a
half-written checkpoint under the real name.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointError
# the torch-free half (atomic writes, checksums, the header's metadata) is fileio's; its names are importable here too
from .fileio import (META_KEY, atomic_write_bytes, atomic_write_text, looks_like_pickle,  # noqa: F401
                     read_meta, sha256_file)


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share storage (tied weights, views): store independent copies.
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file(flat, str(tmp), metadata={META_KEY: json.dumps(meta or {})})
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    except (SafetensorError, OSError) as e:
        tmp.unlink(missing_ok=True)
        reason = str(e).split("I/O error: ")[-1]  # keep the OS's words, e.g. "No space left on device"
        raise CheckpointError(f"{path}: cannot write ({reason})") from None
    os.replace(tmp, path)


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    meta = read_meta(path)
    try:
        return load_file(str(path)), meta
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors file ({e})") from None


# ---- nested state (optimizers, RNG, counters) -----------------------------------------------------------------

def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {"__dict__": {k: _flatten(v, f"{prefix}/{k}", tensors) for k, v in obj.items()}}
        return {"__items__": [[k, _flatten(v, f"{prefix}/{i}", tensors)] for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_flatten(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix!r} in a checkpoint")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__dict__"].items()}
        if "__items__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__items__"]}
        if "__list__" in obj:
            items = [_unflatten(v, tensors) for v in obj["__list__"]]
            return tuple(items) if obj.get("tuple") else items
    return obj


def save_state(path: str | os.PathLike, state: dict, meta: dict | None = None) -> None:
    """Persist an arbitrary nested state (module/optimizer state dicts, RNG states, ints, strings)."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "s", tensors)
    save_tensors(path, tensors, {"meta": meta or {}, "state": skeleton})


def load_state(path: str | os.PathLike) -> tuple[dict, dict]:
    tensors, header = load_tensors(path)
    if "state" not in header:
        raise CheckpointError(f"{path}: a weights file, not a resumable state checkpoint")
    try:
        return _unflatten(header["state"], tensors), header.get("meta", {})
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: inconsistent checkpoint ({e})") from None


def load_weights_into(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy `tensors` into `model`, naming the first mismatch (class count, missing/extra keys, shapes)."""
    own = model.state_dict()
    fc_w = next((k for k in ("fc.weight", "classifier.weight") if k in own and k in tensors), None)
    if fc_w and tensors[fc_w].shape[0] != own[fc_w].shape[0]:
        raise CheckpointError(f"{source}: weights are for {tensors[fc_w].shape[0]} classes, the model has "
                              f"{own[fc_w].shape[0]}")
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    if missing or extra:
        arch = getattr(model, "arch", type(model).__name__)
        raise CheckpointError(f"{source}: does not fit architecture {arch} ({len(missing)} missing keys e.g. "
                              f"{missing[:2]}, {len(extra)} unexpected e.g. {extra[:2]})")
    for k, v in tensors.items():
        if v.shape != own[k].shape:
            raise CheckpointError(f"{source}: {k} has shape {tuple(v.shape)}, model expects {tuple(own[k].shape)}")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{source}: {k} contains NaN or infinite values")
    model.load_state_dict(tensors)
