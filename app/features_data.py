"""The Feature space page's data (the page itself is app/views/features.py): the committed comparison it opens on,
which banks of the user's to compare, the report (cached, shared with the background chains), the small-bank chains
(`app.jobs.Chain`: the banks one after another, then their map), what a click on a map selects.

The measurement is `ifhe.features.feature_report` (the same as `ifhe features`): synthesized images labelled by
their target t, every set at equal n from windows matched by the share of each run, intervals on every figure (over
images per bank, over seeds per method), the primary stage (one L_H does not read) with h's input beside it.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import streamlit as st

from ifhe.catalog import teacher_info
from ifhe.errors import IfheError
from ifhe.feature_banks import Shipped, available, load_comparison
from ifhe.feature_view import H_STAGE, hover_script
from ifhe.methods import METHOD_LABELS

from . import common
from .forms import build_config, form_defaults
from .jobs import JobLimitError, registry, repo_root
from .runs import list_runs
from .snapshot import class_names

# The page draws the committed comparison first, without torch (2-3 s to import; the warm-up may be importing it
# when the page opens) or the analysis stack (scikit-learn, scipy, openTSNE: about 1.4 s): the engine's modules that
# bring them (ifhe.bank, ifhe.models, ifhe.zoo, ifhe.heads, ifhe.features) are imported where the user's banks use them

MAP_METHODS = ("deepinversion", "cmi", "ifhe")
DEFAULT_N = 1000              # images per set, as `ifhe features`; the smallest set lowers it (the page says so)
# The page's own banks are small (three rounds): every round of each run is the window matched by share (100%)
WINDOWS = {"all": "every round of each run",
           "share:0.5": "the last half of each run's rounds",
           "share:0.25": "the last quarter of each run's rounds"}
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


def small_bank() -> dict:
    """SMALL_BANK, or the JSON of $IFHE_APP_SMALL_BANK over it (batch, rounds, iterations: a number for every method
    or one per method): smaller banks for tests and slow machines."""
    env = os.environ.get("IFHE_APP_SMALL_BANK")
    if not env:
        return SMALL_BANK
    try:
        over = json.loads(env)
        assert isinstance(over, dict)
    except (ValueError, AssertionError):
        raise IfheError(f"IFHE_APP_SMALL_BANK={env!r}: expected JSON like {{\"batch\": 16, \"rounds\": 2}}") from None
    return {**SMALL_BANK, **over}


# ---- the committed comparison ----------------------------------------------------------------------------------

def shipped_dir() -> Path:
    """Where the committed comparison lives: $IFHE_APP_SHIPPED, else the checkout's results/shipped/feature-banks."""
    env = os.environ.get("IFHE_APP_SHIPPED")
    return Path(env) if env else repo_root() / "results" / "shipped" / "feature-banks"


@st.cache_resource(show_spinner=False, max_entries=2)
def _load_shipped(folder: str, stamp: float) -> Shipped:
    return load_comparison(folder)


def shipped() -> tuple[Shipped | None, str]:
    """The committed comparison (read once per version of its files), or None and why there is none."""
    folder = shipped_dir()
    if not available(folder):
        return None, (f"No shipped comparison is committed yet: `{folder}` holds no comparison.json (it is written "
                      f"by `tools/ship_banks.py` from the final sweep's banks).")
    try:
        return _load_shipped(str(folder), (folder / "comparison.json").stat().st_mtime), ""
    except IfheError as e:
        return None, f"The shipped comparison could not be read: {e}"


def teacher_sha(teacher_ref: str | None) -> str | None:
    return teacher_info(teacher_ref).get("sha256") if teacher_ref else None


# ---- banks and the report ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BankRef:
    """A bank folder (or a committed bank's .npz) and what is needed to compare it (hashable: part of the key)."""

    bank_dir: str
    size: int
    teacher: str | None = None
    method: str | None = None

    @classmethod
    def from_dir(cls, bank_dir: Path) -> "BankRef":
        from ifhe.bank import count_images
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

    @classmethod
    def of_run(cls, run) -> "BankRef":
        return cls(str(run.bank_dir), run.bank_size, run.teacher, run.method)


def shipped_refs(s: Shipped, seed: int | None = None) -> dict[str, BankRef]:
    """The committed banks (of one seed, or all) as banks to put beside the user's, named 'shipped <set>'; refused
    when the teacher of that name is no longer the one they were made with (its checksum differs)."""
    name, sha = s.teacher.get("name"), s.teacher.get("sha256")
    if teacher_sha(name) not in (None, sha):
        raise IfheError(f"the shipped banks were made with {name} sha256 {sha[:12]}; the {name} here is "
                        f"{teacher_sha(name)[:12]}: not comparable")
    return {f"shipped {b.name}": BankRef(str(s.folder / "banks" / b.file), b.images, s.teacher.get("name"), b.method)
            for b in s.banks if seed is None or b.seed == seed}


def runs_with_banks(base):
    return [r for r in list_runs(base) if r.bank_size > 0]


def session_teacher() -> str | None:
    ss = st.session_state
    teacher = ss.get("teacher")
    return ss.get("teacher_path") if teacher == "upload" else teacher


def spec(chosen: dict, stage: str, n: int, use_real: bool, labels: str = "target", window: str = "all",
         teacher: str | None = None) -> tuple:
    """The cache key of a report: teacher, (label, bank, size) per set, stage (and h's input beside a teacher
    stage), n, real or not, labels, window. One teacher for every set (committed banks: its checksum too)."""
    refs = {label: (r if isinstance(r, BankRef) else BankRef.of_run(r)) for label, r in chosen.items()}
    teachers = sorted({r.teacher for r in refs.values() if r.teacher})
    if len(teachers) > 1:
        raise IfheError(f"the chosen runs use different teachers ({', '.join(Path(t).name for t in teachers)}); "
                        f"a comparison is of image sets of one teacher")
    teacher = teachers[0] if teachers else (teacher or session_teacher())
    if not teacher:
        raise IfheError("no teacher known for these banks: pick a teacher on the Synthesize page")
    sets = tuple((label, r.bank_dir, r.size) for label, r in refs.items())
    stages = (stage,) if stage == H_STAGE else (stage, H_STAGE)
    return (teacher, sets, stages, int(n), bool(use_real), labels, window)


@st.cache_data(show_spinner=False, max_entries=16)
def stage_options(teacher_ref: str | None) -> tuple[str, ...]:
    """The teacher's stages, the primary one (not read by h) first, then h's input (read from its architecture,
    no weights loaded)."""
    from ifhe.models import create_model
    arch = teacher_info(teacher_ref).get("arch") if teacher_ref else None
    try:
        stages = tuple(create_model(arch, 10).stages) if arch else ()
    except Exception:
        stages = ()
    primary = "penultimate" if "penultimate" in stages else (stages[-1] if stages else None)
    return tuple(s for s in (primary,) if s) + (H_STAGE,) + tuple(s for s in stages if s != primary)


class _Reports:
    """Reports computed once per spec and shared by every session and the background chains (a page's script
    thread and a chain's thread may ask for the same one: the second waits for the first)."""

    def __init__(self, keep: int = 4):
        self.keep, self._done, self._lock, self._busy = keep, {}, threading.Lock(), {}

    def get(self, spec: tuple, cache_dir: str):
        with self._lock:
            if spec in self._done:
                return self._done[spec]
            busy = self._busy.setdefault(spec, threading.Lock())
        with busy:
            with self._lock:
                if spec in self._done:
                    return self._done[spec]
            report = _measure(spec, cache_dir)
            with self._lock:
                self._done[spec] = report
                self._busy.pop(spec, None)
                for k in list(self._done)[:-self.keep]:
                    del self._done[k]
            return report

    def ready(self, spec: tuple) -> bool:
        with self._lock:
            return spec in self._done


REPORTS = _Reports()


def feature_report(spec: tuple, cache_dir: str):
    """The report of `spec` (computed once, shared); features are cached on disk under `cache_dir`."""
    return REPORTS.get(spec, cache_dir)


def _measure(spec: tuple, cache_dir: str):
    from ifhe.features import bank_set, feature_report as measure, h_stages_of, real_set
    from ifhe.zoo import resolve_teacher
    teacher_ref, sets, stages, n, use_real, labels, window = spec
    teacher = resolve_teacher(teacher_ref)
    images, configs = [], []
    for label, bank_dir, _size in sets:
        s, cfg = bank_set(bank_dir, label)
        images.append(s)
        configs.append(cfg)
    real = real_set(teacher.dataset, None) if use_real else None
    return measure(teacher, images, real, stages, h_stages=h_stages_of(configs), teacher_name=teacher_ref,
                   labels=labels, n=n, window=window, cache_dir=cache_dir,
                   classes=class_names(teacher.dataset, teacher.num_classes))


# ---- small banks: a chain of jobs, then the map ----------------------------------------------------------------

def small_bank_config(method: str):
    """A short synthesis-only run of `method` with the session's teacher (see SMALL_BANK)."""
    from ifhe.heads import PRETRAINED_HEAD
    ss, size = st.session_state, small_bank()
    values = {k: ss.get(k) for k in common.FORM_KEYS}
    values |= form_defaults(method) | {"method": method, "batch": size["batch"], "kd_between": False,
                                         "rounds": size["rounds"]}
    its = size["iterations"]
    if isinstance(its, int) or method in its:
        values["iterations"] = its if isinstance(its, int) else its[method]
    cfg = build_config(values, "synth")
    if cfg.synth.alpha > 0 and shipped_head(cfg.teacher):
        # three rounds are too few for h to learn from a random start: begin from the h the teacher ships
        cfg = replace(cfg, synth=replace(cfg.synth, h_init=PRETRAINED_HEAD))
    return cfg


def shipped_head(teacher: str) -> dict | None:
    """The manifest record of the h shipped with a zoo teacher, if any."""
    return teacher_info(teacher).get("head")


def map_after(existing: dict, methods: list[str], view: tuple, cache_dir: str):
    """The chain's last step: the spec of the banks it made (beside `existing` ones), with its report computed."""
    def then(jobs) -> tuple:
        made = {METHOD_LABELS[m]: BankRef.from_dir(j.out / "bank") for m, j in zip(methods, jobs)}
        s = spec({**existing, **made}, *view)
        feature_report(s, cache_dir)
        return s
    return then


def make_banks(methods: list[str], existing: dict | None = None, view: tuple | None = None) -> bool:
    """Small banks of `methods`, one after another in the background (button callback), then (with `view`: stage,
    n, real, labels, window, teacher) their map; False when they could not start (the page says why)."""
    try:
        cfgs = [small_bank_config(m) for m in methods]
        then = map_after(existing or {}, methods, view, str(registry().base_dir / "feature_cache")) if view else None
        chain = registry().submit_chain(cfgs, [METHOD_LABELS[m] for m in methods], "synth", then)
    except (JobLimitError, IfheError) as e:
        common.flash("warning", str(e))
        return False
    st.session_state["fm_chain"] = chain.id
    st.query_params["banks"] = chain.id
    head = (f" IFHE's h starts from the h shipped with the teacher ({shipped_head(cfgs[0].teacher)['test_accuracy']:.2f}% "
            f"on real test images), as three rounds are too few for a random h to learn."
            if any(c.synth.h_init for c in cfgs) else "")
    what = ", then ".join(METHOD_LABELS[m] for m in methods)
    common.flash("info", f"Making small banks ({what}): {cfgs[0].rounds} rounds of {cfgs[0].synth.batch_size} "
                         f"images each, about {SMALL_BANK_TIME} a bank on 2 cores{', then the map' if view else ''}; "
                         f"they go on in the background, whether this page is open or not.{head}")
    return True


def current_chain():
    """This session's bank chain (the URL's ?banks= after a reload)."""
    ss = st.session_state
    cid = ss.get("fm_chain") or st.query_params.get("banks")
    chain = registry().get_chain(cid)
    if chain is not None:
        ss["fm_chain"] = chain.id
    return chain


def job_progress(snap) -> tuple[float, str]:
    """Fraction done and a line about a synthesis job, from its snapshot."""
    if not snap.active:
        return 1.0, f"{METHOD_LABELS.get(snap.method, snap.method)} bank {snap.state}: {snap.bank_size} images"
    rounds = max(1, snap.rounds)
    its = max(1, snap.iterations)
    done = min(1.0, (min(snap.round, rounds) + min(snap.iteration, its) / its) / rounds)
    return done, (f"{METHOD_LABELS.get(snap.method, snap.method)} bank: round {min(snap.round + 1, rounds)} of "
                  f"{rounds}, iteration {snap.iteration} of {its}, {snap.bank_size} images so far")


def chain_progress(status, snap=None) -> tuple[float, str]:
    """Fraction done and a line about a bank chain: the bank being made, what comes after it."""
    n = max(1, len(status.labels))
    rest = status.labels[status.index + 1:]
    if status.state == "running" and snap is not None:
        frac, text = job_progress(snap)
        text += (" · then " + ", ".join(rest) if rest else "")
        return (status.index + frac) / (n + 1), text
    if status.state == "waiting":
        return status.index / (n + 1), f"waiting for a free job slot ({status.message})"
    if status.state == "finishing":
        return n / (n + 1), f"all {n} bank(s) made; computing their map (features, metrics, t-SNE)…"
    return 1.0, {"done": f"all {n} bank(s) made, and their map", "stopped": "stopped: " + status.message,
                 "failed": "failed: " + status.message}.get(status.state, status.state)


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


def hover_html(report, fig, sets: list[str] | None = None) -> str:
    """A map as a standalone plotly page whose hover shows the image under the cursor."""
    return fig.to_html(include_plotlyjs=True, full_html=True).replace("</body>",
                                                                      hover_script(report, sets) + "</body>")


METRIC_HELP = {
    "k-NN bal. acc": "10-NN balanced accuracy, 5 fixed stratified folds: can the class be read off a point's "
                     "neighbours? [95% bootstrap interval over images]",
    "probe bal. acc": "linear probe (logistic regression on standardized features), same folds, balanced",
    "agreement pred = t": "fraction of images the teacher classifies as their target t (real: its accuracy)",
    "diversity": "mean within-class pairwise distance relative to real images': 1 = as spread as real, "
                 "0 = every image of a class alike (a collapsed generator)",
    "silhouette": "in [-1, 1], standardized features: compact, apart classes score high",
    "Fréchet to real": "distance of the feature distribution to the real images' (lower = closer); compare it "
                       "with the real-vs-real floor beside it",
    "real-vs-real floor": "Fréchet distance between two disjoint real samples of the same n: the distance that "
                          "sampling alone gives",
    "rounds used": "the rounds of its run the set's images come from: the same share of every run",
}
