"""Distill: rounds of synthesis and knowledge distillation; accuracy on real data; the bank; downloads."""
import time
from pathlib import Path

import streamlit as st

from ifhe.methods import METHOD_LABELS

from app import common, figures, files, grids

st.title("Distill")
st.caption("Each round synthesizes a batch into the image bank, then the student (and IFHE's head h) learn "
           "from the teacher on images drawn from the whole bank.")
ss = st.session_state
has_data, data_msg = files.data_status(ss["dataset"])
best = common.measured_best_here()
common.apply_measured_default(best)

left, right = st.columns([1, 2], gap="large")
with left:
    st.markdown(f"{common.pair_text()} · **method** {METHOD_LABELS[ss['method']]} "
                f"({figures.weights_text(ss)}, batch {ss['batch']}, "
                f"{ss['iterations']} iterations a round)")
    st.caption("Teacher, student, method and loss weights are set on the Synthesize page.")
    common.measured_best_note(best)
    c1, c2 = st.columns(2)
    c1.number_input("Rounds", min_value=1, max_value=100000, key="distill_rounds")
    c2.number_input("KD steps per round", min_value=1, max_value=10000, key="kd_steps")
    c1.number_input("KD batch size", min_value=2, max_value=1024, step=16, key="kd_batch")
    c2.number_input("KD learning rate (SGD, cosine)", min_value=1e-5, max_value=2.0, format="%.4f", key="kd_lr")
    c1.number_input("τ (KD temperature)", min_value=0.5, max_value=100.0, key="tau")
    c2.number_input("Time budget (minutes, 0 = none)", min_value=0.0, max_value=10000.0, key="budget",
                    help="CPU time per thread of the job (evaluations excluded), as the sweeps count it")
    c1.number_input("KD share of the time (0 = the KD steps per round above)", min_value=0.0, max_value=0.95,
                    step=0.05, key="kd_share", help="the budget rule (README 'Budgets'): each round's KD gets this "
                    "share of the round's time; the sweeps use 0.8")
    c1.number_input("Evaluate every (KD steps)", min_value=0, max_value=100000, key="eval_every",
                    disabled=not has_data)
    c2.number_input("Test images per evaluation", min_value=100, max_value=10000, step=100, key="eval_images",
                    disabled=not has_data)
    st.latex(figures.LATEX["kd_s"])
    st.latex(figures.LATEX["kd_h"])
    st.caption("The student learns the teacher's softened outputs; h learns them from the teacher's intermediate "
               "features, which is what makes L_H meaningful during synthesis.")

with right:
    common.controls("distill", "Start KD run")
    if not has_data:
        st.info(data_msg)
    job = common.current_job()
    if job is None:
        st.info("Press **Start KD run** to run rounds of synthesis and distillation in the background.")
    else:
        snap = job.snapshot()
        common.job_header(snap)
        if snap.kd_steps_per_round == 0:
            st.warning("This run was started from the Synthesize page without distillation: it fills the bank "
                       "but trains no student. Start a run here to distill.")

        def render(s):
            common.badge(s)
            c = st.columns(5)
            c[0].metric(f"Round (of {s.rounds})", s.round)
            c[1].metric("KD steps", s.kd_steps)
            c[2].metric("Bank (images)", s.bank_size)
            c[3].metric("Student acc", "–" if s.student_acc is None else f"{s.student_acc:.1f}%")
            c[4].metric("h acc", "–" if s.head_acc is None else f"{s.head_acc:.1f}%")
            st.caption(f"round {s.round}: synthesis iteration {s.iteration} of {s.iterations} "
                       f"({s.it_per_s:.1f} it/s), then {s.kd_steps_per_round} KD steps · "
                       f"refreshed {time.strftime('%H:%M:%S')}")

        def charts(s):
            a, b = st.columns(2)
            with a:
                st.markdown("**Accuracy on the real test set**")
                if s.accuracy:
                    st.plotly_chart(figures.accuracy_figure(s.accuracy), key="acc", config={"displayModeBar": False})
                elif not has_data:
                    st.caption("No real test data configured: nothing to evaluate on (see the note above).")
                else:
                    st.caption("The first evaluation comes after the first evaluation interval.")
                st.markdown(f"**KD losses** · {s.images_per_s:.0f} images/s · lr {s.lr:.4f}")
                common.loss_chart(s, s.kd_losses, "kd_steps", "", "kd", height=240)
            with b:
                st.markdown("**Bank samples by class**")
                if s.bank_png is not None:
                    st.image(grids.png_url(s.bank_png))
                    st.plotly_chart(figures.class_count_figure(s.class_counts, s.classes, height=200), key="counts",
                                    config={"displayModeBar": False})
                else:
                    st.caption("The bank fills at the end of the first synthesis round.")
                if s.grid_png is not None:
                    with st.expander("Current synthesis batch"):
                        st.image(grids.png_url(s.grid_png), caption=s.grid_caption)

        common.live(render, job.id, snap.active, key="distill_live")
        common.live(charts, job.id, snap.active, key="distill_charts", every=common.CHART_REFRESH_S,
                    rerun_when_done=False, grid=True)

        st.markdown("**Downloads**")
        d1, d2, d3 = st.columns(3)
        d1.download_button("Run config (YAML)", data=job.config_yaml(), file_name=f"{snap.run_name}.yaml",
                           mime="application/x-yaml", key="dl_config")
        student = Path(snap.student_file) if snap.student_file else None
        if student is not None and student.is_file():
            d2.download_button("Student (safetensors)", data=student.read_bytes(),
                               file_name=f"{snap.run_name}-student.safetensors", mime="application/octet-stream",
                               key="dl_student")
        else:
            d2.caption("The student is saved when the run ends (Stop keeps it).")
        if snap.active and d3.button("Export the student now", key="export"):
            before = snap.exports
            job.request_export()
            if common.wait_for(lambda: job.snapshot().exports > before, 10.0):
                st.rerun()
            else:
                st.warning("The run did not reach a step boundary in time; try again.")
