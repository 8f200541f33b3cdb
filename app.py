"""lesion-lab: the Streamlit entry point. Only a router: every page lives in views/ and draws the shared
sidebar (data set, compute device) through ``ui.state.page_setup``."""
from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="lesion-lab", page_icon=":material/biotech:", layout="wide")

PAGES = [
    st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("views/segmentation.py", title="Segmentation", icon=":material/content_cut:"),
    st.Page("views/classification.py", title="Classification", icon=":material/target:"),
    st.Page("views/explain.py", title="Explain", icon=":material/local_fire_department:", url_path="explain"),
    st.Page("views/review.py", title="Failure review", icon=":material/search:", url_path="review"),
    st.Page("views/slices.py", title="Slices", icon=":material/pie_chart:", url_path="slices"),
    st.Page("views/shortcuts.py", title="Shortcut audit", icon=":material/filter_center_focus:", url_path="shortcuts"),
    st.Page("views/embedding.py", title="Embedding map", icon=":material/scatter_plot:", url_path="embedding"),
    st.Page("views/fusion.py", title="Multi-view fusion", icon=":material/join:", url_path="fusion"),
    st.Page("views/chest_xray.py", title="Chest X-ray", icon=":material/pulmonology:", url_path="chest-xray"),
    st.Page("views/upload.py", title="Upload", icon=":material/upload:", url_path="upload"),
    st.Page("views/models.py", title="Models", icon=":material/model_training:"),
]

st.navigation(PAGES).run()
