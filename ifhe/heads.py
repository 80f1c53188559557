"""The auxiliary classifier h of IFHE, over the teacher's pooled, concatenated intermediate features."""
from __future__ import annotations

import torch
from torch import nn

from . import catalog
from .checkpoint import load_tensors, load_weights_into
from .errors import IfheError

DEFAULT_STAGES = ("block1", "block2", "block3")


class HeterogeneityHead(nn.Module):
    """h(f_T): f_T = [mean-pooled stage outputs] concatenated. A linear layer, or a one-hidden-layer MLP."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 256):
        super().__init__()
        self.in_features, self.num_classes, self.hidden = in_features, num_classes, hidden
        if hidden > 0:
            self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
                                     nn.Linear(hidden, num_classes))
        else:
            self.net = nn.Linear(in_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 2 or features.shape[1] != self.in_features:
            raise ValueError(f"head expects features of shape (N, {self.in_features}), got {tuple(features.shape)}")
        return self.net(features)


def head_for(teacher: nn.Module, stages: tuple[str, ...] = DEFAULT_STAGES, hidden: int = 256) -> HeterogeneityHead:
    """A head sized for `teacher`'s tapped stages."""
    missing = [s for s in stages if s not in getattr(teacher, "stage_channels", {})]
    if missing:
        raise IfheError(f"teacher has no stage(s) {missing}; it has {list(teacher.stage_channels)}")
    dim = sum(teacher.stage_channels[s] for s in stages)
    return HeterogeneityHead(dim, teacher.num_classes, hidden)


def head_meta(head: HeterogeneityHead, stages: tuple[str, ...]) -> dict:
    """The header of a head file: what an h reads and its shape (`catalog.HEAD_SHAPE_KEYS`)."""
    return {"stages": list(stages), "hidden": head.hidden, "in_features": head.in_features,
            "num_classes": head.num_classes}


PRETRAINED_HEAD = "pretrained"   # synth.h_init: the head shipped with the teacher (its manifest entry's "head")


def _shipped_head(teacher: nn.Module) -> tuple[str, dict]:
    """The file and record of the head shipped with a zoo teacher, checksum verified."""
    entry = catalog.record_of(teacher)
    record = entry.get("head")
    if not record:
        raise IfheError("synth.h_init=pretrained: this teacher ships no trained h (its manifest entry has no "
                        "'head'); give a run's head.safetensors instead, or leave h_init empty")
    path = catalog.path_of(record["file"])
    if not path.is_file():
        raise IfheError(f"synth.h_init=pretrained: {path} is missing")
    return str(catalog.shipped_file(record)), record


def load_head_init(head: HeterogeneityHead, ref: str, stages: tuple[str, ...], teacher: nn.Module,
                   teacher_ref: str | None = None) -> str:
    """Give h the weights of an already trained h before the first round, so that L_H pushes towards a
    classifier from its first step instead of a random one. `ref`: "pretrained" (the head shipped with a zoo
    teacher) or the head.safetensors of an earlier run with the same teacher and stages. Returns, in words,
    where h started (kept with the bank)."""
    record: dict = {}
    if ref == PRETRAINED_HEAD:
        path, record = _shipped_head(teacher)
    else:
        path = str(ref)
    tensors, meta = load_tensors(path)
    want = head_meta(head, stages)
    wrong = {k: meta[k] for k in want if k in meta and meta[k] != want[k]}
    if wrong:
        raise IfheError(f"synth.h_init: {path} is an h with {wrong}, this run's h has "
                        f"{ {k: want[k] for k in wrong} }")
    if teacher_ref and meta.get("teacher") and meta["teacher"] != teacher_ref:
        raise IfheError(f"synth.h_init: {path} was trained on teacher {meta['teacher']!r}'s features, this run's "
                        f"teacher is {teacher_ref!r}")
    load_weights_into(head, tensors, path)
    acc = record.get("test_accuracy", meta.get("head_acc"))
    where = f"the h shipped with the teacher (pretrained/{record['file']})" if record else path
    return where + (f" ({acc:.2f}% on the real test set)" if isinstance(acc, (int, float)) else "")
