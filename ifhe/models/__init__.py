"""Model registry: `create_model(name, num_classes)`.

Every classifier returns logits and names its intermediate stages in `model.stages`
(e.g. ``block1``, ``block2``, ``block3``, ``penultimate``); `ifhe.hooks.FeatureTap` reads them with hooks,
so the architectures stay the textbook ones.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..catalog import ARCHITECTURE_SPECS, ARCHITECTURES
from ..errors import IfheError
from .generator import GENERATORS, Generator
from .resnet import ResNet
from .vgg import VGG
from .wrn import WideResNet

# The architectures are named once, in ifhe.catalog.ARCHITECTURE_SPECS (read without torch by the app's first
# page): name -> (family, arguments). A family's builder takes the class count, then those arguments.
FAMILIES: dict[str, Callable[..., nn.Module]] = {
    "wrn": lambda nc, depth, width: WideResNet(depth, width, nc),
    "resnet": lambda nc, blocks: ResNet(list(blocks), nc),
    "vgg": lambda nc: VGG(nc),
}


def check_architecture(name: str) -> str:
    if name not in ARCHITECTURE_SPECS:
        raise IfheError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return name


def create_model(name: str, num_classes: int) -> nn.Module:
    """Build a freshly initialised classifier by registry name."""
    check_architecture(name)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise IfheError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    family, args = ARCHITECTURE_SPECS[name]
    model = FAMILIES[family](num_classes, *args)
    model.arch = name
    model.num_classes = num_classes
    return model


def create_generator(name: str = "cmi", nz: int = 256, ngf: int = 64, img_size: int = 32) -> Generator:
    """A generator network by name: cmi, large (CMI's LargeGenerator), dafl, zskt (see models/generator.py)."""
    if name not in GENERATORS:
        raise IfheError(f"unknown generator {name!r}; known: {', '.join(GENERATORS)}")
    return GENERATORS[name](nz=nz, ngf=ngf, img_size=img_size)


__all__ = ["ARCHITECTURES", "GENERATORS", "create_model", "create_generator", "Generator"]
