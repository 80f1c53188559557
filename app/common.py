"""Streamlit glue shared by the pages: the session's form values, the attached job, the control buttons and
the live views. The pages themselves only lay these out."""
from __future__ import annotations

import base64
import time
from pathlib import Path

import streamlit as st

from ifhe.config import METHODS, PRECISIONS, preset
from ifhe.cpu import cpu_kind, machine_label
from ifhe.errors import IfheError
from ifhe.methods import METHOD_LABELS
from ifhe.terms import TERMS, WEIGHTS

from . import catalog, figures, files, forms, grids
from .jobs import JobLimitError, registry
from .runs import results_dir

# Live views poll the job's snapshot in fragments. Each rerun costs the browser tens of milliseconds of layout on
# this page (headless Chromium on the same 2 cores: ~5% of a core per rerun a second), so the grid refreshes twice
# a second (a run makes 2-3 iterations a second here) and the heavier charts every 2 s.
REFRESH_S = 0.5
CHART_REFRESH_S = 2.0

FORM_DEFAULTS = {
    "dataset": "cifar10", "teacher": None, "teacher_path": None, "teacher_summary": None, "upload_arch": "(from file)",
    "student": "wrn16_1", "method": "ifhe", "seed": 0, "kd_between": False, "device": "auto",
    "precision": "auto",
    "run_name": "", "eval_every": 50, "eval_images": 1000, "budget": 0.0, "kd_share": 0.0,
}
FORM_KEYS = tuple(FORM_DEFAULTS) + tuple(forms.form_defaults("ifhe"))


def init_session() -> None:
    """Defaults on first run; afterwards re-assign the form keys so their values survive page switches."""
    ss = st.session_state
    for k, v in FORM_DEFAULTS.items():
        if k not in ss:
            ss[k] = v
    for k, v in forms.form_defaults(ss["method"]).items():
        if k not in ss:
            ss[k] = v
    if ss.get("teacher") is None:
        ss["teacher"] = catalog.default_teacher(ss["dataset"]) or "upload"
    for k in FORM_KEYS:
        ss[k] = ss[k]
    # reattach: the URL is the source of truth after a reload, the session after a page switch
    url_job = st.query_params.get("job")
    if url_job and url_job != ss.get("job_id"):
        job = registry().get(url_job)
        if job is None:
            ss["flash"] = ("warning", "The job in this link is not on this server (it may have restarted); its "
                                      "results, if any, are in its run folder (see Compare).")
            del st.query_params["job"]
            ss.pop("job_id", None)
        else:
            ss["job_id"] = url_job
            _form_from_job(job)
    elif ss.get("job_id") and not url_job:
        st.query_params["job"] = ss["job_id"]


def _form_from_job(job) -> None:
    """Show a reattached job's settings in the form (so the sliders move *its* weights)."""
    ss, cfg = st.session_state, job.cfg
    ss["method"] = cfg.method
    if cfg.teacher.endswith(".safetensors"):
        ss.update(teacher="upload", teacher_path=cfg.teacher, teacher_summary=Path(cfg.teacher).name)
    else:
        ss["teacher"] = cfg.teacher
    s, d = cfg.synth, cfg.distill
    snap = job.snapshot()
    ss.update({w: snap.weights.get(w, getattr(s, w)) for w in WEIGHTS})
    ss.update(lr_g=s.lr_g, lr_z=s.lr_z, batch=s.batch_size,
              iterations=s.iterations, tau=d.T, student=cfg.student, seed=cfg.seed)
    if d.steps_per_round:
        ss.update(kd_steps=d.steps_per_round, kd_batch=d.batch_size, kd_lr=d.lr, kd_share=d.kd_share)
    ss["method_chosen"] = True


def favicon() -> str:
    """Four coloured squares, as an SVG data URI: no image library to import for the first page."""
    squares = "".join(f'<rect x="{2 + (i % 2) * 15}" y="{2 + (i // 2) * 15}" width="13" height="13" fill="{c}"/>'
                      for i, c in enumerate(("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")))
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32">{squares}</svg>'
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def current_job():
    jid = st.session_state.get("job_id")
    return registry().get(jid) if jid else None


def attach(job) -> None:
    st.session_state["job_id"] = job.id
    st.query_params["job"] = job.id


def detach() -> None:
    st.session_state.pop("job_id", None)
    if "job" in st.query_params:
        del st.query_params["job"]


def flash(kind: str, text: str) -> None:
    st.session_state["flash"] = (kind, text)


def show_flash() -> None:
    msg = st.session_state.pop("flash", None)
    if msg:
        getattr(st, msg[0])(msg[1])


# ---- callbacks (run before the script, so the page draws the new state) ------------------------------------

def on_method_change() -> None:
    st.session_state.update(forms.form_defaults(st.session_state["method"]))
    st.session_state["method_chosen"] = True


def on_weight_change() -> None:
    job = current_job()
    if job is not None and job.snapshot().active:
        ss = st.session_state
        try:
            from ifhe.terms import WEIGHTS
            job.set_weights(**{w: ss[w] for w in WEIGHTS if w in ss})
        except IfheError as e:
            flash("error", str(e))


def start(kind: str) -> None:
    ss = st.session_state
    values = {k: ss.get(k) for k in FORM_KEYS}
    if kind == "distill":
        values["rounds"] = ss["distill_rounds"]
    try:
        cfg = forms.build_config(values, kind)
        name = files.check_run_name(ss["run_name"]) if ss.get("run_name") else None
        job = registry().submit(cfg, kind=kind, run_name=name)
    except JobLimitError as e:
        flash("warning", str(e))
        return
    except IfheError as e:
        flash("error", str(e))
        return
    attach(job)


def pause() -> None:
    job = current_job()
    if job:
        job.pause()


def resume() -> None:
    job = current_job()
    if job:
        job.resume()


def step() -> None:
    job = current_job()
    if job:
        job.step()


def stop() -> None:
    job = current_job()
    if job:
        job.resume()
        job.stop()


def reset() -> None:
    """Stop the attached run (its folder keeps everything), forget it here, restore the preset's settings."""
    job = current_job()
    if job is not None and job.snapshot().active:
        job.stop()
    detach()
    st.session_state.update(forms.form_defaults(st.session_state["method"]))
    st.session_state["run_name"] = ""


# ---- shared widgets ----------------------------------------------------------------------------------------

def controls(kind: str, start_label: str = "Start") -> None:
    """Start / Pause (Resume) / Step / Stop / Reset for the attached job."""
    job = current_job()
    snap = job.snapshot() if job else None
    active = bool(snap and snap.active)
    paused = bool(snap and snap.state == "paused")
    reg = registry()
    c = st.columns([1.6, 1, 1, 1, 1])
    c[0].button(start_label, key=f"start_{kind}", type="primary", on_click=start, args=(kind,), disabled=active,
                help="start a new run with these settings in the background", width="stretch")
    if paused:
        c[1].button("Resume", key="resume", on_click=resume, width="stretch")
    else:
        c[1].button("Pause", key="pause", on_click=pause, disabled=not active or snap.state == "stopping",
                    width="stretch")
    c[2].button("Step", key="step", on_click=step, disabled=not paused, help="one optimizer step, then pause",
                width="stretch")
    c[3].button("Stop", key="stop", on_click=stop, disabled=not active,
                help="end the run at the next step; it saves a checkpoint and the student", width="stretch")
    c[4].button("Reset", key="reset", on_click=reset, disabled=job is None,
                help="stop the run (its folder is kept) and restore the preset's settings", width="stretch")
    busy = reg.active_count()
    if not active and busy >= reg.max_jobs:
        st.warning(f"All {reg.max_jobs} job slot(s) of this server are busy. Start is refused until one is free.")


def on_pair_change() -> None:
    ss = st.session_state
    teacher, student = catalog.parse_pair(ss["pair"])
    ss["teacher"] = teacher
    if student:
        ss["student"] = student


@st.cache_data(ttl=15, show_spinner=False)
def _measured(runs_dir: str, results_dir: str) -> dict:
    return catalog.measured(runs_dir, [runs_dir, results_dir])


def measured_figures() -> dict:
    return _measured(str(registry().base_dir), str(results_dir()))


@st.cache_resource(show_spinner=False)
def _cpu_kind() -> dict:
    return cpu_kind()


def measured_best_here(max_minutes: float | None = catalog.DEFAULT_MINUTES):
    """(figure, measured on this kind of machine) of the best sweep figure for the chosen pair at a budget of at
    most `max_minutes` (None: any), or None."""
    ss = st.session_state
    return catalog.measured_best(measured_figures().get((str(ss.get("teacher")), str(ss.get("student")))),
                                 _cpu_kind(), max_minutes)


def measured_setup(fig) -> dict:
    return forms.measured_setup(fig.method, fig.minutes, fig.kd_share, fig.precision)


def apply_measured_default(best) -> None:
    """The Distill page's default is the measured best: set once a session, before the user picks a method or a
    job is attached (their choices are never overwritten)."""
    ss = st.session_state
    if ss.get("measured_default_done"):
        return
    ss["measured_default_done"] = True
    if best is not None and not ss.get("method_chosen") and current_job() is None:
        ss.update(measured_setup(best[0]))
        ss["measured_default_applied"] = True


def measured_best_note(best) -> None:
    """Says what the Distill page's default is and where its figure comes from; offers it when the form differs."""
    if best is None:
        st.caption("No seeded sweep has measured this pair with this teacher yet: the default is the method chosen "
                   "on the Synthesize page.")
        return
    fig, here = best
    ss = st.session_state
    seeds = f"{fig.n} seeds, 95% interval [{fig.low:.1f}, {fig.high:.1f}]" if fig.n > 1 and fig.low is not None \
        else "1 seed so far"
    where = ("on this kind of machine" if here else "on another kind of machine; here it may differ") + \
        f" ({machine_label(fig.machine, fig.threads)})"
    text = (f"**Measured best for this pair: {METHOD_LABELS.get(fig.method, fig.method)}**, about "
            f"{fig.student_acc:.0f}% after {fig.budget_text()} {where}, measured by `{catalog.sweep_command(fig.source)}` "
            f"({seeds}; KD share of the time {fig.kd_share:g}, precision {fig.precision}).")
    longer = measured_best_here(None)
    if longer and longer[0].minutes > fig.minutes and longer[0].student_acc > fig.student_acc:
        more = longer[0]
        text += (f" With more time: {METHOD_LABELS.get(more.method, more.method)} about {more.student_acc:.0f}% after "
                 f"{more.budget_text()} ({more.n} seed{'s' * (more.n > 1)}, `{catalog.sweep_command(more.source)}`).")
    threads = registry().threads
    if fig.threads and threads < fig.threads:
        text += (f" This server's jobs use {threads} thread{'s' * (threads > 1)} (`IFHE_APP_THREADS`): a budget of "
                 f"{fig.minutes:g} minutes buys {threads}/{fig.threads} of that compute here.")
    setup = measured_setup(fig)
    if all(ss.get(k) == v for k, v in setup.items() if k != "distill_rounds"):
        st.success(("The form holds it (the page's default). " if ss.get("measured_default_applied") else "") + text)
    else:
        st.info(text)
        if st.button("Use the measured setup", key="use_measured"):
            ss.update(setup)
            st.rerun()


def _pair_label(pair: catalog.Pair, figures: dict) -> str:
    if pair.teacher is None:
        return f"{pair.title} · the paper's pair · teacher not shipped"
    acc = catalog.read_manifest().get(pair.teacher, {}).get("test_accuracy")
    text = f"{pair.title} · {pair.teacher}" + (f" ({acc:.1f}% test)" if acc is not None else "")
    if pair.paper:
        text += " · the paper's pair"
    m = figures.get((pair.teacher, pair.student))
    if m and m.figures:
        best = m.figures[0]
        text += f" · measured: {best.method} {best.student_acc:.1f}%" + (f" ({best.n} seeds)" if best.n > 1 else "")
    return text


def pair_text() -> str:
    """The chosen pair in words (the Distill page's summary)."""
    ss = st.session_state
    teacher, student = ss.get("teacher") or "", catalog.arch_label(ss.get("student"))
    if teacher == catalog.UPLOAD:
        return f"**Teacher** {ss.get('teacher_summary') or '(no upload yet)'} → **student** {student}"
    if teacher.startswith("paper:"):
        return f"**Teacher** {catalog.arch_label(teacher[6:])} (not shipped) → **student** {student}"
    arch = catalog.read_manifest().get(teacher, {}).get("arch")
    return f"**Teacher** {catalog.arch_label(arch)} ({teacher}) → **student** {student}"


def teacher_picker() -> None:
    """Dataset, then a teacher/student pair: every shipped teacher with each student architecture (the paper's pairs
    marked, with what was measured for them), the paper's pairs whose teacher is not shipped (and how to get one),
    or a teacher uploaded as a .safetensors file (+ its architecture, and a student)."""
    ss = st.session_state
    st.selectbox("Dataset", ("cifar10", "cifar100"), key="dataset")
    pairs = catalog.pairs(ss["dataset"])
    by_value = {p.value: p for p in pairs}
    options = list(by_value) + [catalog.UPLOAD]
    current = catalog.pair_value(ss.get("teacher"), ss["student"])
    if current not in options:  # another dataset, or a teacher no longer shipped: its first pair
        current = options[0]
        ss["teacher"], student = catalog.parse_pair(current)
        ss["student"] = student or ss["student"]
    ss["pair"] = current
    figures = measured_figures()
    st.selectbox("Teacher → student", options, key="pair", on_change=on_pair_change,
                 format_func=lambda v: "Upload a teacher (.safetensors)…" if v == catalog.UPLOAD
                 else _pair_label(by_value[v], figures),
                 help="every shipped teacher with each student architecture; the IFHE paper's five pairs are marked")
    pair = by_value.get(current)
    if pair is not None and pair.teacher is None:
        st.info(f"No {catalog.arch_label(pair.teacher_arch)} teacher for {ss['dataset']} is shipped in pretrained/. "
                f"Upload one (last entry of the list), or train it (hours on a CPU, minutes on a GPU) and it "
                f"appears here:")
        st.code(catalog.train_command(pair.teacher_arch, ss["dataset"]), language="bash")
    elif pair is not None:
        measured_caption(figures.get((pair.teacher, pair.student)))
    if current == catalog.UPLOAD:
        _upload_teacher()
        st.selectbox("Student", catalog.ARCHITECTURES, key="student", format_func=catalog.arch_label)


def measured_caption(m) -> None:
    """What was measured for a pair with this teacher and the current presets (seeded sweeps first), and what was
    left out."""
    left = sum(m.left_out.values()) if m else 0
    why = (f" Left out: {left} older figure{'s' * (left > 1)} (" + "; ".join(
        f"{why}: {k}" for why, k in m.left_out.items()) + ").") if left else ""
    if m and m.figures:
        st.caption("Measured for this pair with this teacher (sha256 "
                   f"{(catalog.teacher_checksum(st.session_state.get('teacher')) or '')[:12]}) and the current "
                   "presets, final student top-1 on the real test set, 95% t interval over seeds: "
                   + " · ".join(f.text() for f in m.figures[:6]) + "." + why)
    else:
        st.caption("No finished run of this pair with this teacher and the current presets yet (runs folder, "
                   "`results/`)." + why)


def _upload_teacher() -> None:
    ss = st.session_state
    st.selectbox("Architecture of the upload", ("(from file)",) + catalog.ARCHITECTURES, key="upload_arch")
    limit = files.upload_limit_mb()
    up = st.file_uploader(f"Teacher weights (.safetensors only, at most {limit} MB)", type=["safetensors"],
                          key="upload_file", max_upload_size=limit)
    if up is None:  # keep an accepted upload across page switches (the uploader itself forgets the file)
        ss.pop("upload_error", None)
    else:
        seen = (getattr(up, "file_id", None) or up.name, ss["upload_arch"], ss["dataset"])
        if ss.get("_upload_seen") != seen:
            ss["_upload_seen"] = seen
            arch = None if ss["upload_arch"] == "(from file)" else ss["upload_arch"]
            try:
                path, summary = files.validate_upload(up.name, up.getvalue(), arch, ss["dataset"],
                                                  registry().base_dir / "uploads")
                ss["teacher_path"], ss["teacher_summary"] = str(path), summary
                ss.pop("upload_error", None)
            except IfheError as e:
                ss["teacher_path"] = ss["teacher_summary"] = None
                ss["upload_error"] = str(e)
    if ss.get("upload_error"):
        st.error(ss["upload_error"])
    elif ss.get("teacher_summary"):
        st.success(f"Teacher accepted: {ss['teacher_summary']}")


def method_picker() -> None:
    st.selectbox("Method preset", METHODS, key="method", format_func=lambda m: METHOD_LABELS[m],
                 on_change=on_method_change,
                 help="each preset sets the parametrization and the weights of its loss terms (CPU scale)")


def _term_slider(term, adv_kind: str) -> None:
    formula, explain = figures.term_text(term.weight, adv_kind)
    st.slider(term.label, 0.0, term.slider_max, step=term.slider_max / 100, key=term.weight,
              on_change=on_weight_change, format="%.4g")
    st.latex(formula)
    st.caption(explain)


def weight_sliders() -> None:
    """One slider per loss term of ifhe.terms.TERMS: the paper's α, β, γ always, the preset's other terms below."""
    ss = st.session_state
    synth = preset(ss["method"], "cpu")[0]
    for term in TERMS:
        if term.primary:
            _term_slider(term, synth.adv_kind)
    st.latex(figures.LATEX["inv"])
    others = [t for t in TERMS if not t.primary and getattr(synth, t.weight) > 0]
    if others:
        with st.expander(f"Other terms of this preset ({', '.join(t.label for t in others)})"):
            for term in others:
                _term_slider(term, synth.adv_kind)
    st.caption("Moving a slider while a run is going changes its next step.")


def advanced_panel() -> None:
    with st.expander("Advanced"):
        c1, c2 = st.columns(2)
        c1.number_input("Generator / pixel lr", min_value=1e-6, max_value=1.0, format="%.5f", key="lr_g")
        c2.number_input("Latent z lr (0 = resampled)", min_value=0.0, max_value=1.0, format="%.5f", key="lr_z")
        c1.number_input("Batch size", min_value=2, max_value=512, step=8, key="batch")
        c2.number_input("Iterations per round", min_value=1, max_value=5000, key="iterations")
        c1.number_input("τ (KD temperature)", min_value=0.5, max_value=100.0, key="tau")
        c2.number_input("Seed", min_value=0, max_value=2 ** 31 - 1, key="seed")
        c1.number_input("Rounds", min_value=1, max_value=100000, key="rounds")
        c2.selectbox("Device", ("auto", "cpu", "cuda"), key="device")
        c1.selectbox("Precision of forward passes", PRECISIONS, key="precision",
                     help="auto (the default): a short probe of the run's own step picks bf16 where it measures "
                          "at least 10% faster here (about half the time on CPUs with AVX512-BF16 such as AMD "
                          "Zen 4/5), fp32 elsewhere; at equal steps the students agree within their seed "
                          "spread. Losses stay fp32")
        st.checkbox("Distill between rounds (KD steps from the Distill page)", key="kd_between")
        st.text_input("Run name (optional folder name under the runs folder)", key="run_name", max_chars=80)


_BADGE = {"starting": ("orange", ":material/hourglass_top:"), "running": ("green", ":material/play_arrow:"),
          "paused": ("blue", ":material/pause:"), "stopping": ("orange", ":material/stop:"),
          "finished": ("green", ":material/check:"), "stopped": ("gray", ":material/stop:"),
          "failed": ("red", ":material/error:")}


def badge(snap) -> None:
    color, icon = _BADGE.get(snap.state, ("gray", None))
    st.badge(f"{snap.state} · {snap.run_name}", color=color, icon=icon)


def job_header(snap, show_note: bool = True) -> None:
    if snap.state == "failed":
        st.error(f"The run failed: {snap.message}")
    elif snap.message and not snap.active:
        st.success(f"{snap.run_name}: {snap.message}. Its files are in `{snap.out_dir}`.")
    if snap.note and show_note:
        st.info(snap.note)


def live(render, job_id: str, active: bool, key: str, every: float = REFRESH_S, rerun_when_done: bool = True,
         first=None, grid: bool = False) -> None:
    """Draw `render(snapshot)` in a fragment that polls the job every `every` seconds while it is active.

    `first(snapshot) -> bool`: while it is false for an active job (e.g. no image grid yet), the fragment waits
    for it up to 1.5 s instead of a whole polling interval, so the first picture shows as soon as it exists.
    `grid`: `render` draws the image grid; the job is told which one, so that it composes the next.
    When the job ends, one full rerun redraws the page (buttons, downloads) and the polling stops.
    """
    def body():
        job = registry().get(job_id)
        if job is None:
            st.warning("This job is no longer on the server.")
            return
        snap = job.snapshot()
        if first is not None and snap.active and not first(snap):
            wait_for(lambda: first(job.snapshot()) or not job.snapshot().active, 1.5)
            snap = job.snapshot()
        render(snap)
        if grid and snap.grid_png is not None:
            job.drawn(snap.grid_version)
        if active and rerun_when_done and not snap.active:
            st.rerun(scope="app")

    st.fragment(run_every=every if active else None, key=key)(body)()


def loss_chart(snap, history: list, x: str, title: str, key: str, height: int = 200) -> None:
    """One small chart per loss term: a cheap image while the run goes on (redrawn every CHART_REFRESH_S), the
    interactive Plotly chart once it has ended."""
    if snap.active:
        png = figures.loss_strip(history, x)
        if png is not None:
            st.image(grids.png_url(png), caption=(f"{title} " if title else "") +
                     "(the interactive chart appears when the run ends)")
        else:
            st.caption("The loss terms appear with the first logged step.")
    else:
        st.plotly_chart(figures.loss_figure(history, x, title, height=height), key=key,
                        config={"displayModeBar": False})


def wait_for(predicate, timeout: float = 3.0) -> bool:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if predicate():
            return True
        time.sleep(0.05)
    return False
