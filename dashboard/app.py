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
    ]
).run()
