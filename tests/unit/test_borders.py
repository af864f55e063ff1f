"""The picture inside a uniform border: found on frames and letterboxing, never on pictures
without one, and hashed so that a framed copy is its original to the verified matcher."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.images import encode, photo, sample_photo
from worker.core import grouping, matching
from worker.core.borders import content_box
from worker.core.hashing import hash_image


def _gray(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.uint8)


def _framed(image: Image.Image, share: float, colour: tuple[int, int, int]) -> Image.Image:
    dx, dy = round(image.width * share), round(image.height * share)
    framed = Image.new("RGB", (image.width + 2 * dx, image.height + 2 * dy), colour)
    framed.paste(image, (dx, dy))
    return framed


def _jpeg(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO(encode(image, "JPEG", quality=85))
    return Image.open(buffer).convert("RGB")


@pytest.mark.parametrize("colour", [(255, 255, 255), (0, 0, 0), (128, 40, 40)])
def test_a_frame_of_any_colour_is_found_through_jpeg_ringing(colour: tuple[int, int, int]) -> None:
    picture = photo(3, (240, 180))
    framed = _jpeg(_framed(picture, 0.05, colour))  # 12 and 9 pixels of frame
    border = content_box(_gray(framed))
    assert border is not None and border.frame == border.picture
    left, top, right, bottom = border.picture
    # Inside the frame, losing at most the line where frame and picture meet, and a little more
    assert 12 <= left <= 15 and 9 <= top <= 12
    assert framed.width - 15 <= right <= framed.width - 12
    assert framed.height - 12 <= bottom <= framed.height - 9


def test_letterboxing_is_found_on_two_sides_only() -> None:
    picture = photo(4, (320, 140))
    boxed = Image.new("RGB", (320, 180), (0, 0, 0))
    boxed.paste(picture, (0, 20))
    border = content_box(_gray(boxed))
    assert border is not None and border.picture == border.frame == (0, 21, 320, 159)


@pytest.mark.parametrize("seed", range(6))
def test_a_picture_without_a_border_has_none(seed: int) -> None:
    assert content_box(_gray(_jpeg(photo(seed, (200, 150))))) is None


def test_a_flat_edge_on_one_side_is_peeled_but_is_no_frame() -> None:
    picture = photo(6, (200, 150))
    sky = Image.new("RGB", (200, 180), (200, 220, 240))
    sky.paste(picture, (0, 30))
    border = content_box(_gray(sky))
    assert border is not None and border.picture[1] == 31 and border.frame is None


def test_a_flat_image_is_not_a_picture_in_a_frame() -> None:
    flat = np.full((150, 200), 250, dtype=np.uint8)
    assert content_box(flat) is None


def test_nested_borders_are_peeled_to_the_picture() -> None:
    picture = photo(5, (200, 150))
    matted = _framed(_framed(picture, 0.04, (90, 90, 90)), 0.05, (255, 255, 255))
    border = content_box(_gray(matted))
    assert border is not None
    left, top, right, bottom = border.picture
    outer, inner = round(216 * 0.05), 8  # the white frame, then the grey mat inside it
    assert border.frame is not None and border.frame[0] == outer + 1  # the frame alone
    assert outer + inner <= left <= outer + inner + 2
    assert 196 <= right - left <= 200 and 146 <= bottom - top <= 150


def test_a_framed_copy_is_its_original_to_the_verified_matcher() -> None:
    originals = [photo(seed, (320, 240)) for seed in (11, 12, 13)]
    files = [encode(p, "JPEG", quality=92) for p in originals]
    framed = [encode(_framed(p, 0.05, (255, 255, 255)), "JPEG", quality=92) for p in originals[:2]]
    hashed = [hash_image(data, max_pixels=10**8) for data in files + framed]
    first, framed_copy = hashed[0], hashed[3]
    assert framed_copy.fingerprint is not None and first.fingerprint is not None
    assert framed_copy.fingerprint.content_phash is not None
    assert first.fingerprint.content_phash is None  # no border: described whole
    # The whole file's pHash is imagehash's, frame and all; the picture's is the original's
    whole = int(framed_copy.phash, 16) ^ int(first.phash, 16)
    inside = int(framed_copy.fingerprint.content_phash, 16) ^ int(first.phash, 16)
    assert bin(whole).count("1") >= 8 and bin(inside).count("1") <= 2
    # A frame adds pixels but no picture: the original leads its set
    assert framed_copy.pixels <= first.pixels < framed_copy.width * framed_copy.height
    order = grouping.original_order(
        np.zeros(5, dtype=np.int64),
        np.array([h.pixels for h in hashed], dtype=np.int64),
        np.arange(5, dtype=np.int64),
        [f"a{n}" for n in range(5)],
    )
    sets = grouping.form_verified_sets(matching.columns(hashed), order)
    assert sorted(sorted(g.members.tolist()) for g in sets) == [[0, 3], [1, 4]]
    assert all(g.members[0] in (0, 1) for g in sets)


def test_golden_hashes_of_a_framed_picture() -> None:
    """Pinned: a change to how borders are found or hashed changes these, and needs a new
    `HASH_VERSION` (stored content hashes are compared with fresh ones)."""
    original = photo(21, (320, 240))
    framed = hash_image(encode(_framed(original, 0.05, (255, 255, 255)), "PNG"), max_pixels=10**8)
    whole = hash_image(encode(original, "PNG"), max_pixels=10**8)
    assert framed.fingerprint is not None
    assert (framed.phash, framed.fingerprint.content_phash) == (
        "eb3dde92894382ac",
        "e02dfe90f95192ac",
    )
    assert whole.phash == "e02dfe90f95192ac"  # the picture inside the frame hashes as it does alone
    assert (framed.pixels, whole.pixels) == (75684, 76800)


def test_a_frame_around_a_picture_with_a_wide_flat_side_is_still_peeled() -> None:
    """A microscope's empty field over a third of the picture is flat further than a border may
    be; the white frame around it is still a frame."""
    picture = photo(7, (200, 150))
    field = Image.new("RGB", (300, 150), (60, 60, 60))
    field.paste(picture, (100, 0))
    framed = _framed(field, 0.05, (255, 255, 255))  # 15 and 8 pixels of frame
    border = content_box(_gray(framed))
    assert border is not None and border.frame == border.picture
    assert border.picture == (16, 9, framed.width - 16, framed.height - 9)


@pytest.mark.parametrize("name", ["moon.png", "camera.png", "microaneurysms.png", "retina.jpg"])
def test_inside_an_added_frame_only_the_frame_is_peeled(name: str) -> None:
    """A frame added around a photograph whose own edge is flat or dark: what the frame
    surrounds is the original whole, so the copy's content hash lands on the original's pHash.
    Peeling on into the photograph's own edge put it 6-18 bits away."""
    original = sample_photo(name)
    plain = hash_image(encode(original, "JPEG", quality=95), max_pixels=50_000_000)
    framed = _framed(original, 0.05, (255, 255, 255))
    copy = hash_image(encode(framed, "JPEG", quality=92), max_pixels=50_000_000)
    assert copy.fingerprint is not None and copy.fingerprint.content_phash is not None
    bits = int(copy.fingerprint.content_phash, 16) ^ int(plain.phash, 16)
    assert bits.bit_count() <= matching.CONTENT_RADIUS


def test_row_medians_are_np_medians() -> None:
    from worker.core.medians import row_medians

    rng = np.random.default_rng(11)
    for length in [1, 2, 3, 4, 31, 32, 64, 255, 256, 500, 501]:
        for _ in range(50):
            rows = rng.integers(0, 256, (3, length)).astype(np.uint8)
            assert np.array_equal(row_medians(rows), np.median(rows, axis=1))
            flipped = rows[:, ::-1]  # a strided view
            assert np.array_equal(row_medians(flipped), np.median(flipped, axis=1))
            floats = rows.astype(np.float64) * 1.5 - 100
            assert np.array_equal(row_medians(floats), np.median(floats, axis=1))
