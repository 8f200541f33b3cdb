"""Issue 13 under AppTest: shared settings survive a page change (Streamlit drops the widget keys of a page
that is left; only the kept ``_keep.*`` session keys carry over), pages compute only when asked for the data set
in use, the threshold rule shown, the Explain verdict from the CI, fusion on a folder without an id column, and
the Upload page's per-session storage, metadata switches and domain warning."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 180


def _kept(at: AppTest) -> dict:
    state = dict(at.session_state.items())
    return {k: v for k, v in state.items() if str(k).startswith("_keep.")}


@pytest.fixture()
def plain_folder(tmp_path):
    """40 demo dermoscopy images in a plain folder whose labels.csv has no id column (no lesion or patient id)."""
    from lesion.data.spec import open_data

    demo = open_data("demo:derm")
    root = tmp_path / "plain"
    (root / "images").mkdir(parents=True)
    rows = []
    for r in demo.records[:40]:
        shutil.copy(r.image_path, root / "images" / Path(r.image_path).name)
        rows.append({"image": Path(r.image_path).name, "diagnosis": r.diagnosis, "age": r.meta.get("age"),
                     "sex": r.meta.get("sex")})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def test_folder_and_settings_survive_a_page_change(run_page, plain_folder):
    at = run_page("views/home.py")
    at.radio(key="source_kind").set_value("Folder on this machine").run()
    at.text_input(key="folder_path").input(str(plain_folder)).run()
    assert not at.exception and int(at.metric[0].value) == 40
    kept = _kept(at)
    assert kept["_keep.folder_path"] == str(plain_folder)
    seg = AppTest.from_file(str(ROOT / "views/segmentation.py"), default_timeout=TIMEOUT)
    for k, v in kept.items():
        seg.session_state[k] = v
    seg.run()
    assert not seg.exception, [e.value for e in seg.exception]
    # the widgets were drawn again from the kept values: same folder, no retyping
    assert seg.radio(key="source_kind").value == "Folder on this machine"
    assert seg.text_input(key="folder_path").value == str(plain_folder)
    assert seg.session_state["dataset_source"] == str(plain_folder)
    seg.checkbox(key="otsu.derm.hair_removal").check().run()  # an Otsu setting changed on this page
    assert not seg.exception, [e.value for e in seg.exception]
    side = " ".join(c.value for c in seg.sidebar.caption)
    assert "40 images" in side and "hair_removal" in side  # the settings in use, in the sidebar
    # and on a third page, with the settings the second page kept
    cls = AppTest.from_file(str(ROOT / "views/classification.py"), default_timeout=TIMEOUT)
    for k, v in _kept(seg).items():
        cls.session_state[k] = v
    cls.run()
    assert not cls.exception, [e.value for e in cls.exception]
    assert cls.text_input(key="folder_path").value == str(plain_folder)
    assert "40 images" in " ".join(c.value for c in cls.caption)
    assert "hair_removal" in " ".join(c.value for c in cls.sidebar.caption)
    # back on the Segmentation page (a fresh run: its widgets were dropped), the Otsu setting is still on
    seg2 = AppTest.from_file(str(ROOT / "views/segmentation.py"), default_timeout=TIMEOUT)
    for k, v in _kept(cls).items():
        seg2.session_state[k] = v
    seg2.run()
    assert seg2.checkbox(key="otsu.derm.hair_removal").value is True


def test_a_page_runs_only_when_asked_for_the_data_in_use(run_page):
    at = run_page("views/classification.py")
    if at.info and "No classifier checkpoints" in at.info[0].value:
        pytest.skip("no classifier checkpoints shipped")
    at.selectbox(key="cls_tta").set_value("none")
    at.button(key="cls_run").click().run()
    assert [d for d in at.dataframe if "auc" in d.value.columns]
    assert any("In use: **Youden threshold" in c.value for c in at.caption)  # the rule in use is named
    at.radio(key="cls_thr_mode").set_value("sensitivity").run()
    assert any("for sensitivity ≥ 0.90" in c.value for c in at.caption)
    assert any("Threshold: chosen sensitivity" in c.value for c in at.sidebar.caption)
    # another data set: no results of the previous one, and nothing computed until asked
    at.selectbox(key="demo_choice").set_value("demo:cxr").run()
    assert not at.exception
    assert not [d for d in at.dataframe if "auc" in d.value.columns]
    # back: the result for this data set is shown again without a click (it is cached)
    at.selectbox(key="demo_choice").set_value("demo:derm").run()
    assert [d for d in at.dataframe if "auc" in d.value.columns]
    assert at.radio(key="cls_thr_mode").value == "sensitivity"


def test_fusion_page_on_a_folder_without_id_column(run_page, plain_folder):
    at = run_page("views/fusion.py", {"_keep.source_kind": "Folder on this machine",
                                      "_keep.folder_path": str(plain_folder)})
    assert not [s for s in at.selectbox if s.key == "fus_case"]
    assert any("no id column that repeats" in i.value for i in at.info)
    at.text_input(key="fus_case_custom").input("diagnosis").run()
    assert any("holds labels" in e.value for e in at.error), [e.value for e in at.error]


def test_ph2_offers_no_label_column_as_case_id(run_page, shared_data):
    at = run_page("views/fusion.py", {"_keep.source_kind": "Folder on this machine",
                                      "_keep.folder_path": str(shared_data / "PH2")})
    assert not [s for s in at.selectbox if s.key == "fus_case"]


def test_real_chest_xrays_never_default_to_the_synthetic_model(run_page, shared_data):
    from lesion.weights import list_weights

    synthetic = [c.name for c in list_weights(domain="cxr", task="classification") if c.synthetic_only]
    if not synthetic:
        pytest.skip("no synthetic-only chest X-ray model shipped")
    at = run_page("views/chest_xray.py", {"_keep.source_kind": "Folder on this machine",
                                          "_keep.folder_path": str(shared_data / "NIH_ChestXray14_mini")})
    box = at.selectbox(key="cxr_model")
    assert box.value not in synthetic
    box.set_value(synthetic[0]).run()
    assert any("trained on synthetic images only" in w.value for w in at.warning)


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_upload_after_its_folder_is_removed_and_inputs_a_model_ignores(run_page, tiny_weights_dir, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("LESION_CACHE", str(tmp_path / "cache"))
    img = np.full((96, 128, 3), (200, 150, 120), np.uint8)
    img[30:60, 30:60] = (90, 50, 40)
    at = run_page("views/upload.py", {"upload_test_file": ("lesion.png", _png(img))})
    folders = list((tmp_path / "cache" / "uploads").glob("*/image/lesion.png"))
    assert len(folders) == 1
    shutil.rmtree(tmp_path / "cache" / "uploads")  # a cleaner empties the cache while the session lives
    img2 = img.copy()
    img2[70:90, 90:120] = (60, 30, 30)
    at.session_state["upload_test_file"] = ("second.png", _png(img2))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert list((tmp_path / "cache" / "uploads").glob("*/image/second.png"))  # created again
    assert not list((tmp_path / "cache" / "uploads").glob("*/image/lesion.png"))  # the old upload replaced
    # the plain classifier reads no metadata: age / sex / site are off, and the page says why
    at.multiselect(key="upload_members").set_value(["tiny_cls"]).run()
    assert at.number_input(key="upload_age").disabled and at.selectbox(key="upload_sex").disabled
    assert any("none of the chosen classifiers reads patient metadata" in c.value for c in at.caption)
    captions = " ".join(str(c) for i in at.get("image") for c in (i.captions or []))
    assert "128×96" in captions and "network view" in captions  # the whole image beside the network's view
    # a grey radiograph-like image given to dermoscopy models is flagged
    at.session_state["upload_test_file"] = ("film.png", _png(np.repeat(np.linspace(0, 255, 96 * 96).reshape(96, 96, 1)
                                                                        .astype(np.uint8), 3, axis=2)))
    at.run()
    # the image type is judged from the image itself (not the sidebar's data set): a grey film is a chest X-ray
    assert at.radio(key="upload_domain").value == "cxr"
    assert any("judged from the image itself" in c.value for c in at.caption)
    at.radio(key="upload_domain").set_value("derm").run()  # the user insists: dermoscopy models are warned about
    assert any("like a radiograph" in w.value for w in at.warning)


@pytest.fixture()
def tiny_weights_dir(tmp_path, monkeypatch):
    """Two tiny untrained derm classifiers (a plain one and a multi-task one), as in test_explain_pages."""
    import torch

    from lesion.card import ModelCard, Preprocessing
    from lesion.classify.classifier import create_model
    from lesion.classify.models import ClsModelConfig
    from lesion.classify.multitask import MultiTaskConfig
    from lesion.weights import save_checkpoint

    folder = tmp_path / "weights"
    folder.mkdir()
    prep = Preprocessing(size=64, mean=(0.5,) * 3, std=(0.25,) * 3, center_crop=True, clahe=False)
    torch.manual_seed(0)
    common = {"domain": "derm", "classes": ("melanoma",), "target": "melanoma", "arch": "resnet10t",
              "preprocessing": prep}
    mcfg = MultiTaskConfig(arch="resnet10t", size=64)
    save_checkpoint(create_model(mcfg), folder / "tiny_mt",
                    ModelCard(name="tiny_mt", task="multitask", model={**mcfg.__dict__}, **common))
    ccfg = ClsModelConfig("resnet10t", num_classes=1, size=64)
    save_checkpoint(create_model(ccfg), folder / "tiny_cls",
                    ModelCard(name="tiny_cls", task="classification", model={**ccfg.__dict__}, **common))
    monkeypatch.setattr("lesion.weights.WEIGHTS_DIR", folder)
    return folder
