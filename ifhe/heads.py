"""The auxiliary classifier h of IFHE, over the teacher's pooled, concatenated intermediate features."""
from __future__ import annotations

import torch
from torch import nn

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
