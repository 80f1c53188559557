"""t-SNE maps of intermediate features and the report's figures: openTSNE fitted on one set (after PCA), other
sets placed into it with `transform`, and the plotly figures of a `feature_report.FeatureReport` (small multiples of
maps, metrics against round).

Maps: the shared map (fitted on real set A, every other set placed into it; fitted on the union of the sets
without real images) and one map per set fitted on that set alone (the paper's figure). PCA to 50 dimensions
first; fixed seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from openTSNE import TSNE
from plotly.subplots import make_subplots
from sklearn.decomposition import PCA

from .feature_metrics import LABELINGS

PCA_DIMS = 50
# openTSNE's defaults are 250 + 500 iterations at theta 0.5: on 1,000 points the map is settled well before
# (the 10-NN accuracy of the 2-d points is within 0.02 of the defaults' on h features of real and noisy images,
# at a sixth of the time; bench/bench_tsne.py)
TSNE_ITER = dict(early_exaggeration_iter=60, n_iter=120, theta=0.8)
TRANSFORM_ITER = 100


# ---- maps ------------------------------------------------------------------------------------------------------

@dataclass
class TsneMap:
    """A fitted openTSNE embedding (after PCA) that can place new points."""

    pca: object
    embedding: object  # openTSNE.TSNEEmbedding

    def transform(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.embedding.transform(self.pca.transform(features), n_iter=TRANSFORM_ITER))

    @property
    def fitted_points(self) -> np.ndarray:
        return np.asarray(self.embedding)


def fit_map(features: np.ndarray, seed: int = 0, perplexity: float = 30.0, n_jobs: int = 1) -> TsneMap:
    """openTSNE (exact neighbours, Barnes-Hut) on the first PCA_DIMS principal components of `features`."""
    n, d = features.shape
    pca = PCA(n_components=min(PCA_DIMS, d, n), random_state=seed).fit(features)
    perplexity = min(perplexity, max(2.0, (n - 1) / 3.5))
    emb = TSNE(perplexity=perplexity, metric="euclidean", neighbors="exact", negative_gradient_method="bh",
               n_jobs=n_jobs, random_state=seed, verbose=False, **TSNE_ITER).fit(pca.transform(features))
    return TsneMap(pca, emb)


# ---- figures (plotly) ------------------------------------------------------------------------------------------

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]
SET_COLOURS = {"real": "#444444"}
_SET_CYCLE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def class_name(classes, c: int) -> str:
    return classes[c] if 0 <= c < len(classes) else str(c)


def set_colour(names: list[str], name: str) -> str:
    if name in SET_COLOURS:
        return SET_COLOURS[name]
    others = [x for x in names if x not in SET_COLOURS]
    return _SET_CYCLE[others.index(name) % len(_SET_CYCLE)]


def plot_map(report, stage: str, kind: str = "shared", colour: str = "target", cols: int = 2):
    """Small multiples, one panel per set: kind 'shared' (the real-fitted map, shared axes) or 'own' (each set
    fitted alone, the paper's view). colour 'target' (target t; real: true class) or 'predicted' (the teacher's
    prediction).
    customdata per point: [index in its set, label, confidence, set number, prediction]."""
    names = report.set_names
    pts = report.points[(report.points["stage"] == stage) & (report.points["map"] == kind)]
    cols = max(1, min(cols, len(names)))
    rows = (len(names) + cols - 1) // cols
    shared = kind == "shared"
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, shared_xaxes=shared, shared_yaxes=shared,
                        horizontal_spacing=0.03, vertical_spacing=0.08)
    if colour not in LABELINGS:
        raise ValueError(f"colour must be one of {LABELINGS}, got {colour!r}")
    key = "label" if colour == "target" else "pred"
    n_cls = len(report.classes)
    for i, name in enumerate(names):
        sub = pts[pts["set"] == name]
        for c in range(n_cls):
            s = sub[sub[key] == c]
            if s.empty:
                continue
            fig.add_trace(go.Scattergl(
                x=s["x"], y=s["y"], mode="markers", marker=dict(size=4, color=PALETTE[c % 10], opacity=0.75),
                name=class_name(report.classes, c), legendgroup=str(c), showlegend=i == 0,
                customdata=np.stack([s["index"], s["label"], s["confidence"], np.full(len(s), i), s["pred"]], 1),
                hovertemplate=(f"<b>{name}</b> #%{{customdata[0]}}<br>label %{{customdata[1]}} · teacher "
                               "%{customdata[4]} (%{customdata[2]:.2f})<extra></extra>")),
                row=i // cols + 1, col=i % cols + 1)
    what = ("shared map, fitted on real images, others placed in" if shared and report.fitted_on == "real" else
            "shared map, fitted on the union of the sets" if shared else "each set fitted alone")
    by = "target t (real: true class)" if key == "label" else "teacher's prediction"
    fig.update_layout(height=300 * rows + 70, margin=dict(l=10, r=10, t=60, b=10),
                      legend_title=f"colour: {by}",
                      title=f"{report.stage_label(stage)}: {what}", title_font_size=13)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig


def plot_rounds(report, stage: str):
    """Balanced k-NN accuracy and agreement of prediction with t against round, one line per bank (error bars:
    95% intervals), real images as a dashed line; every window holds `report.round_n` images."""
    lab = "t" if report.labels == "target" else "pred."
    fig = make_subplots(rows=1, cols=2, subplot_titles=[f"balanced k-NN accuracy ({lab})", "agreement pred = t"])
    r = report.rounds
    if r is None or len(r) == 0:
        return fig
    r = r[r["stage"] == stage]
    names = report.set_names
    for col, key in ((1, "knn"), (2, "agreement")):
        for name in names:
            s = r[r["set"] == name]
            if s.empty:
                continue
            colour = set_colour(names, name)
            if name == "real":
                v = float(s[key].iloc[0])
                fig.add_hline(y=v, line_dash="dash", line_color=colour, row=1, col=col,
                              annotation_text="real" if col == 1 else None)
                continue
            fig.add_trace(go.Scatter(
                x=s["round"], y=s[key], mode="lines+markers", name=name, legendgroup=name, showlegend=col == 1,
                line=dict(color=colour),
                error_y=dict(type="data", symmetric=False, array=s[f"{key}_hi"] - s[key],
                             arrayminus=s[key] - s[f"{key}_lo"]),
                customdata=np.stack([s["round_lo"], s["round_hi"]], 1),
                hovertemplate=(f"<b>{name}</b> rounds %{{customdata[0]}}–%{{customdata[1]}}: "
                               "%{y:.3f}<extra></extra>")),
                row=1, col=col)
    fig.update_xaxes(title_text="round (mean of the window)")
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=60, b=10),
                      title=f"{report.stage_label(stage)}: metrics against round ({report.round_n} images a window)",
                      title_font_size=13)
    return fig
