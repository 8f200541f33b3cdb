"""Cached loaders and the shared sidebar (data-set picker, where the models run, device)."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Any, Callable, Sequence

import streamlit as st

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from lesion.data.io import read_image, read_mask  # noqa: E402
from lesion.data.spec import DEMO_SOURCES, open_data  # noqa: E402
from lesion.device import describe_device_quick  # noqa: E402
from lesion.errors import LesionError  # noqa: E402
from lesion.segment.otsu import preset  # noqa: E402
from lesion.serving.client import RemoteClient, ServerError  # noqa: E402

SOURCE_KEY = "dataset_source"
DEMO_KIND, FOLDER_KIND = "Built-in demo (synthetic)", "Folder on this machine"
#: Decision-threshold rules (kept setting ``thr_mode``), shared by the Classification and Failure review pages.
THRESHOLD_MODES = {"youden": "Youden (best sensitivity + specificity)", "sensitivity": "chosen sensitivity",
                   "fixed": "fixed value"}
#: Where the models run (the sidebar's Compute choice, kept setting ``compute_kind``).
COMPUTE_KINDS = {"torch": "this machine", "onnx": "this machine, ONNX Runtime (CPU)", "remote": "model server"}
BACKEND_ENV, TOKEN_ENV = "LESION_BACKEND", "LESION_SERVE_TOKEN"
DEFAULT_URL = "http://127.0.0.1:8000"
HEALTH_TTL_S, HEALTH_TIMEOUT_S = 5, 3.0
_URL = re.compile(r"^https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):([0-9]{1,5})/?$")


# ------------------------------------------------------------------------------------------------ kept settings
# Streamlit forgets the value of a widget that a run does not draw (every page change, under st.navigation),
# so each shared setting lives in a plain session key ``_keep.<name>`` and its widgets are re-seeded from it
# before they are drawn (the pattern of Streamlit's docs on widget state across pages).


def store_key(name: str) -> str:
    """The session key that keeps the setting ``name`` across pages and reruns."""
    return f"_keep.{name}"


def kept(name: str, default: Any = None) -> Any:
    """The kept value of setting ``name`` (``default`` when it was never set)."""
    return st.session_state.get(store_key(name), default)


def set_kept(name: str, value: Any) -> None:
    """Change a kept setting from code (e.g. a suggestion); its widgets show it on the next run."""
    st.session_state[store_key(name)] = value


def keep(widget_key: str, default: Any, name: str | None = None, valid: Callable[[Any], Any] | None = None) -> str:
    """Seed the widget ``widget_key`` from the kept setting ``name`` (default: the widget key) and return the key.

    Call it right before drawing the widget with ``key=widget_key`` and no ``value``/``index``/``default``
    argument; several widgets (on different pages) may share one ``name``. A value the user (or a test) gave the
    widget since its last run wins; else the kept value is put back. ``valid(value)`` maps a kept value onto the
    widget's current options (e.g. members of another domain dropped).
    """
    ss = st.session_state
    store, seen = store_key(name or widget_key), f"_seen.{widget_key}"
    if widget_key in ss and (seen not in ss or ss[widget_key] != ss[seen]):
        ss[store] = ss[widget_key]  # changed in the browser (or by a test) since this widget was last drawn
    value = ss.get(store, default)
    if valid is not None:
        value = valid(value)
    ss[store] = ss[widget_key] = ss[seen] = value
    return widget_key


def after_widget(widget_key: str, name: str | None = None) -> None:
    """Record a widget's value as drawn (call after the widget when its value may be changed by a callback)."""
    ss = st.session_state
    if widget_key in ss:
        ss[store_key(name or widget_key)] = ss[f"_seen.{widget_key}"] = ss[widget_key]


def in_options(options: Sequence[Any], fallback: Any = None) -> Callable[[Any], Any]:
    """A ``valid`` for :func:`keep`: the value when it is one of ``options``, else ``fallback`` (or the first)."""
    opts = list(options)

    def check(value: Any) -> Any:
        if value in opts:
            return value
        return fallback if fallback in opts else (opts[0] if opts else None)

    return check


def members_name(domain: str) -> str:
    """Kept-setting name of the chosen models of a domain (Classification, Fusion, Review and Upload share it)."""
    return f"members.{domain}"


def kept_members(widget_key: str, domain: str, options: Sequence[str], default: Sequence[str],
                 follow: Callable[[Any], Any] | None = None) -> str:
    """:func:`keep` for a members multiselect: the shared choice of the domain, restricted to ``options``;
    ``follow`` (e.g. :func:`ui.trust.follows_dataset`) first maps a choice made on another data set."""
    opts = list(options)

    def check(value: Any) -> list[str]:
        if follow is not None:
            value = follow(value)
        chosen = [m for m in (value or []) if m in opts]
        return chosen if chosen or value == [] else [m for m in default if m in opts]

    return keep(widget_key, list(default), members_name(domain), check)


def otsu_config(domain: str):
    """The session's Otsu settings for ``domain`` (the domain preset with the fields changed in the Segmentation
    page's sidebar form), used by every page that segments with Otsu."""
    base = preset(domain)
    changes = {f.name: kept(f"otsu.{domain}.{f.name}") for f in dataclasses.fields(base) if f.init}
    changes = {k: v for k, v in changes.items() if v is not None and v != getattr(base, k)}
    return dataclasses.replace(base, **changes) if changes else base


def otsu_changes(domain: str) -> list[str]:
    """Names of the Otsu settings that differ from the domain preset."""
    base, cfg = preset(domain), otsu_config(domain)
    return [f.name for f in dataclasses.fields(base) if getattr(cfg, f.name) != getattr(base, f.name)]


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
    """Sidebar data-set picker; returns the chosen source (``demo:…`` or a folder path). The choice is kept for
    the session: every page draws this picker with the values chosen on any other page."""
    sb = st.sidebar
    sb.markdown("### Data set")
    kind = sb.radio(
        "Source", [DEMO_KIND, FOLDER_KIND], key=keep("source_kind", DEMO_KIND, valid=in_options([DEMO_KIND, FOLDER_KIND])),
        help="The demo set is generated (synthetic) and ships with the app; a folder may be in any supported layout.",
    )
    if kind == DEMO_KIND:
        demo = sb.selectbox("Demo set", list(DEMO_SOURCES), format_func=DEMO_SOURCES.get,
                            key=keep("demo_choice", "demo:derm", valid=in_options(list(DEMO_SOURCES))))
        source = demo
    else:
        path = sb.text_input(
            "Folder path",
            key=keep("folder_path", ""),
            placeholder="/data/HAM10000",
            help="ISIC, HAM10000, SIIM-ISIC 2020, PH2, Chest X-ray Masks and Labels, Montgomery, NIH ChestX-ray14, "
            "or a plain folder (images/, masks/, labels.csv). The layout is detected.",
        ).strip()
        source = path or kept("demo_choice", "demo:derm")
        if not path:
            sb.caption("Enter a path; the demo set stays selected until then.")
    st.session_state[SOURCE_KEY] = source
    return source


# ------------------------------------------------------------------------------------------ where the models run
def backend_from_env(value: str | None = None) -> tuple[str, str, str | None]:
    """``(kind, url, note)`` of ``$LESION_BACKEND``: unset / ``local`` = this machine (PyTorch), ``onnx`` = ONNX
    Runtime on this machine, ``http(s)://host:port`` = that model server; anything else falls back to this
    machine with a one-line ``note``."""
    v = (os.environ.get(BACKEND_ENV, "") if value is None else value).strip()
    if v.lower() in ("", "local", "torch"):
        return "torch", "", None
    if v.lower() == "onnx":
        return "onnx", "", None
    if v.lower().startswith(("http://", "https://")):
        return "remote", v, None
    return "torch", "", (f"{BACKEND_ENV}='{v}' is none of local, onnx or a server URL (http://host:port): "
                         "the models run on this machine.")


def check_server_url(url: str) -> str | None:
    """None for an ``http(s)://host:port`` address, else one line saying what is wrong with it."""
    m = _URL.match(url or "")
    if not m:
        return (f"'{url}' is not a server address: write http://host:port (e.g. {DEFAULT_URL}), without a path."
                if url else f"Enter the model server's address (e.g. {DEFAULT_URL}).")
    if not 1 <= int(m.group(2)) <= 65535:
        return f"Port {m.group(2)} of '{url}' is not 1..65535."
    return None


@dataclasses.dataclass(frozen=True)
class Compute:
    """Where the model pages run their models: ``kind`` torch (this process), onnx (ONNX Runtime, this machine's
    CPU) or remote (the ``lesion serve`` server at ``url``, sending ``token``)."""

    kind: str = "torch"
    url: str = ""
    token: str | None = dataclasses.field(default=None, repr=False)

    @property
    def remote(self) -> bool:
        return self.kind == "remote"

    def key(self) -> tuple[str, str, str]:
        """Part of every cache key of results: backend, server address and a digest of the token (so results of
        one backend, server or token are never shown for another)."""
        digest = hashlib.sha256(self.token.encode()).hexdigest()[:16] if self.token else ""
        return self.kind, self.url if self.remote else "", digest if self.remote else ""

    def where(self) -> str:
        """Words for captions: where the models run."""
        if self.remote:
            return f"the model server at {self.url}"
        return "this machine (ONNX Runtime, CPU)" if self.kind == "onnx" else "this machine (PyTorch)"


def current_compute() -> Compute:
    """The session's Compute choice (the sidebar's; ``$LESION_BACKEND`` until one is made). The token is the
    sidebar's, else ``$LESION_SERVE_TOKEN`` of the machine running the dashboard."""
    env_kind, env_url, _ = backend_from_env()
    kind = kept("compute_kind", env_kind)
    if kind not in COMPUTE_KINDS:
        kind = "torch"
    if kind != "remote":
        return Compute(kind)
    url = str(kept("compute_url", env_url or DEFAULT_URL) or "").strip().rstrip("/")
    token = str(kept("compute_token", "") or "").strip() or os.environ.get(TOKEN_ENV) or None
    return Compute("remote", url, token)


def server_problem(err: ServerError, url: str) -> str:
    """One line for a server that is down, refuses the token or answers with an error."""
    if err.refused_token:
        return (f"The model server at {url} refused the token: enter its LESION_SERVE_TOKEN in the sidebar (or set "
                "LESION_SERVE_TOKEN where the dashboard runs), or choose 'this machine'.")
    if err.status is None:
        return (f"{err} Start it (`lesion serve --models …`), correct the address, or choose 'this machine' in the "
                "sidebar.")
    return f"The model server at {url} answered with an error: {err}"


@st.cache_data(ttl=HEALTH_TTL_S, show_spinner=False, max_entries=16)
def server_status(url: str, token: str | None) -> dict[str, Any]:
    """Health of the model server (cached a few seconds): ``ok``, ``message`` (one line when not ok), ``device``,
    ``models`` and ``cards`` (the served models' cards, as dicts)."""
    problem = check_server_url(url)
    if problem:
        return {"ok": False, "message": problem, "device": None, "models": [], "cards": []}
    client = RemoteClient(url, token, timeout=HEALTH_TIMEOUT_S)
    try:
        health = client.health()
        cards = [c.to_dict() for c in client.cards()]
    except ServerError as e:
        return {"ok": False, "message": server_problem(e, url), "device": None, "models": [], "cards": []}
    except (ValueError, KeyError, TypeError) as e:  # an answer that is not a lesion server's
        return {"ok": False, "message": f"{url} does not answer like a lesion-lab model server ({e}).",
                "device": None, "models": [], "cards": []}
    return {"ok": True, "message": "", "device": str(health.get("device", "?")),
            "models": sorted(health.get("models", [])), "cards": cards}


def compute_status(compute: Compute | None = None) -> dict[str, Any] | None:
    """:func:`server_status` of the chosen server; None when the models run on this machine."""
    compute = compute or current_compute()
    return server_status(compute.url, compute.token) if compute.remote else None


def compute_sidebar() -> Compute:
    """Sidebar choice of where the models run (kept for the session): this machine (PyTorch or ONNX Runtime) or a
    model server, with its address, token and health (device, models) or the one line saying what is wrong."""
    sb = st.sidebar
    sb.markdown("### Compute")
    env_kind, env_url, note = backend_from_env()
    kind = sb.radio("Where the models run", list(COMPUTE_KINDS), format_func=COMPUTE_KINDS.get,
                    key=keep("compute_kind", env_kind, valid=in_options(list(COMPUTE_KINDS), "torch")),
                    help=f"Default from {BACKEND_ENV} (local, onnx or http://host:port). A model server is a "
                         "`lesion serve` application, e.g. on a GPU machine; segmentation always runs here.")
    if note:
        sb.caption(note)
    if kind == "remote":
        sb.text_input("Server URL", key=keep("compute_url", env_url or DEFAULT_URL), placeholder=DEFAULT_URL,
                      help="http://host:port of `lesion serve`.")
        sb.text_input("Token", type="password", key=keep("compute_token", ""),
                      help=f"The server's {TOKEN_ENV}; blank: {TOKEN_ENV} of the machine running the dashboard.")
        compute = current_compute()
        status = compute_status(compute)
        if status["ok"]:
            models = status["models"]
            sb.success(f"Server up at {compute.url}: models run on **{status['device']}** · {len(models)} model(s): "
                       + ", ".join(models), icon=":material/dns:")
        else:
            sb.error(status["message"], icon=":material/cloud_off:")
    return current_compute()


def settings_summary() -> str:
    """One markdown line per shared setting in use (data set, models, threshold, Otsu), for the sidebar."""
    source = st.session_state.get(SOURCE_KEY, "demo:derm")
    label = DEMO_SOURCES.get(source, source)
    lines = [f"Data: **{label}**"]
    try:
        ds = open_data_cached(source)
        lines[0] += f" ({len(ds)} images)"
        domain = ds.domain
    except LesionError:
        ds = None
        domain = "derm" if source != "demo:cxr" else "cxr"
    from ui.ensemble import current_context, kept_merge, kept_tta  # ui.ensemble imports this module

    members = kept(members_name(domain))
    if members:
        lines.append("Ensemble: " + ", ".join(members) + f" · TTA {kept_tta()} · merge {kept_merge()}")
    subset = kept("subset")
    if subset:
        lines.append("Scored on: " + ("held-out images only" if subset == "held-out" else
                                      "held-out + training images (optimistic)"))
    mode, used = kept("thr_mode"), kept("thr_used")
    if mode:
        line = f"Threshold: {THRESHOLD_MODES.get(mode, mode)}"
        if isinstance(used, dict) and used.get("context") is not None and used["context"] == current_context(ds):
            line += f" = {used['value']:.3f} (on these data and members)"
        elif mode != "fixed":
            line += " (computed on this data set and ensemble at the next run)"
        lines.append(line)
    lines.append(f"Compute: {current_compute().where()}")
    changed = otsu_changes(domain)
    lines.append("Otsu: " + (f"{len(changed)} setting(s) changed ({', '.join(changed)})" if changed else "preset"))
    return "  \n".join(lines)


def page_setup() -> Callable[[], None]:
    """Draw the shared sidebar (data-set picker) at the top of a page; return the function that ends the page.

    Each page calls this itself (rather than ``app.py`` drawing the sidebar) so that a page also runs alone,
    e.g. under AppTest. The returned function writes the compute device into a slot reserved now: finding it
    imports torch (seconds), which must not delay the page's content.
    """
    dataset_sidebar()
    compute_sidebar()
    summary = st.sidebar.empty()
    slot = st.sidebar.empty()

    def finish(stop: bool = False) -> None:
        """Fill the settings summary and the device slot; with ``stop=True`` also end the script here."""
        with summary.container():
            st.markdown("**Settings in use** (kept across pages)")
            st.caption(settings_summary())
        compute = current_compute()
        if compute.remote:
            status = compute_status(compute) or {}
            slot.caption(f"Models run on the server at **{compute.url}** ({status.get('device') or 'unreachable'}); "
                         f"this machine: {device_label()}")
        elif compute.kind == "onnx":
            slot.caption(f"Models run on this machine's CPU with ONNX Runtime (heatmaps: PyTorch on "
                         f"**{device_label()}**)")
        else:
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
        st.session_state.update({"source_kind": DEMO_KIND, "demo_choice": source, SOURCE_KEY: source})
        set_kept("source_kind", DEMO_KIND)
        set_kept("demo_choice", source)

    st.button(button, key=key, on_click=_use_demo)
    finish(stop=True)
