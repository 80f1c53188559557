"""Feature space: the teacher's intermediate features of real, DeepInversion, CMI and IFHE images, measured where
L_H acts (h's input by default), labelled by target t: the shared real-fitted map beside one map per set,
metrics with 95% intervals, and the metrics against round."""
import streamlit as st
import streamlit.components.v1 as components

from ifhe.methods import METHOD_LABELS

from app import common, features_data as FV
from app.files import data_status, safe_path
from app.grids import thumbnail_png
from app.jobs import registry


def bank_progress() -> None:
    """A progress bar of this session's small-bank job (and what is queued after it), polled while it runs."""
    ss = st.session_state
    job = registry().get(ss.get("fm_bank_job"))
    if job is None:
        return
    queue = ss.get("fm_queue") or []

    def render(snap):
        frac, text = FV.job_progress(snap)
        if queue:
            text += " · then " + ", ".join(METHOD_LABELS[m] for m in queue)
        st.progress(frac, text=text)

    common.live(render, job.id, job.snapshot().active, key="fm_bank_live", every=1.0)


def show(report, stage: str) -> None:
    """The report at one stage: what was compared, both maps, the metrics, the image of a clicked point, the
    metrics against round."""
    # the analysis stack (about 1.4 s to import) only once there is a report: the page's controls come first
    from ifhe.embedding import plot_rounds
    from ifhe.feature_report import MIN_ROUND_WINDOW, metrics_table
    st.caption(f"Teacher {report.teacher} · **{report.stage_label(stage)}** · n = {report.n} images per set · "
               f"labels: {'target t (real: true class)' if report.labels == 'target' else 'teacher prediction'}")
    for s in report.sets:
        head = f" · h: **{s.head}**" if s.head else ""
        st.caption(f"**{s.name}**: {s.n} of {s.size} images, {s.window}{head}")
    for note in report.notes:
        st.info(note)
    events = show_maps(report, stage)
    a, b = st.columns([3, 1])
    with a:
        st.markdown("**Heterogeneity metrics** (95% intervals in brackets)")
        table = metrics_table(report, stage)
        st.dataframe(table, hide_index=True, column_config={
            c: st.column_config.TextColumn(c, help=next((h for k, h in FV.METRIC_HELP.items() if c.startswith(k)),
                                                        None)) for c in table.columns})
    with b:
        show_clicked(report, stage, events)
    if len(report.rounds):
        st.plotly_chart(plot_rounds(report, stage), key="fm_rounds")
    else:
        st.caption(f"No metric-vs-round chart: the banks are too small for windows of {MIN_ROUND_WINDOW} images "
                   f"(or hold no rounds).")


def show_maps(report, stage: str) -> dict:
    """The shared map beside the maps fitted per set; the selection events of the clickable ones."""
    from ifhe.embedding import plot_map
    from ifhe.feature_metrics import LABELINGS
    colour = st.radio("Colour points by", LABELINGS, horizontal=True, key="fm_colour",
                      format_func=lambda c: {"target": "target t (real: true class)",
                                             "predicted": "teacher's prediction"}[c])
    hover = st.toggle("Hover thumbnails", key="fm_hover",
                      help="interactive copies of the maps that show the image under the cursor (loads plotly.js, "
                           "about 5 MB, into the page); off: click a point to see its image")
    left, right = st.columns(2)
    events = {}
    for col, kind, title in ((left, "shared", "Shared map: fitted on real images, the others placed into it"),
                             (right, "own", "Each set fitted alone (the paper's view)")):
        with col:
            st.markdown(f"**{title}**")
            fig = plot_map(report, stage, kind, colour)
            if hover:
                components.html(FV.hover_html(report, fig), height=int(fig.layout.height or 400) + 20)
            else:
                events[kind] = st.plotly_chart(fig, key=f"fm_map_{kind}", on_select="rerun",
                                               selection_mode="points")
    return events


def show_clicked(report, stage: str, events: dict) -> None:
    hit = None
    for kind, event in events.items():
        hit = hit or FV.selected_point(report, event, stage, kind)
    if hit is None:
        st.caption("Click a point in a map to see its image here.")
        return
    name, i = hit
    row = report.points[(report.points["stage"] == stage) & (report.points["set"] == name)
                        & (report.points["index"] == i)].iloc[0]
    cls = report.classes

    def cname(c):
        return cls[int(c)] if int(c) < len(cls) else str(c)
    st.image(thumbnail_png(report.images[name][i], 5),
             caption=f"{name} #{i}: {'target' if name != 'real' else 'class'} {cname(row['label'])}, "
                     f"teacher says {cname(row['pred'])} ({row['confidence']:.2f})")


st.title("Feature space")
st.caption("The paper's claim: synthesized images whose *intermediate* features carry their target class "
           "(heterogeneous, as real images' do) distill better, and IFHE's L_H = CE(h(f_T), t) pushes them there. "
           "Measured here where L_H acts: on h's input (the teacher's pooled block outputs, concatenated) or any "
           "stage, with each synthesized image labelled by its target t, every set at the same n from its most "
           "recent rounds.")

reg = registry()
ss = st.session_state
FV.advance_queue()
runs = FV.runs_with_banks(reg.base_dir)
has_data, data_msg = data_status(ss["dataset"])

left, right = st.columns([1, 3], gap="large")
with left:
    chosen, missing = {}, []
    for method in FV.MAP_METHODS:
        label = METHOD_LABELS[method]
        # largest bank first (the newest among equals): the richest picture of the method by default
        options = [r.name for r in sorted((r for r in runs if r.method == method), key=lambda r: -r.bank_size)]
        if options:
            pick = st.selectbox(f"{label} images from run", ["(none)"] + options, index=1, key=f"fm_{method}",
                                help="run folders under the runs folder whose bank holds images")
            if pick != "(none)":
                chosen[label] = next(r for r in runs if r.name == pick)
        else:
            missing.append(method)
            st.caption(f"No {label} run with images yet.")
            st.button(f"Make a small {label} bank", key=f"make_{method}", on_click=FV.make_bank, args=(method,),
                      help=f"{FV.SMALL_BANK['rounds']} rounds of {FV.SMALL_BANK['batch']} images with the current "
                           f"teacher, synthesis only (about {FV.SMALL_BANK_TIME} on 2 cores)")
    if len(missing) > 1:
        st.button(f"Make the {len(missing)} missing banks", key="make_all", on_click=FV.make_banks,
                  args=(missing,), help=f"one after another, about {FV.SMALL_BANK_TIME} each on 2 cores; keep this "
                                        f"page open: it starts the next when one ends")
    if missing:
        st.caption(f"A first comparison from small banks: about {FV.ALL_BANKS_TIME} for the three on 2 cores.")
    bank_progress()
    extra = st.text_input("Another bank folder (relative to the runs folder)", key="fm_extra",
                          placeholder="e.g. my-run/bank")
    teacher_ref = next((r.teacher for r in chosen.values() if getattr(r, "teacher", None)), None) \
        or FV.session_teacher()
    stages = FV.stage_options(teacher_ref)
    stage = st.selectbox("Stage", stages, index=0, key="fm_stage",
                         format_func=lambda s: "h input (what L_H reads)" if s == "h" else s,
                         help="h's input: the stages h reads, pooled and concatenated; or one stage of the teacher")
    labels = st.radio("Label synthesized images by", ("target", "predicted"), key="fm_labels", horizontal=True,
                      format_func=lambda c: {"target": "target t", "predicted": "teacher's prediction"}[c],
                      help="target t: what L_H pushes (real images: their true class); the other labelling stays "
                           "as a secondary column")
    window = st.selectbox("Images of each bank", ("auto", "all"), key="fm_window",
                          format_func=lambda w: {"auto": "the most recent n", "all": "drawn from all rounds"}[w])
    n = st.slider("Images per set (n)", 100, 1000, FV.DEFAULT_N, step=100, key="fm_n",
                  help="every set, real included, is compared at the same n (the smallest set's size if smaller)")
    use_real = st.checkbox("Include real test images", value=has_data, disabled=not has_data, key="fm_real")
    if not has_data:
        st.info(data_msg)
    go = st.button("Compute the map", type="primary", key="fm_go", disabled=not (chosen or extra))

if extra:
    try:
        bank_dir = safe_path(reg.base_dir, extra)
        chosen[f"custom:{bank_dir.name}"] = FV.BankRef.from_dir(bank_dir)
    except Exception as e:  # IfheError for bad paths, or an unreadable bank
        with left:
            st.error(str(e))

with right:
    if not chosen:
        st.info("No image sets yet. Make small DeepInversion, CMI and IFHE banks with the buttons on the left (or "
                "run them on the Synthesize page), then come back: the map compares their banks with real images.")
    if go and chosen:
        try:
            ss["fm_spec"] = FV.spec(chosen, stage, n, use_real and has_data, labels, window)
        except Exception as e:
            st.error(str(e))
    spec = ss.get("fm_spec")
    if spec:
        try:
            with st.spinner("Extracting features, measuring and fitting t-SNE maps (cached after the first time)…"):
                report = FV.feature_report(spec, str(reg.base_dir / "feature_cache"))
        except Exception as e:
            st.error(f"Could not compute the map: {e}")
            report = None
        if report is not None:
            show(report, spec[2])
