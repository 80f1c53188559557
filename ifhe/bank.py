"""ImageBank: labelled synthesized images on disk as uint8 safetensors shards plus a manifest per writer rank.

Writes are atomic (shard first, then manifest); a shard the manifest does not list is debris from a kill and is
removed when the bank is opened. Shards are never rewritten; resume may only drop shards a checkpoint does not
cover (`truncate`). All images are also kept in memory for uniform sampling.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from .checkpoint import atomic_write_text, load_tensors, save_tensors, sha256_file
from .errors import CheckpointError, IfheError

_SHARD = re.compile(r"^r(\d+)_(\d{6})\.safetensors$")


class ImageBank:
    def __init__(self, root: str | os.PathLike, rank: int = 0, classes: tuple[str, ...] | None = None,
                 verify: bool = False):
        self.root, self.rank = Path(root), rank
        self.root.mkdir(parents=True, exist_ok=True)
        self.classes = tuple(classes) if classes else None
        self._x = torch.empty(0, 3, 32, 32, dtype=torch.uint8)
        self._y = torch.empty(0, dtype=torch.int64)
        self._n = 0
        self.shards: dict[int, list[dict]] = {}
        self.meta: dict = {}  # provenance written by the run (e.g. how IFHE's h was trained)
        for path in sorted(self.root.glob("manifest_r*.json")):
            m = self._read_manifest(path)
            self.shards[int(m["rank"])] = m["shards"]
            if self.classes is None and m.get("classes"):
                self.classes = tuple(m["classes"])
            if int(m["rank"]) == rank or not self.meta:
                self.meta = dict(m.get("meta") or {})
        self.shards.setdefault(rank, [])
        self._remove_debris()
        # (index, rank) order is the order a multi-rank run adds them in, so a reopened bank is the same sequence
        for rec in self.records():
            x, y = self._load_shard(rec, verify)
            self._append(x, y)

    # ---- io ----------------------------------------------------------------------------------------------
    def _manifest_path(self, rank: int) -> Path:
        return self.root / f"manifest_r{rank}.json"

    def _read_manifest(self, path: Path) -> dict:
        try:
            m = json.loads(path.read_text())
            assert isinstance(m.get("shards"), list) and "rank" in m
            return m
        except (json.JSONDecodeError, AssertionError, UnicodeDecodeError):
            raise CheckpointError(f"{path}: not a valid bank manifest") from None

    def _write_manifest(self) -> None:
        atomic_write_text(self._manifest_path(self.rank), json.dumps(
            {"version": 1, "rank": self.rank, "classes": list(self.classes) if self.classes else None,
             "meta": self.meta, "shards": self.shards[self.rank]}, indent=1))

    def _remove_debris(self) -> None:
        listed = {rec["file"] for recs in self.shards.values() for rec in recs}
        for f in self.root.iterdir():
            m = _SHARD.match(f.name)
            if (m and int(m.group(1)) == self.rank and f.name not in listed) or \
                    (f.name.startswith(".") and ".tmp" in f.name):
                f.unlink()

    def _load_shard(self, rec: dict, verify: bool) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.root / rec["file"]
        if not path.exists():
            raise CheckpointError(f"{path}: listed in the bank manifest but missing")
        if verify and sha256_file(path) != rec["sha256"]:
            raise CheckpointError(f"{path}: checksum does not match the bank manifest")
        t, _ = load_tensors(path)
        x, y = t.get("images"), t.get("labels")
        if x is None or y is None or x.dtype != torch.uint8 or x.dim() != 4 or len(x) != rec["n"] \
                or len(y) != rec["n"]:
            raise CheckpointError(f"{path}: not a bank shard (uint8 images + labels, {rec['n']} of them)")
        return x, y.long()

    def _append(self, x: torch.Tensor, y: torch.Tensor) -> None:
        need = self._n + len(x)
        if need > len(self._x):  # grow geometrically: adding stays cheap for thousands of small shards
            cap = max(need, 2 * len(self._x), 256)
            self._x = torch.cat([self._x[:self._n], torch.empty(cap - self._n, *x.shape[1:], dtype=torch.uint8)])
            self._y = torch.cat([self._y[:self._n], torch.empty(cap - self._n, dtype=torch.int64)])
        self._x[self._n:need] = x
        self._y[self._n:need] = y
        self._n = need

    # ---- api ---------------------------------------------------------------------------------------------
    def add(self, images: torch.Tensor, labels: torch.Tensor, info: dict | None = None) -> str:
        """Store one batch as a new shard; `info` (JSON values, e.g. its round and h's training so far) is kept
        in the shard's manifest record."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise IfheError(f"bank images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise IfheError(f"bank labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if self._n and images.shape[1:] != self._x.shape[1:]:
            raise IfheError(f"bank holds {tuple(self._x.shape[1:])} images, got {tuple(images.shape[1:])}")
        recs = self.shards[self.rank]
        index = recs[-1]["index"] + 1 if recs else 0
        name = f"r{self.rank}_{index:06d}.safetensors"
        path = self.root / name
        if path.exists():  # only unlisted debris can be here; listed shards are never rewritten
            path.unlink()
        save_tensors(path, {"images": images.cpu(), "labels": labels.cpu().long()})
        recs.append({**(info or {}), "file": name, "index": index, "n": int(images.shape[0]),
                     "sha256": sha256_file(path)})
        self._write_manifest()
        self._append(images.cpu(), labels.cpu().long())
        return name

    def remember(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Another rank's batch: sampled from here, stored on disk by its own rank."""
        self._append(images.cpu(), labels.cpu().long())

    def reload(self) -> None:
        self.__init__(self.root, self.rank, self.classes)

    def truncate(self, n_shards: int) -> None:
        """Forget this rank's shards after the first `n_shards` (written after the checkpoint being resumed)."""
        recs = self.shards[self.rank]
        if n_shards >= len(recs):
            return
        self.shards[self.rank] = recs[:n_shards]
        self._write_manifest()
        for rec in recs[n_shards:]:
            (self.root / rec["file"]).unlink(missing_ok=True)
        self.reload()

    def set_meta(self, **meta) -> None:
        """Provenance of the whole bank (JSON values), written with the manifest."""
        self.meta.update(meta)
        self._write_manifest()

    def records(self) -> list[dict]:
        """Every shard's manifest record (with its rank) in the order the images are held."""
        return sorted((rec | {"rank": r} for r, recs in self.shards.items() for rec in recs),
                      key=lambda rec: (rec["index"], rec["rank"]))

    def image_rounds(self) -> torch.Tensor:
        """The synthesis round of every image (the shard's recorded round, else its index: banks written before
        rounds were recorded hold one shard per round)."""
        parts = [torch.full((rec["n"],), int(rec.get("round", rec["index"])), dtype=torch.int64)
                 for rec in self.records()]
        rounds = torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)
        return rounds[:self._n]

    @property
    def n_shards(self) -> int:
        return len(self.shards[self.rank])

    def __len__(self) -> int:
        return self._n

    @property
    def images(self) -> torch.Tensor:
        return self._x[:self._n]

    @property
    def labels(self) -> torch.Tensor:
        return self._y[:self._n]

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n images drawn uniformly (with replacement) from the whole bank."""
        if self._n == 0:
            raise IfheError(f"bank {self.root} is empty: nothing to distill from")
        idx = torch.randint(0, self._n, (n,), generator=generator)
        return self._x[idx], self._y[idx]

    def class_counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.labels, minlength=num_classes).tolist()

    def export_png(self, out: str | os.PathLike) -> int:
        """Write an ImageFolder tree: out/<class name>/<index>.png."""
        from PIL import Image
        out = Path(out)
        names = self.classes or tuple(str(i) for i in range(int(self.labels.max()) + 1 if self._n else 0))
        for i in range(self._n):
            label = int(self._y[i])
            d = out / (names[label] if label < len(names) else str(label))
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(self._x[i].permute(1, 2, 0).numpy()).save(d / f"{i:06d}.png")
        return self._n


def count_images(root: str | os.PathLike) -> int:
    """Images in the bank at `root` from its manifests alone (no shard is read); 0 where there is none."""
    total = 0
    for path in Path(root).glob("manifest_r*.json"):
        try:
            total += sum(int(rec["n"]) for rec in json.loads(path.read_text()).get("shards", []))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise CheckpointError(f"{path}: not a valid bank manifest") from None
    return total


def open_bank(root: str | os.PathLike) -> ImageBank:
    """An existing bank, read-only use (raises if there is none)."""
    root = Path(root)
    if not any(root.glob("manifest_r*.json")):
        raise IfheError(f"{root}: no image bank here (no manifest_r*.json)")
    return ImageBank(root, verify=True)
