"""The hashing core: imagehash's pHash exactly, on the image as a person sees it."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.images import encode, photo, sample_photo, with_exif_orientation
from worker.core.errors import TooLarge, UnreadableImage, UnsupportedFormat
from worker.core.hashing import (
    RANKED_FRAME_FROM,
    hash_image,
    phash_to_signed,
    provenance,
    ranked_pixels,
    sha256_hex,
    signed_to_phash,
)

LIMIT = 50_000_000

# Golden values: generated pictures (tests/images.py) and their pHashes under the pinned Pillow
# and imagehash. A change here means hashes changed: bump HASH_VERSION and plan a rehash.
GOLDEN = {1: "dd1e7963d1889865", 2: "827a1ab9ca20eddd", 3: "bb0d700bd282c5fd"}


@pytest.mark.parametrize(("seed", "expected"), sorted(GOLDEN.items()))
def test_golden_hashes(seed: int, expected: str) -> None:
    hashed = hash_image(encode(photo(seed)), max_pixels=LIMIT)
    assert hashed.phash == expected
    assert (hashed.width, hashed.height, hashed.format) == (640, 480, "PNG")


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("PNG", {}), ("JPEG", {"quality": 90}), ("WEBP", {"quality": 90}), ("TIFF", {}), ("BMP", {})],
)
def test_the_hash_is_imagehash_phash_of_the_decoded_image(fmt: str, options: dict) -> None:
    data = encode(photo(1), fmt, **options)
    expected = str(imagehash.phash(Image.open(io.BytesIO(data))))
    hashed = hash_image(data, max_pixels=LIMIT)
    assert hashed.phash == expected == GOLDEN[1]
    assert hashed.format == fmt
    assert hashed.size_bytes == len(data)
    assert hashed.sha256 == sha256_hex(data)


@pytest.mark.parametrize(
    ("mode", "fmt", "bits"),
    [
        ("L", "PNG", 0),
        ("CMYK", "TIFF", 0),
        ("CMYK", "JPEG", 0),
        ("P", "PNG", 0),
        ("RGB", "GIF", 0),
        ("1", "PNG", 4),
    ],  # box-reducing a bilevel image is not quite Lanczos on it
)
def test_odd_modes_hash_like_imagehash(mode: str, fmt: str, bits: int) -> None:
    data = encode(photo(2).convert(mode), fmt)
    hashed = hash_image(data, max_pixels=LIMIT)
    expected = imagehash.phash(Image.open(io.BytesIO(data)))
    assert imagehash.hex_to_hash(hashed.phash) - expected <= bits


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    grey = photo(2).convert("L")
    wide = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)
    assert wide.mode == "I;16"
    hashed = hash_image(encode(wide, "PNG"), max_pixels=LIMIT)
    # A plain conversion would clip nearly every pixel to white; scaled, it hashes like the 8-bit
    assert imagehash.hex_to_hash(hashed.phash) - imagehash.phash(grey) <= 2


def test_transparency_is_flattened_onto_white() -> None:
    picture = photo(4).convert("RGBA")
    cut_out = picture.copy()
    cut_out.putalpha(Image.new("L", picture.size, 0).point(lambda _: 0))
    cut_out.paste(picture.crop((100, 100, 500, 400)), (100, 100))
    on_white = Image.new("RGB", picture.size, "white")
    on_white.paste(picture.crop((100, 100, 500, 400)), (100, 100))
    hashed = hash_image(encode(cut_out, "PNG"), max_pixels=LIMIT)
    assert hashed.phash == str(imagehash.phash(on_white))


@pytest.mark.parametrize("orientation", [3, 6])
def test_exif_orientation_is_applied(orientation: int) -> None:
    upright = photo(3, size=(400, 300))
    hashed = hash_image(with_exif_orientation(upright, orientation), max_pixels=LIMIT)
    assert (hashed.width, hashed.height) == (400, 300)
    assert imagehash.hex_to_hash(hashed.phash) - imagehash.phash(upright) <= 4


def test_the_first_frame_of_an_animation_is_hashed() -> None:
    first, second = photo(1, (64, 48)), photo(2, (64, 48))
    data = encode(first, "GIF", save_all=True, append_images=[second])
    assert (
        hash_image(data, max_pixels=LIMIT).phash
        == hash_image(encode(first, "GIF"), max_pixels=LIMIT).phash
    )


@pytest.mark.parametrize(
    "data",
    [b"", b"GIF89a", b"\x89PNG\r\n\x1a\n" + b"\0" * 50, encode(photo(1), "JPEG")[:2000]],
    ids=["empty", "gif magic only", "png magic then zeros", "truncated jpeg"],
)
def test_unreadable_bytes_raise_unreadable_image(data: bytes) -> None:
    with pytest.raises(UnreadableImage) as caught:
        hash_image(data, max_pixels=LIMIT)
    assert caught.value.reason == "unreadable_image"
    assert caught.value.detail


def test_too_many_pixels_are_refused_before_decoding() -> None:
    data = encode(Image.new("L", (3000, 2000)), "PNG")
    with pytest.raises(TooLarge, match="6000000 pixels exceeds the limit of 5999999"):
        hash_image(data, max_pixels=5_999_999)
    assert hash_image(data, max_pixels=6_000_000).width == 3000


def test_signed_storage_form_round_trips_every_bit() -> None:
    for text in ("ffffffffffffffff", "8000000000000000", "0000000000000001", GOLDEN[1]):
        value = phash_to_signed(text)
        assert -(2**63) <= value < 2**63
        assert signed_to_phash(value) == text
    assert phash_to_signed("8000000000000000") == -(2**63)


def test_provenance_names_algorithm_parameters_and_versions() -> None:
    facts = provenance()
    assert facts["algorithm"] == "phash"
    assert (facts["hash_size"], facts["highfreq_factor"]) == (8, 4)
    assert facts["imagehash"] == imagehash.__version__
    assert facts["pillow"] == Image.__version__


def test_large_jpegs_are_decoded_at_reduced_scale_and_stay_faithful() -> None:
    picture = photo(5, size=(2400, 1800))
    data = encode(picture, "JPEG", quality=90)
    hashed = hash_image(data, max_pixels=LIMIT)
    full = imagehash.phash(Image.open(io.BytesIO(data)))
    assert hashed.decoder == "jpeg-draft"
    assert (hashed.width, hashed.height) == (2400, 1800)
    assert imagehash.hex_to_hash(hashed.phash) - full <= 4


def test_large_pngs_are_box_reduced_and_stay_faithful() -> None:
    data = encode(photo(6, size=(2400, 1800)), "PNG")
    hashed = hash_image(data, max_pixels=LIMIT)
    assert hashed.decoder == "full"
    assert imagehash.hex_to_hash(hashed.phash) - imagehash.phash(Image.open(io.BytesIO(data))) <= 4


@pytest.mark.parametrize("fmt", ["AVIF", "HEIF"])
def test_modern_formats_are_read(fmt: str) -> None:
    picture = photo(7)
    data = encode(picture, fmt, quality=90)
    hashed = hash_image(data, max_pixels=LIMIT)
    assert (hashed.width, hashed.height) == (640, 480)
    assert imagehash.hex_to_hash(hashed.phash) - imagehash.phash(picture) <= 4


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"%PDF-1.7\n%...", "PDF"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (b"\x00\x00\x00\x0cJXL \r\n\x87\n" + b"\0" * 32, "JPEG XL"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n", "PostScript"),
    ],
)
def test_unsupported_formats_are_named(data: bytes, name: str) -> None:
    with pytest.raises(UnsupportedFormat, match=name) as caught:
        hash_image(data, max_pixels=LIMIT)
    assert caught.value.reason == "unsupported_format"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_imagehash_on_the_upright_image(orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(photo(8, size=(400, 300)), "PNG", exif=exif.tobytes())
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    hashed = hash_image(data, max_pixels=LIMIT)
    assert hashed.phash == str(imagehash.phash(upright))
    assert (hashed.width, hashed.height) == upright.size


def test_provenance_reads_the_library_versions_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.core import hashing

    reads: list[str] = []

    def counted(name: str) -> str:
        reads.append(name)
        return "1.0"

    monkeypatch.setattr(hashing, "version", counted)
    hashing._library_versions.cache_clear()
    try:
        for _ in range(3):
            made = hashing.provenance("jpeg-draft")
        assert sorted(reads) == ["imagehash", "pillow"]  # once each, not once an upload
        assert (made["imagehash"], made["pillow"]) == ("1.0", "1.0")
    finally:
        hashing._library_versions.cache_clear()


@pytest.mark.parametrize("low, high", [(0.0, 0.0), (0.04, 0.0), (0.02, 0.02), (0.08, 0.5)])
def test_trim_matrices_are_pillows_bilinear_resize_of_each_unit_vector(
    low: float, high: float
) -> None:
    """The crop hashes' matrices come from one resize of an identity image; each of its columns
    must be what Pillow makes of that unit vector alone, or the crop hashes would drift."""
    from worker.core.fingerprint import trim_matrix

    side = 32
    matrix = trim_matrix(side, low, high)
    for p in range(side):
        unit = np.zeros((1, side), dtype=np.float32)
        unit[0, p] = 1.0
        line = Image.fromarray(unit, "F").resize(
            (side, 1), Image.Resampling.BILINEAR, box=(side * low, 0, side * (1 - high), 1)
        )
        assert np.array_equal(matrix[:, p], np.asarray(line, dtype=np.float64)[0]), p


def test_a_photographs_own_thin_rim_ranks_as_picture_and_an_added_frame_does_not() -> None:
    """The retina's dark rim is an even border 1-1.4 % a side, found as a frame like an added
    one; counting only the inside ranked its captioned copy (the band breaks the rim, so it has
    no border) above it. A frame of 5 % a side still adds no picture."""
    from benchmarks.holdout import _captioned, _framed

    retina = sample_photo("retina.jpg")
    original, captioned, framed = (
        hash_image(encode(image, "JPEG", quality=92), max_pixels=10**8)
        for image in (retina, _captioned(retina), _framed(retina))
    )
    assert original.picture is not None  # the rim is found
    assert original.picture < original.width * original.height * (1 - 0.03)
    assert original.pixels == original.width * original.height == captioned.pixels
    assert framed.picture is not None and framed.pixels == framed.picture < original.pixels

    # The rank of a stored count, whether stored before the rule (the picture) or after
    whole = 1000 * 800
    thin, thick = round(whole * (1 - RANKED_FRAME_FROM / 2)), round(whole * 0.7)
    assert ranked_pixels(1000, 800, thin) == ranked_pixels(1000, 800, whole) == whole
    assert ranked_pixels(1000, 800, thick) == thick
    assert ranked_pixels(1000, 800, None) == whole
