"""Feature space: the teacher's intermediate features of real, DeepInversion, CMI and IFHE images. The page opens on
the committed comparison (banks of the final sweep, one per method and seed, measured and mapped when they were
committed), then offers the user's own banks (made here in the background, one click for all of them and their
map), optionally beside the committed ones. Every report: a stage L_H does not read first, h's input beside it,
the shared real-fitted map and one map per set across the page's width, the claims decided over seeds, each
method over its seeds, each bank with its intervals over images, and the metrics against the share of the run."""
import streamlit as st
import streamlit.components.v1 as components

from ifhe.feature_view import (H_STAGE, LABELINGS, metrics_table, plot_map, plot_rounds, seed_table, stage_caveat,
                               verdict_table)
from ifhe.methods import METHOD_LABELS

from app import common, features_data as FV
from app.files import data_status, safe_path
from app.grids import thumbnail_png
from app.jobs import registry

MAP_COLS = 5                  # panels a row across the page's width


def stage_name(stage: str) -> str:
    return "h input (what L_H optimises)" if stage == H_STAGE else stage


def show_report(report, key: str) -> None:
    """A report across the page's width: its view controls, both maps one under the other, the image of a clicked
    point, the tables and the metric-vs-share chart."""
    c = st.columns([2, 3, 2, 1])
    stage = c[0].selectbox("Stage", report.stages, key=f"{key}_stage", format_func=stage_name,
                           help="the primary stage (one h does not read) first; h's input, what L_H optimises "
                                "directly, beside it")
    colour = c[1].radio("Colour points by", LABELINGS, horizontal=True, key=f"{key}_colour",
                        format_func=lambda v: {"target": "target t (real: true class)",
                                               "predicted": "teacher's prediction"}[v])
    seeds = sorted({s.seed for s in report.sets if s.seed is not None and s.name != "real"})
    shown = report.set_names
    if len(seeds) > 1 and len(shown) > MAP_COLS:
        pick = c[2].selectbox("Banks in the maps", [f"seed {k}" for k in seeds] + ["all"], key=f"{key}_seed",
                              help="the tables cover every bank; the maps show one seed's banks (or all)")
        if pick != "all":
            shown = [s.name for s in report.sets if s.name == "real" or s.seed == int(pick.split()[1])
                     or s.seed is None]
    hover = c[3].toggle("Hover thumbnails", key=f"{key}_hover",
                        help="interactive copies of the maps that show the image under the cursor (loads plotly.js, "
                             "about 5 MB, into the page); off: click a point to see its image")
    st.caption(stage_caveat(report))
    events = show_maps(report, stage, colour, hover, shown, key)
    show_clicked(report, stage, events)
    show_tables(report, stage, key)


def show_maps(report, stage: str, colour: str, hover: bool, shown: list[str], key: str) -> dict:
    """The shared map, then the maps fitted per set, each across the page's width; the clickable ones' events."""
    events = {}
    cols = min(len(shown), MAP_COLS)
    for kind in ("shared", "own"):
        fig = plot_map(report, stage, kind, colour, cols=cols, sets=shown)
        if hover:
            components.html(FV.hover_html(report, fig, shown), height=int(fig.layout.height or 400) + 20)
        else:
            events[kind] = st.plotly_chart(fig, key=f"{key}_map_{kind}", on_select="rerun", selection_mode="points")
    return events


def show_clicked(report, stage: str, events: dict) -> None:
    hit = None
    for kind, event in events.items():
        hit = hit or FV.selected_point(report, event, stage, kind)
    if hit is None:
        if events:
            st.caption("Click a point in a map to see its image here.")
        return
    name, i = hit
    row = report.points[(report.points["stage"] == stage) & (report.points["set"] == name)
                        & (report.points["index"] == i)].iloc[0]
    cls = report.classes

    def cname(c):
        return cls[int(c)] if int(c) < len(cls) else str(c)
    if name not in report.images:   # the real images of a shipped comparison are not shipped with it
        st.caption(f"{name} #{i}: class {cname(row['label'])}, teacher says {cname(row['pred'])} "
                   f"({row['confidence']:.2f}). Real test images are not committed; set IFHE_DATA to a folder with "
                   f"the dataset's test split to see them.")
        return
    st.image(thumbnail_png(report.images[name][i], 5),
             caption=f"{name} #{i}: {'target' if name != 'real' else 'class'} {cname(row['label'])}, "
                     f"teacher says {cname(row['pred'])} ({row['confidence']:.2f})")


def _table(frame, key: str) -> None:
    if frame.empty:
        st.caption("Nothing to show: one bank per method, or no method to compare with.")
        return
    help_of = {c: next((h for k, h in FV.METRIC_HELP.items() if c.startswith(k)), None) for c in frame.columns}
    st.dataframe(frame, hide_index=True, key=key,
                 column_config={c: st.column_config.TextColumn(c, help=h) for c, h in help_of.items()})


def show_tables(report, stage: str, key: str) -> None:
    """The claims (over seeds, primary stage first), each method over its seeds, each bank, metrics vs share."""
    st.markdown(f"**Heterogeneity metrics** · n = {report.n} images per set, from {report.window or 'each bank'} · "
                f"labels: {'target t (real: true class)' if report.labels == 'target' else 'teacher prediction'}")
    tabs = st.tabs(["Each bank", "Each method over its seeds", "Claims (decided over seeds)",
                    "Against the share of the run", "What was compared"])
    with tabs[0]:
        _table(metrics_table(report, stage), f"{key}_metrics")
    with tabs[1]:
        _table(seed_table(report, stage), f"{key}_seeds")
    with tabs[2]:
        _table(verdict_table(report), f"{key}_verdicts")
    with tabs[3]:
        if len(report.rounds):
            st.plotly_chart(plot_rounds(report, stage), key=f"{key}_rounds")
        else:
            st.caption("No metric-vs-share chart: the banks are too small for windows of 50 images.")
    with tabs[4]:
        st.caption(f"Teacher {report.teacher}. {report.protocol}")
        for s in report.sets:
            head = f" · h: **{s.head}**" if s.head else ""
            st.caption(f"**{s.name}**: {s.n} of {s.size} images, {s.window}{head}")
        for note in report.notes:
            st.caption(f"note: {note}")


def shipped_section() -> None:
    """The committed comparison, drawn from its files (nothing computed), or why there is none."""
    shipped, why = FV.shipped()
    if shipped is None:
        st.info(why + " Make banks of your own below: one click makes the three and their map.")
        return
    st.markdown(f"**{shipped.label}**")
    with st.expander("Where the shipped banks come from"):
        if shipped.command:
            st.caption(f"Written by `{shipped.command}`" + (f" on {shipped.made.get('machine')}, "
                                                            f"{shipped.made.get('when')}" if shipped.made else ""))
        st.dataframe([{"bank": b.name, "method": b.group, "seed": b.seed, "images": b.images,
                       "rounds used": b.rounds_used, "run's rounds": b.run_rounds, "budget (min)": b.budget_minutes,
                       "teacher sha256 (as the run recorded it)": (b.teacher_sha256 or "not recorded")[:12],
                       "run": b.run, "made by": b.made_by} for b in shipped.banks], hide_index=True)
    show_report(shipped.report, "sh")


# ---- the user's banks ------------------------------------------------------------------------------------------

def pick_banks(runs, teacher: str | None) -> tuple[dict, list[str]]:
    """A run picker per method (largest bank first; runs of the session's teacher, a comparison is of one teacher)
    and the methods without a bank."""
    chosen, missing, size = {}, [], FV.small_bank()
    runs = [r for r in runs if not teacher or r.teacher == teacher]
    cols = st.columns(len(FV.MAP_METHODS))
    for col, method in zip(cols, FV.MAP_METHODS):
        label = METHOD_LABELS[method]
        options = [r.name for r in sorted((r for r in runs if r.method == method), key=lambda r: -r.bank_size)]
        with col:
            if options:
                pick = st.selectbox(f"{label} images from run", ["(none)"] + options, index=1, key=f"fm_{method}",
                                    help="run folders under the runs folder whose bank holds images")
                if pick != "(none)":
                    chosen[label] = next(r for r in runs if r.name == pick)
            else:
                missing.append(method)
                st.caption(f"No {label} run with images yet.")
            st.button(f"Make a small {label} bank", key=f"make_{method}", on_click=FV.make_banks, args=([method],),
                      help=f"{size['rounds']} rounds of {size['batch']} images with the current "
                           f"teacher, synthesis only (about {FV.SMALL_BANK_TIME} on 2 cores), in the background")
    return chosen, missing


def view_controls(teacher_ref, has_data: bool, shipped) -> tuple:
    """Stage, labels, window, n, real images, the shipped banks beside: (stage, n, real, labels, window), beside."""
    c = st.columns(3)
    stage = c[0].selectbox("Primary stage", FV.stage_options(teacher_ref), index=0, key="fm_stage",
                           format_func=stage_name,
                           help="the primary stage of the verdicts: one h does not read (h's input is measured "
                                "beside it)")
    labels = c[0].radio("Label synthesized images by", LABELINGS, key="fm_labels", horizontal=True,
                        format_func=lambda v: {"target": "target t", "predicted": "teacher's prediction"}[v],
                        help="target t: what L_H pushes (real images: their true class); the other labelling stays "
                             "as a secondary column")
    window = c[1].selectbox("Images of each bank", list(FV.WINDOWS), key="fm_window", format_func=FV.WINDOWS.get,
                            help="the same share of every run, whatever number of rounds its method made")
    n = c[1].slider("Images per set (n)", 100, 1000, FV.DEFAULT_N, step=100, key="fm_n",
                    help="every set, real included, is compared at the same n (the smallest set's size if smaller)")
    use_real = c[2].checkbox("Include real test images", value=has_data, disabled=not has_data, key="fm_real")
    beside = c[2].checkbox("Put the shipped banks beside mine", key="fm_beside", disabled=shipped is None,
                           help="the committed banks of one seed, in the same report as yours (same teacher only)")
    return (stage, n, use_real and has_data, labels, window), beside


def chain_progress(chain) -> None:
    """The bank chain's progress, polled once a second while it runs; when it ends, its map is the page's."""
    status = chain.status()

    def body():
        s = chain.status()
        job = registry().get(s.job_id)
        frac, text = FV.chain_progress(s, job.snapshot() if job else None)
        st.progress(frac, text=text)
        if s.state == "done" and s.result is not None and st.session_state.get("fm_chain_applied") != chain.id:
            st.session_state.update(fm_spec=s.result, fm_chain_applied=chain.id)   # once: the user may move on
        if status.active and not s.active:
            st.rerun(scope="app")
    st.fragment(run_every=1.0 if status.active else None, key="fm_chain_live")(body)()
    if status.active:
        st.button("Stop making banks", key="fm_chain_stop", on_click=chain.stop)


def your_banks() -> None:
    """The user's banks: pickers and make buttons, the view's settings, the chain's progress, their report."""
    reg, ss = registry(), st.session_state
    runs = FV.runs_with_banks(reg.base_dir)
    has_data, data_msg = data_status(ss["dataset"])
    shipped, _ = FV.shipped()
    chosen, missing = pick_banks(runs, FV.session_teacher())
    teacher_ref = next((r.teacher for r in chosen.values() if getattr(r, "teacher", None)), None) \
        or FV.session_teacher()
    view, beside = view_controls(teacher_ref, has_data, shipped)
    if not has_data:
        st.info(data_msg)
    extra = st.text_input("Another bank folder (relative to the runs folder)", key="fm_extra",
                          placeholder="e.g. my-run/bank")
    if extra:
        try:
            bank_dir = safe_path(reg.base_dir, extra)
            chosen[f"custom:{bank_dir.name}"] = FV.BankRef.from_dir(bank_dir)
        except Exception as e:  # IfheError for bad paths, or an unreadable bank
            st.error(str(e))
    refs = {k: (v if isinstance(v, FV.BankRef) else FV.BankRef.of_run(v)) for k, v in chosen.items()}
    if beside and shipped is not None:
        try:
            refs |= FV.shipped_refs(shipped, seed=min((b.seed or 0) for b in shipped.banks))
        except Exception as e:  # IfheError: the teacher of that name changed since
            st.error(str(e))
    c = st.columns([1, 1, 2])
    go = c[0].button("Compute the map", type="primary", key="fm_go", disabled=not refs)
    make = missing or list(FV.MAP_METHODS)
    c[1].button(("Make the missing bank" if len(missing) == 1 else f"Make the {len(missing)} missing banks")
                if missing else "Make the three banks anew", key="make_all", on_click=FV.make_banks,
                args=(make, refs, view + (teacher_ref,)),
                help=f"one after another in the background (about {FV.SMALL_BANK_TIME} each on 2 cores), then "
                     f"their map, without another click; this page may be closed meanwhile")
    c[2].caption(f"A first comparison from small banks: about {FV.ALL_BANKS_TIME} for the three on 2 cores, "
                 f"then the map.")
    chain = FV.current_chain()
    if chain is not None:
        chain_progress(chain)
    your_report(refs, view, teacher_ref, go)


def your_report(refs: dict, view: tuple, teacher_ref, go: bool) -> None:
    ss = st.session_state
    if go and refs:
        try:
            ss["fm_spec"] = FV.spec(refs, *view, teacher=teacher_ref)
        except Exception as e:
            st.error(str(e))
    spec = ss.get("fm_spec")
    if not spec:
        if not refs:
            st.info("No image sets of yours yet: make small DeepInversion, CMI and IFHE banks with the buttons above "
                    "(or run them on the Synthesize page); the map compares their banks with real images.")
        return
    try:
        with st.spinner("Extracting features, measuring and fitting t-SNE maps (cached after the first time)…"):
            report = FV.feature_report(spec, str(registry().base_dir / "feature_cache"))
    except Exception as e:
        st.error(f"Could not compute the map: {e}")
        return
    show_report(report, "fr")


st.title("Feature space")
st.caption("The paper's claim: synthesized images whose *intermediate* features carry their target class "
           "(heterogeneous, as real images' do) distill better, and IFHE's L_H = CE(h(f_T), t) pushes them there. "
           "Each synthesized image is labelled by its target t; every set is compared at the same n, from the same "
           "share of each run; verdicts rest on a stage h does not read, over seeds.")
shipped_section()
st.divider()
st.subheader("Your banks")
your_banks()
