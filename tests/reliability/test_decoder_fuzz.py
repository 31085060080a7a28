"""Random bytes thrown at the decoder: it returns a BGR frame or raises ImageDecodeError, never anything else."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_app.images import ImageDecodeError, decode_image, encode_jpeg
from tests.conftest import make_lesion_image

JPEG = encode_jpeg(make_lesion_image(96, 72))
PNG_HEADER = b"\x89PNG\r\n\x1a\n"


def _decode_or_reject(data: bytes) -> None:
    try:
        out = decode_image(data, max_pixels=4_000_000)
    except ImageDecodeError as exc:
        assert str(exc)
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes_never_crash_the_decoder(data):
    _decode_or_reject(data)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(0, len(JPEG) - 1), st.integers(0, 255), st.integers(1, len(JPEG)))
def test_corrupted_or_cut_jpegs_never_crash_the_decoder(pos, value, cut):
    data = bytearray(JPEG)
    data[pos] = value
    _decode_or_reject(bytes(data[:cut]))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.binary(max_size=512))
def test_random_bytes_behind_a_png_signature_never_crash_the_decoder(tail):
    _decode_or_reject(PNG_HEADER + tail)
