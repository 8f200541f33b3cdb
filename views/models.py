"""Models: the shipped and user checkpoints, a comparison table, per-epoch curves and each model card as text
and tables."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from lesion.card import metric_rows
from lesion.train.history import comparison_table, history_frame
from lesion.weights import list_weights
from ui.charts import fit
from ui.importform import import_form
from ui.tables import pinned
from ui.state import keep, page_setup

#: History columns that count things (images seen per epoch), not a score that changes while training.
COUNT_METRICS = ("images", "n", "n_train", "n_val", "lr", "epoch_time_s")

finish_page = page_setup()
st.title("Models")
st.caption("Checkpoints in `weights/` with their model cards: how each was trained, on which data, and how well it does.")

import_form()
cards = list_weights()
tasks = sorted({c.task for c in cards})
if not cards:
    st.info("No checkpoints found in `weights/`. Train one with `lesion train seg …` (see the README).")
    finish_page(stop=True)

task = st.radio("Task", tasks, horizontal=True, key=keep("models_task", tasks[0], valid=lambda v: v if v in tasks else tasks[0]))
domains = sorted({c.domain or "?" for c in cards if c.task == task})
domain = st.radio("Domain", ["all", *domains], horizontal=True,
                  key=keep("models_domain", "all", valid=lambda v: v if v in ["all", *domains] else "all"))
chosen = [c for c in cards if c.task == task and (domain == "all" or (c.domain or "?") == domain)]

st.subheader("Comparison")
st.caption("Each metric column names the data it was measured on and how those data relate to training: a "
           "held-out fold or split of the training data, or an external set the model never saw.")
table = comparison_table(chosen)
st.dataframe(table, hide_index=True, width="stretch",
             column_config={"model": st.column_config.TextColumn("model", pinned=True)})
st.caption("Each metric column is followed by its 95% bootstrap CI (blank when the card records none); the CSV "
           "carries the same columns. The table scrolls sideways with the model names pinned.")
st.download_button("Download table (CSV)", table.to_csv(index=False).encode(), "models.csv", "text/csv")

hist = history_frame(chosen)
if len(hist):
    hist = hist[~hist["metric"].isin(COUNT_METRICS)]
    # a metric that never changes over the epochs is a count or a constant, not a curve
    moving = hist.groupby("metric")["value"].transform(lambda v: v.nunique() > 1)
    hist = hist[moving]
if len(hist):
    st.subheader("Training curves")
    st.caption("Per-epoch values from each card's history (train and validation splits of the training data).")
    metrics = sorted(hist["metric"].unique())
    with_history = sorted(hist["model"].unique())
    # a handful of curves per chart: at most 3 models (x train / val) unless more are chosen
    shown_models = st.multiselect("Models in the curves (up to 5 read well)", with_history,
                                  default=with_history[:3], key="models_curves", max_selections=5)
    hist = hist[hist["model"].isin(shown_models)]
    cols = st.columns(min(len(metrics), 2))  # two per row: each plot keeps > 300 px in a 1400-px window
    for i, metric in enumerate(metrics):
        sub = hist[hist["metric"] == metric]
        fig = px.line(sub, x="epoch", y="value", color="model", line_dash="split", markers=True,
                      labels={"value": metric})
        cols[i % len(cols)].plotly_chart(fit(fig, metric, height=380, width_chars=40), width="stretch")
else:
    st.caption("These cards carry no per-epoch history.")


def _facts(card) -> pd.DataFrame:
    """The card's key facts as a two-column table (what a reader asks first)."""
    tr, sp, pv = card.training, card.split, card.provenance
    rows = [
        ("task", card.task), ("domain", card.domain), ("architecture", " / ".join(x for x in (card.arch, card.encoder) if x)),
        ("initialisation", card.init), ("classes", ", ".join(card.classes)), ("target", card.target or ""),
        ("input", f"{card.preprocessing.size_text} px, {card.preprocessing.channels} channel(s)"
                  + (", centre crop" if card.preprocessing.center_crop else "")
                  + (", letterbox" if card.preprocessing.resize == "letterbox" else "")
                  + (", CLAHE" if card.preprocessing.clahe else "")),
        ("split", sp.method + (f" (fold {sp.fold} of {sp.n_splits})" if sp.n_splits else "")),
        ("train / val images", f"{sp.n_train} / {sp.n_val}" if sp.n_train is not None else ""),
        ("epochs (best)", f"{tr.epochs} ({tr.best_epoch})" if tr.epochs is not None else ""),
        ("loss / optimiser", " / ".join(str(x) for x in (tr.loss, tr.optimizer) if x)),
        ("created", pv.created or ""), ("device", pv.device or ""), ("weights sha256", (pv.sha256 or "")[:16]),
        ("command", pv.command or ""),
    ]
    return pd.DataFrame([(k, str(v)) for k, v in rows if v not in ("", None, "None")], columns=["fact", "value"])


def _data_table(card) -> pd.DataFrame:
    return pd.DataFrame([{"data set": d.name, "role": d.role, "synthetic": d.synthetic, "train": d.n_train,
                          "val": d.n_val, "images": d.n, "layout": d.layout} for d in card.data])


st.subheader("Model cards")
for card in chosen:
    title = card.name + (" · trained on synthetic images only" if card.synthetic_only else "")
    with st.expander(title):
        if card.notes:
            st.markdown(card.notes)
        for w in card.warnings:
            st.warning(w)
        st.markdown("**Facts**")
        st.dataframe(_facts(card), hide_index=True, width="stretch")
        if card.data:
            st.markdown("**Data**")
            st.dataframe(_data_table(card), hide_index=True, width="stretch", column_config=pinned(["data set"]))
        if card.licences:
            st.warning("**Licences of the data**\n\n" + "\n".join(f"- {x}" for x in card.licences))
        if card.metrics:
            st.markdown("**Metrics**")
            rows = pd.DataFrame(metric_rows(card))
            st.dataframe(rows, hide_index=True, width="stretch", column_config=pinned(rows.columns))
        if card.training.config:
            st.markdown("**Training settings**")
            st.dataframe(pd.DataFrame([(k, str(v)) for k, v in card.training.config.items()],
                                      columns=["setting", "value"]), hide_index=True, width="stretch")
finish_page()
