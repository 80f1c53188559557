"""The committed comparison of intermediate features: a feature report and the images behind it, in a folder a
checkout carries (`results/shipped/feature-banks/`), so that the app shows it without making a bank or computing
anything (`tools/ship_banks.py` writes it; the Feature space page and `ifhe features --sets` read it).

    comparison.json     format, label, teacher (name, sha256, arch), the command that wrote it, the window rule,
                        every bank's provenance (method, seed, its run's rounds and budget, the rounds its images come
                        from, the command that made its run, the checksum of its file), and the report: its sets,
                        notes, protocol, metrics per bank, per method over seeds, the claims, metric vs share
    points.npz          the maps' coordinates: stage, map (shared | own), set, x, y, label, prediction, confidence,
                        index of the image in its set
    banks/<name>.npz    x: uint8 (N, 32, 32, 3), y: target class t, rounds: the round each image was made in; the
                        N images of the bank the report compared (equal N for every bank)
    real.npz            which real test images were compared (y, index in the test split), never their pixels: the
                        dataset is not ours to redistribute; the page shows them where the data is at hand
                        ($IFHE_DATA/<dataset>-test.npz), and draws the maps and tables without them elsewhere

numpy and pandas only (no torch, no analysis stack): the app reads it while its page draws, whatever else the
server is importing.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import IfheError
from .feature_view import FeatureReport, ImageSet, SetInfo
from .fileio import atomic_write_text, json_safe, sha256_file

FORMAT = 1
COMPARISON = "comparison.json"
POINTS = "points.npz"
REAL = "real.npz"
BANKS = "banks"
POINT_TEXT = ("stage", "map", "set")            # point columns stored as codes into a list of names
POINT_NUMBERS = {"x": np.float32, "y": np.float32, "label": np.int16, "pred": np.int16,
                 "confidence": np.float16, "index": np.int32}
REPORT_TABLES = ("metrics", "seeds", "verdicts", "rounds")


@dataclass
class BankRecord:
    """Where one committed bank came from."""

    name: str                     # its set's name in the report
    file: str                     # banks/<file>, relative to the comparison's folder
    method: str
    group: str                    # the method's label (the sets of one group are its seeds)
    seed: int | None
    images: int
    rounds_used: str              # 'rounds 34–44 of 45'
    run_rounds: int | None        # rounds its run made
    budget_minutes: float | None
    run: str                      # the run folder it was read from
    made_by: str                  # the command that made the run (the sweep's, or the run's own)
    head: str = ""                # how its h was trained
    alpha: float | None = None    # its run's weight of L_H
    teacher_sha256: str | None = None    # as the run recorded it (None: the run did not record it)
    sha256: str = ""              # of its .npz


@dataclass
class Shipped:
    """A committed comparison, read: its report (as `ifhe.feature_report` computed it), provenance and label."""

    folder: Path
    report: FeatureReport
    teacher: dict
    banks: list[BankRecord]
    command: str
    window: str
    made: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        groups = list(dict.fromkeys(b.group for b in self.banks))
        seeds = {g: sum(b.group == g for b in self.banks) for g in groups}
        each = (f"{next(iter(seeds.values()))} seed{'s' * (next(iter(seeds.values())) > 1)} each"
                if len(set(seeds.values())) == 1 else ", ".join(f"{g}: {k}" for g, k in seeds.items()))
        sha = (self.teacher.get("sha256") or "")[:12]
        return (f"shipped comparison: {', '.join(groups)} ({each}) · teacher {self.teacher.get('name')} "
                f"(sha256 {sha}) · {self.report.n} images per bank from {self.window}")


# ---- writing ---------------------------------------------------------------------------------------------------

def _records(df) -> list[dict]:
    return json_safe(df.to_dict("records")) if df is not None and len(df) else []


def _save_npz(path: Path, **arrays) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return sha256_file(path)


def _hwc(images) -> np.ndarray:
    a = images.numpy() if hasattr(images, "numpy") else np.asarray(images)
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).astype(np.uint8)


def write_points(path: Path, points) -> None:
    arrays = {}
    for col in POINT_TEXT:
        names = list(dict.fromkeys(points[col]))
        arrays[f"{col}_names"] = np.array(names)
        arrays[col] = np.array([names.index(v) for v in points[col]], np.int16)
    for col, dtype in POINT_NUMBERS.items():
        arrays[col] = points[col].to_numpy().astype(dtype)
    _save_npz(path, **arrays)


def write_comparison(out: str | os.PathLike, report: FeatureReport, sets: dict[str, ImageSet],
                     records: list[BankRecord], teacher: dict, command: str, real_index: np.ndarray | None = None,
                     made: dict | None = None) -> Path:
    """Write `report` and the images it compared (`report.sampled` indices of `sets`) into `out`."""
    out = Path(out)
    (out / BANKS).mkdir(parents=True, exist_ok=True)
    for old in (out / BANKS).glob("*.npz"):
        old.unlink()
    by_name = {r.name: r for r in records}
    for name, idx in report.sampled.items():
        if name == "real":
            continue
        s, rec = sets[name], by_name[name]
        rounds = np.asarray(s.rounds)[idx] if s.rounds is not None else np.zeros(len(idx), np.int64)
        rec.sha256 = _save_npz(out / BANKS / rec.file, x=_hwc(report.images[name]),
                               y=np.asarray(s.labels)[idx].astype(np.uint8), rounds=rounds.astype(np.int32))
        rec.images = len(idx)
    if "real" in report.images:
        _save_npz(out / REAL, y=np.asarray(sets["real"].labels)[report.sampled["real"]].astype(np.uint8),
                  index=np.asarray(real_index if real_index is not None else report.sampled["real"], np.int32))
    write_points(out / POINTS, report.points)
    doc = {"format": FORMAT, "teacher": teacher, "command": command, "window": report.window, "made": made or {},
           "banks": [asdict(r) for r in records], "report": _report_doc(report)}
    atomic_write_text(out / COMPARISON, json.dumps(json_safe(doc), indent=1, ensure_ascii=False))
    return out


def _report_doc(report: FeatureReport) -> dict:
    return {"stages": list(report.stages), "labels": report.labels, "n": report.n, "fitted_on": report.fitted_on,
            "notes": list(report.notes), "classes": list(report.classes), "teacher": report.teacher,
            "h_stages": list(report.h_stages), "n_boot": report.n_boot, "round_n": report.round_n,
            "primary": report.primary, "window": report.window, "protocol": report.protocol,
            "sets": [asdict(s) for s in report.sets],
            **{t: _records(getattr(report, t)) for t in REPORT_TABLES}}


def folder_size(folder: str | os.PathLike) -> int:
    """Bytes of every file under `folder`."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


# ---- reading ---------------------------------------------------------------------------------------------------

def available(folder: str | os.PathLike | None) -> bool:
    """Whether `folder` holds a committed comparison (its comparison.json)."""
    return folder is not None and (Path(folder) / COMPARISON).is_file()


def _frame(records: list[dict]):
    """A table read back from JSON: columns of numbers and nulls become floats (null: NaN)."""
    df = pd.DataFrame(records)
    for col in df.columns:
        values = df[col]
        if values.dtype == object and all(v is None or isinstance(v, (int, float)) for v in values):
            df[col] = values.astype(float)
    return df


def read_points(path: Path):
    with np.load(path, allow_pickle=False) as f:
        cols = {col: np.asarray(f[f"{col}_names"])[f[col]] for col in POINT_TEXT}
        cols |= {col: f[col].astype(np.float64 if col in ("x", "y", "confidence") else np.int64)
                 for col in POINT_NUMBERS}
    return pd.DataFrame(cols)[list(POINT_TEXT) + list(POINT_NUMBERS)]


def read_images(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 N x 3 x H x W, labels, rounds or the real set's test indices) of a committed .npz."""
    with np.load(path, allow_pickle=False) as f:
        x = np.ascontiguousarray(f["x"].transpose(0, 3, 1, 2))
        return x, f["y"].astype(np.int64), (f["rounds"] if "rounds" in f else f["index"]).astype(np.int64)


def real_images(path: Path, dataset: str) -> np.ndarray | None:
    """The real test images a comparison names (uint8 N x 3 x H x W), read from $IFHE_DATA's
    `<dataset>-test.npz` when it is there and agrees with the recorded labels; None otherwise."""
    root = os.environ.get("IFHE_DATA")
    if not path.is_file() or not root:
        return None
    npz = Path(root) if Path(root).suffix == ".npz" else Path(root) / f"{dataset}-test.npz"
    if not npz.is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        index, y = f["index"].astype(np.int64), f["y"].astype(np.int64)
    with np.load(npz, allow_pickle=False) as f:
        if len(index) and (index.min() < 0 or index.max() >= len(f["y"])):
            return None
        if not np.array_equal(f["y"][index].astype(np.int64), y):
            return None   # another copy or split: its images would be the wrong ones
        return np.ascontiguousarray(f["x"][index].transpose(0, 3, 1, 2))


def load_comparison(folder: str | os.PathLike) -> Shipped:
    """A committed comparison, as its page shows it (IfheError when the folder does not hold a readable one)."""
    folder = Path(folder)
    try:
        doc = json.loads((folder / COMPARISON).read_text())
        if doc.get("format") != FORMAT:
            raise IfheError(f"{folder / COMPARISON}: format {doc.get('format')!r}, this code reads {FORMAT}")
        r = doc["report"]
        records = [BankRecord(**b) for b in doc["banks"]]
        images = {b.name: read_images(folder / BANKS / b.file)[0] for b in records}
        real = real_images(folder / REAL, doc["teacher"].get("dataset") or "cifar10")
        if real is not None:
            images = {"real": real} | images
        report = FeatureReport(
            tuple(r["stages"]), r["labels"], int(r["n"]), [SetInfo(**s) for s in r["sets"]], _frame(r["metrics"]),
            read_points(folder / POINTS), _frame(r["rounds"]), r["fitted_on"], list(r["notes"]), images,
            tuple(r["classes"]), r["teacher"], tuple(r["h_stages"]), int(r["n_boot"]), int(r["round_n"]),
            _frame(r["seeds"]), _frame(r["verdicts"]), r["primary"], r["window"], r["protocol"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise IfheError(f"{folder}: not a readable committed comparison ({type(e).__name__}: {e})") from None
    return Shipped(folder, report, doc["teacher"], records, doc.get("command", ""), doc.get("window", ""),
                   doc.get("made") or {})


def is_shipped_bank(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.suffix == ".npz" and p.is_file() and (p.parent.parent / COMPARISON).is_file()


def shipped_set(path: str | os.PathLike, name: str | None = None) -> tuple[ImageSet, dict]:
    """One committed bank as an ImageSet (to put beside other banks) and a config-like record of its run."""
    path = Path(path)
    doc = json.loads((path.parent.parent / COMPARISON).read_text())
    rec = next((BankRecord(**b) for b in doc["banks"] if b["file"] == path.name), None)
    if rec is None:
        raise IfheError(f"{path}: not listed in {path.parent.parent / COMPARISON}")
    import torch  # the one use of torch here: a committed bank beside others is measured by the teacher anyway
    x, y, rounds = read_images(path)
    config = {"teacher": doc["teacher"].get("name"), "method": rec.method, "seed": rec.seed,
              "synth": {"alpha": rec.alpha, "h_stages": doc["report"]["h_stages"]}}
    return ImageSet(name or f"shipped {rec.name}", torch.from_numpy(x), y, rounds, str(path), rec.head,
                    group=rec.group, seed=rec.seed, total_rounds=rec.run_rounds), config
