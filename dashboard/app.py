"""Stampede dashboard: navigation only; each page lives in ``dashboard/views/``.

Run with ``streamlit run dashboard/app.py``; it reads the database named by ``STAMPEDE_DATABASE_URL``.
"""

from pathlib import Path

import streamlit as st

VIEWS = Path(__file__).resolve().parent / "views"

st.set_page_config(page_title="Stampede", layout="wide")
st.navigation(
    [
        st.Page(VIEWS / "sweep.py", title="Sweep", url_path="sweep", default=True),
        st.Page(VIEWS / "runs.py", title="Runs", url_path="runs"),
        st.Page(VIEWS / "requests.py", title="Requests", url_path="requests"),
        st.Page(VIEWS / "gpu.py", title="GPU and runtime", url_path="gpu"),
        st.Page(VIEWS / "compare.py", title="Compare", url_path="compare"),
    ]
).run()
