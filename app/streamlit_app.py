"""The ifhe-lab demo: `ifhe demo`, or `python -m streamlit run app/streamlit_app.py`.

Pages: Synthesize, Distill, Feature space, Compare. Runs live in background threads (app/jobs.py); the job id
sits in the URL (?job=...), so a reload reattaches and a link can be shared with whoever should see the run.
"""
from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402

from app import common  # noqa: E402
from app.jobs import registry  # noqa: E402
from app.warmup import start_warm_up  # noqa: E402

st.set_page_config(page_title="ifhe-lab", layout="wide")

_PAGES = Path(__file__).resolve().parent / "views"  # not "pages/": that name switches Streamlit to its v1 multipage mode
pages = [
    st.Page(_PAGES / "synthesize.py", title="Synthesize", icon=":material/brush:", url_path="synthesize", default=True),
    st.Page(_PAGES / "distill.py", title="Distill", icon=":material/school:", url_path="distill"),
    st.Page(_PAGES / "features.py", title="Feature space", icon=":material/scatter_plot:", url_path="features"),
    st.Page(_PAGES / "compare.py", title="Compare", icon=":material/compare:", url_path="compare"),
]
page = st.navigation(pages)
st.set_page_config(page_icon=common.favicon())  # a local icon: the pages' material icons would fetch one online

common.init_session()

with st.sidebar:
    st.markdown("**ifhe-lab** — data-free distillation by model inversion")
    reg = registry()
    job = common.current_job()
    if job is not None:
        snap = job.snapshot()
        st.markdown(f"Your run: `{snap.run_name}` ({snap.method})")
        st.caption("The link in the address bar reattaches to this run after a reload.")
    st.caption(f"Server: {reg.active_count()} of {reg.max_jobs} job slot(s) busy, {reg.threads} CPU thread(s) "
               f"per job. Runs are saved under `{reg.base_dir}`.")

common.show_flash()
page.run()
start_warm_up()  # after the page is drawn: torch's import does not hold up the first page
