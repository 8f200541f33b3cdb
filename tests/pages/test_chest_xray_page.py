"""Chest X-ray page under AppTest: the demo radiographs with a tiny model trained in the test (label-set table,
per-finding ROC and AUC table, a finding's heatmap beside the lung fields), and the messages for dermoscopy
data, no models and a model whose labels the data lacks."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("streamlit")

ROOT = Path(__file__).resolve().parents[2]
PAGE = "views/chest_xray.py"


@pytest.fixture(scope="module")
def cxr_weights(tmp_path_factory):
    """A 32-px findings model trained for one epoch on the demo X-rays, a TB-carded copy, and the shipped
    lung U-Net (when present)."""
    import json

    import torch

    from lesion.train.cxr import CxrTrainConfig, train_cxr

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("cxr_weights")
    train_cxr(CxrTrainConfig(data=("demo:cxr",), labels="merge", arch="resnet10t", size=32, epochs=1, batch_size=8,
                             out=str(folder / "cxr_demo_tiny"), runs_dir=str(folder / "runs")))
    card = json.loads((folder / "cxr_demo_tiny.json").read_text())
    tb = folder / "zz_tb_tiny"
    # same 5-output network re-carded as a 5-column TB head would not load; keep a true 1-output TB model
    train_cxr(CxrTrainConfig(data=(str(_tb_folder(tmp_path_factory.mktemp("tb"))),), labels="tb", arch="resnet10t",
                             size=32, epochs=1, batch_size=4, val_fraction=0.3, out=str(tb),
                             runs_dir=str(folder / "runs")))
    assert card["classes"][-1] == "Other"
    for f in (ROOT / "weights").glob("lung_unet_*"):
        shutil.copy(f, folder / f.name)
    return folder


def _tb_folder(root: Path) -> Path:
    """A tiny 'Chest X-ray Masks and Labels' tree: MCUCXR_000i_{0,1}.png + masks."""
    import cv2
    import numpy as np

    base = root / "Lung Segmentation"
    (base / "CXR_png").mkdir(parents=True)
    (base / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        stem = f"MCUCXR_{i:04d}_{i % 2}"
        cv2.imwrite(str(base / "CXR_png" / f"{stem}.png"), rng.integers(0, 255, (64, 64), dtype=np.uint8))
        cv2.imwrite(str(base / "masks" / f"{stem}.png"), np.pad(np.full((32, 32), 255, np.uint8), 16))
    return root


def test_dermoscopy_data_offers_the_demo_xrays(run_page, monkeypatch, cxr_weights):
    monkeypatch.setattr("lesion.weights.WEIGHTS_DIR", cxr_weights)
    at = run_page(PAGE)
    assert at.title[0].value == "Chest X-ray"
    assert any("chest X-rays" in i.value for i in at.info)
    at.button(key="cxr_use_demo").click().run()
    assert not at.exception
    assert at.session_state["dataset_source"] == "demo:cxr"
    assert at.selectbox(key="cxr_model").options  # the page now works on the radiographs


def test_no_model_message(run_page, tmp_path, monkeypatch):
    monkeypatch.setattr("lesion.weights.WEIGHTS_DIR", tmp_path / "empty")
    at = run_page(PAGE, {"demo_choice": "demo:cxr"})
    assert any("No chest X-ray classifier" in i.value for i in at.info)


def test_label_sets_roc_and_heatmap_beside_lungs(run_page, monkeypatch, tmp_path, cxr_weights):
    monkeypatch.setattr("lesion.weights.WEIGHTS_DIR", cxr_weights)
    monkeypatch.setenv("LESION_CACHE", str(tmp_path / "cache"))
    at = run_page(PAGE, {"demo_choice": "demo:cxr"})
    at.selectbox(key="cxr_model").set_value("cxr_demo_tiny").run()
    # the label table is the model's own label set (merge: small findings into 'Other'); no choice that changes nothing
    table = at.dataframe[0].value.set_index("finding")
    assert table.loc["Cardiomegaly", "becomes"] == "merged into 'Other'"
    assert not [r for r in at.radio if r.key == "cxr_label_mode"]
    at.button(key="cxr_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    auc = [d.value for d in at.dataframe if "AUC" in d.value.columns][0]
    assert list(auc["finding"]) == ["Effusion", "Infiltration", "Nodule", "Pneumothorax", "Other"]
    assert auc["AUC"].dropna().between(0, 1).all() and auc["positives"].sum() > 0
    at.selectbox(key="cxr_finding").set_value("Effusion").run()
    assert not at.exception, [e.value for e in at.exception]
    captions = " ".join(str(c) for i in at.get("image") for c in (i.captions or []))
    assert "gradcam for 'Effusion'" in captions
    if any(cxr_weights.glob("lung_unet_*")):
        assert "lung fields by lung_unet" in captions
        assert any("inside the predicted lung fields" in c.value for c in at.caption)


def test_tb_model_on_data_without_tb_labels_predicts_only(run_page, monkeypatch, tmp_path, cxr_weights):
    monkeypatch.setattr("lesion.weights.WEIGHTS_DIR", cxr_weights)
    monkeypatch.setenv("LESION_CACHE", str(tmp_path / "cache"))
    at = run_page(PAGE, {"demo_choice": "demo:cxr"})
    at.selectbox(key="cxr_model").set_value("zz_tb_tiny")
    at.button(key="cxr_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("no tuberculosis/normal labels" in i.value for i in at.info)
    preds = [d.value for d in at.dataframe if "p_tuberculosis" in d.value.columns][0]
    assert len(preds) == 60 and preds["p_tuberculosis"].between(0, 1).all()


def test_findings_models_stay_off_the_single_target_pages(monkeypatch, cxr_weights):
    from ui.classify import classifier_cards

    monkeypatch.setattr("lesion.weights.WEIGHTS_DIR", cxr_weights)
    # the one-column TB model serves Classification / Explain / Review / Upload; the 5-finding model does not
    assert [c.name for c in classifier_cards("cxr")] == ["zz_tb_tiny"]
    assert classifier_cards("derm") == []


def test_chest_xray_computes_held_out_only(run_page, shared_data, plans_held_out_only):
    """The TB model on the chest X-ray masks set it trained on: before Run the page says it computes the held-out
    radiographs only (issue 21.1); after Run every row is held-out and the count matches."""
    from lesion.weights import list_weights

    cards = {c.name: c for c in list_weights(domain="cxr")}
    if "cxr_tb_efficientnet_lite0" not in cards:
        pytest.skip("the TB model is not shipped")
    folder = shared_data / "ChestXrayMasksAndLabels"
    at = run_page("views/chest_xray.py", {"_keep.source_kind": "Folder on this machine",
                                           "_keep.folder_path": str(folder), "_keep.cxr_model": "cxr_tb_efficientnet_lite0"})
    plans_held_out_only(at, cards["cxr_tb_efficientnet_lite0"], folder)
