"""Pure helpers behind the pages: image grids, config building, upload checks, safe paths, figures, formulas.

Nothing here starts threads or keeps state; the pages stay thin and these stay testable without a browser.
"""
from __future__ import annotations

import io
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from ifhe.errors import IfheError
from ifhe.methods import METHOD_LABELS  # noqa: F401  (the pages' labels, from the method spec)
STAGES = ("block1", "block2", "block3", "penultimate")
DEFAULT_BATCH = 16            # small batches keep the live grid moving on a CPU
DEFAULT_UPLOAD_MB = 200
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


# ---- images ------------------------------------------------------------------------------------------------

def spread_indices(n: int, k: int) -> list[int]:
    """At most k indices spread evenly over range(n) (targets are sorted by class, so every class shows)."""
    if n <= k:
        return list(range(n))
    return [int(i * n / k) for i in range(k)]


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the bitmap font has one size
        return ImageFont.load_default()


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # fast: the grid is redrawn several times a second
    return buf.getvalue()


def _to_hwc(x) -> Any:
    """uint8 (3, H, W) torch tensor or numpy array -> (H, W, 3) numpy."""
    import numpy as np
    a = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
    return np.ascontiguousarray(a.transpose(1, 2, 0))


def compose_grid(images, labels, conf=None, pred=None, classes: tuple = (), scale: int = 3, cols: int = 8) -> bytes:
    """One PNG: upscaled tiles, each captioned with its target class and the teacher's confidence in it.

    A caption is red when the teacher's top class differs from the target.
    """
    from PIL import Image, ImageDraw
    n = len(images)
    if n == 0:
        raise ValueError("no images to draw")
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    h, w = images.shape[2] * scale, images.shape[3] * scale
    cap = 16
    pad = 2
    canvas = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + cap + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(11)
    for i in range(n):
        r, c = divmod(i, cols)
        x0, y0 = pad + c * (w + pad), pad + r * (h + cap + pad)
        tile = Image.fromarray(_to_hwc(images[i])).resize((w, h), Image.NEAREST)
        canvas.paste(tile, (x0, y0))
        label = int(labels[i])
        name = classes[label] if label < len(classes) else str(label)
        text = name if conf is None else f"{name} {float(conf[i]):.2f}"
        wrong = pred is not None and int(pred[i]) != label
        draw.text((x0 + 1, y0 + h + 1), text[:16], fill=(200, 30, 30) if wrong else (20, 20, 20), font=font)
    return _png(canvas)


def compose_bank_by_class(images, labels, classes: tuple = (), per_class: int = 6, scale: int = 2,
                          max_classes: int = 20) -> bytes:
    """Rows of bank samples, one row per class (the most recent `per_class` of each), class name on the left."""
    import torch
    from PIL import Image, ImageDraw
    labels = torch.as_tensor(labels)
    present = sorted(set(labels.tolist()))[:max_classes] if len(labels) else []
    h, w = 32 * scale, 32 * scale
    left, pad = 170, 2
    rows = max(1, len(present))
    canvas = Image.new("RGB", (left + per_class * (w + pad) + pad, rows * (h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(20)  # the picture is shown shrunk to a column's width
    for r, cls in enumerate(present):
        idx = (labels == cls).nonzero().flatten()[-per_class:]
        y0 = pad + r * (h + pad)
        name = classes[cls] if cls < len(classes) else str(cls)
        draw.text((4, y0 + h // 2 - 11), f"{name} ({int((labels == cls).sum())})", fill=(20, 20, 20), font=font)
        for c, i in enumerate(idx.tolist()):
            tile = Image.fromarray(_to_hwc(images[i])).resize((w, h), Image.NEAREST)
            canvas.paste(tile, (left + pad + c * (w + pad), y0))
    return _png(canvas)


def png_url(png: bytes) -> str:
    """A PNG as a data URI for `st.image`: no media-file round trip (a fast-refreshing grid never shows a 404)
    and no markdown to parse in the browser at every refresh."""
    import base64
    return "data:image/png;base64," + base64.b64encode(png).decode()


def thumbnail_png(image, scale: int = 4) -> bytes:
    from PIL import Image
    a = _to_hwc(image)
    return _png(Image.fromarray(a).resize((a.shape[1] * scale, a.shape[0] * scale), Image.NEAREST))


# ---- paths -------------------------------------------------------------------------------------------------

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


# ---- data and teachers -------------------------------------------------------------------------------------

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


def teacher_options(dataset: str) -> list[str]:
    from ifhe.zoo import read_manifest
    return [name for name, e in sorted(read_manifest().items()) if e.get("dataset") == dataset]


def teacher_label(name: str) -> str:
    from ifhe.zoo import read_manifest
    e = read_manifest().get(name, {})
    acc = e.get("test_accuracy")
    return f"{name} ({e.get('arch', '?')}, {acc:.1f}% test)" if acc is not None else name


def upload_limit_mb() -> int:
    return int(os.environ.get("IFHE_APP_MAX_UPLOAD_MB", DEFAULT_UPLOAD_MB))


def validate_upload(filename: str, data: bytes, arch: str | None, dataset: str, dest_dir: str | os.PathLike,
                    limit_mb: int | None = None) -> tuple[Path, str]:
    """Check an uploaded teacher and store a clean copy; returns (path, one-line summary).

    Only safetensors files are read (a pickle is refused by its first bytes and never unpickled); the size,
    the architecture's keys and shapes and the class count of `dataset` are checked. The stored copy is
    re-written by us with the dataset recorded, under a random name in `dest_dir`.
    """
    from ifhe.checkpoint import looks_like_pickle
    from ifhe.data import NUM_CLASSES
    from ifhe.zoo import freeze, load_model, save_model
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
    tmp = dest / f".upload-{token}.tmp"
    tmp.write_bytes(data)
    try:
        try:
            model, meta = load_model(tmp, arch or None, NUM_CLASSES[dataset])
        except IfheError as e:
            msg = str(e).replace(str(tmp), shown)
            if "no architecture recorded" in msg:
                msg = f"{shown}: the file does not record its architecture; choose it in the list above"
            raise IfheError(msg) from None
        if meta.get("dataset") and meta["dataset"] != dataset:
            raise IfheError(f"{shown}: a {meta['dataset']} model; pick that dataset or another file")
        out = dest / f"teacher-{token}.safetensors"
        save_model(out, freeze(model), dataset, {"uploaded_as": shown})
    finally:
        tmp.unlink(missing_ok=True)
    return out, f"{shown}: {model.arch}, {model.num_classes} classes, {dataset}"


# ---- configs -----------------------------------------------------------------------------------------------

def form_defaults(method: str) -> dict[str, Any]:
    """The preset's values for the widgets a method changes (CPU scale, the app's small batch)."""
    from ifhe.config import preset
    s, d = preset(method, "cpu")
    gan_style = s.param == "generator" and s.lr_z == 0  # DAFL, ZSKT, DFQ: a round is one generator step
    from ifhe.terms import WEIGHTS
    return {**{w: getattr(s, w) for w in WEIGHTS}, "lr_g": s.lr_g, "lr_z": s.lr_z,
            "iterations": s.iterations, "batch": DEFAULT_BATCH, "tau": d.T, "kd_steps": d.steps_per_round,
            "kd_batch": d.batch_size, "kd_lr": d.lr, "rounds": 2000 if gan_style else 100,
            "distill_rounds": 2000 if gan_style else 30}


def build_config(v: dict, kind: str):
    """A validated RunConfig from the form values `v`; kind 'synth' (synthesis first) or 'distill'."""
    from ifhe.config import make_config
    from ifhe.terms import WEIGHTS
    synth = {**{w: float(v[w]) for w in WEIGHTS if v.get(w) is not None},
             "lr_g": float(v["lr_g"]), "lr_z": float(v["lr_z"]), "batch_size": int(v["batch"]),
             "iterations": int(v["iterations"])}
    distill = {"T": float(v["tau"])}
    if kind == "synth" and not v.get("kd_between"):
        distill["steps_per_round"] = 0
    else:
        distill |= {"steps_per_round": int(v["kd_steps"]), "batch_size": int(v["kd_batch"]),
                    "lr": float(v["kd_lr"])}
    teacher = v.get("teacher_path") if v.get("teacher") == "upload" else v.get("teacher")
    if teacher and teacher.startswith("paper:"):
        from .catalog import arch_label
        raise IfheError(f"no {arch_label(teacher[6:])} teacher is shipped: upload one, or train it with the "
                        f"command shown under the pair")
    if not teacher:
        raise IfheError("no teacher: pick a shipped one, or upload a .safetensors file and wait for it to be accepted")
    budget = v.get("budget") or None
    device = v.get("device") or "auto"
    eval_images = int(v.get("eval_images") or 0) or None
    run = dict(teacher=str(teacher), student=v["student"], rounds=int(v["rounds"]), seed=int(v.get("seed") or 0),
               device=None if device == "auto" else device, precision=v.get("precision") or "fp32",
               log_every=1, preview_every=1,
               eval_every=int(v.get("eval_every") or 0), eval_images=eval_images,
               budget_minutes=float(budget) if budget else None, checkpoint_seconds=30.0)
    return make_config(v["method"], "cpu", synth, distill, **run)


# ---- figures -----------------------------------------------------------------------------------------------

def loss_figure(history: list[dict], x: str = "step", title: str = "", height: int = 200, max_points: int = 400):
    """Small multiples: one panel per loss term over steps (terms differ by orders of magnitude); long histories
    are thinned to about `max_points` points (the last one always shown)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
    terms = [k for k in history[-1] if k not in ("step", "round", "kd_steps")] if history else []
    if not terms:
        fig = go.Figure()
        fig.update_layout(height=height, margin=dict(l=10, r=10, t=30 if title else 10, b=10), title=title or None,
                          xaxis_title=x.replace("_", " "), yaxis_title="loss")
        return fig
    cols = min(4, len(terms))
    rows = (len(terms) + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=terms, shared_xaxes=True,
                        horizontal_spacing=0.07, vertical_spacing=0.18)
    step = max(1, len(history) // max_points)  # a panel is a few hundred pixels wide
    shown = history[::step]
    if shown[-1] is not history[-1]:
        shown.append(history[-1])
    xs = [h[x] for h in shown]
    for i, t in enumerate(terms):
        # SVG lines: WebGL (Scattergl) is drawn in software by a browser without a GPU, at several times the cost
        fig.add_trace(go.Scatter(x=xs, y=[h.get(t) for h in shown], mode="lines", name=t, showlegend=False,
                                 line=dict(width=1.5)), row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(height=height * rows + (30 if title else 0), title=title or None, title_font_size=14,
                      margin=dict(l=10, r=10, t=50 if title else 25, b=10), uirevision="keep")
    fig.update_annotations(font_size=12)
    return fig


def accuracy_figure(points: list[dict], x: str = "kd_steps", height: int = 300, series: dict | None = None):
    """Student and h accuracy (%) on the real test set over KD steps; `series` adds other runs' curves."""
    import plotly.graph_objects as go
    fig = go.Figure()
    xs = [p[x] for p in points]
    if points:
        fig.add_trace(go.Scatter(x=xs, y=[p.get("student_acc") for p in points], mode="lines+markers",
                                 name="student"))
        if any(p.get("head_acc") is not None for p in points):
            fig.add_trace(go.Scatter(x=xs, y=[p.get("head_acc") for p in points], mode="lines+markers",
                                     name="h (auxiliary head)"))
    for name, pts in (series or {}).items():
        fig.add_trace(go.Scatter(x=[p[x] for p in pts], y=[p.get("student_acc") for p in pts],
                                 mode="lines+markers", name=name))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10), xaxis_title=x.replace("_", " "),
                      yaxis_title="test accuracy (%)", legend=dict(orientation="h", y=-0.25), uirevision="keep")
    return fig


def class_count_figure(counts: list[int], classes: tuple, height: int = 260):
    import plotly.graph_objects as go
    names = [classes[i] if i < len(classes) else str(i) for i in range(len(counts))]
    fig = go.Figure(go.Bar(x=names, y=counts))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10), yaxis_title="images in bank",
                      uirevision="keep")
    return fig


# ---- formulas ----------------------------------------------------------------------------------------------

LATEX = {  # the formulas that are not loss terms of inversion (those are in ifhe.terms.TERMS)
    "inv": r"\small \mathcal{L}_{inv} = \alpha\,\mathcal{L}_H + \beta\,\mathcal{L}_{bns} + \gamma\,\mathcal{L}_{adv}",
    "kd_s": r"\small \mathcal{L}_{KD\text{-}S} = \tau^2\,\mathrm{KL}\big(T(x)/\tau \,\Vert\, S(x)/\tau\big)",
    "kd_h": r"\small \mathcal{L}_{KD\text{-}h} = \tau^2\,\mathrm{KL}\big(T(x)/\tau \,\Vert\, h(f_T(x))/\tau\big)",
}


def term_text(weight: str, adv_kind: str = "masked_kl") -> tuple[str, str]:
    """(formula, explanation) of a loss term by its weight name, from ifhe.terms; the adversarial term is
    written as the method computes it."""
    from ifhe.terms import BY_WEIGHT
    term = BY_WEIGHT[weight]
    if weight != "gamma" or adv_kind == "masked_kl":
        return term.latex, term.explain
    if adv_kind == "js":
        return (r"\small \mathcal{L}_{adv} = -\mathrm{JS}\big(T(\hat x)/\tau_a,\ S(\hat x)/\tau_a\big)",
                "images are pushed to where student and teacher disagree (Jensen-Shannon, ADI).")
    return (r"\small \mathcal{L}_{adv} = -\mathrm{KL}\big(T(\hat x)\,\Vert\, S(\hat x)\big)",
            "images are pushed to where student and teacher disagree (ZSKT, DFQ).")


def weights_text(weights: dict) -> str:
    """The non-zero loss weights, e.g. 'α=0.5 β=1 γ=0.5'."""
    from ifhe.terms import TERMS
    sym = {"alpha": "α", "beta": "β", "gamma": "γ"}
    return " ".join(f"{sym.get(t.weight, t.weight)}={weights.get(t.weight, 0):g}" for t in TERMS
                    if t.primary or weights.get(t.weight))
