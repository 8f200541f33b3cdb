"""lesion-lab: the Streamlit entry point. Only a router: every page lives in pages/ and draws the shared
sidebar (data set, compute device) through ``ui.state.page_setup``."""
from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="lesion-lab", page_icon="🔬", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon="🏠", default=True),
    st.Page("pages/segmentation.py", title="Segmentation", icon="✂️"),
    st.Page("pages/classification.py", title="Classification", icon="🎯"),
    st.Page("pages/explain.py", title="Explain", icon="🔥", url_path="explain"),
    st.Page("pages/review.py", title="Failure review", icon="🧐", url_path="review"),
    st.Page("pages/fusion.py", title="Multi-view fusion", icon="🧩", url_path="fusion"),
    st.Page("pages/chest_xray.py", title="Chest X-ray", icon="🫁", url_path="chest-xray"),
    st.Page("pages/upload.py", title="Upload", icon="📤", url_path="upload"),
    st.Page("pages/models.py", title="Models", icon="📈"),
]

st.navigation(PAGES).run()
