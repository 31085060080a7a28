"""Fit the scope check (`edge_app.scope`): novelty distance + not-dermoscopy head.

One implementation for the exporter (Keras features, `training/export.py`) and
for `edge-train scope` (refits the sidecar of an exported model through the
device runtime, no TensorFlow): both hand in a function from model tensors to
feature maps, and everything else happens here.

- **In scope** (positives): a sample of training-split dermoscopy as it is,
  plus one copy of each as another device might have taken it
  (`device_augment.augment_raw`), so that the head does not learn one
  dermatoscope's look. Each dataset gets half the weight.
- **Not dermoscopy** (negatives): the generated kinds of `ood_images` (seed
  `NEGATIVE_SEED`; the benchmark draws its own with another seed) and real
  *training* lesions put into skin photos without a dermatoscope at 10-60% of
  the frame (the benchmark uses test lesions).
- **Thresholds** on validation dermoscopy only: the novelty part flags at most
  `NOVELTY_VAL_SHARE`, the head at most `HEAD_VAL_SHARE` (together <= 3%,
  the issue's contract, with room for other dermatoscopes).
- **Leave one kind out**: refitted without each negative kind in turn, the
  share of that kind still flagged: how the check fares on a kind of picture it
  was not shown, the honest estimate for real pictures nobody generated.
- **Leave one source out**: refitted and thresholded without one dermoscopy
  source, the share of that source's images flagged: what a dermatoscope the
  check never saw may expect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .. import scope as scope_lib
from ..images import reduce_to
from ..preprocess import Preprocessor
from . import ood_images
from .device_augment import augment_raw

FeatureFn = Callable[[np.ndarray], np.ndarray]  # model tensors (N, S, S, 3) -> feature maps (N, h, w, C)

NEGATIVE_SEED = 1  # benchmarks/scope_check.py generates with seed 7: different images
NEGATIVES_PER_KIND = 60
LESION_ON_SKIN = 300
LESION_FRACTION = (0.1, 0.6)
NOVELTY_VAL_SHARE = 0.001
HEAD_VAL_SHARE = 0.005
# Inverse L2 strength of the logistic regression, chosen on the two held-out reports below (head threshold at 0.5%):
# leaving isic_archive out, C 0.1 / 0.01 / 0.001 flag 11% / 5.5% / 3.0% of that unseen source; leaving the lesions in
# skin photos out of the negatives, they still flag 89% / 85% / 71% of them. Weak weights cannot latch onto one
# dermatoscope's look, but generalise less to unseen kinds of photo; 0.01 balances the two.
HEAD_C = 0.01
BATCH = 64


@dataclass
class ScopeSet:
    """Descriptors (pooled features) of the images the scope check is fitted and calibrated on."""

    train: np.ndarray  # training dermoscopy as is
    train_groups: np.ndarray  # dataset of each
    augmented: np.ndarray  # the same images as other devices might take them
    negatives: np.ndarray
    negative_kinds: np.ndarray
    val: np.ndarray
    val_groups: np.ndarray


def descriptors(tensors: Iterable[np.ndarray], feature_fn: FeatureFn) -> np.ndarray:
    """Model tensors (one at a time or an array) -> pooled descriptors (N, 2C), in batches."""
    out, batch = [], []
    for t in tensors:
        batch.append(t)
        if len(batch) == BATCH:
            out.append(scope_lib.pooled(feature_fn(np.stack(batch))))
            batch = []
    if batch:
        out.append(scope_lib.pooled(feature_fn(np.stack(batch))))
    if not out:
        raise ValueError("no images to describe")
    return np.concatenate(out)


def device_tensors(frames: Iterable[np.ndarray], preprocessor: Preprocessor, min_side: int) -> Iterator[np.ndarray]:
    """Frames -> model tensors as the device path makes them (shrink to `min_side`, then the six stages)."""
    for frame in frames:
        yield preprocessor.run(reduce_to(frame, min_side)).tensor


def negative_frames(lesion_frames: list[np.ndarray], seed: int = NEGATIVE_SEED) -> Iterator[tuple[str, np.ndarray]]:
    """(kind, frame): the generated kinds, then real lesions in skin photos without a dermatoscope."""
    yield from ood_images.generate(per_kind=NEGATIVES_PER_KIND, seed=seed)
    rng = np.random.default_rng(seed)
    for i in range(min(LESION_ON_SKIN, len(lesion_frames))):
        fraction = float(rng.uniform(*LESION_FRACTION))
        yield "lesion_on_skin", ood_images.lesion_on_skin(seed * 10_000 + i, lesion_frames[i], fraction)


def augmented_frames(frames: list[np.ndarray], seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    for frame in frames:
        yield augment_raw(frame, rng)


def build_set(train_frames: list[np.ndarray], train_groups: list[str], val_frames: Iterable[np.ndarray],
              val_groups: list[str], preprocessor: Preprocessor, min_side: int, feature_fn: FeatureFn,
              seed: int = 0) -> ScopeSet:
    """Describe everything the fit needs, each frame through the device path (`device_tensors`)."""
    tensors = lambda frames: device_tensors(frames, preprocessor, min_side)
    kinds, negs = zip(*negative_frames(train_frames), strict=True)
    return ScopeSet(
        train=descriptors(tensors(train_frames), feature_fn), train_groups=np.asarray(train_groups),
        augmented=descriptors(tensors(augmented_frames(train_frames, seed)), feature_fn),
        negatives=descriptors(tensors(negs), feature_fn), negative_kinds=np.asarray(kinds),
        val=descriptors(tensors(val_frames), feature_fn), val_groups=np.asarray(val_groups),
    )


def _fit(data: ScopeSet, drop_source: str | None = None, drop_kind: str | None = None) -> scope_lib.ScopeCheck:
    """Novelty + head, thresholds on validation; without one dermoscopy source or one negative kind if asked."""
    from sklearn.linear_model import LogisticRegression

    keep_pos, keep_val = data.train_groups != drop_source, data.val_groups != drop_source
    keep_neg = data.negative_kinds != drop_kind
    novelty = scope_lib.fit_descriptors(data.train[keep_pos])
    novelty.threshold = scope_lib.quantile_threshold(novelty.score_descriptors(data.val[keep_val]), NOVELTY_VAL_SHARE)
    pos = np.concatenate([data.train[keep_pos], data.augmented[keep_pos]])
    groups = np.concatenate([data.train_groups[keep_pos], data.train_groups[keep_pos]])
    neg = data.negatives[keep_neg]
    x = np.concatenate([pos, neg]).astype(np.float64)
    y = np.r_[np.zeros(len(pos)), np.ones(len(neg))]
    names = np.unique(groups)  # each dataset an equal share of the dermoscopy weight; dermoscopy and the rest weigh alike
    w_pos = np.zeros(len(pos))
    for g in names:
        w_pos[groups == g] = 1.0 / (len(names) * np.sum(groups == g))
    w = np.r_[w_pos, np.full(len(neg), 1.0 / len(neg))] * len(y) / 2
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-3
    lr = LogisticRegression(C=HEAD_C, max_iter=5000).fit((x - mean) / scale, y, sample_weight=w)
    head = scope_lib.DermoscopyHead(mean.astype(np.float32), scale.astype(np.float32),
                                    lr.coef_[0].astype(np.float32), float(lr.intercept_[0]), float("inf"))
    head.threshold = scope_lib.quantile_threshold(head.score_descriptors(data.val[keep_val]), HEAD_VAL_SHARE)
    return scope_lib.ScopeCheck(novelty, head)


def fit_scope_check(data: ScopeSet, held_out_reports: bool = True) -> tuple[scope_lib.ScopeCheck, dict]:
    """The scope check and the manifest's `scope` block (thresholds, validation shares, and with
    `held_out_reports` the leave-one-kind-out and leave-one-source-out shares)."""
    check = _fit(data)
    novelty, head = check.novelty, check.head
    val_out = check.score_descriptors(data.val) > check.threshold
    neg_out = check.score_descriptors(data.negatives) > check.threshold
    block = {
        "method": f"{scope_lib.METHOD} | logistic not-dermoscopy head",
        "descriptor": "spatial mean + std of the last feature map",
        "components": int(novelty.components.shape[0]),
        "threshold": check.threshold,
        "novelty_threshold": novelty.threshold,
        "head_threshold": head.threshold,
        "head_l2_c": HEAD_C,
        "score": "max(novelty - novelty_threshold, head logit - head_threshold); out of scope above 0",
        "val_flagged": round(float(val_out.mean()), 4),
        "val_flagged_by_dataset": {str(g): round(float(val_out[data.val_groups == g].mean()), 4)
                                   for g in np.unique(data.val_groups)},
        "n_val": len(data.val), "n_train": len(data.train), "n_augmented": len(data.augmented),
        "negatives": {str(k): int(np.sum(data.negative_kinds == k)) for k in np.unique(data.negative_kinds)},
        "negatives_flagged_in_fit": round(float(neg_out.mean()), 4),
        "rule": (f"novelty above the {100 * (1 - NOVELTY_VAL_SHARE):.1f}th and head above the "
                 f"{100 * (1 - HEAD_VAL_SHARE):.1f}th percentile of validation dermoscopy (target <= 3% flagged)"),
    }
    if held_out_reports:
        block["leave_one_kind_out_flagged"] = leave_one_kind_out_shares(data)
        if len(np.unique(data.train_groups)) > 1:
            block["leave_one_source_out_flagged"] = leave_one_source_out_shares(data)
    return check, block


def leave_one_kind_out_shares(data: ScopeSet) -> dict[str, float]:
    """Share of each negative kind flagged by a check whose head never saw that kind."""
    shares = {}
    for kind in np.unique(data.negative_kinds):
        held = data.negative_kinds == kind
        check = _fit(data, drop_kind=kind)
        shares[str(kind)] = round(float(np.mean(check.score_descriptors(data.negatives[held]) > check.threshold)), 4)
    return shares


def leave_one_source_out_shares(data: ScopeSet) -> dict[str, dict[str, float]]:
    """Share of each dermoscopy source flagged by a check fitted and thresholded without it (its sampled training
    and its validation images): what another dermatoscope may expect."""
    shares = {}
    for source in np.unique(data.train_groups):
        held_train, held_val = data.train_groups == source, data.val_groups == source
        if held_train.all() or held_val.all():  # nothing left to fit or to set thresholds on
            continue
        check = _fit(data, drop_source=source)
        images = np.concatenate([data.train[held_train], data.val[held_val]])
        shares[str(source)] = {"flagged": round(float(np.mean(check.score_descriptors(images) > check.threshold)), 4),
                               "n": len(images)}
    return shares
