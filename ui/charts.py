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
