"""Top-1 accuracy of classifiers on real images."""
from __future__ import annotations

import torch
from torch import nn

from .data import ImageSet, Normalizer, to_unit


@torch.inference_mode()
def predict_logits(model: nn.Module, x_uint8: torch.Tensor, normalizer: Normalizer, device: torch.device,
                   batch_size: int = 500) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, x_uint8.shape[0], batch_size):
        xb = normalizer(to_unit(x_uint8[i:i + batch_size].to(device)))
        out.append(model(xb.contiguous(memory_format=torch.channels_last)).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def evaluate(model: nn.Module, data: ImageSet, normalizer: Normalizer, device: torch.device,
             batch_size: int = 500) -> float:
    """Top-1 accuracy in percent."""
    logits = predict_logits(model, data.x, normalizer, device, batch_size)
    return 100.0 * (logits.argmax(1) == data.y).float().mean().item()
