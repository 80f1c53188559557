"""CIFAR-10 as a compact JPEG archive for the GPU machine (at most 64 MiB of the checkout travels there), and back.

    python tools/gpu/pack_data.py pack [--data $IFHE_DATA] [--out gpu_data]   # here: ~46 MB, ignored by git
    python tools/gpu/pack_data.py unpack gpu_data DEST                        # there: prints DEST

`pack` writes `cifar10-train.jpg.npz` (all 50,000 training images) and `cifar10-test.jpg.npz` (a class-balanced
subset of the test set, 2,000 by default: for evaluations during a short GPU run; final figures are taken back
on the CPU on the whole test set), each holding `jpeg` (the concatenated JPEG files, uint8), `offsets` (N+1),
`y` (uint8) and `classes`; `SHA256SUMS` (as `sha256sum -c` reads it) and `info.json` (source checksums, quality,
PSNR against the source). `unpack` checks the checksums and writes `cifar10-{train,test}.npz` in the project's
layout (x uint8 N,32,32,3; y uint8; classes), so `IFHE_DATA=DEST` works for every command.

Quality 75 with 4:2:0 chroma is the setting the source images were themselves saved with (they are decoded
JPEG files, see ../shared/data/README.md): re-encoding with the same quantization reproduces 92% of the pixels
exactly (about 51 dB PSNR), where quality 95 gives 45 dB at a larger size. Pure numpy and Pillow.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

QUALITY = 75
TEST_IMAGES = 2000
SPLITS = ("train", "test")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def encode(x: np.ndarray, quality: int = QUALITY) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, H, W, 3) -> (concatenated JPEG bytes, offsets of N+1)."""
    files = []
    for img in x:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=quality, subsampling="4:2:0")
        files.append(np.frombuffer(buf.getvalue(), np.uint8))
    offsets = np.zeros(len(files) + 1, np.int64)
    offsets[1:] = np.cumsum([len(f) for f in files])
    return (np.concatenate(files) if files else np.zeros(0, np.uint8)), offsets


def decode(jpeg: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    data = jpeg.tobytes()
    images = [np.asarray(Image.open(io.BytesIO(data[a:b])).convert("RGB")) for a, b in zip(offsets[:-1], offsets[1:])]
    return np.stack(images) if images else np.zeros((0, 32, 32, 3), np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def balanced_subset(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n indices, n // classes of each class (seeded), in their original order."""
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per = n // len(classes)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per] for c in classes]))


def pack(data: Path, out: Path, train_n: int | None = None, test_n: int = TEST_IMAGES,
         quality: int = QUALITY) -> dict:
    """Encode `data`/cifar10-{train,test}.npz into `out`; `train_n` keeps the first images only (tests)."""
    out.mkdir(parents=True, exist_ok=True)
    info = {"quality": quality, "subsampling": "4:2:0", "files": {}}
    for split in SPLITS:
        src = data / f"cifar10-{split}.npz"
        with np.load(src, allow_pickle=False) as f:
            x, y, classes = f["x"], f["y"], f["classes"]
        idx = balanced_subset(y, test_n) if split == "test" else np.arange(len(y) if train_n is None else train_n)
        x, y = x[idx], y[idx].astype(np.uint8)
        jpeg, offsets = encode(x, quality)
        name = f"cifar10-{split}.jpg.npz"
        np.savez(out / name, jpeg=jpeg, offsets=offsets, y=y, classes=classes)
        info["files"][name] = {"images": int(len(y)), "bytes": (out / name).stat().st_size,
                               "psnr_db": round(psnr(decode(jpeg, offsets), x), 2),
                               "source": src.name, "source_sha256": sha256(src)}
    (out / "SHA256SUMS").write_text("".join(f"{sha256(out / n)}  {n}\n" for n in info["files"]))
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def unpack(src: Path, dest: Path) -> Path:
    """Check `src`/SHA256SUMS and write dest/cifar10-{train,test}.npz; returns dest."""
    sums = [line.split() for line in (src / "SHA256SUMS").read_text().splitlines() if line.strip()]
    for digest, name in sums:
        if sha256(src / name) != digest:
            raise SystemExit(f"{src / name}: checksum does not match SHA256SUMS (incomplete or changed file)")
    dest.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        with np.load(src / f"cifar10-{split}.jpg.npz", allow_pickle=False) as f:
            x = decode(f["jpeg"], f["offsets"])
            np.savez(dest / f"cifar10-{split}.npz", x=x, y=f["y"], classes=f["classes"])
        print(f"{split}: {len(x)} images -> {dest / f'cifar10-{split}.npz'}", file=sys.stderr)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data", default=None, help="folder with cifar10-{train,test}.npz (default $IFHE_DATA)")
    p.add_argument("--out", default="gpu_data")
    p.add_argument("--test-images", type=int, default=TEST_IMAGES)
    p.add_argument("--quality", type=int, default=QUALITY)
    u = sub.add_parser("unpack")
    u.add_argument("src")
    u.add_argument("dest")
    a = ap.parse_args(argv)
    if a.cmd == "unpack":
        print(unpack(Path(a.src), Path(a.dest)))
        return 0
    import os
    data = a.data or os.environ.get("IFHE_DATA")
    if not data:
        ap.error("no data: pass --data or set IFHE_DATA")
    info = pack(Path(data), Path(a.out), test_n=a.test_images, quality=a.quality)
    for name, f in info["files"].items():
        print(f"{a.out}/{name}: {f['images']} images, {f['bytes'] / 2 ** 20:.1f} MiB, PSNR {f['psnr_db']} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
