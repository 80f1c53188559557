"""Compare: sweeps over seeds (intervals, paired differences, curves with bands), runs side by side, the α
ablation, and the paper's table next to our measured figures."""
import plotly.graph_objects as go
import streamlit as st

from ifhe import paper
from app import figures
from app.compare_data import (BANDS, alpha_points, bands_figure, current_sweeps, machine_text, means_figure,
                               measured_table, paired_frame, read_sweep_results, runs_frame, variants_frame)
from app.jobs import registry
from app.runs import config_diff, list_runs, results_dir

st.title("Compare")
reg = registry()
runs = list_runs(reg.base_dir)
st.caption(f"Run folders under `{reg.base_dir}` (the app's runs, and any `ifhe run --out` you put there).")

tab_sweeps, tab_runs, tab_alpha, tab_paper = st.tabs(["Sweeps over seeds", "Runs side by side", "α ablation",
                                                      "Paper vs ours"])

with tab_sweeps:
    sweeps, stale = current_sweeps([reg.base_dir, results_dir()])
    if stale:
        st.caption("Left out, as not made with the zoo's teacher now and the current presets (or not recording "
                   "which teacher): " + "; ".join(stale) + ". Sweeps record the teacher's sha256 in every cell.")
    if not sweeps:
        st.info("No sweep of this teacher and the current presets yet. `ifhe reproduce` runs methods under equal budgets over several seeds and writes "
                "`results.json` into its --out folder; folders under the runs folder or `results/` appear here:")
        st.code("ifhe reproduce --table cifar10 --methods deepinversion cmi ifhe --budget-minutes 20 --seeds 3 \\\n"
                "    --threads 1 --jobs 2 --compare ifhe:cmi --out results/sweep-a", language="bash")
    else:
        labels = [label for label, _ in sweeps]
        picked = st.selectbox("Sweep", labels, key="sw_pick")
        path = dict(sweeps)[picked]
        try:
            res = read_sweep_results(path)
        except Exception as e:  # a hand-edited or half-written file: say so, keep the page
            st.error(f"{path}: cannot be read as a sweep's results ({e})")
            res = None
        if res is not None:
            budget = res.get("budget_minutes")
            st.caption(f"`{path}`" + (f" — {budget:g} minutes per cell" if budget else "") +
                       (f" ({res['time_unit']})" if res.get("time_unit") else "") +
                       (" — an older results.json (a list of cells), analysed on reading" if res.get("legacy")
                        else ""))
            st.markdown(machine_text(res))
            if res.get("missing"):
                st.warning(f"{len(res['missing'])} cell(s) of this sweep are not finished yet and not included.")
            if res.get("left_out"):
                st.warning("Left out of this sweep: " + "; ".join(f"{k} cell(s): {why}"
                                                                  for why, k in res["left_out"].items()) + ".")
            a, b = st.columns([3, 2])
            with a:
                st.markdown("**Student top-1 per variant: mean over seeds, standard deviation, 95% t interval**")
                st.dataframe(variants_frame(res), hide_index=True, key="sw_variants")
            with b:
                st.plotly_chart(means_figure(res), key="sw_means")
            st.markdown("**Paired differences A − B on the seeds both ran** (t interval, paired t test, exact "
                        "sign-flip test; the verdict checks the paper's claim where it reports both)")
            paired = paired_frame(res)
            if paired.empty:
                st.caption("One variant only: nothing to pair.")
            else:
                st.dataframe(paired, hide_index=True, key="sw_paired")
            band = st.radio("Band around the mean curve", list(BANDS), horizontal=True, key="sw_band")
            st.plotly_chart(bands_figure(res, band), key="sw_curves")
            st.caption("Curve points use the sweep's evaluation subset; each seed's curve is interpolated onto a "
                       "common time grid over the span all seeds cover. The final figures above use the whole "
                       "test set.")

with tab_runs:
    if not runs:
        st.info("No runs yet. Start one on the Synthesize or Distill page; finished and stopped runs appear here.")
    else:
        st.dataframe(runs_frame(runs), hide_index=True, key="runs_table")
        names = [r.name for r in runs]
        default = ([r.name for r in runs if r.final_acc is not None and r.state == "finished"][:4]
                   or [r.name for r in runs if r.final_acc is not None][:4] or names[:2])
        picked = st.multiselect("Compare these runs", names, default=default, key="cmp_runs")
        sel = [r for r in runs if r.name in picked]
        if sel:
            a, b = st.columns([3, 2])
            with a:
                st.markdown("**Student accuracy over KD steps**")
                fig = go.Figure()
                for r in sel:
                    acc = r.accuracy
                    if acc:
                        fig.add_trace(go.Scatter(x=[p["kd_steps"] for p in acc], y=[p["student_acc"] for p in acc],
                                                 mode="lines+markers", name=r.name))
                fig.update_layout(height=320, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="KD steps",
                                  yaxis_title="test accuracy (%)", legend=dict(orientation="h", y=-0.3))
                if fig.data:
                    st.plotly_chart(fig, key="cmp_curves")
                else:
                    st.caption("None of these runs was evaluated on real data.")
            with b:
                st.markdown("**Final accuracies**")
                finals = [(r.name, r.final_acc, r.final_head_acc) for r in sel]
                bar = go.Figure([go.Bar(x=[f[0] for f in finals], y=[f[1] for f in finals], name="student"),
                                 go.Bar(x=[f[0] for f in finals], y=[f[2] for f in finals], name="h")])
                bar.update_layout(height=320, margin=dict(l=10, r=10, t=10, b=10), yaxis_title="%",
                                  legend=dict(orientation="h", y=-0.3))
                st.plotly_chart(bar, key="cmp_final")
            st.markdown("**Settings that differ**")
            st.dataframe(config_diff(sel), key="cmp_diff")

with tab_alpha:
    st.markdown("IFHE's α weighs L_H. The paper sweeps it on WRN40-2 → WRN16-1; below, our IFHE runs "
                "(any teacher/student pair) by α, next to the paper's curve.")
    st.latex(figures.LATEX["inv"])
    pts = alpha_points(runs)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=list(paper.ALPHAS), y=list(paper.ALPHA_ABLATION["cifar10"]), mode="lines+markers",
                             name="paper, CIFAR-10 (WRN40-2→WRN16-1)"))
    for pair, xy in pts.items():
        fig.add_trace(go.Scatter(x=[p[0] for p in xy], y=[p[1] for p in xy], mode="markers+lines",
                                 name=f"ours, {pair}", yaxis="y2"))
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="α",
                      yaxis=dict(title="paper accuracy (%)"),
                      yaxis2=dict(title="our accuracy (%)", overlaying="y", side="right"),
                      legend=dict(orientation="h", y=-0.25))
    st.plotly_chart(fig, key="alpha_fig")
    if not pts:
        st.info("No finished IFHE runs with an accuracy yet. An ablation is a few runs that differ only in α, "
                "e.g. on the command line:")
    st.code("for a in 0 0.3 0.5 0.8 1.0 1.5; do\n"
            f"  ifhe run --method ifhe --alpha $a --rounds 20 --eval-images 1000 --out {reg.base_dir}/alpha-$a\n"
            "done", language="bash")
    st.caption("…or start them one after another from the Distill page with different α.")

with tab_paper:
    ds = st.radio("Dataset", ("cifar10", "cifar100"), horizontal=True, key="paper_ds")
    a, b = st.columns([3, 2])
    with a:
        st.markdown("**The paper (top-1 %, teacher/student)**")
        st.dataframe(paper.table_frame(ds), key="paper_table")
        st.markdown("**L_H added to other generator methods** (CIFAR-10, WRN40-2→WRN16-1)")
        st.dataframe({"method": list(paper.ORTHOGONALITY), "acc": list(paper.ORTHOGONALITY.values())},
                     hide_index=True, key="paper_orth")
    with b:
        st.markdown("**Ours, measured (best run per cell, with the zoo's teacher now and the current presets; "
                    "Teacher: the zoo's test accuracy)**")
        table = measured_table(runs, ds)
        if table is None:
            st.info("No finished run with a test accuracy yet for this dataset.")
        else:
            st.dataframe(table, key="ours_table")
    st.caption(paper.NOTE)
