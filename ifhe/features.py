"""Intermediate features of image sets and the feature report's side effects: the teacher's forward pass (cached on
disk), image sets read from banks with their provenance, and the report's files. The measurement itself is
`ifhe.feature_report` (with the metrics of `ifhe.feature_metrics` and the maps of `ifhe.embedding`).

The stage "h" is h's input: the instance-mean pooled outputs of the stages h reads (the run's `synth.h_stages`,
`ifhe.heads.DEFAULT_STAGES` when no run says), concatenated in that order, as the synthesizer feeds them to h.
"""
from __future__ import annotations

import hashlib
import html as H
import json
import os
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import catalog
from .bank import open_bank
from .config import read_config_file
from .data import load_split, to_unit
from .errors import IfheError
from .feature_banks import is_shipped_bank, shipped_set
from .feature_report import compute_report
from .feature_view import (H_STAGE, PALETTE, FeatureReport, Features, ImageSet, hover_script, markdown, metrics_table,
                           plot_map, plot_rounds, report_header, seed_table, set_colour, verdict_table)
from .heads import DEFAULT_STAGES
from .hooks import FeatureTap
from .methods import METHOD_LABELS

CACHE_DIR = Path(os.environ.get("IFHE_CACHE", ".ifhe_cache")) / "features"


# ---- stages ------------------------------------------------------------------------------------------------

def stage_choices(teacher: nn.Module) -> tuple[str, ...]:
    """What can be measured on this teacher: h's input, then the teacher's own stages."""
    return (H_STAGE,) + tuple(teacher.stages)


def primary_of(teacher: nn.Module) -> str:
    """The stage the verdicts rest on, one h does not read: the penultimate layer (what the classifier reads),
    else the last block."""
    stages = tuple(teacher.stages)
    blocks = [s for s in stages if s.startswith("block")]
    return "penultimate" if "penultimate" in stages else (blocks[-1] if blocks else "")


def default_stages(teacher: nn.Module) -> tuple[str, ...]:
    """The primary stage (`primary_of`), then h's input (what L_H optimises directly) beside it."""
    primary = primary_of(teacher)
    return (primary, H_STAGE) if primary else (H_STAGE,)


def check_stages(teacher: nn.Module, stages, h_stages) -> tuple[tuple[str, ...], tuple[str, ...]]:
    stages = (stages,) if isinstance(stages, str) else tuple(stages)
    h_stages = tuple(h_stages or DEFAULT_STAGES)
    choices = stage_choices(teacher)
    bad = [s for s in stages if s not in choices] + [s for s in h_stages if s not in teacher.stages]
    if bad:
        raise IfheError(f"stage(s) {', '.join(bad)}: {getattr(teacher, 'arch', 'the teacher')} has "
                        f"{', '.join(choices)}")
    if not stages:
        raise IfheError("no stage to measure")
    return stages, h_stages


def _tapped(stages, h_stages) -> tuple[str, ...]:
    """The teacher stages behind `stages` ("h" expands to h_stages), each once, in order."""
    out = []
    for s in stages:
        for t in (h_stages if s == H_STAGE else (s,)):
            if t not in out:
                out.append(t)
    return tuple(out)


# ---- extraction and cache ----------------------------------------------------------------------------------

@torch.inference_mode()
def extract_features(teacher: nn.Module, images: torch.Tensor, stages: tuple[str, ...] | None = None,
                     h_stages: tuple[str, ...] = DEFAULT_STAGES, batch_size: int = 128) -> Features:
    """Instance-mean pooled stage outputs (N, C) float32 of uint8 images (N, 3, H, W) under the teacher's
    normalization, with its predicted class and confidence; stage "h" is the concatenation of `h_stages`."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    stages = tuple(stages or teacher.stages)
    tapped = _tapped(stages, h_stages)
    device = next(teacher.parameters()).device
    feats: dict[str, list[np.ndarray]] = {s: [] for s in tapped}
    preds, confs = [], []
    was_training = teacher.training
    teacher.eval()
    with FeatureTap(teacher, tapped) as tap:
        for i in range(0, images.shape[0], batch_size):
            x = teacher.normalizer(to_unit(images[i:i + batch_size].to(device)))
            probs = torch.softmax(teacher(x.contiguous(memory_format=torch.channels_last)).float(), dim=1)
            conf, pred = probs.max(1)
            preds.append(pred.cpu().numpy())
            confs.append(conf.cpu().numpy())
            for s in tapped:
                feats[s].append(tap.features[s].float().cpu().numpy())
    teacher.train(was_training)
    per_stage = {s: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for s, v in feats.items()}
    return Features(_assemble(per_stage, stages, h_stages),
                    np.concatenate(preds) if preds else np.zeros(0, np.int64),
                    np.concatenate(confs) if confs else np.zeros(0, np.float32))


def _assemble(per_stage: dict, stages, h_stages) -> dict[str, np.ndarray]:
    return {s: (np.concatenate([per_stage[t] for t in h_stages], 1) if s == H_STAGE else per_stage[s])
            for s in stages}


def teacher_key(teacher: nn.Module) -> str:
    """Identifies the teacher's weights: its zoo checksum, else a hash of the parameters."""
    sha = catalog.sha256_of(teacher)
    if sha:
        return sha[:16]
    h = hashlib.sha256()
    for t in teacher.state_dict().values():
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def teacher_label(teacher: nn.Module, name: str) -> str:
    """'cifar10_wrn16_2 (wrn16_2, sha256 1a2b3c4d5e6f)': which teacher made a figure."""
    kind = "sha256" if catalog.sha256_of(teacher) else "weights hash"
    return f"{Path(str(name)).name} ({getattr(teacher, 'arch', '?')}, {kind} {teacher_key(teacher)[:12]})"


def images_key(images: torch.Tensor) -> str:
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()[:16]


def cached_features(teacher: nn.Module, images: torch.Tensor, stages, cache_dir: str | os.PathLike | None = None,
                    h_stages: tuple[str, ...] = DEFAULT_STAGES) -> Features:
    """`extract_features`, cached on disk per (teacher, image set, teacher stage) as .npz (read without pickle);
    "h" is assembled from its stages' entries. One forward pass computes every missing stage."""
    stages = (stages,) if isinstance(stages, str) else tuple(stages)
    root = Path(cache_dir or CACHE_DIR)
    prefix = f"{teacher_key(teacher)}_{images_key(images)}"
    per_stage, pred, conf = {}, None, None
    for s in _tapped(stages, h_stages):
        path = root / f"{prefix}_{s}.npz"
        if not path.exists():
            continue
        try:
            with np.load(path, allow_pickle=False) as f:
                per_stage[s], pred, conf = f["features"], f["pred"], f["confidence"]
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a damaged cache entry is recomputed
    missing = tuple(s for s in _tapped(stages, h_stages) if s not in per_stage)
    if missing:
        fs = extract_features(teacher, images, missing, h_stages)
        pred, conf = fs.pred, fs.confidence
        root.mkdir(parents=True, exist_ok=True)
        for s in missing:
            per_stage[s] = fs.features[s]
            path = root / f"{prefix}_{s}.npz"
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, features=fs.features[s], pred=fs.pred, confidence=fs.confidence)
            os.replace(tmp, path)
    return Features(_assemble(per_stage, stages, h_stages), pred, conf)


def featurizer(teacher: nn.Module, stages, h_stages, cache_dir=None):
    """images -> Features of `stages`, through the cache (what `feature_report.compute_report` calls)."""
    return lambda images: cached_features(teacher, images, stages, cache_dir, h_stages)


# ---- image sets from banks -----------------------------------------------------------------------------------

def run_config_of(bank_dir: Path) -> dict:
    """The raw config.yaml of the run that wrote `bank_dir` (its parent folder), or {}."""
    cfg = Path(bank_dir).parent / "config.yaml"
    if not cfg.is_file():
        return {}
    try:
        return read_config_file(cfg)
    except IfheError:
        return {}


def head_provenance(meta: dict, config: dict) -> str:
    """How the bank's h was trained, as its run recorded it (`head_training` in the bank's meta); for a run
    without L_H (alpha = 0) that h did not shape the images, and the line says so instead."""
    alpha = (config.get("synth") or {}).get("alpha")
    if alpha is not None and float(alpha) == 0:
        return "no L_H (alpha = 0): h did not shape these images"
    if meta.get("head_training"):
        return str(meta["head_training"])
    return "h training not recorded"


def bank_set(path: str | os.PathLike, name: str | None = None) -> tuple[ImageSet, dict]:
    """A bank (a run folder holding bank/, the bank folder, or a committed bank's .npz) as an ImageSet labelled by
    target t, with every image's round, its run's rounds, the method and seed, and the h provenance; and its run's
    raw config ({} if none)."""
    p = Path(path)
    if is_shipped_bank(p):
        return shipped_set(p, name)
    bank_dir = p / "bank" if (p / "bank").is_dir() else p
    bank = open_bank(bank_dir)
    config = run_config_of(bank_dir)
    if not name:  # runs/x/seed0 is called "x", runs/x "x" (or its method), a bare bank folder by its own name
        run = bank_dir.parent if bank_dir.name == "bank" else bank_dir
        name = run.parent.name if run.name.startswith("seed") and run.parent.name else run.name
    updates = np.concatenate([np.full(rec["n"], int(rec.get("h_updates", -1)), np.int64)
                              for rec in bank.records()] or [np.zeros(0, np.int64)])[:len(bank)]
    method, seed = config.get("method"), config.get("seed")
    return ImageSet(name, bank.images, bank.labels.numpy(), bank.image_rounds().numpy(), str(bank_dir),
                    head_provenance(bank.meta, config), updates, METHOD_LABELS.get(method, method or ""),
                    int(seed) if seed is not None else None, run_result(bank_dir).get("round")), config


def run_result(bank_dir: Path) -> dict:
    """The result.json of the run that wrote `bank_dir` ({} while it runs, or without one)."""
    try:
        data = json.loads((Path(bank_dir).parent / "result.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def h_stages_of(configs: list[dict]) -> tuple[str, ...]:
    """The stages h reads: those of the runs that use h (alpha > 0), which must agree (one report measures one h
    input); the default when no run uses h."""
    used = set()
    for c in configs:
        synth = c.get("synth") or {}
        if float(synth.get("alpha") or 0) > 0:
            s = synth.get("h_stages") or DEFAULT_STAGES
            used.add(tuple(s.split(",")) if isinstance(s, str) else tuple(s))
    if len(used) > 1:
        raise IfheError(f"the runs' h read different stages ({'; '.join(sorted('+'.join(u) for u in used))}); "
                        f"compare runs of one h input")
    return used.pop() if used else tuple(DEFAULT_STAGES)


def real_set(dataset: str, data: str | os.PathLike | None) -> ImageSet:
    """The real test split, labelled by its true classes."""
    test = load_split(dataset, "test", data)
    return ImageSet("real", test.x, test.y.numpy(), None, f"{dataset} test split")


def feature_report(teacher: nn.Module, sets: list[ImageSet], real: ImageSet | None, stages=None, *,
                   h_stages=None, teacher_name: str = "", cache_dir=None, classes=None, **kw) -> FeatureReport:
    """The whole measurement on a teacher: stages checked against it, features through the cache."""
    stages, h_stages = check_stages(teacher, stages or default_stages(teacher), h_stages)
    return compute_report(featurizer(teacher, stages, h_stages, cache_dir), sets, real, stages,
                          teacher=teacher_label(teacher, teacher_name or getattr(teacher, "arch", "teacher")),
                          h_stages=h_stages, classes=classes, **kw)


# ---- report files ---------------------------------------------------------------------------------------------

def _bold(text: str) -> str:
    return re.sub(r"[*][*](.+?)[*][*]", r"<b>\1</b>", text)


def report_html(report: FeatureReport) -> str:
    """One page: header, the tables, per stage both maps and the metric-vs-share chart, hover thumbnails."""
    parts, first = [], True
    for stage in report.stages:
        parts.append(f"<h2>{H.escape(report.stage_label(stage))}</h2>")
        figs = [plot_map(report, stage, "shared"), plot_map(report, stage, "own")]
        if len(report.rounds):
            figs.append(plot_rounds(report, stage))
        for fig in figs:
            parts.append(fig.to_html(include_plotlyjs=first, full_html=False))
            first = False
    header = "".join(f"<p>{_bold(H.escape(line))}</p>" for line in report_header(report).splitlines()
                     if line.strip())
    tables = "".join(f"<h3>{title}</h3>" + t.to_html(index=False, border=0)
                     for title, t in report_tables(report) if not t.empty)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Intermediate features</title><style>"
            f"body{{font-family:sans-serif;margin:1em 2em}} table{{border-collapse:collapse;font-size:13px}} "
            f"td,th{{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}}</style></head><body>"
            f"<h1>Intermediate features</h1>{header}{tables}{''.join(parts)}{hover_script(report)}</body></html>")


def report_tables(report: FeatureReport) -> list[tuple[str, object]]:
    """(title, table) of the report in the order it is read: the claims, each method over its seeds, each bank."""
    return [("Claims, decided over seeds (primary stage first)", verdict_table(report)),
            ("Each method over its banks (seeds)", seed_table(report)),
            ("Each bank (intervals over images)", metrics_table(report))]


def _png_maps(report: FeatureReport, path: Path) -> None:
    import matplotlib  # here, not at the top: the Agg backend is chosen when a file is drawn, not on import
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = report.set_names
    colours = np.array([matplotlib.colors.to_rgb(c) for c in PALETTE])
    rows = [(stage, kind) for stage in report.stages for kind in ("shared", "own")]
    f, axes = plt.subplots(len(rows), len(names), figsize=(2.7 * len(names), 2.8 * len(rows)), squeeze=False)
    m = report.metrics
    for r, (stage, kind) in enumerate(rows):
        pts = report.points[(report.points["stage"] == stage) & (report.points["map"] == kind)]
        for c, name in enumerate(names):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            s = pts[pts["set"] == name]
            ax.scatter(s["x"], s["y"], c=colours[s["label"].to_numpy() % 10], s=2, alpha=0.8, linewidths=0)
            row = m[(m["stage"] == stage) & (m["set"] == name)]
            title = name
            if len(row):
                row = row.iloc[0]
                title += f"\nkNN {row['knn']:.2f} div {row['diversity']:.2f}"
            ax.set_title(title, fontsize=8)
            if c == 0:
                where = "shared (fitted on real)" if report.fitted_on == "real" else "shared (union)"
                ax.set_ylabel(f"{report.stage_label(stage)}\n{where if kind == 'shared' else 'fitted alone'}",
                              fontsize=8)
    f.suptitle(f"t-SNE of the teacher's features, colour = target t (real: true class); n = {report.n} a set",
               fontsize=9)
    f.tight_layout()
    f.savefig(path, dpi=90)
    plt.close(f)


def _png_rounds(report: FeatureReport, path: Path) -> None:
    import matplotlib  # here, not at the top: the Agg backend is chosen when a file is drawn, not on import
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = report.set_names
    f, axes = plt.subplots(len(report.stages), 2, figsize=(9, 3 * len(report.stages)), squeeze=False)
    r = report.rounds
    lab = "t" if report.labels == "target" else "pred."
    for i, stage in enumerate(report.stages):
        for j, (key, title) in enumerate((("knn", f"balanced k-NN acc ({lab})"), ("agreement", "agreement pred = t"))):
            ax = axes[i, j]
            for name in names:
                s = r[(r["stage"] == stage) & (r["set"] == name)] if len(r) else r
                if len(s) == 0:
                    continue
                colour = set_colour(names, name)
                if name == "real":
                    ax.axhline(float(s[key].iloc[0]), color=colour, ls="--", lw=1, label="real")
                    continue
                ax.errorbar(100 * s["share"], s[key], yerr=[s[key] - s[f"{key}_lo"], s[f"{key}_hi"] - s[key]],
                            color=colour, marker="o", ms=3, capsize=2, label=name)
            ax.set_title(f"{report.stage_label(stage)}: {title}", fontsize=9)
            ax.set_xlabel("share of the run's rounds (%, middle of the window)", fontsize=8)
            ax.set_xlim(0, 100)
            ax.tick_params(labelsize=7)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    f.suptitle(f"metrics against the share of the run, {report.round_n} images a window", fontsize=9)
    f.tight_layout()
    f.savefig(path, dpi=100)
    plt.close(f)


def write_report(report: FeatureReport, out: str | os.PathLike, command: str = "") -> dict[str, Path]:
    """report.html (interactive: both maps per stage, hover thumbnails, metric vs round), map.png, rounds.png,
    metrics.csv, metrics.md (with intervals, n, windows, teacher, banks and their h provenance, and the
    `command` that made them), rounds.csv."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"html": out / "report.html", "png": out / "map.png", "csv": out / "metrics.csv",
             "md": out / "metrics.md"}
    paths["html"].write_text(report_html(report))
    report.metrics.to_csv(paths["csv"], index=False)
    made = f"Made by `{command}`.\n\n" if command else ""
    paths["md"].write_text(made + report_header(report) + "".join(f"\n**{title}**\n\n" + markdown(t)
                                                                   for title, t in report_tables(report)))
    _png_maps(report, paths["png"])
    if len(report.rounds):
        paths["rounds_png"], paths["rounds_csv"] = out / "rounds.png", out / "rounds.csv"
        report.rounds.to_csv(paths["rounds_csv"], index=False)
        _png_rounds(report, paths["rounds_png"])
    return paths
