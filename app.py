"""lesion-lab: the Streamlit entry point. Only a router: every page lives in pages/ and draws the shared
sidebar (data set, compute device) through ``ui.state.page_setup``."""
from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="lesion-lab", page_icon="🔬", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon="🏠", default=True),
    st.Page("pages/segmentation.py", title="Segmentation", icon="✂️"),
    st.Page("pages/models.py", title="Models", icon="📈"),
]

st.navigation(PAGES).run()
