"""Classification: timm classifiers, the multi-task (mask-attention + metadata) network, metadata encoding.

Import the submodules directly (``lesion.classify.models``, ``lesion.classify.multitask``,
``lesion.classify.metadata``); this package file stays empty of torch imports so ``import lesion`` is light.
"""
