"""The Feature space page's logic: which banks to map, the cached map, and its display."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from ifhe.errors import IfheError

from . import widgets as W
from .runs import list_runs

MAP_METHODS = ("deepinversion", "cmi", "ifhe")


@dataclass(frozen=True)
class BankRef:
    """A bank folder and what is needed to map it (hashable: part of the cache key)."""

    bank_dir: str
    size: int
    teacher: str | None = None
    method: str | None = None

    @classmethod
    def from_dir(cls, bank_dir: Path) -> "BankRef":
        if not any(Path(bank_dir).glob("manifest_r*.json")):
            raise IfheError(f"{bank_dir.name}: no image bank there (no manifest_r*.json)")
        size = 0
        for m in Path(bank_dir).glob("manifest_r*.json"):
            try:
                size += sum(int(s["n"]) for s in json.loads(m.read_text()).get("shards", []))
            except (OSError, ValueError, KeyError, TypeError):
                raise IfheError(f"{m.name}: not a valid bank manifest") from None
        return cls(str(bank_dir), size)


def runs_with_banks(base):
    return [r for r in list_runs(base) if r.bank_size > 0]


def _ref(run) -> BankRef:
    return BankRef(str(run.bank_dir), run.bank_size, run.teacher, run.method)


def spec(chosen: dict, stage: str, n: int, use_real: bool) -> tuple:
    """The cache key of a map: teacher, (label, bank, size) per set, stage, size, real or not."""
    refs = {label: (r if isinstance(r, BankRef) else _ref(r)) for label, r in chosen.items()}
    teachers = sorted({r.teacher for r in refs.values() if r.teacher})
    if len(teachers) > 1:
        raise IfheError(f"the chosen runs use different teachers ({', '.join(Path(t).name for t in teachers)}); "
                        f"a map compares image sets of one teacher")
    teacher = teachers[0] if teachers else st.session_state.get("teacher")
    if teacher == "upload":
        teacher = st.session_state.get("teacher_path")
    if not teacher:
        raise IfheError("no teacher known for these banks: pick a teacher on the Synthesize page")
    sets = tuple((label, r.bank_dir, r.size) for label, r in refs.items())
    return (teacher, sets, stage, int(n), bool(use_real))


def _load_teacher(ref: str):
    from ifhe.zoo import attach_dataset, freeze, load_model, load_teacher
    if ref.endswith(".safetensors"):
        model, meta = load_model(ref)
        return attach_dataset(freeze(model), meta.get("dataset") or "cifar10", meta)
    return load_teacher(ref)


@st.cache_resource(show_spinner=False, max_entries=4)
def feature_map(spec: tuple, cache_dir: str):
    """Computed once per (teacher, banks and their sizes, stage, n, real) and shared by every session."""
    from ifhe.bank import open_bank
    from ifhe.data import load_split
    from ifhe.embedding import compute_feature_map
    teacher_ref, sets, stage, n, use_real = spec
    teacher = _load_teacher(teacher_ref)
    if stage not in teacher.stages:
        raise IfheError(f"{teacher.arch} has no stage {stage}; it has {', '.join(teacher.stages)}")
    images = {}
    for label, bank_dir, _size in sets:
        bank = open_bank(bank_dir)
        images[label] = (bank.images.clone(), bank.labels.clone())
    real = None
    if use_real:
        test = load_split(teacher.dataset, "test")
        real = (test.x, test.y)
    from .jobs import class_names
    return compute_feature_map(teacher, images, real, stage, n_per_set=n, n_real=n, seed=0,
                               classes=class_names(teacher.dataset, teacher.num_classes), cache_dir=cache_dir)


def make_bank(method: str) -> None:
    """Start a short synthesis-only run of `method` with the session's teacher (button callback)."""
    from . import common
    ss = st.session_state
    values = {k: ss.get(k) for k in common.FORM_KEYS}
    values |= W.form_defaults(method) | {"method": method, "batch": 64, "kd_between": False,
                                         "rounds": 3 if method in ("deepinversion", "adi") else 5}
    from .jobs import JobLimitError, registry
    try:
        job = registry().submit(W.build_config(values, "synth"), kind="synth")
    except (JobLimitError, IfheError) as e:
        common.flash("warning", str(e))
        return
    common.attach(job)
    common.flash("info", f"Started a short {W.METHOD_LABELS[method]} run ({job.cfg.rounds} rounds of "
                         f"{job.cfg.synth.batch_size} images); watch it on the Synthesize page and come back "
                         f"when it has finished.")


def _selected_point(fmap, event):
    """(set name, index in that set) of the clicked point, or None."""
    try:
        points = event.selection.points if hasattr(event, "selection") else event["selection"]["points"]
    except (KeyError, AttributeError, TypeError):
        return None
    if not points:
        return None
    p = points[0]
    names = list(dict.fromkeys(fmap.points["set"]))
    cd = p.get("customdata")
    if cd is not None and len(cd) >= 4:
        return names[int(cd[3])], int(cd[0])
    pts = fmap.points
    hit = pts[(abs(pts["x"] - p.get("x", 1e9)) < 1e-6) & (abs(pts["y"] - p.get("y", 1e9)) < 1e-6)]
    if hit.empty:
        return None
    return str(hit.iloc[0]["set"]), int(hit.iloc[0]["index"])


def hover_html(fmap, fig) -> str:
    """The map as a standalone plotly page whose hover shows the image under the cursor."""
    import base64
    import io

    from PIL import Image
    names = list(dict.fromkeys(fmap.points["set"]))
    thumbs = {}
    for name in names:
        out = []
        for img in fmap.images[name]:
            buf = io.BytesIO()
            Image.fromarray(img.permute(1, 2, 0).numpy()).resize((64, 64), Image.NEAREST).save(buf, "PNG")
            out.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
        thumbs[name] = out
    js = """
<div id="thumb" style="position:fixed;display:none;pointer-events:none;border:1px solid #888;background:#fff;
  padding:2px;z-index:10"><img id="thumbimg" width="96" height="96" style="image-rendering:pixelated"></div>
<script>
const THUMBS = %s, NAMES = %s;
const plot = document.getElementsByClassName('plotly-graph-div')[0];
const box = document.getElementById('thumb'), img = document.getElementById('thumbimg');
plot.on('plotly_hover', ev => { const p = ev.points[0];
  img.src = THUMBS[NAMES[p.customdata[3]]][p.customdata[0]]; box.style.display = 'block';
  box.style.left = Math.min(ev.event.clientX + 16, window.innerWidth - 110) + 'px';
  box.style.top = Math.min(ev.event.clientY + 16, window.innerHeight - 110) + 'px'; });
plot.on('plotly_unhover', () => { box.style.display = 'none'; });
</script>""" % (json.dumps(thumbs), json.dumps(names))
    return fig.to_html(include_plotlyjs=True, full_html=True).replace("</body>", js + "</body>")


def show(fmap) -> None:
    from ifhe.embedding import plot_feature_map
    fig = plot_feature_map(fmap)
    st.caption(f"Stage **{fmap.stage}** · {fmap.note}")
    hover = st.toggle("Hover thumbnails", key="fm_hover",
                      help="an interactive copy of the map that shows the image under the cursor (loads plotly.js, "
                           "about 5 MB, into the page); off: click a point to see its image")
    if hover:
        import streamlit.components.v1 as components
        components.html(hover_html(fmap, fig), height=int(fig.layout.height or 400) + 20, scrolling=False)
        event = None
    else:
        event = st.plotly_chart(fig, key="fmap_chart", on_select="rerun", selection_mode="points")
    a, b = st.columns([2, 1])
    with a:
        st.markdown("**Heterogeneity metrics** (teacher's features at this stage, labelled by its prediction)")
        m = fmap.metrics.copy()
        st.dataframe(m, hide_index=True, column_config={
            "knn_acc": st.column_config.NumberColumn("k-NN acc", format="%.3f",
                                                     help="10-NN accuracy, 5-fold: higher = classes separate"),
            "silhouette": st.column_config.NumberColumn("silhouette", format="%.3f",
                                                        help="in [-1, 1]: higher = compact, apart classes"),
            "frechet": st.column_config.NumberColumn("Fréchet to real", format="%.2f",
                                                     help="distance of the feature distribution to the real "
                                                          "images': lower = closer"),
        })
    with b:
        hit = _selected_point(fmap, event) if event is not None else None
        if hit is None:
            st.caption("Click a point in the map to see its image here.")
        else:
            name, i = hit
            row = fmap.points[(fmap.points["set"] == name) & (fmap.points["index"] == i)].iloc[0]
            cls = fmap.classes
            st.image(W.thumbnail_png(fmap.images[name][i], 5),
                     caption=f"{name} #{i}: target {cls[int(row['label'])] if int(row['label']) < len(cls) else row['label']}, "
                             f"teacher says {cls[int(row['pred'])] if int(row['pred']) < len(cls) else row['pred']} "
                             f"({row['confidence']:.2f})")
