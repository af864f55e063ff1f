"""The verified matcher on real photographs: a golden subset of the quality benchmark.

The full evaluation (benchmarks/quality.py) prints recall and precision for every rule; these
tests pin what must never regress: each kind of copy found and named, the hard negatives apart.
"""

from __future__ import annotations

import dataclasses
import io
from functools import cache

import numpy as np
import pytest
from PIL import Image, ImageDraw

from benchmarks.evaluation import Sample, samples
from benchmarks.quality import original_order
from tests.images import sample_photo
from worker.core import grouping, matching
from worker.core.fingerprint import CROP_SHARE, CROPS, LOW_DETAIL_BELOW, WIDE_CROPS, fingerprint
from worker.core.hashing import HashedImage, hash_image

#: Photos whose copies are pinned: a portrait, an animal, a stereo view, a low-contrast scene.
PINNED = ("skimage/astronaut.png", "skimage/chelsea.png", "skimage/motorcycle_left.png")

#: How each kind of copy must be named against its original.
EXPECTED_KIND = {
    "byte": {"identical"},
    "lossless": {"same_phash"},
    "recompressed": {"same_phash", "near"},
    "resized": {"same_phash", "near"},
    "brightened": {"same_phash", "near"},
    "contrast": {"same_phash", "near"},
    "greyscale": {"same_phash", "near"},
    "mirrored": {"mirrored"},
    "rotated": {"rotated"},
    "cropped": {"near"},
    "watermarked": {"near", "same_phash"},
}


@cache
def evaluation() -> tuple[list[Sample], list[HashedImage]]:
    chosen = [s for s in samples() if s.family in PINNED or s.kind == "negative"]
    # A byte copy of a low-detail frame: the one way such frames may match.
    flat = next(s for s in chosen if s.name == "flat 12 noise 2.0")
    chosen.append(Sample("flat copy", flat.family, "byte", flat.data))
    return chosen, [hash_image(s.data, max_pixels=50_000_000) for s in chosen]


def verified_sets() -> tuple[list[Sample], list[grouping.Group]]:
    chosen, hashed = evaluation()
    order = original_order(hashed)
    return chosen, grouping.form_verified_sets(matching.columns(hashed), order)


def test_pinned_copies_join_their_original_under_the_right_kind() -> None:
    chosen, groups = verified_sets()
    placed: dict[str, tuple[str, str | None, grouping.Group, int]] = {}
    for group in groups:
        original = chosen[int(group.members[0])].name
        for position, member in enumerate(group.members.tolist()):
            placed[chosen[member].name] = (original, group.kind(position), group, position)
    missed: dict[str, list[str]] = {}
    for sample in chosen:
        if sample.kind in ("original", "negative"):
            continue
        if sample.name not in placed:
            missed.setdefault(sample.kind, []).append(sample.name)
            continue
        original, kind, group, position = placed[sample.name]
        if sample.family in PINNED:
            assert original == f"{sample.family} original", sample.name
        assert kind in EXPECTED_KIND[sample.kind], (sample.name, kind)
        if kind == "near":
            assert group.similarity is not None
            assert matching.NEAR_SIMILARITY <= group.similarity[position] <= 1.0
            assert group.distances[position] >= 0
    # Every copy is found but one of the twelve crops: astronaut's 5 % off two sides sits
    # outside CROP_RADIUS of both the 4 % and the 8 % two-side crop hashes (chelsea's, missed
    # too before the 8 % hashes, is now found). The benchmark's target allows a tenth of crops
    # to be missed.
    assert missed == {"cropped": ["skimage/astronaut.png 5% top and left"]}


def test_hard_negatives_stay_apart() -> None:
    chosen, groups = verified_sets()
    for group in groups:
        families = {chosen[m].family for m in group.members.tolist()}
        assert len(families) == 1, [chosen[m].name for m in group.members.tolist()]
    in_sets = {chosen[m].name for g in groups for m in g.members.tolist()}
    assert "motorcycle right view" not in in_sets  # the other half of a stereo pair
    assert not any("region" in name for name in in_sets)  # regions of one large photo
    low_detail_in_sets = {name for name in in_sets if name.startswith(("flat", "gradient"))}
    assert low_detail_in_sets == {"flat 12 noise 2.0", "flat copy"}


def test_the_phash_rule_is_unchanged_and_merges_what_verified_keeps_apart() -> None:
    chosen, hashed = evaluation()
    prints = matching.columns(hashed)
    groups = grouping.form_sets(prints.phashes, original_order(hashed), 8)
    mixed = [g for g in groups if len({chosen[m].family for m in g.members.tolist()}) > 1]
    assert mixed, "at radius 8 the stereo pair and the regions merge (why verified exists)"
    assert all(g.kinds is None for g in groups)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("position", "turn"),
    [
        (0, Image.Transpose.FLIP_LEFT_RIGHT),
        (1, Image.Transpose.ROTATE_90),
        (2, Image.Transpose.ROTATE_180),
        (3, Image.Transpose.ROTATE_270),
    ],
)
def test_variants_are_the_hashes_of_the_turned_image(position: int, turn: Image.Transpose) -> None:
    chosen, hashed = evaluation()
    for sample, image in zip(chosen, hashed, strict=True):
        if sample.kind != "original":
            continue
        with Image.open(io.BytesIO(sample.data)) as photo:
            turned = hash_image(_png(photo.transpose(turn)), max_pixels=50_000_000)
        assert image.fingerprint is not None
        derived = int(image.fingerprint.variants[position], 16)
        assert bin(derived ^ int(turned.phash, 16)).count("1") <= 2, sample.name


def test_flat_and_ramped_frames_are_low_detail_and_photos_are_not() -> None:
    ramp = np.tile(np.linspace(0, 255, 32), (32, 1)).astype(np.uint8)
    assert fingerprint(ramp).low_detail
    assert fingerprint(np.full((32, 32), 7, np.uint8)).low_detail
    chosen, hashed = evaluation()
    for sample, image in zip(chosen, hashed, strict=True):
        assert image.fingerprint is not None
        if sample.family in PINNED:
            assert image.fingerprint.detail > 4 * LOW_DETAIL_BELOW, sample.name
            assert image.pixels_sha256 is None
        if sample.name.startswith("flat"):
            assert image.fingerprint.low_detail and image.pixels_sha256, sample.name


def test_identical_pixels_in_other_bytes_match_when_low_detail() -> None:
    frame = Image.new("RGB", (200, 100), (3, 3, 4))
    png, bmp = _png(frame), io.BytesIO()
    frame.save(bmp, "BMP")
    other = Image.new("RGB", (200, 100), (3, 3, 5))
    hashed = [hash_image(data, max_pixels=10**6) for data in (png, bmp.getvalue(), _png(other))]
    found = matching.confirmed_pairs(matching.columns(hashed))
    assert list(zip(found.first.tolist(), found.second.tolist(), strict=True)) == [(0, 1)]
    assert matching.KINDS[int(found.kind[0])] == "same_phash"


def test_crop_hashes_predict_the_hash_of_a_trimmed_copy() -> None:
    chosen, hashed = evaluation()
    for sample, image in zip(chosen, hashed, strict=True):
        if sample.kind != "original":
            continue
        assert image.fingerprint is not None
        with Image.open(io.BytesIO(sample.data)) as photo:
            w, h = photo.size
            trims = [
                tuple((CROP_SHARE / 2 if all(sides) else CROP_SHARE) * side for side in sides)
                for sides in CROPS
            ]
            for position, shares in enumerate(trims + list(WIDE_CROPS)):
                sides = tuple(share > 0 for share in shares)
                sizes = (w, h, w, h)
                left, top, right, bottom = (
                    round(share * size) for share, size in zip(shares, sizes, strict=True)
                )
                trimmed = hash_image(
                    _png(photo.crop((left, top, w - right, h - bottom))), max_pixels=50_000_000
                )
                predicted = int(image.fingerprint.crops[position], 16)
                distance = bin(predicted ^ int(trimmed.phash, 16)).count("1")
                assert distance <= matching.CROP_RADIUS, (sample.name, sides, distance)


@pytest.mark.parametrize("n", [0, 1])
def test_a_scope_of_fewer_than_two_assets_has_no_pairs(n: int) -> None:
    _, hashed = evaluation()
    assert matching.confirmed_pairs(matching.columns(hashed[:n])).first.size == 0


def test_signatures_read_for_the_candidates_only_confirm_the_same_pairs() -> None:
    _, hashed = evaluation()
    full = matching.columns(hashed)
    pairs = matching.candidate_pairs(full)
    named = matching.named_assets(pairs)
    assert 0 < len(named) < len(hashed)  # the point: not every asset's signature is needed
    bare = dataclasses.replace(
        full,
        signatures=full.signatures[:0],
        signature_rows=np.full(len(hashed), -1, dtype=np.intp),
    )
    partial = matching.with_signatures(
        bare, named, [full.signatures[i].tobytes() for i in named.tolist()]
    )
    expected, got = matching.confirmed_pairs(full), matching.confirmed_pairs(partial, pairs=pairs)
    for field in ("first", "second", "distance", "kind", "similarity"):
        assert np.array_equal(getattr(expected, field), getattr(got, field)), field


def test_assets_without_a_checksum_are_never_identical() -> None:
    _, hashed = evaluation()
    known = matching.columns(hashed)
    unknown = dataclasses.replace(known, content=np.zeros_like(known.content))
    kinds = {matching.KINDS[int(k)] for k in matching.confirmed_pairs(unknown).kind}
    assert "identical" in {matching.KINDS[int(k)] for k in matching.confirmed_pairs(known).kind}
    assert "identical" not in kinds and kinds  # byte copies still match, by their pixels


def test_a_caption_band_along_an_edge_is_left_out_and_nothing_else_gains() -> None:
    """A dark band with text over the bottom tenth (a caption, a ticker) is a copy; the same
    band over another picture, or the other view of the stereo pair, is not."""
    chosen, hashed = evaluation()
    photos = {s.family: s for s in chosen if s.kind == "original"}

    def captioned(sample: Sample) -> HashedImage:
        with Image.open(io.BytesIO(sample.data)) as image:
            copy = image.convert("RGB")
        band = copy.height // 10
        ImageDraw.Draw(copy).rectangle((0, copy.height - band, copy.width, copy.height), fill=20)
        ImageDraw.Draw(copy).text((band, copy.height - band * 0.8), "Caption", fill="white")
        return hash_image(_jpeg(copy), max_pixels=50_000_000)

    astronaut, chelsea = photos["skimage/astronaut.png"], photos["skimage/chelsea.png"]
    stereo = next(s for s in chosen if s.name == "motorcycle right view")
    images = [
        hashed[chosen.index(chelsea)],
        captioned(chelsea),
        hashed[chosen.index(astronaut)],
        captioned(photos["skimage/motorcycle_left.png"]),
        hashed[chosen.index(stereo)],
    ]
    found = matching.confirmed_pairs(matching.columns(images))
    pairs = set(zip(found.first.tolist(), found.second.tolist(), strict=True))
    assert pairs == {(0, 1)}
    assert matching.KINDS[int(found.kind[0])] == "near"


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_a_large_corner_logo_is_proposed_by_the_halves_it_leaves_alone() -> None:
    """A logo over a fifth of the width moves the whole's and the centre's hashes past their
    radii; the top and left halves stay as they were."""
    from benchmarks.evaluation import _logo, _watermarked

    chosen, hashed = evaluation()
    original = next(s for s in chosen if s.name == "skimage/motorcycle_left.png original")
    with Image.open(io.BytesIO(original.data)) as image:
        stamped = _watermarked(image.convert("RGB"), "bottom-right", 0.20, _logo())
    copy = hash_image(_jpeg(stamped), max_pixels=50_000_000)
    first = hashed[chosen.index(original)]
    assert first.fingerprint is not None and copy.fingerprint is not None
    assert copy.fingerprint.halves[0] == first.fingerprint.halves[0]  # the top half
    found = matching.confirmed_pairs(matching.columns([first, copy]))
    assert (found.first.tolist(), found.second.tolist()) == ([0], [1])


def test_an_eight_percent_crop_is_confirmed_where_its_crop_hash_puts_it() -> None:
    """8 % off the right and bottom leaves a plain correlation near 0.4 with the original, too
    low to search alignments from; the crop hash that proposed the pair says where it lies."""
    chosen, hashed = evaluation()
    original = next(s for s in chosen if s.name == "skimage/chelsea.png original")
    with Image.open(io.BytesIO(original.data)) as image:
        w, h = image.size
        cropped = image.convert("RGB").crop((0, 0, round(w * 0.92), round(h * 0.92)))
    copy = hash_image(_jpeg(cropped), max_pixels=50_000_000)
    stereo = hashed[chosen.index(next(s for s in chosen if s.name == "motorcycle right view"))]
    images = [hashed[chosen.index(original)], copy, stereo]
    found = matching.confirmed_pairs(matching.columns(images))
    assert (found.first.tolist(), found.second.tolist()) == ([0], [1])
    assert matching.KINDS[int(found.kind[0])] == "near" and found.similarity[0] >= 0.92


def _confirmed_beside_the_stereo_view(photo: Image.Image, copy: Image.Image) -> matching.Matches:
    """The pairs confirmed among `photo`, `copy` (both as JPEGs) and the stereo pair's other
    view, which must stay apart from both."""
    chosen, hashed = evaluation()
    stereo = hashed[chosen.index(next(s for s in chosen if s.name == "motorcycle right view"))]
    images = [hash_image(_jpeg(photo), max_pixels=50_000_000)]
    images += [hash_image(_jpeg(copy), max_pixels=50_000_000), stereo]
    return matching.confirmed_pairs(matching.columns(images))


@pytest.mark.parametrize("corner", ["bottom-right", "top-left"])
def test_a_bright_logo_on_a_dark_picture_is_confirmed_with_its_corner_left_out(
    corner: str,
) -> None:
    """On a dark sky a bright logo and its credit line, rung out by the shrink, reach ten of
    the signature's 32 pixels: the corner left out must cover them (8 left 0.81)."""
    from benchmarks.evaluation import _logo, _watermarked

    photo = sample_photo("rocket.jpg")
    found = _confirmed_beside_the_stereo_view(photo, _watermarked(photo, corner, 0.20, _logo()))
    assert (found.first.tolist(), found.second.tolist()) == ([0], [1])
    assert found.similarity[0] >= matching.NEAR_SIMILARITY


def test_a_narrower_aspect_cut_is_confirmed_at_the_trim_its_crop_hash_names() -> None:
    """5 % off the left and the right of a star field: no alignment of the whole lifts it over
    the threshold (0.87), the crop hash of that trim proposes it within 2 bits and says where
    it lies."""
    photo = sample_photo("hubble_deep_field.jpg")
    w, h = photo.size
    narrower = photo.crop((round(w * 0.05), 0, w - round(w * 0.05), h))
    found = _confirmed_beside_the_stereo_view(photo, narrower)
    assert (found.first.tolist(), found.second.tolist()) == ([0], [1])
    assert found.similarity[0] >= matching.NEAR_SIMILARITY


def _thumbnail(photo: Image.Image, short_side: int) -> bytes:
    """`photo` scaled to `short_side` pixels on its shorter side, as a JPEG at quality 75 (the
    held-out benchmark's thumbnail row)."""
    from benchmarks.holdout import _thumbnail_edit

    return _thumbnail_edit(short_side)(photo)


def test_a_thumbnail_smaller_than_the_signature_is_confirmed_at_a_resolution_both_have() -> None:
    """A 24-pixel thumbnail of the moon was enlarged to make its signature: at 32 x 32 it
    correlates under the threshold with its original, at 8 x 8 over the coarse one."""
    chosen, hashed = evaluation()
    stereo = hashed[chosen.index(next(s for s in chosen if s.name == "motorcycle right view"))]
    photo = sample_photo("moon.png")
    images = [hash_image(_jpeg(photo), max_pixels=50_000_000)]
    images += [hash_image(_thumbnail(photo, 24), max_pixels=50_000_000), stereo]
    prints = matching.columns(images)
    assert prints.short_sides.tolist()[:2] == [min(photo.size), 24]
    plain = float(np.corrcoef(prints.signatures[0], prints.signatures[1])[0][1])
    assert plain < matching.NEAR_SIMILARITY  # only the coarse comparison can confirm it

    found = matching.confirmed_pairs(prints)
    assert (found.first.tolist(), found.second.tolist()) == ([0], [1])
    assert matching.KINDS[int(found.kind[0])] == "near"
    assert found.similarity[0] >= matching.COARSE_SIMILARITY
    # Sizes not known (0): compared as large images, so not confirmed
    unknown = dataclasses.replace(prints, short_sides=np.zeros(3, dtype=np.int32))
    assert len(matching.confirmed_pairs(unknown).first) == 0


def test_a_thumbnail_of_one_stereo_view_stays_apart_from_the_other_view() -> None:
    """At 8 x 8 the two views of a stereo pair correlate over the `near` threshold, parallax
    and all; the coarse threshold must keep them apart."""
    left, right = sample_photo("motorcycle_left.png"), sample_photo("motorcycle_right.png")
    images = [hash_image(_jpeg(left), max_pixels=50_000_000)]
    images += [hash_image(_thumbnail(right, side), max_pixels=50_000_000) for side in (24, 12)]
    prints = matching.columns(images)
    coarse = matching.coarse_similarity(prints.signatures[[0, 0]], prints.signatures[1:])
    assert (coarse > matching.NEAR_SIMILARITY).all()  # the case this threshold is for
    assert 0 in matching.candidate_pairs(prints)[0].tolist()  # proposed: confirmation decides
    found = matching.confirmed_pairs(prints)
    assert 0 not in found.first.tolist()  # the left view pairs with neither thumbnail
