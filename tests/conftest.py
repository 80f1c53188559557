import os
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# precision=auto answers fp32 without timing a probe: tests never depend on the machine's speed (ifhe.precision)
os.environ.setdefault("IFHE_PRECISION_AUTO", "fp32")


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder with real CIFAR-10 (.ci/run points $IFHE_DATA at ../shared/data)."""
    root = os.environ.get("IFHE_DATA")
    if not root or not (Path(root) / "cifar10-test.npz").exists():
        pytest.skip("real CIFAR-10 not configured: set IFHE_DATA to a folder with cifar10-{train,test}.npz")
    return Path(root)


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory, real_data) -> Path:
    """A folder with a few hundred real CIFAR-10 images in the project's npz layout: for fast tests whose figures
    depend on real images (the shipped teacher's accuracy on them); tests of mechanics use `synthetic_cifar`."""
    from ifhe.data import load_split

    out = tmp_path_factory.mktemp("tiny_cifar")
    for split, n in (("train", 320), ("test", 200)):
        s = load_split("cifar10", split, real_data).subset(n, seed=1)
        np.savez(out / f"cifar10-{split}.npz", x=s.x.permute(0, 2, 3, 1).numpy(), y=s.y.numpy().astype(np.uint8),
                 classes=np.array(s.classes))
    return out


@pytest.fixture(scope="session")
def synthetic_cifar(tmp_path_factory) -> Path:
    """A folder with a few hundred made-up 32x32 images in the CIFAR-10 npz layout, for tests that exercise
    mechanics (training, resuming, evaluating, sweeps) and must run where real CIFAR-10 is not available.
    Each class has its own colour and stripe frequency, so a small net can learn them."""
    from ifhe.data import CIFAR10_CLASSES

    out = tmp_path_factory.mktemp("synthetic_cifar")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    for split, n in (("train", 320), ("test", 200)):
        y = np.arange(n) % 10
        colour = rng.uniform(40, 215, size=(10, 3))
        stripes = np.sin((xx + yy)[None] * (0.2 + 0.15 * y[:, None, None]))[..., None]
        x = colour[y][:, None, None, :] + 30 * stripes + rng.normal(0, 12, size=(n, 32, 32, 3))
        np.savez(out / f"cifar10-{split}.npz", x=np.clip(x, 0, 255).astype(np.uint8), y=y.astype(np.uint8),
                 classes=np.array(CIFAR10_CLASSES))
    return out


@pytest.fixture(scope="session")
def shipped_teacher():
    """The committed WRN-16-2 CIFAR-10 teacher (frozen)."""
    from ifhe.catalog import available
    from ifhe.zoo import load_teacher

    if "cifar10_wrn16_2" not in available():
        pytest.skip("pretrained/cifar10_wrn16_2 is not published yet")
    return load_teacher("cifar10_wrn16_2")


@pytest.fixture(scope="session")
def tiny_teacher():
    """A randomly initialised, frozen WRN-16-1 posing as a CIFAR-10 teacher: for mechanics, not accuracy."""
    from ifhe.models import create_model
    from ifhe.zoo import attach_dataset, freeze

    torch.manual_seed(0)
    return attach_dataset(freeze(create_model("wrn16_1", 10)), "cifar10")

