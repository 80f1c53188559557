"""What the pages draw besides images: plotly figures of losses, accuracies and class counts, and the formulas
written next to the sliders (the loss terms' own formulas come from ifhe.terms)."""
from __future__ import annotations

from ifhe.terms import BY_WEIGHT, TERMS

from .grids import font, png_bytes

# plotly and Pillow are imported where a figure is drawn: the first page draws none before a run starts


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


_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def loss_strip(history: list[dict], x: str = "step", panel_w: int = 260, panel_h: int = 120, cols: int = 4,
               max_points: int = 400) -> bytes | None:
    """The live version of `loss_figure`: one small panel per loss term as a PNG, drawn in a few milliseconds.
    A Plotly chart redrawn every two seconds cost the browser more than the image grid twice a second (headless
    Chromium: 10-15% of a core against 1%); the pages show the interactive chart once the run has ended."""
    from PIL import Image, ImageDraw

    terms = [k for k in history[-1] if k not in ("step", "round", "kd_steps")] if history else []
    if not terms:
        return None
    step = max(1, len(history) // max_points)
    shown = history[::step]
    if shown[-1] is not history[-1]:
        shown.append(history[-1])
    cols = min(cols, len(terms))
    rows = (len(terms) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * panel_w, rows * panel_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    small, label = font(11), font(13)
    xs = [h[x] for h in shown]
    x0, x1 = xs[0], xs[-1] if xs[-1] != xs[0] else xs[0] + 1
    for i, t in enumerate(terms):
        left, top = (i % cols) * panel_w, (i // cols) * panel_h
        box = (left + 8, top + 22, left + panel_w - 8, top + panel_h - 18)  # the plot area
        draw.rectangle(box, outline=(220, 220, 220))
        ys = [h.get(t) for h in shown]
        pts = [(a, b) for a, b in zip(xs, ys) if isinstance(b, (int, float)) and b == b and abs(b) != float("inf")]
        last = ys[-1] if isinstance(ys[-1], (int, float)) else float("nan")
        draw.text((left + 8, top + 4), f"{t}  {last:.4g}", fill=(20, 20, 20), font=label)
        if pts:
            lo, hi = min(b for _, b in pts), max(b for _, b in pts)
            span = hi - lo or abs(hi) or 1.0
            line = [(box[0] + (a - x0) / (x1 - x0) * (box[2] - box[0]),
                     box[3] - (b - lo) / span * (box[3] - box[1])) for a, b in pts]
            draw.line(line if len(line) > 1 else line * 2, fill=_COLOURS[i % len(_COLOURS)], width=2)
            draw.text((box[0] + 3, box[1] + 2), f"{hi:.3g}", fill=(120, 120, 120), font=small)
            draw.text((box[0] + 3, box[3] - 14), f"{lo:.3g}", fill=(120, 120, 120), font=small)
        draw.text((left + 8, top + panel_h - 15), f"{x.replace('_', ' ')} {x0:g}–{xs[-1]:g}", fill=(120, 120, 120),
                  font=small)
    return png_bytes(canvas)


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
    sym = {"alpha": "α", "beta": "β", "gamma": "γ"}
    return " ".join(f"{sym.get(t.weight, t.weight)}={weights.get(t.weight, 0):g}" for t in TERMS
                    if t.primary or weights.get(t.weight))
