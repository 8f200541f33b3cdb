"""Near duplicates and split leaks (issue 22.2), on the Failure review page: perceptual-hash pairs within the data
set and against another folder, and the lesions with images on both sides of the chosen models' split. The maths
is in :mod:`lesion.analyse.label_issues` (imagehash's pHash, cached by file content)."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from lesion.analyse.label_issues import lesion_leaks, near_duplicates, perceptual_hashes
from lesion.data.spec import open_data
from lesion.errors import LesionError
from ui.state import st_progress
from ui.tables import pinned
from ui.trust import exposure


def leaks_section(ds, cards, key: str = "leaks") -> None:
    """The section: a button (hashing every image takes a few ms each, cached by content), then the tables."""
    st.subheader("Near duplicates and split leaks")
    exp = exposure(cards, ds)
    trained = exp.any and len(exp.held) < len(ds)
    st.caption("Perceptual hashes (imagehash pHash, 64 bits) of every image of the data set"
               + (" and of the folder below" if st.session_state.get(f"{key}_other") else "")
               + ": pairs within the distance are near duplicates (the same picture re-saved, cropped a little or "
                 "re-coloured). "
               + ("A pair across the chosen models' split, or a lesion with images on both sides, means a held-out "
                  "image is not really new to the model." if trained else
                  "No chosen model trained on this data set, so there is no split to leak across."))
    c1, c2 = st.columns([3, 1])
    other = c1.text_input("…and compare with another folder (optional)", key=f"{key}_other",
                          help="A data-set folder in any supported layout, e.g. an external test set: its images "
                               "that are near duplicates of this data set's are listed with both folders.").strip()
    dist = int(c2.number_input("Max. distance (bits of 64)", 0, 16, 4, key=f"{key}_dist",
                               help="0 = identical hashes; 4 or fewer is a near duplicate by pHash's usual rule."))
    ran: set = st.session_state.setdefault(f"{key}_ran_on", set())
    if st.button("Find near duplicates and leaks", key=f"{key}_run"):
        ran.add((ds.fingerprint(), other))
    if (ds.fingerprint(), other) not in ran:
        return
    records = list(ds.records)
    held = exp.held
    # the folder labels never coincide: two copies of one layout have the same data-set name
    split = {r.id: ("held-out" if r.id in held else "training") if trained else "this data set" for r in records}
    ids, paths, folders = [r.id for r in records], [r.image_path for r in records], [split[r.id] for r in records]
    if other:
        try:
            ods = open_data(other)
        except LesionError as e:
            st.error(f"Other folder: {e}")
            return
        ids += [f"other:{r.id}" for r in ods.records]
        paths += [r.image_path for r in ods.records]
        folders += [f"other folder ({ods.root})"] * len(ods)
    update, clear = st_progress("Hashing images (cached by content)…")
    try:
        hashes = perceptual_hashes(paths, progress=update)
    finally:
        clear()
    pairs = near_duplicates(ids, hashes, folders, dist)
    unread = sum(h is None for h in hashes)
    across = pairs[pairs["across"]]
    st.markdown(f"**{len(pairs)} near-duplicate pairs** among {len(ids) - unread} images "
                f"({len(across)} across {'the split' if trained and not other else 'folders or the split'}; "
                f"distance ≤ {dist})" + (f"; {unread} images could not be read" if unread else ""))
    shown = across if len(across) and st.checkbox("Only pairs across the split / folders", value=True,
                                                  key=f"{key}_across") else pairs
    st.dataframe(shown, hide_index=True, width="stretch", column_config=pinned(shown.columns, keys=("id_a", "id_b")))
    if trained:
        leaks = lesion_leaks(records, [i for i in ids if split.get(i) == "training"], sorted(held))
        st.markdown(f"**{len(leaks)} lesions with images on both sides of the split** (the `lesion_id` metadata, "
                    "else the patient / group)")
        if len(leaks):
            st.dataframe(leaks, hide_index=True, width="stretch", column_config=pinned(leaks.columns, keys=("lesion",)))
    st.download_button("Download near-duplicate pairs (CSV)", pairs.to_csv(index=False).encode(),
                       file_name=f"near_duplicates_{Path(str(ds.root)).name}.csv", mime="text/csv", key=f"{key}_dl")
