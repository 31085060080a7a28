"""The scope network's head: fitted, thresholded and judged on features, per source and per patient.

The network (`scope_net_export.py`) gives pooled features of the decoded frame; everything
here works on those features (an array per image plus what the image is), so the same code
serves the experiments on Keras features and `edge-train scope` on the shipped `.tflite`'s
features through LiteRT (no TensorFlow).

- **Head**: logistic regression on standardised features (scikit-learn), dermoscopy = 0,
  not dermoscopy = 1. Dermoscopy weighs half, each source an equal share of it (as is and
  device-augmented copies); phone photos `PHONE_WEIGHT` and the generated kinds the rest.
- **Threshold**: on validation dermoscopy of each source separately: the largest of the
  sources' (1 - `NET_VAL_SHARE`) quantiles, so no source has more than that share flagged
  by this part.
- **Reports** (`net_reports`): phone photos flagged on held-out patients (patient-grouped
  folds: the head refitted without the fold's patients), and with no phone photo in the fit;
  each dermoscopy source left out of the fit and the thresholds; validation and test per
  source; the held-out generated kinds; shortcut checks (dermoscopy at the phone photos'
  300x300 JPEG geometry, phone photos at HAM10000's 200x150 and ISIC's 256x256).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..scope import DermoscopyHead, quantile_threshold

NET_VAL_SHARE = 0.008  # this part's share of each source's validation dermoscopy (novelty adds <= 0.1%: <= 1% per source)
NET_C = 0.01  # inverse L2 strength: patient-grouped CV 94.6% / 95.9% / 95.4% at C 0.003 / 0.01 / 0.03 (experiment subset)
PHONE_WEIGHT = 0.3  # share of the fit's weight on phone photos; generated negatives get 0.5 - this


@dataclass
class NetSet:
    """Scope-network features of every image of the fit and the reports, with what each image is."""

    features: np.ndarray  # (N, D)
    role: np.ndarray  # "derm" | "phone" | "gen"
    source: np.ndarray  # dataset, or "generated"
    split: np.ndarray  # train / val / test for dermoscopy and generated; fold<k> for phone photos
    kind: np.ndarray  # "derm", "phone", a generated kind, or a shortcut check's name
    aug: np.ndarray  # 0 = as is, > 0 = a device-augmented copy, < 0 = a shortcut check's copy

    def mask(self, **conditions: str) -> np.ndarray:
        m = np.ones(len(self.role), bool)
        for key, value in conditions.items():
            m &= getattr(self, key) == value
        return m


def fit_head(data: NetSet, drop_fold: str | None = None, no_phone: bool = False, drop_source: str | None = None,
             c: float = NET_C) -> DermoscopyHead:
    """The head, thresholded; without one phone fold, all phone photos, or one dermoscopy source if asked."""
    from sklearn.linear_model import LogisticRegression

    derm = (data.role == "derm") & (data.split == "train") & (data.aug >= 0) & (data.source != drop_source)
    phone = (data.role == "phone") & (data.aug >= 0) & (data.split != drop_fold) & (not no_phone)
    gen = (data.role == "gen") & (data.split == "train")
    w = np.zeros(len(data.role))
    sources = np.unique(data.source[derm])
    for s in sources:
        m = derm & (data.source == s)
        w[m] = 0.5 / (len(sources) * m.sum())
    phone_share = PHONE_WEIGHT if phone.any() else 0.0
    if phone.any():
        w[phone] = phone_share / phone.sum()
    w[gen] = (0.5 - phone_share) / gen.sum()
    use = w > 0
    x = data.features[use].astype(np.float64)
    y = (data.role[use] != "derm").astype(int)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-3
    lr = LogisticRegression(C=c, max_iter=3000).fit((x - mean) / scale, y, sample_weight=w[use] * use.sum())
    head = DermoscopyHead(mean.astype(np.float32), scale.astype(np.float32), lr.coef_[0].astype(np.float32),
                          float(lr.intercept_[0]), float("inf"))
    head.threshold = net_threshold(head, data, exclude=drop_source)
    return head


def net_threshold(head: DermoscopyHead, data: NetSet, exclude: str | None = None) -> float:
    """The largest of the validation sources' (1 - NET_VAL_SHARE) quantiles of the head's score."""
    val = (data.role == "derm") & (data.split == "val") & (data.aug == 0)
    scores = head.score_descriptors(data.features)
    sources = [s for s in np.unique(data.source[val]) if s != exclude]
    if not sources:
        raise ValueError("no validation dermoscopy to set the scope network's threshold on")
    return max(quantile_threshold(scores[val & (data.source == s)], NET_VAL_SHARE) for s in sources)


def flagged(head: DermoscopyHead, data: NetSet, mask: np.ndarray) -> dict[str, float | int]:
    out = head.score_descriptors(data.features[mask]) > head.threshold
    return {"flagged": round(float(out.mean()), 4) if len(out) else None, "n": int(mask.sum())}


def net_reports(data: NetSet, head: DermoscopyHead) -> dict:
    """The reports of the module docstring; `head` is the one fitted on everything."""
    as_is = data.aug == 0
    derm = data.role == "derm"
    sources = sorted(np.unique(data.source[derm]))
    phone = (data.role == "phone") & as_is
    folds = sorted(np.unique(data.split[phone]))
    held = np.zeros(len(data.role), bool)
    for fold in folds:  # each phone photo (and its shortcut-check copies) scored by a head that never saw its patient
        h = fit_head(data, drop_fold=fold)
        m = (data.role == "phone") & (data.aug <= 0) & (data.split == fold)
        held[m] = h.score_descriptors(data.features[m]) > h.threshold
    shortcuts = {}
    for k in np.unique(data.kind[data.aug < 0]):
        m = data.kind == k
        out = held[m] if data.role[m][0] == "phone" else head.score_descriptors(data.features[m]) > head.threshold
        shortcuts[str(k)] = {"flagged": round(float(out.mean()), 4), "n": int(m.sum())}
    no_phone = fit_head(data, no_phone=True)
    left_out = {}
    for s in sources if len(sources) > 1 else ():  # fitted and thresholded on the other sources
        h = fit_head(data, drop_source=s)
        m = derm & as_is & (data.source == s) & (data.split != "train")
        left_out[s] = flagged(h, data, m)
    gen_test = (data.role == "gen") & (data.split == "test")
    return {
        "phone_photos_held_out_patients": {"flagged": round(float(held[phone].mean()), 4), "n": int(phone.sum()),
                                           "folds": len(folds)},
        "phone_photos_no_phone_in_fit": flagged(no_phone, data, phone),
        "dermoscopy_val": {s: flagged(head, data, derm & as_is & (data.split == "val") & (data.source == s)) for s in sources},
        "dermoscopy_test": {s: flagged(head, data, derm & as_is & (data.split == "test") & (data.source == s)) for s in sources},
        "dermoscopy_source_left_out": left_out,
        "generated_held_out": {str(k): flagged(head, data, gen_test & (data.kind == k)) for k in np.unique(data.kind[gen_test])},
        "shortcut_checks": shortcuts,
    }
