"""Models: the shipped and user checkpoints, seed 004's comparison table and per-epoch curves."""
from __future__ import annotations

import plotly.express as px
import streamlit as st

from lesion.card import metric_rows
from lesion.train.history import comparison_table, history_frame
from lesion.weights import list_weights
from ui.state import page_setup

finish_page = page_setup()
st.title("Models")
st.caption("Checkpoints in `weights/` with their model cards: how each was trained, on which data, and how well it does.")

cards = list_weights()
tasks = sorted({c.task for c in cards})
if not cards:
    st.info("No checkpoints found in `weights/`. Train one with `lesion train seg …` (see the README).")
    finish_page(stop=True)

task = st.radio("Task", tasks, horizontal=True, key="models_task")
domains = sorted({c.domain or "?" for c in cards if c.task == task})
domain = st.radio("Domain", ["all", *domains], horizontal=True, key="models_domain")
chosen = [c for c in cards if c.task == task and (domain == "all" or (c.domain or "?") == domain)]

st.subheader("Comparison")
st.caption("Each metric column names the data it was measured on and how those data relate to training: a "
           "held-out fold or split of the training data, or an external set the model never saw.")
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
    with st.expander(card.name):
        if card.licences:
            st.warning("Licences of the data: " + " · ".join(card.licences))
        if card.metrics:
            st.dataframe(metric_rows(card), hide_index=True, width="stretch")
        st.json({k: v for k, v in card.to_dict().items() if k != "history"}, expanded=False)
finish_page()
