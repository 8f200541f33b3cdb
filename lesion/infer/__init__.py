"""Inference: batched ensemble x TTA engine (:mod:`.engine`), TTA views (:mod:`.tta`), merge modes and
member choice (:mod:`.ensemble`), disk cache (:mod:`.cache`), ``lesion evaluate cls`` (:mod:`.evaluate`).

Import the submodules directly; this file stays free of torch imports.
"""
