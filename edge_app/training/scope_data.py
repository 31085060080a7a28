"""What the scope network is fitted and judged on: dermoscopy per source, phone photos per patient.

- **Dermoscopy** (in scope), every staged source, each split its own way:
  `ham10000` and `isic_archive` by the model's splits (`models/splits/{val,test}.csv`,
  lesion-grouped; training = the rest of `labels.csv`), `isic2017` by its challenge
  split (`source` column), `isic2020` by patient (`lesion_id` is the patient id),
  60 / 20 / 20 with a fixed seed.
- **Phone photos** (`pad_ufes20`, not dermoscopy): assigned to `PHONE_FOLDS` folds by
  `patient_id`, so a patient's photos are never on both sides of a fold.
- **Device augmentation** (`scope_augment`) is applied alike to both sides: first, half the
  time, another source's geometry (300x300 like most phone photos, 200x150 like HAM10000,
  256x256 squashed like ISIC 2017/2020, 600x450 ...) with a JPEG re-encode, then
  `device_augment.augment_raw` (scale, squash, blur, JPEG, colour, vignette), then the device
  path's decode scaling. So neither image size, aspect nor JPEG quality says which side an
  image is on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..images import decode_image, encode_jpeg, read_image, reduce_to
from ..labels_csv import read_labels_csv
from .device_augment import augment_raw

DERMOSCOPY_SOURCES = ("ham10000", "isic_archive", "isic2017", "isic2020")
PHONE_SOURCE = "pad_ufes20"
PHONE_FOLDS = 5
SPLIT_SEED = 20
GEOMETRIES = ((300, 300), (200, 150), (256, 256), (600, 450), (640, 480), (450, 600), (320, 240))


@dataclass(frozen=True)
class Item:
    path: Path
    source: str  # dataset name
    split: str  # "train" | "val" | "test" for dermoscopy; "fold<k>" for phone photos
    group: str  # lesion / patient id


def _rows(path: Path) -> list[dict[str, str]]:
    return read_labels_csv(path)[0]


def dermoscopy_sources(data: Path, splits: Path) -> list[str]:
    """The datasets the model's splits name, then every other staged dermoscopy source under `data`."""
    named = sorted({r.get("dataset", "") for s in ("val", "test") for r in _rows(splits / f"{s}.csv")} - {""})
    return named + [s for s in DERMOSCOPY_SOURCES if s not in named and (data / s / "labels.csv").is_file()]


def dermoscopy_items(data: Path, splits: Path) -> list[Item]:
    """Every staged dermoscopy image with its source and split: a source the model's splits name is split by them
    (training = the rest of its labels.csv), `isic2017` by its challenge split, any other by `lesion_id` groups
    (ISIC 2020: the patient), 60 / 20 / 20 with a fixed seed."""
    held = {s: {r["file"] for r in _rows(splits / f"{s}.csv")} for s in ("val", "test")}
    named = {r.get("dataset", "") for s in ("val", "test") for r in _rows(splits / f"{s}.csv")}
    items = []
    for source in dermoscopy_sources(data, splits):
        labels = data / source / "labels.csv"
        if not labels.is_file():
            raise FileNotFoundError(f"{labels} not found: --data must hold the datasets the splits name")
        rows = _rows(labels)
        groups = sorted({r.get("lesion_id") or r["file"] for r in rows})
        order = np.random.default_rng(SPLIT_SEED).permutation(len(groups))
        cut = {groups[i]: ("train" if k < 0.6 * len(groups) else "val" if k < 0.8 * len(groups) else "test")
               for k, i in enumerate(order)}
        for r in rows:
            rel = f"{source}/{r['file']}"
            group = r.get("lesion_id") or r["file"]
            if source in named:
                split = "val" if rel in held["val"] else "test" if rel in held["test"] else "train"
            elif source == "isic2017" and r.get("source", "").startswith("isic2017_"):
                split = r["source"].removeprefix("isic2017_")
            else:
                split = cut[group]
            items.append(Item(data / rel, source, split, group))
    if not items:
        raise FileNotFoundError(f"no dermoscopy under {data}: --data must hold the datasets the splits name")
    return items


def phone_items(data: Path) -> list[Item]:
    """The staged phone photos, each with its patient-grouped fold."""
    labels = data / PHONE_SOURCE / "labels.csv"
    if not labels.is_file():
        raise FileNotFoundError(f"{labels} not found: --data must hold the staged phone photos ({PHONE_SOURCE})")
    rows = _rows(labels)
    patients = sorted({r["patient_id"] for r in rows})
    order = np.random.default_rng(SPLIT_SEED).permutation(len(patients))
    fold = {patients[i]: k % PHONE_FOLDS for k, i in enumerate(order)}
    return [Item(data / PHONE_SOURCE / r["file"], PHONE_SOURCE, f"fold{fold[r['patient_id']]}", r["patient_id"]) for r in rows]


def device_frame(path: Path, min_side: int) -> np.ndarray:
    """A file as the device path decodes it (scaled decode to `min_side`)."""
    return reduce_to(read_image(path, min_side=min_side), min_side)


def scope_augment(frame: np.ndarray, rng: np.random.Generator, min_side: int) -> np.ndarray:
    """One decoded frame -> a copy as another device, uploader or camera might have made it, decoded as the device would."""
    im = frame
    if rng.random() < 0.5:
        w, h = GEOMETRIES[int(rng.integers(len(GEOMETRIES)))]
        if rng.random() < 0.5:
            w, h = h, w
        im = cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA)
        im = decode_image(encode_jpeg(im, int(rng.integers(70, 96))))
    return reduce_to(augment_raw(im, rng), min_side)


# How many training images of each dermoscopy source the fit samples (at most), and how many augmented copies each gets.
TRAIN_SAMPLE = 800
DERM_COPIES = 2
PHONE_COPIES = 6
GENERATED_PER_KIND = 60
HELD_OUT_PER_KIND = 50


def _resized_jpeg(frame: np.ndarray, size: tuple[int, int], quality: int) -> np.ndarray:
    return decode_image(encode_jpeg(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), quality))


SHORTCUT_CHECKS = {  # (which side, name): a copy at the other side's geometry
    ("phone", "phone_as_ham10000_200x150"): lambda f: _resized_jpeg(f, (200, 150), 90),
    ("phone", "phone_as_isic_256x256_squashed"): lambda f: _resized_jpeg(f, (256, 256), 75),
    ("derm", "dermoscopy_as_phone_300x300"): lambda f: _resized_jpeg(f, (300, 300), 92),
}


def fit_frames(data: Path, splits: Path, min_side: int, seed: int = 0, train_sample: int = TRAIN_SAMPLE,
               per_kind: int = GENERATED_PER_KIND) -> Iterator[tuple[dict, np.ndarray]]:
    """(what the image is, decoded frame) for everything the scope network's head is fitted and judged on.

    Meta keys: role (derm / phone / gen), source, split, kind, aug (0 as is, > 0 augmented copy, < 0 shortcut
    check). Dermoscopy: a sample of each source's training split with `DERM_COPIES` augmented copies, all of
    validation and test (test copies at the phone photos' geometry: a shortcut check). Phone photos with
    `PHONE_COPIES` copies and their shortcut checks. Generated: the fit's kinds (seed 1, real training lesions
    in skin photos) with one copy each, and held-out kinds (seed 7, real test lesions).
    """
    from . import ood_images

    rng = np.random.default_rng(seed)
    derm = dermoscopy_items(data, splits)
    chosen = []
    for source in sorted({i.source for i in derm}):
        train = [i for i in derm if i.source == source and i.split == "train"]
        chosen += [train[j] for j in sorted(rng.permutation(len(train))[:train_sample])]
    chosen += [i for i in derm if i.split in ("val", "test")]
    train_lesions, test_lesions = [], []
    for n, item in enumerate(chosen + phone_items(data)):
        frame = device_frame(item.path, min_side)
        role = "phone" if item.source == PHONE_SOURCE else "derm"
        meta = {"role": role, "source": item.source, "split": item.split, "kind": role}
        yield {**meta, "aug": 0}, frame
        copies = PHONE_COPIES if role == "phone" else DERM_COPIES if item.split == "train" else 0
        for a in range(copies):
            yield {**meta, "aug": a + 1}, scope_augment(frame, rng, min_side)
        for (side, name), fn in SHORTCUT_CHECKS.items():
            if side == role and (role == "phone" or (item.split == "test" and n % 3 == 0)):  # a third of test dermoscopy
                yield {**meta, "kind": name, "aug": -1}, reduce_to(fn(frame), min_side)
        if role == "derm" and item.split == "train" and len(train_lesions) < 300 and rng.random() < 0.1:
            train_lesions.append(frame)
        if role == "derm" and item.split == "test" and len(test_lesions) < 100 and rng.random() < 0.05:
            test_lesions.append(frame)
    gen = {"role": "gen", "source": "generated"}
    fit_kinds = list(ood_images.generate(per_kind=per_kind, seed=1))
    r1 = np.random.default_rng(1)
    fit_kinds += [("lesion_on_skin", ood_images.lesion_on_skin(10_000 + i, les, float(r1.uniform(0.1, 0.6))))
                  for i, les in enumerate(train_lesions)]
    for kind, frame in fit_kinds:
        frame = reduce_to(frame, min_side)
        yield {**gen, "split": "train", "kind": kind, "aug": 0}, frame
        yield {**gen, "split": "train", "kind": kind, "aug": 1}, scope_augment(frame, rng, min_side)
    for kind, frame in ood_images.generate(per_kind=min(per_kind, HELD_OUT_PER_KIND), seed=7):
        yield {**gen, "split": "test", "kind": kind, "aug": 0}, reduce_to(frame, min_side)
    r7 = np.random.default_rng(7)
    for i, les in enumerate(test_lesions):
        far = ood_images.lesion_on_skin(i, les, float(r7.uniform(0.1, 0.3)))
        near = ood_images.lesion_on_skin(i, les, float(r7.uniform(0.5, 0.7)))
        yield {**gen, "split": "test", "kind": "lesion_on_skin", "aug": 0}, reduce_to(far, min_side)
        yield {**gen, "split": "test", "kind": "lesion_close_up_without_dermatoscope", "aug": 0}, reduce_to(near, min_side)
