"""Synthesize: pick teacher, student and method; set α, β, γ; watch the images evolve."""
import time

import streamlit as st

from app import common, figures, grids

st.title("Synthesize")
st.caption("Model inversion: images are optimized until the frozen teacher recognises their target class, "
           "its BatchNorm statistics look like real data and (IFHE) its intermediate features separate the classes.")

left, right = st.columns([1, 2], gap="large")
with left:
    common.teacher_picker()
    common.method_picker()
    common.weight_sliders()
    common.advanced_panel()

with right:
    common.controls("synth")
    job = common.current_job()
    if job is None:
        st.info("Press **Start** to synthesize with these settings. The grid shows the current batch, each image "
                "captioned with its target class and the teacher's confidence in it (red: the teacher sees "
                "another class).")
    else:
        snap = job.snapshot()
        common.job_header(snap, show_note=False)

        def grid(s):
            """Twice a second: only the image grid and its caption (each element of a fragment costs the browser
            a re-render at every refresh; the figures that move slower are in the fragment below)."""
            box = st.container(key="grid")
            if s.grid_png is not None:
                box.image(grids.png_url(s.grid_png), caption=f"{s.grid_caption} · {s.it_per_s:.1f} it/s · "
                                                              f"{figures.weights_text(s.weights)}")
            elif s.active:
                box.info("Starting: loading the teacher and building the synthesizer…")

        def counters(s):
            common.badge(s)
            c = st.columns(4)
            c[0].metric(f"Round (of {s.rounds})", s.round)
            c[1].metric(f"Iteration (of {s.iterations})", s.iteration)
            c[2].metric("Iterations / s", f"{s.it_per_s:.1f}")
            c[3].metric("Bank (images)", s.bank_size)
            if s.weights.get("alpha", 0) > 0:
                agree = "–" if s.h_agree is None else f"{100 * s.h_agree:.0f}%"
                st.caption(f"**h** agrees with the teacher on {agree} of this batch · {s.head_training}",
                           help="L_H pushes images so that h, which reads the teacher's intermediate features, "
                                "recognises their target class; it only means something once h has learned.")
            common.loss_chart(s, s.synth_losses, "step", "loss terms over synthesis steps", "synth_losses")
            st.caption(f"{s.steps} synthesis steps · {s.kd_steps} KD steps · tick {s.events} · "
                       f"refreshed {time.strftime('%H:%M:%S')}",
                       help="tick counts the run's events; 'refreshed' is when this view was last redrawn")

        # the grid refreshes twice a second; the counters and the chart, heavier to draw, every two seconds
        common.live(grid, job.id, snap.active, key="synth_live", first=lambda s: s.grid_png is not None, grid=True)
        common.live(counters, job.id, snap.active, key="synth_chart", every=common.CHART_REFRESH_S,
                    rerun_when_done=False)
