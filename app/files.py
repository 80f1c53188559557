"""What the app reads from and writes to disk on a user's behalf: run folder names, paths kept inside the runs
folder, uploaded teachers (checked, never unpickled, re-saved), and whether real test data is reachable."""
from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

from ifhe.catalog import teacher_info
from ifhe.errors import IfheError
from ifhe.fileio import looks_like_pickle

# ifhe.data and ifhe.zoo import torch: imported where used, as the first page reads this module before it draws
DEFAULT_UPLOAD_MB = 200
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


# ---- run folders and paths ---------------------------------------------------------------------------------

def new_run_name(method: str) -> str:
    """Run folder name: time, method and a short random suffix (never the secret job id)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{method}-{secrets.token_hex(3)}"


def check_run_name(name: str) -> str:
    name = (name or "").strip()
    if not _NAME.match(name) or ".." in name:
        raise IfheError(f"run name {name!r}: use letters, digits, '.', '_' and '-' only (no paths), "
                        f"at most 80 characters")
    return name


def safe_path(base: str | os.PathLike, user_path: str | os.PathLike) -> Path:
    """`user_path` resolved inside `base`; refuses absolute paths, `..` and symlinks that lead outside."""
    raw = str(user_path or "").strip()
    if not raw or "\x00" in raw:
        raise IfheError("empty path")
    p = Path(raw)
    if p.is_absolute() or raw.startswith("~"):
        raise IfheError(f"{raw!r}: give a path relative to the runs folder, not an absolute one")
    if any(part == ".." for part in p.parts):
        raise IfheError(f"{raw!r}: '..' is not allowed; paths stay inside the runs folder")
    root = Path(base).resolve()
    full = (root / p).resolve()  # follows symlinks: a link pointing outside is caught below
    if full != root and root not in full.parents:
        raise IfheError(f"{raw!r} leads outside the runs folder {root}")
    return full


# ---- real data -----------------------------------------------------------------------------------------------

def data_status(dataset: str) -> tuple[bool, str]:
    """Is a real test split reachable without downloading? (ok, one-line explanation)"""
    from ifhe.data import DATA_ENV, data_root
    root = data_root(None)
    tv = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[dataset]
    if root is not None:
        if root.suffix == ".npz" and root.is_file():
            return True, f"real test images from {root}"
        if (root / f"{dataset}-test.npz").is_file() or (root / tv).is_dir():
            return True, f"real {dataset} test images from ${DATA_ENV} = {root}"
        where = f"${DATA_ENV} = {root} has no {dataset}-test.npz"
    else:
        cache = Path.home() / ".cache" / "ifhe" / "data"
        if (cache / tv).is_dir():
            return True, f"real {dataset} test images from torchvision's files in {cache}"
        where = f"${DATA_ENV} is not set"
    return False, (f"No real {dataset} test data is configured ({where}), so runs are purely data-free: no "
                   f"accuracy curves and no real images in the feature map. To add them, point ${DATA_ENV} at a "
                   f"folder holding {dataset}-test.npz (arrays x uint8 N×32×32×3 and y) or torchvision's CIFAR "
                   f"files, e.g. `ifhe demo --data PATH`, and restart the app.")


# ---- uploaded teachers ---------------------------------------------------------------------------------------

def upload_limit_mb() -> int:
    return int(os.environ.get("IFHE_APP_MAX_UPLOAD_MB", DEFAULT_UPLOAD_MB))


def validate_upload(filename: str, data: bytes, arch: str | None, dataset: str, dest_dir: str | os.PathLike,
                    limit_mb: int | None = None) -> tuple[Path, str]:
    """Check an uploaded teacher and store a clean copy; returns (path, one-line summary).

    Only safetensors files are read (a pickle is refused by its first bytes and never unpickled); the size,
    the architecture's keys and shapes and the class count of `dataset` are checked. The stored copy is
    re-written by us with the dataset recorded, under a random name in `dest_dir`.
    """
    from ifhe.zoo import resolve_teacher, save_model
    limit_mb = limit_mb or upload_limit_mb()
    shown = Path(filename or "upload").name
    if len(data) > limit_mb * 1024 * 1024:
        raise IfheError(f"{shown}: {len(data) / 2 ** 20:.1f} MB is over the upload limit of {limit_mb} MB")
    if looks_like_pickle(data):
        raise IfheError(f"{shown}: this is a pickle / torch.save file; only .safetensors weights are accepted "
                        f"(it was not unpickled). Convert it with safetensors.torch.save_file(model.state_dict(), ...)")
    if not shown.lower().endswith(".safetensors"):
        raise IfheError(f"{shown}: only .safetensors files are accepted")
    if len(data) < 9:
        raise IfheError(f"{shown}: empty or truncated file, not safetensors")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    tmp = dest / f".upload-{token}.safetensors"  # a file name, so that it is read as a file
    tmp.write_bytes(data)
    try:
        try:
            recorded = teacher_info(tmp).get("dataset")
            if recorded and recorded != dataset:
                raise IfheError(f"{shown}: a {recorded} model; pick that dataset or another file")
            model = resolve_teacher(tmp, arch or None, dataset=dataset)
        except IfheError as e:
            msg = str(e).replace(str(tmp), shown)
            if "no architecture recorded" in msg:
                msg = f"{shown}: the file does not record its architecture; choose it in the list above"
            raise IfheError(msg) from None
        out = dest / f"teacher-{token}.safetensors"
        save_model(out, model, dataset, {"uploaded_as": shown})
    finally:
        tmp.unlink(missing_ok=True)
    return out, f"{shown}: {model.arch}, {model.num_classes} classes, {dataset}"
