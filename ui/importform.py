"""The Models page's "Import a model" form: :func:`lesion.importer.import_model` from the page, and the imported
model offered by path on every classifier page (the sidebar's "Add a classifier by path" list)."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from lesion.card import IMAGENET_MEAN, IMAGENET_STD, RESIZE_MODES
from lesion.errors import LesionError
from lesion.importer import DOMAINS, _floats, import_model, parse_size
from lesion.paths import user_models_dir


def user_checkpoints(domain: str) -> dict[str, str]:
    """The session's classifiers added by path for ``domain`` (shared with :func:`ui.explain.classifier_picker`)."""
    return st.session_state.setdefault(f"explain_user_ckpts.{domain}", {})


def import_form() -> None:
    """Draw the form; on submit import the file and offer the model by path (one line when it cannot)."""
    with st.expander("Import a model (PyTorch state dict, TorchScript or ONNX)"):
        with st.form("models_import"):
            c1, c2 = st.columns(2)
            path = c1.text_input("Model file", placeholder="/models/my_resnet.pth")
            arch = c2.text_input("Architecture (state dicts: a timm name, e.g. resnet18)")
            c1, c2, c3 = st.columns(3)
            classes = c1.text_input("Classes (comma-separated)", "melanoma")
            size = c2.text_input("Input size (S or HxW, height first)", "224")
            domain = c3.selectbox("Domain", list(DOMAINS))
            c1, c2, c3, c4 = st.columns(4)
            mean = c1.text_input("Mean", ",".join(str(v) for v in IMAGENET_MEAN))
            std = c2.text_input("Std", ",".join(str(v) for v in IMAGENET_STD))
            scale = c3.selectbox("Scale", [1, 255], help="Inputs in 0..1 (1) or 0..255 (255) before mean / std.")
            resize = c4.selectbox("Resize", list(RESIZE_MODES))
            c1, c2 = st.columns(2)
            name = c1.text_input("Name (default: the file's stem)")
            out = c2.text_input("Save to", str(user_models_dir()))
            submitted = st.form_submit_button("Import")
        if submitted:
            if not path.strip():
                st.error("Enter the path of the model file.")
                return
            try:
                card = import_model(Path(path.strip()).expanduser(), arch=arch.strip(),
                                    classes=[c for c in classes.split(",") if c.strip()], size=parse_size(size.strip()),
                                    mean=_floats(mean, "mean"), std=_floats(std, "std"), scale=int(scale),
                                    resize=resize, domain=domain, name=name.strip(), out=out.strip() or None,
                                    command="dashboard: Models page import")
            except LesionError as e:
                st.error(str(e))
                return
            except Exception as e:  # a user's file can fail in ways no library documents
                st.error(f"This model cannot be imported: {e}")
                return
            if card.task != "segmentation":
                user_checkpoints(card.domain)[f"yours: {card.name}"] = str(card.path)
            st.success(f"Imported {card.name} → {card.path}. Its card says its training data are unknown. "
                       + ("It is offered on the classifier pages of its domain (as 'yours: "
                          f"{card.name}'), and by path: {card.path}." if card.task != "segmentation" else
                          f"Use it by path: {card.path}."))
