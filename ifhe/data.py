"""CIFAR-10/100 as uint8 tensors in memory, normalization, and whole-batch augmentation on tensors.

Sources, in order: an explicit path (a folder or an .npz file), the folder in $IFHE_DATA, or torchvision's
own CIFAR loader (which may download where the network allows; here it fails fast with a clear message).
"""
from __future__ import annotations

import os
import socket
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# CIFAR-100's fine labels in label order (torchvision's `CIFAR100.classes`)
CIFAR100_CLASSES = tuple("""apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin
elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man
maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain
plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake
spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip
turtle wardrobe whale willow_tree wolf woman worm""".split())
CLASSES = {"cifar10": CIFAR10_CLASSES, "cifar100": CIFAR100_CLASSES}
DATA_ENV = "IFHE_DATA"
DOWNLOAD_TIMEOUT_S = 20


@dataclass
class ImageSet:
    """Images as uint8 (N, 3, H, W) tensors and integer labels (N,)."""

    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, n: int, seed: int = 0) -> "ImageSet":
        """A class-balanced-in-expectation random subset of n images, reproducible by seed."""
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n]
        return ImageSet(self.x[idx], self.y[idx], self.classes, f"{self.source}[{n}]")


def class_names(dataset: str, n: int | None = None, known: tuple | None = None) -> tuple[str, ...]:
    """The class names of `dataset` (or `known` ones, e.g. a data file's), as many as its `n` classes."""
    if known and (n is None or len(known) >= n):
        return tuple(known)
    names = CLASSES.get(dataset)
    if names and (n is None or len(names) == n):
        return names
    return tuple(str(i) for i in range(n or 0))


def check_dataset(name: str) -> str:
    if name not in NUM_CLASSES:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(NUM_CLASSES)}")
    return name


def normalization(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return NORMALIZATION[check_dataset(dataset)]


class Normalizer(torch.nn.Module):
    """Maps images in [0, 1] to the teacher's input space (and back)."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return (x01 - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


def to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.float().div_(255.0)


def to_uint8(x01: torch.Tensor) -> torch.Tensor:
    return x01.detach().clamp(0, 1).mul(255.0).round_().to(torch.uint8)


def load_npz(path: str | os.PathLike, classes: tuple[str, ...] | None = None) -> ImageSet:
    """Read an .npz with `x` uint8 (N, H, W, 3) and `y` integer labels (N,); nothing is unpickled."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            if not {"x", "y"} <= keys:
                raise DataError(f"{path}: expected arrays 'x' and 'y', found {sorted(keys)}")
            x, y = f["x"], f["y"]
            names = tuple(str(c) for c in f["classes"]) if "classes" in keys else classes
    except DataError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise DataError(f"{path}: 'x' must be uint8 of shape (N, H, W, 3), got {x.dtype} {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: 'y' must be integers of shape ({x.shape[0]},), got {y.dtype} {y.shape}")
    if y.size and y.min() < 0:
        raise DataError(f"{path}: 'y' has negative labels")
    n_cls = int(y.max()) + 1 if y.size else 0
    names = names or tuple(str(i) for i in range(n_cls))
    if n_cls > len(names):
        raise DataError(f"{path}: labels go up to {n_cls - 1} but only {len(names)} class names are known")
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return ImageSet(xt, torch.from_numpy(y.astype(np.int64)), names, str(path))


def _torchvision_split(dataset: str, train: bool, root: Path, download: bool) -> ImageSet:
    from torchvision import datasets

    cls = datasets.CIFAR10 if dataset == "cifar10" else datasets.CIFAR100
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # a closed network must fail, not hang
    try:
        ds = cls(str(root), train=train, download=download)
    except Exception as e:  # torchvision raises RuntimeError/URLError/timeout depending on the failure
        raise DataError(
            f"{dataset} not found in {root} and could not be downloaded ({type(e).__name__}: {e}); "
            f"point ${DATA_ENV} at a folder with {dataset}-train.npz/{dataset}-test.npz or pass --data") from None
    finally:
        socket.setdefaulttimeout(old)
    x = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    return ImageSet(x, torch.tensor(ds.targets, dtype=torch.int64), tuple(ds.classes), f"torchvision:{root}")


def data_root(explicit: str | os.PathLike | None = None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else None


def load_split(dataset: str, split: str, data: str | os.PathLike | None = None, download: bool = True) -> ImageSet:
    """Real images of `dataset` ('cifar10'/'cifar100'), `split` 'train' or 'test'.

    `data` is an .npz file, or a folder holding `<dataset>-<split>.npz` or torchvision's files;
    without it $IFHE_DATA is used; without both, torchvision's default folder ~/.cache/ifhe/data.
    """
    check_dataset(dataset)
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    root = data_root(data)
    if root is not None and root.suffix == ".npz":
        return load_npz(root)
    if root is not None:
        npz = root / f"{dataset}-{split}.npz"
        if npz.is_file():
            return load_npz(npz, CLASSES[dataset])
        if not root.is_dir():
            raise DataError(f"data folder {root} does not exist; set ${DATA_ENV} or --data to a folder with "
                            f"{dataset}-{split}.npz (or torchvision's CIFAR files)")
    else:
        root = Path.home() / ".cache" / "ifhe" / "data"
    return _torchvision_split(dataset, split == "train", root, download)


# ---- whole-batch augmentation on tensors -------------------------------------------------------------------

def random_crop_flip(x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip for a whole (N, C, H, W) batch, any dtype/device."""
    n, c, h, w = x.shape
    dev = x.device
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(dev)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(dev)
    flip = torch.rand(n, generator=generator).to(dev) < 0.5
    rows = dy[:, None] + torch.arange(h, device=dev)[None]
    cols = torch.arange(w, device=dev)[None].expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]
    idx_n = torch.arange(n, device=dev)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017; the 8x8 patch of Page's fast CIFAR-10 recipe): in each image of a normalized
    (N, C, H, W) batch one `size` x `size` square, centred anywhere in the image and clipped at its border, set to
    0 (the dataset mean). Returns a new tensor."""
    if size <= 0:
        return x
    n, _, h, w = x.shape
    dev = x.device
    cy = torch.randint(0, h, (n,), generator=generator).to(dev)
    cx = torch.randint(0, w, (n,), generator=generator).to(dev)
    rows = torch.arange(h, device=dev)[None, :]
    cols = torch.arange(w, device=dev)[None, :]
    lo, hi = size // 2, size - size // 2
    inside_r = (rows >= (cy - lo)[:, None]) & (rows < (cy + hi)[:, None])
    inside_c = (cols >= (cx - lo)[:, None]) & (cols < (cx + hi)[:, None])
    hole = inside_r[:, :, None] & inside_c[:, None, :]
    return x.masked_fill(hole[:, None], 0.0)


def roll_flip(x: torch.Tensor, limit: float = 1 / 8, generator: torch.Generator | None = None) -> torch.Tensor:
    """DeepInversion's jitter: the whole batch rolled (wrapping around) by one random offset of up to
    `limit` of the image size in each direction, then flipped horizontally with probability 1/2 (CMI's
    `jitter_and_flip`, NVlabs' `torch.roll`)."""
    lim_h, lim_w = int(x.shape[-2] * limit), int(x.shape[-1] * limit)
    dy = int(torch.randint(-lim_h, lim_h + 1, (), generator=generator))
    dx = int(torch.randint(-lim_w, lim_w + 1, (), generator=generator))
    out = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if float(torch.rand((), generator=generator)) < 0.5:
        out = torch.flip(out, dims=(3,))
    return out


def random_resized_crop(x: torch.Tensor, scale: tuple[float, float] = (0.25, 1.0), ratio=(3 / 4, 4 / 3),
                        flip: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Differentiable random-resized crop (+ flip) of a float batch via an affine sampling grid (CMI's local view)."""
    n, dev = x.shape[0], x.device
    area = torch.empty(n).uniform_(*scale, generator=generator)
    log_r = torch.empty(n).uniform_(torch.log(torch.tensor(ratio[0])).item(), torch.log(torch.tensor(ratio[1])).item(),
                                    generator=generator)
    r = log_r.exp()
    w = (area * r).sqrt().clamp(max=1.0)
    h = (area / r).sqrt().clamp(max=1.0)
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - h)
    sx = torch.where(torch.rand(n, generator=generator) < 0.5, -w, w) if flip else w
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, h, cy
    grid = torch.nn.functional.affine_grid(theta.to(dev, x.dtype), list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
