"""Feature space: the teacher's intermediate features of real, DeepInversion, CMI and IFHE images, measured where
L_H acts (h's input by default), labelled by target t: the shared real-fitted map beside one map per set,
metrics with 95% intervals, and the metrics against round."""
import streamlit as st

from ifhe.methods import METHOD_LABELS

from app import features_view as FV
from app.files import data_status, safe_path
from app.jobs import registry

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
    FV.bank_progress()
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
            FV.show(report, spec[2])
