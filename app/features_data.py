"""The Feature space page's data (the page itself is app/views/features.py): which banks to compare, the cached
report, the small-bank jobs, what a click on a map selects.

The measurement is `ifhe.features.feature_report` (the same as `ifhe features`): synthesized images labelled by
their target t, every set at equal n from its most recent rounds, intervals on every figure, the real-vs-real
floor next to the Fréchet distance, the shared real-fitted map beside one map per set, metrics against round.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import streamlit as st

from ifhe.bank import count_images
from ifhe.catalog import teacher_info
from ifhe.errors import IfheError
from ifhe.heads import H_STAGE, PRETRAINED_HEAD
from ifhe.methods import METHOD_LABELS
from ifhe.models import create_model
from ifhe.zoo import resolve_teacher

from . import common
from .forms import build_config, form_defaults
from .jobs import JobLimitError, registry
from .runs import list_runs
from .snapshot import class_names

# ifhe.features brings the analysis stack (scikit-learn, scipy, openTSNE, pandas: about 1.4 s to import): it is
# imported where a report is computed or shown, so the page draws its controls without waiting for it

MAP_METHODS = ("deepinversion", "cmi", "ifhe")
DEFAULT_N = 1000              # images per set, as `ifhe features`; the smallest set lowers it (the page says so)
# Small banks: 3 rounds of 64 images each (192 images: 19 a class, three round windows), synthesis only (IFHE's
# run starts h from the h its teacher ships, then trains it by itself, 20 steps a round: from a random h the
# teacher saw the target class in 19-26% of a bank's images, from the shipped h in 99.5-100%; README,
# "Intermediate features"). Iterations a round are the CPU preset's, except DeepInversion's
# pixels (200 at the preset), cut to 50 so its bank takes the time of the others. Measured on the 2-core AMD EPYC
# with one job thread while the other core trained a teacher (whole bank, shipped WRN-16-2): DeepInversion 67 s,
# CMI 140 s, IFHE 64 s; about 4.5 minutes for the three one after another (one job slot on 2 cores), then about
# 10 s for the page's report.
SMALL_BANK = {"batch": 64, "rounds": 3, "iterations": {"deepinversion": 50}}
SMALL_BANK_TIME = "1–2 minutes"         # a bank, on 2 cores (see above)
ALL_BANKS_TIME = "4–5 minutes"          # the three, one after another


@dataclass(frozen=True)
class BankRef:
    """A bank folder and what is needed to compare it (hashable: part of the cache key)."""

    bank_dir: str
    size: int
    teacher: str | None = None
    method: str | None = None

    @classmethod
    def from_dir(cls, bank_dir: Path) -> "BankRef":
        if not any(Path(bank_dir).glob("manifest_r*.json")):
            raise IfheError(f"{bank_dir.name}: no image bank there (no manifest_r*.json)")
        try:
            size = count_images(bank_dir)
        except IfheError as e:
            raise IfheError(f"{bank_dir.name}: {e}") from None
        cfg = bank_dir.parent / "config.yaml"
        teacher = method = None
        if cfg.is_file():
            from ifhe.features import run_config_of
            c = run_config_of(Path(bank_dir))
            teacher, method = c.get("teacher"), c.get("method")
        return cls(str(bank_dir), size, str(teacher) if teacher else None, method)


def runs_with_banks(base):
    return [r for r in list_runs(base) if r.bank_size > 0]


def _ref(run) -> BankRef:
    return BankRef(str(run.bank_dir), run.bank_size, run.teacher, run.method)


def session_teacher() -> str | None:
    ss = st.session_state
    teacher = ss.get("teacher")
    return ss.get("teacher_path") if teacher == "upload" else teacher


def spec(chosen: dict, stage: str, n: int, use_real: bool, labels: str = "target", window: str = "auto") -> tuple:
    """The cache key of a report: teacher, (label, bank, size) per set, stage, n, real or not, labels, window."""
    refs = {label: (r if isinstance(r, BankRef) else _ref(r)) for label, r in chosen.items()}
    teachers = sorted({r.teacher for r in refs.values() if r.teacher})
    if len(teachers) > 1:
        raise IfheError(f"the chosen runs use different teachers ({', '.join(Path(t).name for t in teachers)}); "
                        f"a comparison is of image sets of one teacher")
    teacher = teachers[0] if teachers else session_teacher()
    if not teacher:
        raise IfheError("no teacher known for these banks: pick a teacher on the Synthesize page")
    sets = tuple((label, r.bank_dir, r.size) for label, r in refs.items())
    return (teacher, sets, stage, int(n), bool(use_real), labels, window)


@st.cache_data(show_spinner=False, max_entries=16)
def stage_options(teacher_ref: str | None) -> tuple[str, ...]:
    """h's input, then the teacher's own stages (read from its architecture, no weights loaded)."""
    arch = teacher_info(teacher_ref).get("arch") if teacher_ref else None
    if not arch:
        return (H_STAGE,)
    try:
        return (H_STAGE,) + tuple(create_model(arch, 10).stages)
    except Exception:
        return (H_STAGE,)


@st.cache_resource(show_spinner=False, max_entries=4)
def feature_report(spec: tuple, cache_dir: str):
    """Computed once per spec (teacher, banks and their sizes, stage, n, real, labels, window), shared by every
    session; features are cached on disk under `cache_dir`."""
    from ifhe.features import bank_set, feature_report as measure, h_stages_of, real_set
    teacher_ref, sets, stage, n, use_real, labels, window = spec
    teacher = resolve_teacher(teacher_ref)
    images, configs = [], []
    for label, bank_dir, _size in sets:
        s, cfg = bank_set(bank_dir, label)
        images.append(s)
        configs.append(cfg)
    real = real_set(teacher.dataset, None) if use_real else None
    return measure(teacher, images, real, (stage,), h_stages=h_stages_of(configs), teacher_name=teacher_ref,
                   labels=labels, n=n, window=window, cache_dir=cache_dir,
                   classes=class_names(teacher.dataset, teacher.num_classes))


# ---- small banks ---------------------------------------------------------------------------------------------

def small_bank_config(method: str):
    """A short synthesis-only run of `method` with the session's teacher (see SMALL_BANK)."""
    ss = st.session_state
    values = {k: ss.get(k) for k in common.FORM_KEYS}
    values |= form_defaults(method) | {"method": method, "batch": SMALL_BANK["batch"], "kd_between": False,
                                         "rounds": SMALL_BANK["rounds"]}
    if method in SMALL_BANK["iterations"]:
        values["iterations"] = SMALL_BANK["iterations"][method]
    cfg = build_config(values, "synth")
    if cfg.synth.alpha > 0 and shipped_head(cfg.teacher):
        # three rounds are too few for h to learn from a random start: begin from the h the teacher ships
        cfg = replace(cfg, synth=replace(cfg.synth, h_init=PRETRAINED_HEAD))
    return cfg


def shipped_head(teacher: str) -> dict | None:
    """The manifest record of the h shipped with a zoo teacher, if any."""
    return teacher_info(teacher).get("head")


def make_bank(method: str) -> bool:
    """Start a small bank of `method` (button callback); False when it could not start (the page says why)."""
    try:
        job = registry().submit(small_bank_config(method), kind="synth")
    except (JobLimitError, IfheError) as e:
        common.flash("warning", str(e))
        return False
    common.attach(job)
    st.session_state["fm_bank_job"] = job.id
    head = (f"; h starts from the h shipped with the teacher ({shipped_head(job.cfg.teacher)['test_accuracy']:.2f}% "
            f"on real test images), as three rounds are too few for a random h to learn") \
        if job.cfg.synth.h_init else ""
    common.flash("info", f"Started a small {METHOD_LABELS[method]} bank: {job.cfg.rounds} rounds of "
                         f"{job.cfg.synth.batch_size} images, {job.cfg.synth.iterations} iterations a round (about "
                         f"{SMALL_BANK_TIME} on 2 cores){head}; its progress shows on this page.")
    return True


def make_banks(methods: list[str]) -> None:
    """Queue small banks of `methods`, made one after another (button callback)."""
    if not methods:
        return
    st.session_state["fm_queue"] = list(methods[1:])
    if not make_bank(methods[0]):
        st.session_state["fm_queue"] = []


def advance_queue() -> None:
    """When this session's small-bank job has ended, start the next queued one (called on every page run)."""
    ss = st.session_state
    queue = ss.get("fm_queue") or []
    job = registry().get(ss.get("fm_bank_job"))
    if queue and (job is None or not job.snapshot().active):
        ss["fm_queue"] = queue[1:]
        if not make_bank(queue[0]):
            ss["fm_queue"] = []


def job_progress(snap) -> tuple[float, str]:
    """Fraction done and a line about a synthesis job, from its snapshot."""
    if not snap.active:
        return 1.0, f"{METHOD_LABELS.get(snap.method, snap.method)} bank {snap.state}: {snap.bank_size} images"
    rounds = max(1, snap.rounds)
    its = max(1, snap.iterations)
    done = min(1.0, (min(snap.round, rounds) + min(snap.iteration, its) / its) / rounds)
    return done, (f"{METHOD_LABELS.get(snap.method, snap.method)} bank: round {min(snap.round + 1, rounds)} of "
                  f"{rounds}, iteration {snap.iteration} of {its}, {snap.bank_size} images so far")


# ---- what the page shows ----------------------------------------------------------------------------------------

def selected_point(report, event, stage: str, kind: str):
    """(set name, index in that set) of the clicked point of a map, or None."""
    try:
        points = event.selection.points if hasattr(event, "selection") else event["selection"]["points"]
    except (KeyError, AttributeError, TypeError):
        return None
    if not points:
        return None
    p = points[0]
    names = report.set_names
    cd = p.get("customdata")
    if cd is not None and len(cd) >= 4:
        return names[int(cd[3])], int(cd[0])
    pts = report.points[(report.points["stage"] == stage) & (report.points["map"] == kind)]
    hit = pts[(abs(pts["x"] - p.get("x", 1e9)) < 1e-6) & (abs(pts["y"] - p.get("y", 1e9)) < 1e-6)]
    if hit.empty:
        return None
    return str(hit.iloc[0]["set"]), int(hit.iloc[0]["index"])


def hover_html(report, fig) -> str:
    """A map as a standalone plotly page whose hover shows the image under the cursor."""
    from ifhe.features import hover_script
    return fig.to_html(include_plotlyjs=True, full_html=True).replace("</body>", hover_script(report) + "</body>")


METRIC_HELP = {
    "k-NN bal. acc": "10-NN balanced accuracy, 5 fixed stratified folds: can the class be read off a point's "
                     "neighbours? [95% bootstrap interval]",
    "probe bal. acc": "linear probe (logistic regression on standardized features), same folds, balanced",
    "agreement pred = t": "fraction of images the teacher classifies as their target t (real: its accuracy)",
    "diversity": "mean within-class pairwise distance relative to real images': 1 = as spread as real, "
                 "0 = every image of a class alike (a collapsed generator)",
    "silhouette": "in [-1, 1], standardized features: compact, apart classes score high",
    "Fréchet to real": "distance of the feature distribution to the real images' (lower = closer); compare it "
                       "with the real-vs-real floor beside it",
    "real-vs-real floor": "Fréchet distance between two disjoint real samples of the same n: the distance that "
                          "sampling alone gives",
}
