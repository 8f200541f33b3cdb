"""Plotly layout that fits a 1400-px window: legends below the plot (never beside it, where long model names
squeeze the plot to a sliver), titles that wrap instead of being cut, and margins that leave room for both."""
from __future__ import annotations

import textwrap


def wrap_title(title: str, width: int = 60) -> str:
    """A title broken into lines of at most ``width`` characters (plotly does not wrap titles itself)."""
    return "<br>".join(textwrap.wrap(str(title), width)) or str(title)


def fit(fig, title: str | None = None, height: int = 420, legend_title: str | None = None, width_chars: int = 60):
    """Put the legend under the plot, wrap the title, and set a height; returns ``fig`` (for chaining)."""
    text = title if title is not None else (fig.layout.title.text or "")
    lines = wrap_title(text, width_chars).count("<br>") + 1 if text else 0
    layout = {"height": height, "margin": {"l": 10, "r": 10, "t": 30 + 22 * lines, "b": 10},
              "legend": {"orientation": "h", "yanchor": "top", "y": -0.2, "xanchor": "left", "x": 0,
                         "title": {"text": legend_title or ""}}}
    if text:
        layout["title"] = {"text": wrap_title(text, width_chars), "x": 0, "xanchor": "left", "font": {"size": 15}}
    fig.update_layout(**layout)
    return fig


#: Images per row in every gallery and panel strip: at 1,400 px with the sidebar open each is about 250 px wide
#: (six or more in a row were about 100-150 px, too small to see a lesion's border or a heatmap).
PER_ROW = 4


def image_grid(panels, per_row: int = PER_ROW, container=None, clamp: bool = False) -> None:
    """``panels`` — ``(caption, image)`` pairs — drawn ``per_row`` to a row (wrapping), each filling its column
    (``clamp``: float images clipped to 0..1, as ``st.image`` does).""" 
    import streamlit as st

    box = container or st
    panels = list(panels)
    for start in range(0, len(panels), per_row):
        cols = box.columns(per_row)
        for col, (cap, img) in zip(cols, panels[start:start + per_row]):
            col.image(img, caption=cap, width="stretch", clamp=clamp)
