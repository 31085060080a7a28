"""Images the model was not made for, generated for the scope check.

Each kind is a deterministic generator of BGR uint8 frames (seeded), so the
tests and `benchmarks/scope_check.py` see the same images:

- `flat`: one colour (greys, saturated colours, skin tones);
- `noise`: uniform, Gaussian and blocky colour noise;
- `text`: printed text (OpenCV fonts) on paper-like backgrounds;
- `pattern`: checkerboards, stripes, keyboard-like grids of keys with letters;
- `photo`: crops of the sample photos that scikit-learn and Matplotlib ship
  (a temple, a flower, a portrait), skipped when those packages are absent;
- `skin_photo`: shoot-like skin photos taken without a dermatoscope: a large
  field of skin with shading and pores, no dark vignette, and a small distant
  lesion (or none); some with skin lines, redness, glare, the body's edge
  against a background, defocus. These are the hard case: skin, but not dermoscopy.

`lesion_on_skin(seed, dermoscopy_image, fraction)` puts a *real* lesion (the
centre of a dermoscopy image, soft-edged, no vignette) into such a skin photo
at `fraction` of its short side: 0.1-0.3 looks like a phone photo taken from a
distance; larger fractions approach a close-up without a dermatoscope. Half of
them give the lesion a camera's look (softer, less contrast, glare).

NumPy and OpenCV only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

SKIN_TONES_BGR = ((180, 200, 240), (150, 175, 225), (120, 150, 205), (90, 120, 170), (60, 85, 130), (45, 60, 95))
WORDS = ("PATIENT CONSENT FORM", "keyboard", "Lorem ipsum dolor", "0123456789", "DermaEdge", "Invoice #4471",
         "the quick brown fox", "QWERTYUIOP", "Exit", "Room 12")


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _size(rng: np.random.Generator) -> tuple[int, int]:
    w = int(rng.choice([200, 320, 640, 800]))
    return w, int(w * rng.choice([0.75, 1.0, 0.5625]))


def flat(seed: int) -> np.ndarray:
    rng = _rng(seed)
    w, h = _size(rng)
    if seed % 3 == 0:
        colour = SKIN_TONES_BGR[seed % len(SKIN_TONES_BGR)]
    elif seed % 3 == 1:
        colour = (int(rng.integers(0, 256)),) * 3
    else:
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    img = np.empty((h, w, 3), np.uint8)
    img[:] = colour
    return img


def noise(seed: int) -> np.ndarray:
    rng = _rng(seed)
    w, h = _size(rng)
    kind = seed % 3
    if kind == 0:
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if kind == 1:
        mean = rng.integers(60, 200, 3)
        return np.clip(rng.normal(mean, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    blocks = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    return cv2.resize(blocks, (w, h), interpolation=cv2.INTER_NEAREST)


def text(seed: int) -> np.ndarray:
    rng = _rng(seed)
    w, h = _size(rng)
    paper = int(rng.integers(200, 256))
    img = np.full((h, w, 3), (paper - int(rng.integers(0, 20)), paper, paper), np.uint8)
    ink = tuple(int(v) for v in rng.integers(0, 90, 3))
    scale = w / 500
    y = int(30 * scale) + 5
    while y < h:
        words = " ".join(rng.choice(WORDS, 2))
        cv2.putText(img, words, (int(rng.integers(2, 20)), y), int(rng.choice([0, 1, 2, 3, 4, 6])),
                    scale * float(rng.uniform(0.6, 1.2)), ink, max(1, int(scale * 2)), cv2.LINE_AA)
        y += int(rng.integers(25, 50) * scale) + 4
    return img


def pattern(seed: int) -> np.ndarray:
    rng = _rng(seed)
    w, h = _size(rng)
    kind = seed % 3
    if kind == 0:  # checkerboard
        cell = int(rng.integers(8, 60))
        yy, xx = np.mgrid[0:h, 0:w]
        board = ((yy // cell + xx // cell) % 2).astype(np.uint8)
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        return np.where(board[..., None] == 1, a, b).astype(np.uint8)
    if kind == 1:  # stripes
        period = float(rng.uniform(6, 60))
        xx = np.arange(w)[None, :] + np.arange(h)[:, None] * float(rng.uniform(-1, 1))
        v = (np.sin(xx / period * 2 * np.pi) * 0.5 + 0.5)[..., None]
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        return (a * v + b * (1 - v)).astype(np.uint8)
    img = np.full((h, w, 3), int(rng.integers(20, 70)), np.uint8)  # a keyboard seen from above
    key = max(12, w // 14)
    for row in range(h // key):
        for col in range(w // key):
            x0, y0 = col * key + 2, row * key + 2
            grey = int(rng.integers(170, 235))
            cv2.rectangle(img, (x0, y0), (x0 + key - 5, y0 + key - 5), (grey, grey, grey), -1)
            cv2.putText(img, chr(65 + int(rng.integers(0, 26))), (x0 + key // 4, y0 + 2 * key // 3),
                        cv2.FONT_HERSHEY_SIMPLEX, key / 40, (30, 30, 30), 1, cv2.LINE_AA)
    return img


def sample_photo_paths() -> list[Path]:
    """Sample photos shipped by installed packages (scikit-learn, Matplotlib)."""
    paths: list[Path] = []
    for module, rel in (("sklearn.datasets", "images"), ("matplotlib", "mpl-data/sample_data")):
        try:
            mod = __import__(module, fromlist=["__file__"])
        except ImportError:
            continue
        folder = Path(mod.__file__).parent / rel
        paths += sorted(p for p in folder.glob("*.jpg"))
    return paths


def photo(seed: int, _cache: dict[str, list[np.ndarray]] = {}) -> np.ndarray:  # noqa: B006 - decoded once
    if "photos" not in _cache:
        _cache["photos"] = [img for p in sample_photo_paths() if (img := cv2.imread(str(p))) is not None]
    photos = _cache["photos"]
    if not photos:
        raise LookupError("no sample photos installed (scikit-learn or Matplotlib)")
    rng = _rng(seed)
    img = photos[seed % len(photos)]
    h, w = img.shape[:2]
    frac = float(rng.uniform(0.35, 1.0))
    ch, cw = max(16, int(h * frac)), max(16, int(w * frac))
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = img[y0 : y0 + ch, x0 : x0 + cw]
    if seed % 2:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


def skin_photo(seed: int) -> np.ndarray:
    """A phone-like photo of skin: lighting with a gradient, pores and fine texture, and as a phone camera
    sees it some of: skin lines, redness, a flash or window glare, the edge of the body against a background,
    defocus, sensor noise; a few hairs; a small distant lesion (or none); no dermatoscope vignette."""
    rng = _rng(seed)
    w = int(rng.choice([640, 800, 1280]))
    h = int(w * 0.75)
    tone = np.array(SKIN_TONES_BGR[seed % len(SKIN_TONES_BGR)], np.float32) + rng.normal(0, 8, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = 1.0 + 0.18 * ((xx / w - 0.5) * rng.uniform(-1, 1) + (yy / h - 0.5) * rng.uniform(-1, 1))
    low = cv2.resize(rng.normal(0, 1, (8, 8)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.2)
    img = tone * (shade + 0.04 * low + 0.03 * fine)[..., None]
    if rng.random() < 0.5:  # skin lines: a faint crossing grid of creases
        lines = np.zeros((h, w), np.float32)
        step = int(rng.integers(12, 40))
        for angle in rng.uniform(0, 180, 2):
            t = np.deg2rad(angle)
            phase = (xx * np.cos(t) + yy * np.sin(t)) % step
            lines += np.exp(-((phase - step / 2) ** 2) / 2.0)
        img *= (1.0 - float(rng.uniform(0.02, 0.06)) * cv2.GaussianBlur(lines, (0, 0), 1.0))[..., None]
    if rng.random() < 0.3:  # redness
        red = cv2.resize(rng.uniform(0, 1, (4, 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        img *= (1.0 + float(rng.uniform(0.05, 0.15)) * np.clip(red, 0, 1)[..., None] * np.array([-1.0, -1.0, 0.6], np.float32))
    for _ in range(int(rng.integers(0, 8))):  # a few hairs
        p1 = tuple(int(v) for v in rng.integers(0, [w, h]))
        p2 = (p1[0] + int(rng.integers(-150, 150)), p1[1] + int(rng.integers(-150, 150)))
        cv2.line(img, p1, p2, tuple(float(v) for v in tone * 0.35), 1, cv2.LINE_AA)
    if seed % 4:  # a small lesion far from the camera: 2-6% of the short side
        r = max(3, int(min(w, h) * rng.uniform(0.02, 0.06)))
        cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
        mask = np.zeros((h, w), np.float32)
        cv2.ellipse(mask, (cx, cy), (r, int(r * rng.uniform(0.6, 1.0))), float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, r / 4))[..., None]
        img = img * (1 - mask) + tone * float(rng.uniform(0.25, 0.55)) * mask
    if rng.random() < 0.4:  # the edge of the body: background beyond a soft curve along one side
        bg = rng.uniform(20, 230, 3).astype(np.float32)
        side = int(rng.integers(4))
        u, v = (xx / w, yy / h) if side < 2 else (yy / h, xx / w)
        edge = float(rng.uniform(0.1, 0.3)) + 0.05 * np.sin(v * float(rng.uniform(2, 6)))
        inside = (u if side % 2 == 0 else 1.0 - u) > edge
        soft = cv2.GaussianBlur((~inside).astype(np.float32), (0, 0), 3.0)[..., None]
        img = img * (1 - soft) + bg * (1.0 + 0.05 * low[..., None]) * soft
    img = _photo_look(img, rng)
    return np.clip(img, 0, 255).astype(np.uint8)


def _photo_look(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a phone adds: a glare highlight (flash or window), defocus, sensor noise (float BGR in, out)."""
    h, w = img.shape[:2]
    if rng.random() < 0.5:
        glare = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(1, 4))):
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(w * rng.uniform(0.01, 0.08)), int(h * rng.uniform(0.01, 0.05)))
            cv2.ellipse(glare, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        glare = cv2.GaussianBlur(glare, (0, 0), max(2.0, w / float(rng.uniform(60, 200))))[..., None]
        strength = float(rng.uniform(0.4, 0.85))
        img = img * (1 - glare * strength) + 250.0 * glare * strength
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.8, 2.5)))
    return img + rng.normal(0, float(rng.uniform(1, 5)), img.shape).astype(np.float32)


def lesion_on_skin(seed: int, dermoscopy: np.ndarray, fraction: float) -> np.ndarray:
    """A real lesion (`dermoscopy`, BGR) inside a lesion-free skin photo, `fraction` of its short side.

    Odd seeds also give the lesion a camera's look instead of a dermatoscope's: without immersion or
    polarised light the surface reflection hides the inner structures (softer, less contrast) and a
    highlight may sit on it."""
    bg = skin_photo(4 * seed)  # seed % 4 == 0: no synthetic lesion of its own
    h, w = dermoscopy.shape[:2]
    s = min(h, w)
    centre = dermoscopy[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    big_h, big_w = bg.shape[:2]
    side = max(8, int(min(big_h, big_w) * fraction))
    patch = cv2.resize(centre, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    rng = _rng(seed)
    y0, x0 = int(rng.integers(0, big_h - side + 1)), int(rng.integers(0, big_w - side + 1))
    roi = bg[y0 : y0 + side, x0 : x0 + side].astype(np.float32)
    # the dermatoscope's skin around the lesion takes this skin's colour (no halo of another light)
    ring = np.concatenate([patch[:2].reshape(-1, 3), patch[-2:].reshape(-1, 3),
                           patch[:, :2].reshape(-1, 3), patch[:, -2:].reshape(-1, 3)])
    patch *= roi.reshape(-1, 3).mean(axis=0) / np.maximum(np.median(ring, axis=0), 1.0)
    if seed % 2:
        patch = cv2.GaussianBlur(patch, (0, 0), max(0.5, side / float(rng.uniform(80, 200))))
        mean = patch.reshape(-1, 3).mean(axis=0)
        patch = mean + (patch - mean) * float(rng.uniform(0.6, 0.9))
        patch = _photo_look(patch, rng)
    mask = np.zeros((side, side), np.float32)
    cv2.circle(mask, (side // 2, side // 2), int(side * 0.45), 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), side / 12)[..., None]
    bg[y0 : y0 + side, x0 : x0 + side] = np.clip(roi * (1 - mask) + patch * mask, 0, 255).astype(np.uint8)
    return bg


KINDS: dict[str, Callable[[int], np.ndarray]] = {
    "flat": flat, "noise": noise, "text": text, "pattern": pattern, "photo": photo, "skin_photo": skin_photo,
}


def generate(kinds: tuple[str, ...] | None = None, per_kind: int = 20, seed: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """(kind, BGR frame) pairs, `per_kind` of each; `photo` is skipped when no sample photos are installed."""
    for kind in kinds or tuple(KINDS):
        if kind == "photo" and not sample_photo_paths():
            continue
        for i in range(per_kind):
            yield kind, KINDS[kind](seed * 10_000 + i)
