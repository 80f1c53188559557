"""Intermediate features of an image set at every stage of a teacher, batched, cached on disk."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data import to_unit
from .hooks import FeatureTap

CACHE_DIR = Path(os.environ.get("IFHE_CACHE", ".ifhe_cache")) / "features"


@dataclass
class FeatureSet:
    """Pooled features per stage (N, C) float32, with the teacher's predicted class and its confidence."""

    features: dict[str, np.ndarray]
    pred: np.ndarray
    confidence: np.ndarray


@torch.inference_mode()
def extract_features(teacher: nn.Module, images: torch.Tensor, stages: tuple[str, ...] | None = None,
                     batch_size: int = 256) -> FeatureSet:
    """Instance-mean pooled stage outputs of uint8 images (N, 3, H, W) under the teacher's normalization."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    stages = tuple(stages or teacher.stages)
    device = next(teacher.parameters()).device
    feats: dict[str, list[np.ndarray]] = {s: [] for s in stages}
    preds, confs = [], []
    was_training = teacher.training
    teacher.eval()
    with FeatureTap(teacher, stages) as tap:
        for i in range(0, images.shape[0], batch_size):
            x = teacher.normalizer(to_unit(images[i:i + batch_size].to(device)))
            probs = torch.softmax(teacher(x.contiguous(memory_format=torch.channels_last)).float(), dim=1)
            conf, pred = probs.max(1)
            preds.append(pred.cpu().numpy())
            confs.append(conf.cpu().numpy())
            for s in stages:
                feats[s].append(tap.features[s].float().cpu().numpy())
    teacher.train(was_training)
    empty = np.zeros((0,), np.float32)
    return FeatureSet({s: np.concatenate(v) if v else empty.reshape(0, 0) for s, v in feats.items()},
                      np.concatenate(preds) if preds else empty.astype(np.int64),
                      np.concatenate(confs) if confs else empty)


def teacher_key(teacher: nn.Module) -> str:
    """Identifies the teacher's weights: its zoo checksum, else a hash of the parameters."""
    entry = getattr(teacher, "zoo_entry", None) or {}
    if entry.get("sha256"):
        return entry["sha256"][:16]
    h = hashlib.sha256()
    for t in teacher.state_dict().values():
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def images_key(images: torch.Tensor) -> str:
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()[:16]


def cached_features(teacher: nn.Module, images: torch.Tensor, stage: str,
                    cache_dir: str | os.PathLike | None = None) -> FeatureSet:
    """Features of one stage, cached on disk by (teacher, image set, stage) as .npz (read without pickle)."""
    root = Path(cache_dir or CACHE_DIR)
    path = root / f"{teacher_key(teacher)}_{images_key(images)}_{stage}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                return FeatureSet({stage: f["features"]}, f["pred"], f["confidence"])
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a damaged cache entry is recomputed
    fs = extract_features(teacher, images, (stage,))
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, features=fs.features[stage], pred=fs.pred, confidence=fs.confidence)
    os.replace(tmp, path)
    return fs
