"""Issue "a dashboard that computes only what it shows, says exactly what it computed, and means the same thing
on every page", under AppTest: held-out-only computing with the count and time said before Run, one ensemble and
threshold rule for every page, a threshold never carried to another data set, Upload judged by the image."""
from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("streamlit")

TIMEOUT = 180


def _skip_without_models(at):
    if at.info and any("No classifier checkpoints" in i.value for i in at.info):
        pytest.skip("no classifier checkpoints shipped")


def _trained_on_demo():
    from lesion.weights import list_weights

    return [c for c in list_weights(domain="derm") if c.task in ("classification", "multitask")
            and any(d.source == "demo:derm" for d in c.trained_on)]


def test_classification_computes_held_out_only_and_says_how_long_before_run(run_page):
    at = run_page("views/classification.py")
    _skip_without_models(at)
    assert len(at.multiselect(key="cls_members").value) == 1  # one fast member until the user asks for more
    plan = [c.value for c in at.caption if "This run computes" in c.value]
    assert plan and "forward passes" in plan[0] and "about" in plan[0]  # count and time, before Run
    assert not [d for d in at.dataframe if "auc" in d.value.columns]  # nothing computed yet
    at.selectbox(key="cls_tta").set_value("none")
    at.button(key="cls_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    preds = [d.value for d in at.dataframe if "split" in d.value.columns]
    assert preds
    if _trained_on_demo() and at.radio(key="cls_subset").value == "held-out":
        assert set(preds[-1]["split"]) == {"held-out"} and len(preds[-1]) < 200  # training images not computed
        at.radio(key="cls_subset").set_value("all").run()
        preds = [d.value for d in at.dataframe if "split" in d.value.columns]
        assert len(preds[-1]) == 200 and "training" in set(preds[-1]["split"])  # on request, labelled


def test_segmentation_computes_held_out_only_and_says_how_long_before_run(run_page):
    """The Segmentation page's data-set run computes the held-out images only (the networks' training images on
    request, labelled), and says images × methods and a measured time before Run."""
    from lesion.data.spec import open_data
    from lesion.train.heldout import held_out
    from lesion.weights import list_weights

    at = run_page("views/segmentation.py")
    plan = [c.value for c in at.caption if "This run computes" in c.value]
    assert plan and "method(s)" in plan[0] and "about" in plan[0] and "measured per image" in plan[0]
    assert not [d for d in at.dataframe if "iou_mean" in d.value.columns]  # nothing computed before Run
    at.button(key="seg_run_all").click().run()
    assert not at.exception, [e.value for e in at.exception]
    nets = [c for c in list_weights(task="segmentation", domain="derm")
            if any(d.source == "demo:derm" for d in c.trained_on) and c.name in at.session_state["seg_models.derm"]]
    if not nets:
        pytest.skip("no shipped derm network trained on the demo set is chosen by default")
    held = {r.id for r in held_out(nets[0], open_data("demo:derm")).records}
    computed = set()  # every image any method computed: the parts kept for the session
    for key, kept in at.session_state["_seg_counts"].items():
        for frame in kept.values():
            computed |= set(frame["id"])
    assert computed == held and len(held) < 200
    per_image = [d.value for d in at.dataframe if "split" in d.value.columns and "iou" in d.value.columns][-1]
    assert set(per_image["split"]) == {"held-out"}
    at.radio(key="seg_subset").set_value("all").run()
    per_image = [d.value for d in at.dataframe if "split" in d.value.columns and "iou" in d.value.columns][-1]
    assert per_image["id"].nunique() == 200 and "training" in set(per_image["split"])


def test_segmentation_stopped_run_keeps_finished_parts():
    """A data-set run in parts: a run stopped in the third part keeps the first two; the next run computes only
    the rest, and the joined frame is the same as one uninterrupted run's."""
    import pandas as pd

    from lesion.data.spec import open_data
    from ui.segment import in_parts

    ds = open_data("demo:derm")
    calls: list[list[str]] = []

    def run(sub, step):
        calls.append([r.id for r in sub.records])
        if len(calls) == 3 and stop[0]:
            raise KeyboardInterrupt  # what Stop does to a running script
        return pd.DataFrame({"id": [r.id for r in sub.records]})

    store: dict = {}
    stop = [True]
    recs = ds.records  # 200 images: parts of 64, 64, 64, 8
    with pytest.raises(KeyboardInterrupt):
        in_parts(store, ("k",), ds, recs, run, size=64)
    assert len(store[("k",)]) == 2  # parts 1 and 2 kept
    stop[0] = False
    calls.clear()
    out = in_parts(store, ("k",), ds, recs, run, size=64)
    assert [len(c) for c in calls] == [64, 8]  # only the parts not finished are computed
    assert list(out["id"]) == [r.id for r in recs]


def test_one_ensemble_tta_and_merge_on_every_page(run_page):
    at = run_page("views/classification.py")
    _skip_without_models(at)
    at.selectbox(key="cls_tta").set_value("hflip").run()
    at.selectbox(key="cls_merge").set_value("mean_logit").run()
    kept = {k: v for k, v in dict(at.session_state.items()).items() if str(k).startswith("_keep.")}
    fus = run_page("views/fusion.py", kept)
    assert fus.selectbox(key="fus_tta").value == "hflip" and fus.selectbox(key="fus_merge").value == "mean_logit"
    assert any("TTA hflip · merge mean_logit" in c.value for c in fus.sidebar.caption)  # Settings in use
    members = at.multiselect(key="cls_members").value
    sl = run_page("views/slices.py", kept)  # the Slices page scores the same ensemble, not one of its own
    assert sl.selectbox(key="slices_tta").value == "hflip" and sl.selectbox(key="slices_merge").value == "mean_logit"
    assert sl.multiselect(key="slices_members").value == members


def test_threshold_is_not_carried_over_to_another_data_set(run_page):
    """'Settings in use' showed 0.354 from the demo while PH2 was in use: a threshold belongs to its data set."""
    at = run_page("views/home.py", {"_keep.thr_mode": "youden",
                                     "_keep.thr_used": {"value": 0.354, "context": ("another", "demo:derm", ("m",),
                                                                                    "d4", "mean_prob", "held-out"),
                                                        "words": "Youden threshold 0.354"},
                                     "_keep.members.derm": ["m"]})
    side = " ".join(c.value for c in at.sidebar.caption)
    assert "0.354" not in side and "computed on this data set and ensemble at the next run" in side


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_upload_judges_the_domain_from_the_image_not_the_sidebar(run_page):
    """A dermoscopy image uploaded while the sidebar shows chest X-rays is not called a chest X-ray."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    img[..., 0] = 200  # colour: a skin photograph, not a radiograph
    at = run_page("views/upload.py", {"_keep.source_kind": "Built-in demo (synthetic)", "_keep.demo_choice": "demo:cxr",
                                      "upload_test_file": ("skin.png", _png(img))})
    assert at.radio(key="upload_domain").value == "derm"
    assert any("judged from the image itself" in c.value for c in at.caption)
    assert not any("data are chest X-rays" in w.value for w in at.warning)


def test_xray_upload_uses_the_lung_unet(run_page):
    from lesion.weights import list_weights

    if not list_weights(task="segmentation", domain="cxr"):
        pytest.skip("no lung segmentation network shipped")
    film = np.repeat(np.linspace(0, 255, 96 * 96).reshape(96, 96, 1).astype(np.uint8), 3, axis=2)
    at = run_page("views/upload.py", {"upload_test_file": ("film.png", _png(film))})
    assert at.radio(key="upload_domain").value == "cxr"
    segs = [s for s in at.selectbox if s.key == "upload_seg.cxr"]
    if segs:  # drawn once a chest X-ray classifier is there
        assert segs[0].value.startswith("lung_unet")


def test_model_default_follows_the_data_set_not_an_earlier_pick(run_page):
    """On a real X-ray folder the synthetic-only findings model, picked on the demo, is not kept."""
    from pathlib import Path

    from lesion.weights import list_weights

    synthetic = [c.name for c in list_weights(domain="cxr") if c.synthetic_only]
    real = Path(__file__).resolve().parents[3] / "shared" / "data" / "ChestXrayMasksAndLabels"
    if not synthetic or not real.is_dir():
        pytest.skip("needs the synthetic-only findings model and the real chest X-ray set")
    at = run_page("views/chest_xray.py", {"_keep.source_kind": "Built-in demo (synthetic)",
                                          "_keep.demo_choice": "demo:cxr", "_keep.cxr_model": synthetic[0]})
    assert at.selectbox(key="cxr_model").value == synthetic[0]  # the pick on the demo
    at.radio(key="source_kind").set_value("Folder on this machine").run()
    at.text_input(key="folder_path").input(str(real)).run()
    assert not at.exception, [e.value for e in at.exception]
    models = [s for s in at.selectbox if s.key == "cxr_model"]
    if models and len(models[0].options) > 1:
        assert models[0].value not in synthetic
