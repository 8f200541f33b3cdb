"""Streamlit glue: cached loaders, the shared sidebar and progress adapters. The only place, besides
``app.py`` and ``views/``, that imports streamlit; all computation lives in ``lesion/``."""
