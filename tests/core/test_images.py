import io

import numpy as np
import pytest
from PIL import Image

from edge_app.images import ImageDecodeError, decode_image, encode_jpeg
from tests.conftest import make_lesion_image


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_jpeg_round_trip_gives_bgr():
    frame = make_lesion_image(320, 240)
    out = decode_image(encode_jpeg(frame, 95))
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - frame).mean() < 4


@pytest.mark.parametrize("data,message", [
    (b"", "empty"),
    (b"hello, not an image", "not a recognised image"),
])
def test_non_images_are_rejected_with_a_reason(data, message):
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(data)


def test_truncated_jpeg_is_rejected():
    data = encode_jpeg(make_lesion_image(320, 240))
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2])


@pytest.mark.parametrize("size,message", [((6000, 5000), "30 MP, above the 20 MP limit"),
                                          ((20000, 20000), "decompression bomb")])
def test_huge_declared_size_is_rejected_before_decoding(size, message):
    data = _png(Image.new("1", size))
    assert len(data) < 200_000  # tiny file, huge image
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(data, max_pixels=20_000_000)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_grey_alpha_palette_and_16_bit_images_become_bgr(mode):
    img = Image.new("RGB", (64, 48), (200, 100, 50)).convert(mode) if mode != "I;16" else Image.new("I;16", (64, 48), 40000)
    out = decode_image(_png(img))
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    if mode == "I;16":
        assert 150 <= out[0, 0, 0] <= 160  # 40000/65535 of full scale, not clipped to 255


def test_exif_rotated_phone_photo_is_turned_upright():
    img = Image.new("RGB", (60, 40), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    assert decode_image(buf.getvalue()).shape[:2] == (60, 40)


def test_dct_scaled_decoding_keeps_enough_pixels():
    data = encode_jpeg(make_lesion_image(4000, 3000))
    out = decode_image(data, min_side=512)
    assert 512 <= min(out.shape[:2]) < 3000
