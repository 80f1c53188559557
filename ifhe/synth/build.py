"""A synthesizer for a method's preset with a fresh student and h: what scripts, benchmarks, tests and the app's
warm-up need when they are not a `Run` (a Run builds its own from its config)."""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..config import preset
from ..device import RunRNG, fast_layout
from ..heads import head_for
from ..models import create_model
from .inversion import InversionSynthesizer


def synthesizer_for(method: str, teacher: nn.Module, *, scale: str = "cpu", student: str = "wrn16_1",
                    precision: str = "fp32", rng: RunRNG | None = None, **synth: object) -> InversionSynthesizer:
    """`teacher`: a frozen model with `.normalizer` and `.num_classes` (see `zoo.resolve_teacher`); `synth`
    overrides the preset's synthesis settings (e.g. batch_size=8, iterations=2)."""
    cfg = replace(preset(method, scale)[0], **synth)
    device = next(teacher.parameters()).device
    student_model = fast_layout(create_model(student, teacher.num_classes).to(device))
    head = head_for(teacher, cfg.h_stages, cfg.h_hidden).to(device)
    return InversionSynthesizer(cfg, teacher, student_model, head, teacher.normalizer, teacher.num_classes,
                                torch.device(device), precision, rng=rng)
