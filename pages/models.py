"""Models: the shipped and user checkpoints, seed 004's comparison table and per-epoch curves."""
from __future__ import annotations

import json

import plotly.express as px
import streamlit as st

from lesion.train.history import comparison_table, history_frame
from lesion.weights import list_weights
from ui.state import page_setup

finish_page = page_setup()
st.title("Models")
st.caption("Checkpoints in `weights/` with their model cards: how each was trained, on which data, and how well it does.")

cards = list_weights()
tasks = sorted({c.get("task", "?") for c in cards})
if not cards:
    st.info("No checkpoints found in `weights/`. Train one with `lesion train seg …` (see the README).")
    finish_page(stop=True)

task = st.radio("Task", tasks, horizontal=True, key="models_task")
domains = sorted({c.get("domain", "?") for c in cards if c.get("task") == task})
domain = st.radio("Domain", ["all", *domains], horizontal=True, key="models_domain")
chosen = [c for c in cards if c.get("task") == task and (domain == "all" or c.get("domain") == domain)]

st.subheader("Comparison")
table = comparison_table(chosen)
st.dataframe(table, hide_index=True, width="stretch")
st.download_button("Download table (CSV)", table.to_csv(index=False).encode(), "models.csv", "text/csv")

hist = history_frame(chosen)
if len(hist):
    st.subheader("Training curves")
    metrics = sorted(hist["metric"].unique())
    cols = st.columns(min(len(metrics), 3))
    for i, metric in enumerate(metrics):
        sub = hist[hist["metric"] == metric]
        fig = px.line(sub, x="epoch", y="value", color="model", line_dash="split", markers=True,
                      title=metric, labels={"value": metric})
        fig.update_layout(height=330, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.25))
        cols[i % len(cols)].plotly_chart(fig, width="stretch")
else:
    st.caption("These cards carry no per-epoch history.")

st.subheader("Model cards")
for card in chosen:
    with st.expander(card.get("name", "?")):
        licences = card.get("licences") or card.get("licenses")
        if licences:
            st.warning(f"Licences of the training data: {json.dumps(licences) if not isinstance(licences, str) else licences}")
        st.json({k: v for k, v in card.items() if k not in ("history",)}, expanded=False)
finish_page()
