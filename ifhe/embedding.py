"""Shared t-SNE maps of intermediate features and heterogeneity metrics.

The map is fitted once (openTSNE, after PCA to 50 dimensions) on real-image features, and every synthesized set
is placed into it with openTSNE's `transform`, so all methods share the same axes. Without real images the
map is fitted on the union of the synthesized sets, and the result says so.

Metrics per (image set, stage), labelled by the teacher's predicted class, on the raw pooled features:
k-NN accuracy (k=10, stratified 5-fold cross-validation), silhouette score, and the Frechet distance
between the set's features and the real set's (as FID, but on the teacher's own features).
"""
from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data import CIFAR10_CLASSES
from .features import cached_features

PCA_DIMS = 50


# ---- metrics (pure functions of arrays) -------------------------------------------------------------------

def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 10, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated k-NN accuracy in [0, 1]: how well the class can be read off a point's neighbours."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    labels = np.asarray(labels)
    _, counts = np.unique(labels, return_counts=True)
    if len(counts) < 2:
        return float("nan")
    n_folds = int(min(folds, counts.min())) if counts.min() >= 2 else 2
    if counts.min() < 2:  # a class with a single sample cannot be stratified: drop it
        keep = np.isin(labels, np.unique(labels)[counts >= 2])
        features, labels = features[keep], labels[keep]
        if len(np.unique(labels)) < 2:
            return float("nan")
    k = max(1, min(k, len(labels) - len(labels) // n_folds - 1))
    cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return float(cross_val_score(KNeighborsClassifier(n_neighbors=k), features, labels, cv=cv).mean())


def silhouette(features: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette in [-1, 1] (euclidean): are classes compact and apart?"""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels >= len(labels):
        return float("nan")
    return float(silhouette_score(features, labels))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) between Gaussian fits of two feature sets."""
    from scipy import linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean, _ = linalg.sqrtm(s_a @ s_b, disp=False)
    if not np.isfinite(covmean).all():  # near-singular product: regularise as the FID code does
        eps = np.eye(s_a.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


def heterogeneity_metrics(features: np.ndarray, labels: np.ndarray, real_features: np.ndarray | None = None,
                          k: int = 10, seed: int = 0) -> dict[str, float]:
    return {"knn_acc": knn_accuracy(features, labels, k=k, seed=seed),
            "silhouette": silhouette(features, labels),
            "frechet": frechet_distance(features, real_features) if real_features is not None else float("nan")}


# ---- the shared map ---------------------------------------------------------------------------------------

@dataclass
class SharedMap:
    pca: object
    embedding: object  # openTSNE.TSNEEmbedding

    def transform(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.embedding.transform(self.pca.transform(features)))

    @property
    def fitted_points(self) -> np.ndarray:
        return np.asarray(self.embedding)


def fit_shared_map(features: np.ndarray, seed: int = 0, perplexity: float = 30.0,
                   n_jobs: int | None = None) -> SharedMap:
    from openTSNE import TSNE
    from sklearn.decomposition import PCA

    n, d = features.shape
    if n_jobs is None:  # threads only pay off for large maps; small ones lose more to spinning than they gain
        n_jobs = 1 if n < 1000 else max(1, torch.get_num_threads())
    pca = PCA(n_components=min(PCA_DIMS, d, n), random_state=seed).fit(features)
    perplexity = min(perplexity, max(2.0, (n - 1) / 3))
    emb = TSNE(perplexity=perplexity, metric="euclidean", n_jobs=n_jobs, random_state=seed,
               verbose=False).fit(pca.transform(features))
    return SharedMap(pca, emb)


@dataclass
class FeatureMap:
    points: "object"                       # pandas DataFrame: set, x, y, label, pred, confidence, index
    metrics: "object"                      # pandas DataFrame: set, stage, n, knn_acc, silhouette, frechet
    stage: str
    fitted_on: str                         # "real" | "synthesized"
    note: str = ""
    images: dict[str, torch.Tensor] = field(default_factory=dict)
    classes: tuple[str, ...] = CIFAR10_CLASSES


def _subsample(images: torch.Tensor, labels: torch.Tensor, n: int, seed: int):
    if len(images) <= n:
        return images, labels
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return images[idx], labels[idx]


def compute_feature_map(teacher: nn.Module, sets: dict[str, tuple[torch.Tensor, torch.Tensor]],
                        real: tuple[torch.Tensor, torch.Tensor] | None, stage: str, n_per_set: int = 1000,
                        n_real: int = 2000, seed: int = 0, classes: tuple[str, ...] | None = None,
                        cache_dir=None) -> FeatureMap:
    """Features of every set at `stage`, one shared t-SNE map, and the metrics table."""
    import pandas as pd

    if not sets and real is None:
        raise ValueError("no image sets to map")
    data: dict[str, tuple] = {}
    if real is not None:
        data["real"] = _subsample(*real, n_real, seed)
    for name, (x, y) in sets.items():
        if name == "real":
            raise ValueError("'real' is reserved for the real image set")
        data[name] = _subsample(x, y, n_per_set, seed)
    feats = {name: cached_features(teacher, x, stage, cache_dir) for name, (x, _) in data.items()}
    if real is not None:
        fitted_on, note = "real", f"map fitted on {len(data['real'][0])} real images; other sets placed into it"
        shared = fit_shared_map(feats["real"].features[stage], seed=seed)
        coords = {"real": shared.fitted_points}
    else:
        fitted_on = "synthesized"
        note = "no real images configured: the map is fitted on the union of the synthesized sets"
        union = np.concatenate([f.features[stage] for f in feats.values()])
        shared = fit_shared_map(union, seed=seed)
        coords, start = {}, 0
        for name, f in feats.items():
            n = len(f.pred)
            coords[name] = shared.fitted_points[start:start + n]
            start += n
    rows, metric_rows = [], []
    real_f = feats["real"].features[stage] if real is not None else None
    for name, f in feats.items():
        xy = coords[name] if name in coords else shared.transform(f.features[stage])
        labels = data[name][1].numpy()
        for i in range(len(f.pred)):
            rows.append((name, float(xy[i, 0]), float(xy[i, 1]), int(labels[i]), int(f.pred[i]),
                         float(f.confidence[i]), i))
        m = heterogeneity_metrics(f.features[stage], f.pred, real_f if name != "real" else None, seed=seed)
        metric_rows.append({"set": name, "stage": stage, "n": len(f.pred), **m})
    points = pd.DataFrame(rows, columns=["set", "x", "y", "label", "pred", "confidence", "index"])
    return FeatureMap(points, pd.DataFrame(metric_rows), stage, fitted_on, note,
                      {name: x for name, (x, _) in data.items()}, tuple(classes or CIFAR10_CLASSES))


# ---- pictures ---------------------------------------------------------------------------------------------

_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf"]


def _class_name(classes, c: int) -> str:
    return classes[c] if c < len(classes) else str(c)


def plot_feature_map(fmap: FeatureMap):
    """Small multiples (one panel per image set, shared axes), coloured by the teacher's predicted class."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(dict.fromkeys(fmap.points["set"]))
    cols = min(4, len(names))
    rows = (len(names) + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, shared_xaxes=True, shared_yaxes=True,
                        horizontal_spacing=0.03, vertical_spacing=0.08)
    pts = fmap.points
    n_cls = int(max(pts["pred"].max(), pts["label"].max())) + 1 if len(pts) else 0
    for i, name in enumerate(names):
        sub = pts[pts["set"] == name]
        for c in range(n_cls):
            s = sub[sub["pred"] == c]
            if s.empty:
                continue
            fig.add_trace(go.Scattergl(
                x=s["x"], y=s["y"], mode="markers", marker=dict(size=4, color=_PALETTE[c % 10], opacity=0.75),
                name=_class_name(fmap.classes, c), legendgroup=str(c), showlegend=i == 0,
                customdata=np.stack([s["index"], s["label"], s["confidence"], np.full(len(s), i)], axis=1),
                hovertemplate=(f"<b>{name}</b> #%{{customdata[0]}}<br>teacher: {_class_name(fmap.classes, c)} "
                               "(%{customdata[2]:.2f})<br>target: %{customdata[1]}<extra></extra>")),
                row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(height=330 * rows + 60, margin=dict(l=10, r=10, t=50, b=10), legend_title="teacher's class",
                      title=f"t-SNE of {fmap.stage} features ({fmap.note})", title_font_size=13)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig


def _thumbnails(images: torch.Tensor, size: int = 64) -> list[str]:
    from PIL import Image

    out = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).numpy()).resize((size, size), Image.NEAREST).save(buf, "PNG")
        out.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    return out


_HOVER_JS = """
<div id="thumb" style="position:fixed;display:none;pointer-events:none;border:1px solid #888;background:#fff;
  padding:2px;z-index:10"><img id="thumbimg" width="96" height="96" style="image-rendering:pixelated"></div>
<script>
const THUMBS = %s;
const plot = document.getElementsByClassName('plotly-graph-div')[0];
const box = document.getElementById('thumb'), img = document.getElementById('thumbimg');
const names = %s;
plot.on('plotly_hover', ev => { const p = ev.points[0]; const set = names[p.customdata[3]];
  img.src = THUMBS[set][p.customdata[0]]; box.style.display = 'block';
  box.style.left = (ev.event.clientX + 16) + 'px'; box.style.top = (ev.event.clientY + 16) + 'px'; });
plot.on('plotly_unhover', () => { box.style.display = 'none'; });
</script>
"""


def metrics_markdown(metrics) -> str:
    lines = ["| set | stage | n | k-NN acc (k=10) | silhouette | Fréchet to real |", "|---|---|---|---|---|---|"]
    for r in metrics.itertuples():
        fd = "–" if not np.isfinite(r.frechet) else f"{r.frechet:.2f}"
        lines.append(f"| {r.set} | {r.stage} | {r.n} | {r.knn_acc:.3f} | {r.silhouette:.3f} | {fd} |")
    return "\n".join(lines) + "\n"


def write_report(fmap: FeatureMap, out: str | Path) -> dict[str, Path]:
    """report.html (interactive, hover thumbnails), map.png, metrics.csv, metrics.md in `out`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig = plot_feature_map(fmap)
    names = list(dict.fromkeys(fmap.points["set"]))
    thumbs = {n: _thumbnails(fmap.images[n]) for n in names}
    html = fig.to_html(include_plotlyjs="cdn" if False else True, full_html=True)
    html = html.replace("</body>", _HOVER_JS % (json.dumps(thumbs), json.dumps(names)) + "</body>")
    paths = {"html": out / "report.html", "png": out / "map.png", "csv": out / "metrics.csv",
             "md": out / "metrics.md"}
    paths["html"].write_text(html)
    fmap.metrics.to_csv(paths["csv"], index=False)
    paths["md"].write_text(f"Stage `{fmap.stage}`; {fmap.note}.\n\n" + metrics_markdown(fmap.metrics))
    cols = min(4, len(names))
    rows = (len(names) + cols - 1) // cols
    f, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False, sharex=True, sharey=True)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    for i, name in enumerate(names):
        ax = axes.flat[i]
        s = fmap.points[fmap.points["set"] == name]
        ax.scatter(s["x"], s["y"], c=[_PALETTE[int(c) % 10] for c in s["pred"]], s=3, alpha=0.8, linewidths=0)
        m = fmap.metrics[fmap.metrics["set"] == name].iloc[0]
        ax.set_title(f"{name}\nkNN {m.knn_acc:.2f}  sil {m.silhouette:.2f}", fontsize=9)
    for j in range(len(names), rows * cols):
        axes.flat[j].axis("off")
    f.suptitle(f"{fmap.stage} features, shared t-SNE ({'fitted on real' if fmap.fitted_on == 'real' else 'fitted on synthesized union'})",
               fontsize=10)
    f.tight_layout()
    f.savefig(paths["png"], dpi=110)
    plt.close(f)
    return paths
