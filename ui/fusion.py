"""Streamlit glue of the Multi-view fusion page: cached predictions (shared with the Classification page's
cache) fused per case, and the one ROC chart of per-view vs fused curves."""
from __future__ import annotations

from lesion.infer.ensemble import readable_only
from lesion.infer.fusion import PER_VIEW, evaluate_predictions
from ui.charts import fit
from ui.classify import run_ensemble


def run_fusion(ds, members: list, tta: str, target: str, column: str, progress=None, keep=None,
               merge: str = "mean_prob", records=None):
    """``(prediction result, fusion report)``: the members' ensemble (the session's ``merge``) over ``records``
    (default: every image of ``ds``; the page passes the held-out ones), cached on disk per model, images and
    TTA, fused per case of ``column``; only the labels of the images in ``keep`` (None: all) count. Raises
    LesionError subclasses."""
    recs = list(ds.records if records is None else records)
    result = run_ensemble(ds, members, tta, merge, progress=progress, records=recs)
    if result.errors:  # the one rule: an unreadable image has no score; the page names it, the cases use the rest
        result = readable_only(result)
        recs = [r for r in recs if r.id not in result.errors]
    return result, evaluate_predictions(recs, result, target, column, keep=keep)


def fusion_roc_figure(report, title: str):
    """One plotly chart: the per-view ROC (images of the multi-view cases) dashed, fused ROCs (cases) solid."""
    import plotly.express as px

    roc = report.roc_table()
    roc["level"] = (roc["model"] == PER_VIEW).map({True: "per view (images)", False: "fused (cases)"})
    fig = px.line(roc, x="x", y="y", color="label", line_dash="level",
                  labels={"x": "false-positive rate", "y": "true-positive rate"})
    fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line=dict(dash="dot", color="grey"))
    return fit(fig, title, height=560)
