"""Cached loaders and the shared sidebar (data-set picker, device)."""
from __future__ import annotations

import os
from typing import Callable

import streamlit as st

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from lesion.data.io import read_image, read_mask  # noqa: E402
from lesion.data.spec import DEMO_SOURCES, open_data  # noqa: E402
from lesion.device import describe_device_quick  # noqa: E402
from lesion.errors import LesionError  # noqa: E402

SOURCE_KEY = "dataset_source"


@st.cache_data(show_spinner="Loading data set…", max_entries=8)
def open_data_cached(source: str):
    """:func:`lesion.data.spec.open_data` of ``demo:derm``, ``demo:cxr`` or a folder path, cached per source string."""
    return open_data(source)


@st.cache_data(show_spinner=False, max_entries=512)
def read_sample(image_path: str, mask_path: str | None):
    """One image (RGB uint8) and its mask (bool) or None. Raises LesionError subclasses (unreadable files)."""
    image = read_image(image_path)
    mask = read_mask(mask_path, image.shape[:2]) if mask_path else None
    return image, mask


@st.cache_data(show_spinner=False)
def device_label() -> str:
    return describe_device_quick()


def current_dataset():
    """The data set chosen in the sidebar, or None after showing why it cannot be loaded."""
    source = st.session_state.get(SOURCE_KEY, "demo:derm")
    try:
        return open_data_cached(source)
    except LesionError as e:
        st.error(f"Cannot load the data set: {e}")
        return None


def dataset_sidebar() -> str:
    """Sidebar data-set picker; returns the chosen source (``demo:…`` or a folder path)."""
    sb = st.sidebar
    sb.markdown("### Data set")
    kind = sb.radio(
        "Source",
        ["Built-in demo (synthetic)", "Folder on this machine"],
        key="source_kind",
        help="The demo set is generated (synthetic) and ships with the app; a folder may be in any supported layout.",
    )
    if kind.startswith("Built-in"):
        demo = sb.selectbox("Demo set", list(DEMO_SOURCES), format_func=DEMO_SOURCES.get, key="demo_choice")
        source = demo
    else:
        path = sb.text_input(
            "Folder path",
            key="folder_path",
            placeholder="/data/HAM10000",
            help="ISIC, HAM10000, SIIM-ISIC 2020, PH2, Chest X-ray Masks and Labels, Montgomery, NIH ChestX-ray14, "
            "or a plain folder (images/, masks/, labels.csv). The layout is detected.",
        ).strip()
        source = path or st.session_state.get(SOURCE_KEY, "demo:derm")
        if not path:
            sb.caption("Enter a path; the demo stays selected until then.")
    st.session_state[SOURCE_KEY] = source
    return source


def page_setup() -> Callable[[], None]:
    """Draw the shared sidebar (data-set picker) at the top of a page; return the function that ends the page.

    Each page calls this itself (rather than ``app.py`` drawing the sidebar) so that a page also runs alone,
    e.g. under AppTest. The returned function writes the compute device into a slot reserved now: finding it
    imports torch (seconds), which must not delay the page's content.
    """
    dataset_sidebar()
    slot = st.sidebar.empty()

    def finish(stop: bool = False) -> None:
        """Fill the device slot; with ``stop=True`` also end the script here (``st.stop``)."""
        slot.caption(f"Compute device: **{device_label()}**")
        if stop:
            st.stop()

    return finish


def require_dataset(finish: Callable[..., None], need_images: bool = True):
    """The sidebar's data set with its badge drawn, or end the page (after saying why) when there is none."""
    ds = current_dataset()
    if ds is None:
        finish(stop=True)
    dataset_badge(ds)
    if need_images and not len(ds):
        st.warning("This data set has no images.")
        finish(stop=True)
    return ds


def dataset_badge(ds) -> None:
    """One line saying which data set a page works on, with a clear 'synthetic' label for the demo."""
    if ds is None:
        return
    tag = " · **synthetic demo data**" if ds.synthetic else ""
    st.caption(f"Data set: **{ds.name}** ({ds.layout}, {len(ds)} images, {ds.domain}){tag}")


def st_progress(label: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A progress callback for lesion/ functions (``progress(done, total)``) and a function that clears the bar."""
    bar = st.progress(0.0, text=label)

    def update(done: int, total: int) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=f"{label} {done}/{total}")

    return update, bar.empty


def require_domain(ds, domain: str, message: str, button: str, key: str, finish: Callable[..., None]) -> None:
    """End the page with ``message`` and a button that switches the sidebar to the built-in demo set of
    ``domain`` when the data set is of another domain."""
    if ds.domain == domain:
        return
    st.info(message)
    source = f"demo:{domain}"

    def _use_demo() -> None:  # a callback may set the sidebar's widget state before it is drawn again
        st.session_state.update({"source_kind": "Built-in demo (synthetic)", "demo_choice": source, SOURCE_KEY: source})

    st.button(button, key=key, on_click=_use_demo)
    finish(stop=True)
