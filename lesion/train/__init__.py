"""Training: losses, augmentations, splits and loops (``lesion train seg``, ``lesion train cls``).

Modules here import torch at module level; ``import lesion.train`` itself stays light.
"""
