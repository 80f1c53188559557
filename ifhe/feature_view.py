"""A feature report as it is read: its data (`FeatureReport` and the sets it compares), its tables and header, its
figures (plotly) and the hover thumbnails of its maps.

numpy, pandas, plotly and PIL only: the app draws a committed comparison (`ifhe.feature_banks`) from here without
torch (2-3 s to import, which the app's warm-up may be doing when the page opens) or the analysis stack
(scikit-learn, scipy, openTSNE: about 1.4 s), which `ifhe.feature_report` brings to compute a report.
"""
from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from .stats import Interval

LABELINGS = ("target", "predicted")   # synthesized images by their target t (real: true class), or by prediction
H_STAGE = "h"       # the pseudo-stage the feature report measures: h's input, the concatenation of the pooled stages


@dataclass
class ImageSet:
    """One set to compare: uint8 images (N, 3, H, W), their labels (target t of synthesized images, true class
    of real ones), the round each was made in (None: real images, or a set without rounds) and provenance.
    `group`: the method the set stands for (the sets of one group are its banks, one per `seed`)."""

    name: str
    images: object                        # torch.Tensor uint8
    labels: np.ndarray
    rounds: np.ndarray | None = None
    source: str = ""                      # where it came from (bank path)
    head: str = ""                        # how its h was trained (bank provenance)
    h_updates: np.ndarray | None = None   # h's optimizer updates before each image was made (-1: not recorded)
    group: str = ""                       # "" = a group of its own, named as the set
    seed: int | None = None
    total_rounds: int | None = None       # rounds of the run that made it (None: the last recorded round + 1)

    @property
    def group_name(self) -> str:
        return self.group or self.name


@dataclass
class Features:
    """What a feature extractor returns for a batch of images: features per stage, prediction, confidence."""

    features: dict[str, np.ndarray]
    pred: np.ndarray
    confidence: np.ndarray


@dataclass
class SetInfo:
    name: str
    n: int
    size: int                             # images in the whole set
    window: str                           # which images were drawn from
    source: str = ""
    head: str = ""
    group: str = ""
    seed: int | None = None
    rounds_used: str = ""                 # 'rounds 33–44 of 45': the window, short (the metrics table's column)


@dataclass
class FeatureReport:
    stages: tuple[str, ...]
    labels: str                           # target | predicted
    n: int                                # images per set
    sets: list[SetInfo]
    metrics: object                       # DataFrame: one row per (stage, set), intervals as est/lo/hi columns
    points: object                        # DataFrame: stage, map (shared|own), set, x, y, label, pred, conf, index
    rounds: object                        # DataFrame: stage, set, window, share_lo/hi, round_lo/hi, n, metrics
    fitted_on: str                        # real | synthesized
    notes: list[str] = field(default_factory=list)
    images: dict = field(default_factory=dict)   # set name -> the n sampled uint8 images (points' index)
    classes: tuple[str, ...] = ()
    teacher: str = ""
    h_stages: tuple[str, ...] = ()
    n_boot: int = 200
    round_n: int = 0                      # images per window of the metric-vs-round curve
    seeds: object = None                  # DataFrame: per (stage, group) the metrics' mean over banks (seeds)
    verdicts: object = None               # DataFrame: per (stage, claim) the paired difference over seeds
    primary: str = ""                     # the stage the verdicts rest on (one L_H does not read)
    window: str = ""                      # the window rule, in words
    protocol: str = ""                    # how every figure was measured, in words
    sampled: dict = field(default_factory=dict)  # set name -> indices of the compared images in its set

    @property
    def set_names(self) -> list[str]:
        return [s.name for s in self.sets]

    def stage_label(self, stage: str) -> str:
        return f"h input ({'+'.join(self.h_stages)})" if stage == H_STAGE else stage


# ---- tables ----------------------------------------------------------------------------------------------------

def _iv(row, key: str, digits: int = 3, n_key: str = "n") -> str:
    return Interval(row[key], row[f"{key}_lo"], row[f"{key}_hi"], int(row[n_key])).text(digits)


def _num(x, digits: int = 1) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def metrics_table(report: FeatureReport, stage: str | None = None):
    """The metrics of every bank as display strings ('0.812 [0.787, 0.836]': intervals over images), one row per
    (stage, set), with the rounds each set's images come from."""
    m = report.metrics if stage is None else report.metrics[report.metrics["stage"] == stage]
    lab, alt = ("t", "pred.") if report.labels == "target" else ("pred.", "t")
    used = {s.name: s.rounds_used or s.window for s in report.sets}
    rows = []
    for _, r in m.iterrows():
        rows.append({"stage": report.stage_label(r["stage"]), "set": r["set"], "n": int(r["n"]),
                     "rounds used": used.get(r["set"], ""),
                     f"k-NN bal. acc ({lab})": _iv(r, "knn"), f"probe bal. acc ({lab})": _iv(r, "probe"),
                     "chance": _num(r["chance"], 2),
                     "agreement pred = t": _iv(r, "agreement"), "diversity": _iv(r, "diversity"),
                     "silhouette": _iv(r, "silhouette"), f"k-NN bal. acc ({alt})": _iv(r, "knn_alt"),
                     "Fréchet to real": _num(r["frechet"]), "real-vs-real floor": _num(r["frechet_floor"]),
                     "classes left out": r["excluded"] or "–"})
    return pd.DataFrame(rows)


SEED_METRICS = {"knn": "k-NN bal. acc", "silhouette": "silhouette", "diversity": "diversity",
                "agreement": "agreement pred = t", "frechet": "Fréchet to real"}


def seed_table(report: FeatureReport, stage: str | None = None):
    """Each method's metrics over its banks: the mean with a 95% t interval over seeds (one bank per seed), and
    beside it each bank's interval over images."""
    s = report.seeds
    if s is None or len(s) == 0:
        return pd.DataFrame()
    s = s if stage is None else s[s["stage"] == stage]
    rows = []
    for _, r in s.iterrows():
        row = {"stage": report.stage_label(r["stage"]), "method": r["group"], "banks (seeds)": r["seeds"]}
        for key, label in SEED_METRICS.items():
            if f"{key}_banks" not in r:
                continue
            row[f"{label}, over seeds"] = _iv(r, key, 3 if key != "frechet" else 1, "n_banks")
            row[f"{label}, each bank over images"] = r[f"{key}_banks"]
        rows.append(row)
    return pd.DataFrame(rows)


def verdict_table(report: FeatureReport):
    """The claims tested: a difference of two methods' metric, paired by seed, its t interval and verdict; the
    primary stage first."""
    v = report.verdicts
    if v is None or len(v) == 0:
        return pd.DataFrame()
    rows = []
    for _, r in v.iterrows():
        rows.append({"stage": report.stage_label(r["stage"]) + (" (primary)" if r["stage"] == report.primary
                                                                else " (what L_H optimises)"),
                     "claim": r["claim"], "difference over seeds": _iv(r, "diff", 3, "n_pairs"),
                     "paired seeds": r["seeds"] or "–", "each bank over images": r["banks"],
                     "verdict": r["verdict"]})
    return pd.DataFrame(rows)


def markdown(table) -> str:
    """A DataFrame as a Markdown table."""
    if table is None or table.empty:
        return "(none)\n"
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for _, r in table.iterrows()]
    return "\n".join(lines) + "\n"


def metrics_markdown(report: FeatureReport) -> str:
    return markdown(metrics_table(report))


def stage_caveat(report: FeatureReport) -> str:
    """Which stage the verdicts rest on and why, in words."""
    h = report.stage_label(H_STAGE)
    if not report.primary:
        return f"No stage besides {h} is measured: every figure is where L_H acts, which favours IFHE by construction."
    what = {"penultimate": "the teacher's pooled features after its last BatchNorm and ReLU, which its classifier "
                           "reads"}.get(report.primary, "a stage of the teacher")
    return (f"Verdicts rest on **{report.primary}** ({what}): h does not read it, though L_H's gradient reaches it "
            f"through the blocks beneath. **{h}** is what L_H = CE(h(f_T), t) optimises directly, so IFHE's figures "
            f"there are high by construction: they are shown beside, not used for a verdict.")


def report_header(report: FeatureReport) -> str:
    """What made the figures: teacher, labels, n, windows, protocol, and every set's source, window and h
    provenance."""
    lab = ("synthesized images labelled by their target class t, real ones by their true class"
           if report.labels == "target" else "every image labelled by the teacher's predicted class")
    lines = [f"Teacher: {report.teacher}." if report.teacher else "Teacher: not named.",
             f"Stages: {', '.join(report.stage_label(s) for s in report.stages)}; features standardized by the "
             f"channel mean and std of {'the real set' if report.fitted_on == 'real' else 'the union of the sets'}.",
             f"Labels: {lab}. n = {report.n} images per set" + (f", from {report.window}." if report.window else "."),
             report.protocol, "", stage_caveat(report), "", "Sets:"]
    for s in report.sets:
        extra = f"; h: {s.head}" if s.head else ""
        src = f" `{s.source}`" if s.source else ""
        lines.append(f"- **{s.name}**{src}: {s.n} of {s.size} images, {s.window}{extra}")
    for note in report.notes:
        lines.append(f"- note: {note}")
    return "\n".join(lines) + "\n"


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


SVG_POINTS = 6000     # up to this many points a map is drawn as SVG: software WebGL (a browser without a GPU) takes
                      # seconds to set up its contexts, SVG draws a few thousand points at once


def _map_traces(fig, report: FeatureReport, pts, names: list[str], key: str, cols: int) -> None:
    n_cls = len(report.classes)
    scatter = go.Scatter if len(pts[pts["set"].isin(names)]) <= SVG_POINTS else go.Scattergl
    for pos, name in enumerate(names):
        i = report.set_names.index(name)          # customdata's set number: the report's, whatever is shown
        sub = pts[pts["set"] == name]
        for c in range(n_cls):
            s = sub[sub[key] == c]
            if s.empty:
                continue
            fig.add_trace(scatter(
                x=s["x"], y=s["y"], mode="markers", marker=dict(size=4, color=PALETTE[c % 10], opacity=0.75),
                name=class_name(report.classes, c), legendgroup=str(c), showlegend=pos == 0,
                customdata=np.stack([s["index"], s["label"], s["confidence"], np.full(len(s), i), s["pred"]], 1),
                hovertemplate=(f"<b>{name}</b> #%{{customdata[0]}}<br>label %{{customdata[1]}} · teacher "
                               "%{customdata[4]} (%{customdata[2]:.2f})<extra></extra>")),
                row=pos // cols + 1, col=pos % cols + 1)


def plot_map(report: FeatureReport, stage: str, kind: str = "shared", colour: str = "target", cols: int = 2,
             sets: list[str] | None = None, height: int = 300):
    """Small multiples, one panel per set (`sets`: which, default all): kind 'shared' (the real-fitted map, shared
    axes) or 'own' (each set fitted alone, the paper's view). colour 'target' (target t; real: true class) or
    'predicted' (the teacher's prediction).
    customdata per point: [index in its set, label, confidence, set number in the report, prediction]."""
    if colour not in LABELINGS:
        raise ValueError(f"colour must be one of {LABELINGS}, got {colour!r}")
    names = [n for n in (sets or report.set_names) if n in report.set_names]
    pts = report.points[(report.points["stage"] == stage) & (report.points["map"] == kind)]
    cols = max(1, min(cols, len(names)))
    rows = max(1, (len(names) + cols - 1) // cols)
    shared = kind == "shared"
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, shared_xaxes=shared, shared_yaxes=shared,
                        horizontal_spacing=0.03, vertical_spacing=0.08)
    key = "label" if colour == "target" else "pred"
    _map_traces(fig, report, pts, names, key, cols)
    what = ("shared map, fitted on real images, others placed in" if shared and report.fitted_on == "real" else
            "shared map, fitted on the union of the sets" if shared else "each set fitted alone")
    by = "target t (real: true class)" if key == "label" else "teacher's prediction"
    fig.update_layout(height=height * rows + 70, margin=dict(l=10, r=10, t=60, b=10),
                      legend_title=f"colour: {by}",
                      title=f"{report.stage_label(stage)}: {what}", title_font_size=13)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig


def plot_rounds(report: FeatureReport, stage: str):
    """Balanced k-NN accuracy and agreement of prediction with t against the share of the run (windows of equal
    shares of each run's rounds, error bars: 95% intervals over images), one line per bank, real images as a
    dashed line; every window holds `report.round_n` images."""
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
                fig.add_hline(y=float(s[key].iloc[0]), line_dash="dash", line_color=colour, row=1, col=col,
                              annotation_text="real" if col == 1 else None)
                continue
            fig.add_trace(go.Scatter(
                x=100 * s["share"], y=s[key], mode="lines+markers", name=name, legendgroup=name,
                showlegend=col == 1, line=dict(color=colour),
                error_y=dict(type="data", symmetric=False, array=s[f"{key}_hi"] - s[key],
                             arrayminus=s[key] - s[f"{key}_lo"]),
                customdata=np.stack([s["round_lo"], s["round_hi"]], 1),
                hovertemplate=(f"<b>{name}</b> rounds %{{customdata[0]}}–%{{customdata[1]}}: "
                               "%{y:.3f}<extra></extra>")),
                row=1, col=col)
    fig.update_xaxes(title_text="share of the run's rounds (%, middle of the window)", range=[0, 100])
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=60, b=10),
                      title=f"{report.stage_label(stage)}: metrics against the share of the run "
                            f"({report.round_n} images a window)", title_font_size=13)
    return fig


# ---- hover thumbnails ------------------------------------------------------------------------------------------

SPRITE_COLS = 32


def sprite(images, cols: int = SPRITE_COLS) -> str:
    """All images (uint8, N x 3 x H x W) of a set on one sheet (`cols` a row, native size) as a JPEG data URL: one
    encode per set instead of one per image; the page shows a cell of it, scaled up."""
    a = np.asarray(images).transpose(0, 2, 3, 1)
    n, h, w, _ = a.shape
    rows = max(1, (n + cols - 1) // cols)
    sheet = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = a[i]
    buf = io.BytesIO()
    Image.fromarray(sheet).save(buf, "JPEG", quality=92)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


HOVER_JS = """
<div id="thumb" style="position:fixed;display:none;pointer-events:none;border:1px solid #888;background:#fff;
  padding:2px;z-index:10"><div id="thumbimg" style="width:96px;height:96px;image-rendering:pixelated"></div></div>
<script>
const SHEETS = %s, NAMES = %s, COLS = %d, SIZE = 96;
const box = document.getElementById('thumb'), img = document.getElementById('thumbimg');
for (const plot of document.getElementsByClassName('plotly-graph-div')) {
  plot.on('plotly_hover', ev => { const p = ev.points[0];
    if (!p.customdata || p.customdata.length < 5) return;
    const i = p.customdata[0], s = SHEETS[NAMES[p.customdata[3]]];
    if (!s) return;
    img.style.backgroundImage = 'url(' + s + ')';
    img.style.backgroundSize = (COLS * SIZE) + 'px auto';
    img.style.backgroundPosition = (-(i %% COLS) * SIZE) + 'px ' + (-Math.floor(i / COLS) * SIZE) + 'px';
    const e = ev.event || {clientX: 0, clientY: 0};
    box.style.display = 'block';
    box.style.left = Math.min(e.clientX + 16, window.innerWidth - 110) + 'px';
    box.style.top = Math.min(e.clientY + 16, window.innerHeight - 110) + 'px'; });
  plot.on('plotly_unhover', () => { box.style.display = 'none'; });
}
</script>"""


def hover_script(report: FeatureReport, sets: list[str] | None = None) -> str:
    """The script that shows the image under the cursor on every map of a page (customdata [index, _, _, set]);
    `sets`: the sets whose sheets it carries (default all)."""
    names = report.set_names
    keep = [n for n in (sets or names) if n in report.images]
    return HOVER_JS % (json.dumps({n: sprite(report.images[n]) for n in keep}), json.dumps(names), SPRITE_COLS)
