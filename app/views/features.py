"""Feature space: one shared t-SNE map of the teacher's intermediate features for real, DeepInversion, CMI and
IFHE images, small multiples per method, and the heterogeneity metrics beside it."""
import streamlit as st

from app import common
from app import features_view as FV
from app import widgets as W
from app.jobs import registry

st.title("Feature space")
st.caption("The paper's motivation: real images give the teacher's *intermediate* features clear class "
           "structure, synthesized ones mostly do not; L_H is meant to restore it. Each panel places one image "
           "set into the same t-SNE map (fitted on real images when they are configured), coloured by the "
           "teacher's predicted class.")

reg = registry()
ss = st.session_state
runs = FV.runs_with_banks(reg.base_dir)
has_data, data_msg = W.data_status(ss["dataset"])

left, right = st.columns([1, 3], gap="large")
with left:
    chosen = {}
    for method in FV.MAP_METHODS:
        label = W.METHOD_LABELS[method]
        # largest bank first (the newest among equals): the richest picture of the method by default
        options = [r.name for r in sorted((r for r in runs if r.method == method), key=lambda r: -r.bank_size)]
        if options:
            pick = st.selectbox(f"{label} images from run", ["(none)"] + options, index=1, key=f"fm_{method}",
                                help="run folders under the runs folder whose bank holds images")
            if pick != "(none)":
                chosen[label] = next(r for r in runs if r.name == pick)
        else:
            st.caption(f"No {label} run with images yet.")
            st.button(f"Make a small {label} bank", key=f"make_{method}", on_click=FV.make_bank,
                      args=(method,), help="a short synthesis-only run with the current teacher (a few minutes)")
    extra = st.text_input("Another bank folder (relative to the runs folder)", key="fm_extra",
                          placeholder="e.g. my-run/bank")
    stage = st.selectbox("Stage", W.STAGES, index=2, key="fm_stage")
    n = st.slider("Images per set", 100, 1000, 300, step=100, key="fm_n")
    use_real = st.checkbox("Include real test images", value=has_data, disabled=not has_data, key="fm_real")
    if not has_data:
        st.info(data_msg)
    go = st.button("Compute the map", type="primary", key="fm_go", disabled=not (chosen or extra))

if extra:
    try:
        bank_dir = W.safe_path(reg.base_dir, extra)
        chosen[f"custom:{bank_dir.name}"] = FV.BankRef.from_dir(bank_dir)
    except Exception as e:  # IfheError for bad paths, or an unreadable bank
        with left:
            st.error(str(e))

with right:
    if not chosen:
        st.info("No image sets yet. Run DeepInversion, CMI and IFHE for a few rounds (Synthesize page, or the "
                "buttons on the left), then come back: the map compares their banks with real images.")
    if go and chosen:
        try:
            ss["fm_spec"] = FV.spec(chosen, stage, n, use_real and has_data)
        except Exception as e:
            st.error(str(e))
    spec = ss.get("fm_spec")
    if spec:
        try:
            with st.spinner("Extracting features and fitting t-SNE (cached after the first time)…"):
                fmap = FV.feature_map(spec, str(reg.base_dir / "feature_cache"))
        except Exception as e:
            st.error(f"Could not compute the map: {e}")
            fmap = None
        if fmap is not None:
            FV.show(fmap)
