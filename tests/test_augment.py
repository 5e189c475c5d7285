"""Training-set augmentation (studies/augment.py): geometry of the affine + elastic resampling."""

import numpy as np
import pytest

from sbnn.studies.augment import distort_images, shift_images
from sbnn.studies.train import TrainSettings, TrainSettingsError


class _FixedDraws:
    """Stands in for the numpy Generator: uniform() returns the given arrays in order."""

    def __init__(self, *draws):
        self.draws = list(draws)

    def uniform(self, lo, hi, size):
        return np.asarray(self.draws.pop(0), dtype=np.float64).reshape(size)


def _blob(n: int = 1) -> np.ndarray:
    img = np.zeros((n, 28, 28), dtype=np.uint8)
    img[:, 10:13, 8:11] = 200
    return img


def test_no_distortion_is_the_identity():
    img = np.random.default_rng(0).integers(0, 256, (20, 28, 28)).astype(np.uint8)
    assert np.array_equal(distort_images(img, np.random.default_rng(1)), img)


def test_integer_translation_matches_a_shift_with_zero_fill():
    img = _blob()
    # rotation 0, zoom 1, then tx = +3 (right), ty = -2 (up)
    out = distort_images(img, _FixedDraws([0.0], [0.0], [[3.0], [-2.0]]), shift=3)
    want = np.zeros_like(img)
    want[:, 8:11, 11:14] = 200
    assert np.array_equal(out, want)


def test_rotation_turns_counter_clockwise_on_screen_and_keeps_the_centre():
    img = np.zeros((1, 28, 28), dtype=np.uint8)
    img[0, 14, 14:24] = 255  # a bar from the centre to the right
    out = distort_images(img, _FixedDraws([np.pi / 2 * 180 / np.pi], [0.0], [[0.0], [0.0]]),
                         rotate=90.0)
    # +90 degrees in image coordinates (y down) takes +x to +y: the bar points down
    ys, xs = np.nonzero(out[0] > 100)
    assert xs.min() >= 13 and xs.max() <= 15 and ys.max() >= 22 and ys.min() >= 13


def test_zoom_scales_about_the_centre():
    img = np.zeros((1, 28, 28), dtype=np.uint8)
    img[0, 10:18, 10:18] = 255
    out = distort_images(img, _FixedDraws([0.0], [0.5], [[0.0], [0.0]]), scale=0.5)
    ys, xs = np.nonzero(out[0] > 127)
    assert ys.max() - ys.min() + 1 == 12 and xs.max() - xs.min() + 1 == 12  # 8 px * 1.5


def test_elastic_moves_pixels_smoothly_and_is_seeded():
    img = np.random.default_rng(0).integers(0, 256, (200, 28, 28)).astype(np.uint8)
    a = distort_images(img, np.random.default_rng(5), elastic=1.0)
    b = distort_images(img, np.random.default_rng(5), elastic=1.0)
    c = distort_images(img, np.random.default_rng(6), elastic=1.0)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a, img)
    # ink is roughly preserved by a small smooth displacement (not a scramble)
    blobs = _blob(200)
    moved = distort_images(blobs, np.random.default_rng(5), elastic=1.0)
    mass = moved.reshape(200, -1).sum(1) / blobs.reshape(200, -1).sum(1)
    assert 0.7 < np.median(mass) < 1.3


def test_settings_pick_the_augmentation():
    img = _blob(30)
    plain = TrainSettings(shift=2)
    assert not plain.distorts
    assert np.array_equal(plain.augment(img, np.random.default_rng(0)),
                          shift_images(img, 2, np.random.default_rng(0)))
    warped = TrainSettings(shift=2, rotate=8, scale=0.08, elastic=1.0)
    assert warped.distorts
    assert np.array_equal(warped.augment(img, np.random.default_rng(0)),
                          distort_images(img, np.random.default_rng(0), shift=2, rotate=8,
                                         scale=0.08, elastic=1.0))


@pytest.mark.parametrize("field, value", [("rotate", 90), ("scale", -0.1), ("elastic", 20),
                                          ("rotate", True)])
def test_distortion_settings_are_checked(field, value):
    with pytest.raises(TrainSettingsError, match=f"'{field}'"):
        TrainSettings(**{field: value})
