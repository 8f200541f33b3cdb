"""Training: the one loop (:mod:`lesion.train.loop`), options from configs (:mod:`lesion.train.options`), and the
segmentation, classification and chest X-ray recipes (``lesion train seg|cls|cxr``) with their losses,
augmentations and splits.

Modules here import torch at module level; ``import lesion.train`` itself stays light.
"""
