"""Segmenter fusion: the outputs of several segmentation methods for one image merged into one mask.

Members are any segmenters of this package: Otsu (:class:`~lesion.segment.otsu.OtsuSegmenter`), the trained
networks (``lesion.zoo.load_segmenter``), LiteMedSAM with any prompt (:class:`~lesion.segment.medsam.MedSamSegmenter`)
and a folder of masks made elsewhere (:class:`~lesion.segment.masks.MaskFolder`, looked up by image id). This
module never loads a model: callers build the members (``lesion.segment.evaluate.resolve_fusion`` for the CLI, the
Segmentation page's cached loaders) and pass them in.

Rules (:data:`FUSION_RULES`); each gives a foreground *score* ``[H, W]`` in 0..1 that the caller thresholds like a
network's probability (``> 0.5`` by default):

* ``mean``: the mean of the members' probabilities (a bool mask counts as 0 / 1). Thresholded at t it is
  "mean probability > t".
* ``vote``: each member's mask (its probability ``> member.threshold``, 0.5 unless the member says otherwise),
  then the share of members that call the pixel lesion. ``> 0.5`` is the strict majority (2 of 3, 3 of 4; a tie
  is background, so with two members it is their intersection).
* ``staple``: the members' masks fused by STAPLE (Warfield, Zou & Wells 2004, IEEE TMI 23(7)): an EM over the
  binary decisions that estimates each member's sensitivity and specificity and the posterior probability of
  lesion per pixel; a member that agrees with the consensus gets more weight. Written here with numpy
  (:func:`staple`): SimpleITK, which has ``STAPLEImageFilter``, is not installed in this environment.

CLI: ``lesion evaluate seg --fuse vote --model otsu --model derm_unet_efficientnet_lite0 --model
"medsam_lite[otsu]" [--masks DIR] --data DATA`` (see :mod:`lesion.segment.evaluate`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from lesion.data.io import resize_image
from lesion.errors import ConfigError, DataError, unknown_option
from lesion.segment.masks import MaskFolder
from lesion.segment.medsam import MedSamSegmenter

#: The fusion rules, in the order the CLI and the page list them.
FUSION_RULES: tuple[str, ...] = ("mean", "vote", "staple")

#: The members chosen per rule on HAM10000 held-out images by ``bench/bench_segment.py`` (PH2 chose nothing), as
#: roles: ``otsu``, ``unet`` / ``linknet`` (the shipped networks of the domain), ``medsam[otsu]`` / ``medsam[unet
#: box]`` (MedSAM prompted by the Otsu / U-Net box). ``rule`` is the best of the three there (mean IoU 0.838 vs
#: 0.833 for vote and STAPLE). Caveats: those ids also picked the U-Net's best epoch, and MedSAM's training data
#: include ISIC images, so HAM10000 favours the networks and MedSAM a little.
RECOMMENDED: dict[str, dict] = {
    "derm": {
        "rule": "mean",
        "members_by_rule": {"mean": ("unet", "linknet"), "vote": ("unet", "linknet", "medsam[unet box]"),
                            "staple": ("unet", "linknet", "medsam[unet box]")},
        "chosen_on": ("HAM10000 held-out: 200 seeded images (seed 0) of the 665 held-out ids of "
                      "derm_unet_efficientnet_lite0, mean per-image IoU over the 26 subsets (2+ of the 5 roles) per "
                      "rule; bench/bench_segment.py 2026-12-04; PH2 chose nothing"),
    },
}

Segmenter = Callable[[np.ndarray], np.ndarray]


def check_rule(rule: str) -> str:
    """``rule`` lower-cased, or a :class:`ConfigError` listing :data:`FUSION_RULES`."""
    r = str(rule).strip().lower()
    if r not in FUSION_RULES:
        raise unknown_option("fusion rule", rule, FUSION_RULES)
    return r


def as_probability(output: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A member's output as float32 ``[H, W]`` in 0..1 (bool -> 0 / 1), resized to ``shape`` when given.

    A ``[1, h, w]`` or ``[h, w, 1]`` output is squeezed; a probability map of another size is resized linearly,
    a mask by nearest neighbour.
    """
    out = np.asarray(output)
    if out.ndim == 3 and 1 in (out.shape[0], out.shape[-1]):
        out = out.squeeze(0) if out.shape[0] == 1 else out[..., 0]
    if out.ndim != 2:
        raise DataError(f"A fusion member must return a 2-D mask or probability map, got shape {out.shape}.")
    is_mask = out.dtype == np.bool_
    if shape is not None and out.shape != tuple(shape):
        out = resize_image(out, tuple(shape), interpolation="nearest" if is_mask else "linear")
    out = out.astype(np.float32)
    if not is_mask and (np.nanmin(out) < 0 or np.nanmax(out) > 1):
        raise DataError("A fusion member returned values outside 0..1; give probabilities or masks.")
    return out


@dataclass(frozen=True)
class StapleResult:
    """Output of :func:`staple`.

    Attributes:
        probability: float ``[H, W]``: posterior probability that each pixel is lesion.
        sensitivity: per member, the estimated P(member says lesion | lesion).
        specificity: per member, the estimated P(member says background | background).
        prior: the global prior P(lesion) used (the share of lesion decisions over all members and pixels).
        iterations: EM iterations run.
    """

    probability: np.ndarray
    sensitivity: np.ndarray
    specificity: np.ndarray
    prior: float
    iterations: int


def staple(masks: Sequence[np.ndarray] | np.ndarray, max_iter: int = 100, tol: float = 1e-7,
           init: float = 0.9, eps: float = 1e-6) -> StapleResult:
    """Binary STAPLE (Warfield et al. 2004) over ``R`` members' masks of one image.

    EM over the hidden true mask T. E-step: per pixel, ``W = f·Πp^D(1-p)^(1-D) / (that + (1-f)·Πq^(1-D)(1-q)^D)``
    (in log space); M-step: ``p_j = ΣW·D_j / ΣW``, ``q_j = Σ(1-W)(1-D_j) / Σ(1-W)``. The prior ``f`` is the global
    share of lesion decisions, fixed (as in the paper and ITK's filter); p and q start at ``init`` and are kept in
    ``[eps, 1-eps]``, so a perfect member gets a large but finite weight. Stops when no ``p_j`` / ``q_j`` moves by
    more than ``tol``.

    Args:
        masks: ``R`` bool (or 0/1) masks ``[H, W]`` of the same shape, or an array ``[R, H, W]``.

    Returns:
        :class:`StapleResult`; when every member says background (or lesion) everywhere, the probability is that
        answer and p = q = 1.
    """
    d = np.asarray(masks)
    if d.ndim != 3 or d.shape[0] < 1:
        raise DataError(f"STAPLE needs masks [R, H, W] of one shape, got {d.shape}.")
    if d.shape[0] > 62:
        raise DataError(f"STAPLE here takes at most 62 members, got {d.shape[0]}.")
    shape = d.shape[1:]
    d = d.reshape(d.shape[0], -1).astype(bool)
    r = d.shape[0]
    f = float(d.mean())
    if f <= 0.0 or f >= 1.0:  # unanimous everywhere: nothing to estimate
        return StapleResult(np.full(shape, f, np.float32), np.ones(r), np.ones(r), f, 0)
    # The posterior of a pixel depends only on its column of decisions, so the EM runs over the distinct columns
    # (at most 2^R) weighted by how many pixels have each: the same fixed point, without an [R, N] pass per step.
    codes = np.zeros(d.shape[1], np.int64)
    for j in range(r):
        codes[d[j]] |= 1 << j
    if r <= 20:  # a table of every possible column: no sort
        table = np.bincount(codes, minlength=1 << r)
        uniq = np.flatnonzero(table)
        count = table[uniq]
        slot = np.zeros(1 << r, np.int64)
        slot[uniq] = np.arange(len(uniq))
        inverse = slot[codes]
    else:
        uniq, inverse, count = np.unique(codes, return_inverse=True, return_counts=True)
    dp = ((uniq[None, :] >> np.arange(r, dtype=np.int64)[:, None]) & 1).astype(np.float64)  # [R, U]
    n = count.astype(np.float64)
    p = np.full(r, float(init))
    q = np.full(r, float(init))
    log_f, log_1f = np.log(f), np.log1p(-f)

    def posterior(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        a = log_f + np.log(p) @ dp + np.log1p(-p) @ (1 - dp)  # log P(T=1, D)
        b = log_1f + np.log(q) @ (1 - dp) + np.log1p(-q) @ dp  # log P(T=0, D)
        return 1.0 / (1.0 + np.exp(np.clip(b - a, -700, 700)))

    it = 0
    for it in range(1, max_iter + 1):
        w = posterior(p, q)  # E-step
        sw, sn = float(n @ w), float(n @ (1 - w))
        p_new = np.clip((dp @ (n * w)) / max(sw, eps), eps, 1 - eps)  # M-step
        q_new = np.clip(((1 - dp) @ (n * (1 - w))) / max(sn, eps), eps, 1 - eps)
        moved = max(np.abs(p_new - p).max(), np.abs(q_new - q).max())
        p, q = p_new, q_new
        if moved < tol:
            break
    w = posterior(p, q)
    return StapleResult(w[inverse].reshape(shape).astype(np.float32), p, q, f, it)


def fuse_probabilities(outputs: Sequence[np.ndarray], rule: str, thresholds: Sequence[float] | None = None,
                       shape: tuple[int, int] | None = None) -> np.ndarray:
    """The fused foreground score ``[H, W]`` (float32, 0..1) of several members' outputs (see the module docstring).

    Args:
        outputs: per member, a bool mask or a probability map in 0..1 (resized to ``shape``, default the first's).
        rule: one of :data:`FUSION_RULES`.
        thresholds: per member, the probability above which its pixel counts as lesion for ``vote`` / ``staple``
            (default 0.5; a bool mask ignores it).

    Raises:
        ConfigError: an unknown rule, or thresholds of another length. DataError: no outputs.
    """
    rule = check_rule(rule)
    if not len(outputs):
        raise DataError("A fusion needs at least one member's output.")
    thr = [0.5] * len(outputs) if thresholds is None else [float(t) for t in thresholds]
    if len(thr) != len(outputs):
        raise ConfigError(f"{len(outputs)} members but {len(thr)} thresholds.")
    first = as_probability(outputs[0], shape)
    probs = [first] + [as_probability(o, first.shape) for o in outputs[1:]]
    if rule == "mean":
        return np.mean(probs, axis=0).astype(np.float32)
    masks = np.stack([p > t for p, t in zip(probs, thr)])
    if rule == "vote":
        return masks.mean(axis=0).astype(np.float32)
    return staple(masks).probability


def fuse_masks(outputs: Sequence[np.ndarray], rule: str, thresholds: Sequence[float] | None = None,
               threshold: float = 0.5, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Bool ``[H, W]``: :func:`fuse_probabilities` ``> threshold`` (0.5: vote = strict majority)."""
    return fuse_probabilities(outputs, rule, thresholds, shape) > float(threshold)


def member_threshold(member) -> float:
    """The probability above which a member's pixel is lesion: its own ``threshold`` (a network's card), else 0.5."""
    t = getattr(member, "threshold", None)
    return 0.5 if t is None else float(t)


class FusedSegmenter:
    """Several segmenters fused by one rule, as one segmentation method.

    ``fuse(image, image_id)`` -> foreground score ``[H, W]`` in 0..1 (threshold it like a probability; 0.5 for
    the strict majority of ``vote``). A :class:`MaskFolder` member answers by ``image_id``, a MedSAM member with the
    ``boxes`` prompt takes its box from its table by ``image_id``; so the evaluators call :meth:`fuse` with the id
    (``__call__`` with pixels only works without such members).

    Args:
        members: name -> segmenter (at least two).
        rule: one of :data:`FUSION_RULES`.
        name: the method name; default ``fuse:RULE(a+b+c)``.
    """

    threshold = 0.5

    def __init__(self, members: Mapping[str, object], rule: str = "vote", name: str | None = None):
        self.rule = check_rule(rule)
        self.members = dict(members)
        if len(self.members) < 2:
            raise ConfigError(f"A fusion needs at least two members, got {len(self.members)}: {list(self.members)}.")
        self.name = name or fusion_name(self.rule, list(self.members))
        self.last_staple: StapleResult | None = None  # the last image's STAPLE estimates (rule 'staple')

    @property
    def needs_id(self) -> bool:
        """True when a member answers by image id (a folder of masks, MedSAM with a box table)."""
        return any(isinstance(m, MaskFolder) or (isinstance(m, MedSamSegmenter) and m.prompt == "boxes")
                   for m in self.members.values())

    def member_outputs(self, image: np.ndarray, image_id: str | None = None) -> dict[str, np.ndarray]:
        """Each member's output for one image: name -> bool mask or probability ``[H, W]`` at the image's size.

        Raises:
            DataError: a member needs the image id (none given) or has nothing for it.
        """
        shape = tuple(np.asarray(image).shape[:2])
        out = {}
        for name, m in self.members.items():
            if isinstance(m, MaskFolder):
                if image_id is None:
                    raise DataError(f"Fusion member {name} is a folder of masks: it needs the image id.")
                out[name] = m.mask_for(str(image_id), shape)
            elif isinstance(m, MedSamSegmenter) and m.prompt == "boxes":
                box = m.boxes_for(str(image_id)) if image_id is not None else None
                if box is None:
                    raise DataError(f"No box for image '{image_id}' in the box file of fusion member {name}.")
                out[name] = m(image, box=box)
            else:
                out[name] = m(image)
        return {k: _at_shape(v, shape) for k, v in out.items()}

    def fuse_outputs(self, outputs: Mapping[str, np.ndarray], rule: str | None = None) -> np.ndarray:
        """The fused score of already computed member outputs (name -> output), by ``rule`` (default this one's)."""
        rule = check_rule(rule or self.rule)
        names = [n for n in self.members if n in outputs]
        if len(names) != len(self.members):
            missing = [n for n in self.members if n not in outputs]
            raise DataError(f"Fusion outputs missing for {', '.join(missing)}.")
        arrays = [outputs[n] for n in names]
        thr = [member_threshold(self.members[n]) for n in names]
        if rule == "staple":
            shape = np.asarray(arrays[0]).shape
            masks = np.stack([as_probability(a, shape) > t for a, t in zip(arrays, thr)])
            self.last_staple = staple(masks)
            return self.last_staple.probability
        return fuse_probabilities(arrays, rule, thr)

    def fuse(self, image: np.ndarray, image_id: str | None = None, rule: str | None = None) -> np.ndarray:
        """Foreground score ``[H, W]`` in 0..1 of the fused members for one image."""
        return self.fuse_outputs(self.member_outputs(image, image_id), rule)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.fuse(image)

    def __repr__(self) -> str:
        return f"FusedSegmenter(rule={self.rule!r}, members={list(self.members)})"


def _at_shape(output: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A bool mask stays bool (resized nearest); anything else becomes a probability map (:func:`as_probability`)."""
    out = np.asarray(output)
    if out.dtype == np.bool_ and out.ndim == 2:
        return out if out.shape == tuple(shape) else resize_image(out, tuple(shape), "nearest")
    return as_probability(out, shape)


def fusion_name(rule: str, members: Sequence[str]) -> str:
    """The method name of a fusion: ``fuse:vote(otsu+derm_unet_efficientnet_lite0+medsam_lite[otsu])``."""
    return f"fuse:{check_rule(rule)}({'+'.join(members)})"
