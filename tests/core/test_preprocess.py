import cv2
import numpy as np
import pytest

from edge_app.preprocess import (
    PREPROCESS_VERSION,
    STAGES,
    Preprocessor,
    PreprocessParams,
    contrast,
    crop,
    dehair,
    normalize,
    to_model_range,
)
from tests.conftest import make_lesion_image


@pytest.mark.parametrize("size", [(150, 200), (960, 1280), (3000, 4000), (480, 480)])
def test_frames_of_any_size_become_a_model_tensor_with_every_stage_timed(size):
    h, w = size
    result = Preprocessor().run(make_lesion_image(w, h))
    assert result.tensor.shape == (128, 128, 3) and result.tensor.dtype == np.float32
    assert -1.01 <= result.tensor.min() and result.tensor.max() <= 1.01
    assert list(result.timings_ms) == list(STAGES)
    assert all(t >= 0 for t in result.timings_ms.values())


def test_crop_removes_the_dark_dermatoscope_vignette():
    frame = make_lesion_image(800, 600, vignette=True)
    out = crop(frame)
    assert out.shape[0] == out.shape[1]
    assert out.shape[0] < 600
    # the corners of the crop are inside the field of view, not black border
    grey = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
    mid = out.shape[0] // 2
    assert grey[mid, 2] > 60 and grey[mid, -3] > 60 and grey[2, mid] > 60 and grey[-3, mid] > 60


def test_crop_of_an_all_black_frame_keeps_a_centred_square():
    out = crop(np.zeros((300, 400, 3), np.uint8))
    assert out.shape[:2] == (300, 300)


def test_dehair_removes_most_hair_pixels():
    skin = np.full((128, 128, 3), (150, 170, 215), np.uint8)
    hairy = skin.copy()
    for x in range(10, 128, 25):
        cv2.line(hairy, (x, 0), (x + 30, 127), (20, 15, 10), 1)
    hair_mask = np.any(hairy != skin, axis=2)
    cleaned = dehair(hairy)
    before = np.abs(hairy.astype(int) - skin).sum(axis=2)[hair_mask].mean()
    after = np.abs(cleaned.astype(int) - skin).sum(axis=2)[hair_mask].mean()
    assert after < 0.3 * before


def test_dehair_leaves_a_hairless_lesion_essentially_untouched():
    lesion = cv2.GaussianBlur(make_lesion_image(128, 128), (0, 0), 1.5)
    assert np.abs(dehair(lesion).astype(int) - lesion).mean() < 1.0


def test_contrast_stretches_a_flat_low_contrast_image():
    rng = np.random.default_rng(0)
    flat = (120 + rng.integers(0, 12, (128, 128, 1))).repeat(3, axis=2).astype(np.uint8)
    assert contrast(flat).std() > 1.5 * flat.std()


def test_normalize_removes_a_colour_cast_and_outputs_rgb():
    lesion = make_lesion_image(128, 128)
    blue_cast = np.clip(lesion.astype(int) * [1.4, 1.0, 0.7], 0, 255).astype(np.uint8)
    a, b = normalize(lesion), normalize(blue_cast)
    assert np.abs(a.mean(axis=(0, 1)) - b.mean(axis=(0, 1))).max() < 0.05
    red_bgr = np.zeros((8, 8, 3), np.uint8)
    red_bgr[..., 2] = 255
    assert to_model_range(red_bgr)[0, 0].tolist() == pytest.approx([128 / 128, -127 / 128, -127 / 128])


def test_disabling_a_stage_changes_the_description_and_the_output():
    frame = make_lesion_image(400, 300, hair=True)
    full, ablated = Preprocessor(), Preprocessor().with_disabled("dehair")
    assert ablated.describe()["params"]["disabled_stages"] == ["dehair"]
    assert not np.allclose(full(frame), ablated(frame))
    assert ablated.run(frame).timings_ms["dehair"] < 0.5


def test_description_round_trips_and_another_version_is_refused():
    p = Preprocessor(PreprocessParams(size=96))
    assert Preprocessor.from_description(p.describe()).params == p.params
    other = p.describe() | {"version": "0.9"}
    with pytest.raises(ValueError, match="version '0.9'.*" + PREPROCESS_VERSION):
        Preprocessor.from_description(other)


@pytest.mark.parametrize("bad", [np.zeros((100, 100), np.uint8), np.zeros((100, 100, 4), np.uint8),
                                 np.zeros((100, 100, 3), np.float32), np.zeros((4, 4, 3), np.uint8)])
def test_frames_that_are_not_bgr_uint8_are_refused_clearly(bad):
    with pytest.raises(ValueError, match="BGR uint8|too small"):
        Preprocessor().run(bad)


def _skin(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((128, 128, 3), (150, 170, 215), np.int16) + rng.integers(-3, 4, (128, 128, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _pigment_network(seed: int = 0, cell: int = 7) -> np.ndarray:
    """A lesion with a honeycomb of thin dark lines (Voronoi cells of about `cell` px), as in a melanocytic lesion."""
    rng = np.random.default_rng(seed)
    img = _skin(seed)
    cv2.circle(img, (64, 64), 42, (110, 120, 170), -1)
    sub = cv2.Subdiv2D((0, 0, 128, 128))
    for _ in range(int((84 / cell) ** 2)):
        p = rng.uniform(22, 106, 2)
        if np.hypot(*(p - 64)) < 40:
            sub.insert((float(p[0]), float(p[1])))
    facets, _ = sub.getVoronoiFacetList([])
    net = img.copy()
    cv2.polylines(net, [np.round(f).astype(np.int32) for f in facets], True, (60, 60, 95), 1)
    inside = np.zeros((128, 128), bool)
    inside[np.hypot(*np.mgrid[:128, :128] - 64) < 42] = True
    img[inside] = net[inside]
    return img


@pytest.mark.parametrize("cell", [5, 7, 9])
def test_dehair_leaves_a_pigment_network_alone(cell):
    lesion = _pigment_network(cell=cell)
    changed = np.any(dehair(lesion) != lesion, axis=2)
    assert changed.mean() < 0.005, f"{changed.sum()} network pixels inpainted"


def test_dehair_leaves_dark_blobs_and_globules_alone():
    img = _skin()
    for (x, y), r in (((64, 64), 4), ((40, 50), 3), ((90, 80), 2), ((70, 30), 6)):
        cv2.circle(img, (x, y), r, (40, 40, 60), -1)
    assert np.array_equal(dehair(img), img)


@pytest.mark.parametrize("seed", range(5))
def test_dehair_finds_and_removes_crossing_hairs_over_a_lesion(seed):
    from edge_app.preprocess import hair_mask

    rng = np.random.default_rng(seed)
    clean = _skin(seed)
    cv2.ellipse(clean, (64, 64), (34, 26), float(rng.uniform(0, 180)), 0, 360, (90, 95, 140), -1)
    img, truth = clean.copy(), np.zeros((128, 128), np.uint8)
    drawn = 0
    while drawn < 5:
        p1, p2 = (tuple(int(v) for v in rng.integers(0, 128, 2)) for _ in range(2))
        if np.hypot(p1[0] - p2[0], p1[1] - p2[1]) < 60:
            continue
        cv2.line(img, p1, p2, (25, 20, 15), int(rng.integers(1, 3)))
        cv2.line(truth, p1, p2, 1, 1)
        drawn += 1
    assert hair_mask(img).astype(bool)[truth.astype(bool)].mean() >= 0.8
    hair = truth.astype(bool)
    before = np.abs(img.astype(int) - clean).sum(axis=2)[hair].mean()
    after = np.abs(dehair(img).astype(int) - clean).sum(axis=2)[hair].mean()
    assert after < 0.3 * before
