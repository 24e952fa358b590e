"""Stampede dashboard: navigation only; each page lives in ``dashboard/views/``.

Run with ``streamlit run dashboard/app.py``; it reads the database named by ``STAMPEDE_DATABASE_URL``.
"""

from pathlib import Path

import streamlit as st

VIEWS = Path(__file__).resolve().parent / "views"
SWEEP = st.Page(VIEWS / "sweep.py", title="Sweep", url_path="sweep")


def home() -> None:
    """The root URL: open the Sweep page at its own URL, with the query parameters (the run) given."""
    st.switch_page(SWEEP, query_params=st.query_params.to_dict())


st.set_page_config(page_title="Stampede", layout="wide")
# Streamlit serves its default page at "/" only, so a default Sweep page would answer "/sweep" with
# "Page not found". The default is a hidden page that sends "/" on to Sweep, which keeps its own URL.
st.navigation(
    [
        st.Page(home, title="Stampede", url_path="home", default=True, visibility="hidden"),
        SWEEP,
        st.Page(VIEWS / "runs.py", title="Runs", url_path="runs"),
        st.Page(VIEWS / "requests.py", title="Requests", url_path="requests"),
        st.Page(VIEWS / "gpu.py", title="GPU and runtime", url_path="gpu"),
        st.Page(VIEWS / "compare.py", title="Compare", url_path="compare"),
    ]
).run()
