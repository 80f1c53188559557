"""Model registry: `create_model(name, num_classes)`.

Every classifier returns logits and names its intermediate stages in `model.stages`
(e.g. ``block1``, ``block2``, ``block3``, ``penultimate``); `ifhe.hooks.FeatureTap` reads them with hooks,
so the architectures stay the textbook ones.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..errors import IfheError
from .generator import GENERATORS, Generator
from .resnet import ResNet
from .vgg import VGG
from .wrn import WideResNet

_REGISTRY: dict[str, Callable[[int], nn.Module]] = {
    "wrn16_1": lambda nc: WideResNet(16, 1, nc),
    "wrn16_2": lambda nc: WideResNet(16, 2, nc),
    "wrn40_1": lambda nc: WideResNet(40, 1, nc),
    "wrn40_2": lambda nc: WideResNet(40, 2, nc),
    "resnet18": lambda nc: ResNet([2, 2, 2, 2], nc),
    "resnet34": lambda nc: ResNet([3, 4, 6, 3], nc),
    "vgg11_bn": lambda nc: VGG(nc),
}

ARCHITECTURES = tuple(_REGISTRY)


def check_architecture(name: str) -> str:
    if name not in _REGISTRY:
        raise IfheError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return name


def create_model(name: str, num_classes: int) -> nn.Module:
    """Build a freshly initialised classifier by registry name."""
    check_architecture(name)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise IfheError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    model = _REGISTRY[name](num_classes)
    model.arch = name
    model.num_classes = num_classes
    return model


def create_generator(name: str = "cmi", nz: int = 256, ngf: int = 64, img_size: int = 32) -> Generator:
    """A generator network by name: cmi, large (CMI's LargeGenerator), dafl, zskt (see models/generator.py)."""
    if name not in GENERATORS:
        raise IfheError(f"unknown generator {name!r}; known: {', '.join(GENERATORS)}")
    return GENERATORS[name](nz=nz, ngf=ngf, img_size=img_size)


__all__ = ["ARCHITECTURES", "GENERATORS", "create_model", "create_generator", "Generator"]
