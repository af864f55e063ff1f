"""Find duplicates on request: scope, originals, ordering, paging, tenancy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from schemas.messages import FindDuplicates, Scope, Sort
from tests.harness import Event, Harness
from tests.images import (
    RETINA_INSIDE_PIXELS,
    photo,
    retina_and_its_captioned_copy,
    sample_photo,
    write,
)

DAY = timedelta(days=1)
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def upload_all(
    harness: Harness, portal: str, specs: list[tuple[str, Path, dict[str, Any]]]
) -> None:
    """Upload every (asset_id, path, fields) and wait until all are hashed."""
    for asset_id, path, fields in specs:
        harness.upload(portal, asset_id, path, **fields)
    harness.wait_for(portal, "asset.hashed", count=len(specs))


def ask(harness: Harness, portal: str, request_id: str = "r1", **fields: object) -> list[Event]:
    """Publish find-duplicates and return every page of the answer, in page order."""
    harness.send(FindDuplicates(request_id=request_id, portal_id=portal, **fields))
    first = harness.wait_for(portal, "duplicates.found", lambda e: e["request_id"] == request_id)
    pages = harness.wait_for(
        portal,
        "duplicates.found",
        lambda e: e["request_id"] == request_id,
        count=first[0]["pages"],
    )
    return sorted(pages, key=lambda e: e["page"])


def set_ids(page: Event) -> list[list[str]]:
    return [[a["asset_id"] for a in s["assets"]] for s in page["sets"]]


@pytest.fixture
def family(images: Path) -> dict[str, Path]:
    """Three copies of one picture at different sizes, and one unrelated picture."""
    big = photo(10, size=(800, 600))
    return {
        "big": write(images / "big.png", big),
        "medium": write(images / "medium.png", big.resize((400, 300), Image.Resampling.LANCZOS)),
        "same_medium": write(images / "same.png", big.resize((400, 300), Image.Resampling.LANCZOS)),
        "other": write(images / "other.png", photo(11)),
    }


def test_equal_hashes_form_a_set_with_the_most_pixels_as_original(
    harness: Harness, portal: str, family: dict[str, Path]
) -> None:
    upload_all(
        harness,
        portal,
        [
            ("medium", family["medium"], {"uploaded_at": T0}),
            ("big", family["big"], {"uploaded_at": T0 + DAY, "title": "Big", "tags": ["t"]}),
            ("same_medium", family["same_medium"], {"uploaded_at": T0 + 2 * DAY}),
            ("other", family["other"], {"uploaded_at": T0 + 3 * DAY}),
        ],
    )

    (page,) = ask(harness, portal, match="phash")

    assert (page["total_sets"], page["page"], page["pages"]) == (1, 1, 1)
    assert (page["match"], page["max_distance"]) == ("phash", 0)
    (dup_set,) = page["sets"]
    # The original (most pixels) first, then the rest newest first, the bank's default order
    assert [a["asset_id"] for a in dup_set["assets"]] == ["big", "same_medium", "medium"]
    assert dup_set["set_id"] == "big"
    assert [a["original"] for a in dup_set["assets"]] == [True, False, False]
    assert [a["distance"] for a in dup_set["assets"]] == [0, 0, 0]
    assert [a["match"] for a in dup_set["assets"]] == ["original", "same_phash", "same_phash"]
    assert [a["similarity"] for a in dup_set["assets"]] == [None, None, None]
    original = dup_set["assets"][0]
    assert (original["title"], original["tags"], original["width"], original["height"]) == (
        "Big",
        ["t"],
        800,
        600,
    )
    assert original["uploaded_at"] == "2024-01-02T00:00:00Z"


def test_pixel_ties_go_to_the_earliest_upload_then_the_smallest_id(
    harness: Harness, portal: str, images: Path
) -> None:
    path = write(images / "p.png", photo(12))
    upload_all(
        harness,
        portal,
        [
            ("b", path, {"uploaded_at": T0}),
            ("a", path, {"uploaded_at": T0}),
            ("c", path, {"uploaded_at": T0 - DAY}),
        ],
    )
    (page,) = ask(harness, portal, sort=Sort(field="uploaded_at", order="asc"))
    assert set_ids(page) == [["c", "a", "b"]]


def test_an_empty_answer_is_one_page_with_no_sets(harness: Harness, portal: str) -> None:
    (page,) = ask(harness, portal)
    assert (page["total_sets"], page["page"], page["pages"], page["sets"]) == (0, 1, 1, [])


def test_sets_follow_the_bank_order(harness: Harness, portal: str, images: Path) -> None:
    # Given three pairs of copies uploaded on different days, titled out of date order
    specs = []
    for n, (seed, title) in enumerate([(20, "b"), (21, "c"), (22, "a")]):
        path = write(images / f"{seed}.png", photo(seed))
        for copy in ("x", "y"):
            specs.append((f"{seed}{copy}", path, {"uploaded_at": T0 + n * DAY, "title": title}))
    upload_all(harness, portal, specs)

    newest_first = ask(harness, portal, "newest")[0]
    oldest_first = ask(harness, portal, "oldest", sort=Sort(order="asc"))[0]
    by_title = ask(harness, portal, "title", sort=Sort(field="title", order="asc"))[0]

    assert [s[0] for s in set_ids(newest_first)] == ["22x", "21x", "20x"]
    assert [s[0] for s in set_ids(oldest_first)] == ["20x", "21x", "22x"]
    assert [s[0] for s in set_ids(by_title)] == ["22x", "20x", "21x"]


def test_sets_can_follow_pixel_order(harness: Harness, portal: str, images: Path) -> None:
    specs: list[tuple[str, Path, dict[str, Any]]] = []
    for seed, width in ((23, 300), (24, 500), (25, 400)):
        path = write(images / f"{seed}.png", photo(seed, size=(width, width * 3 // 4)))
        specs += [(f"{seed}x", path, {}), (f"{seed}y", path, {})]
    upload_all(harness, portal, specs)

    largest = ask(harness, portal, "px", sort=Sort(field="pixels", order="desc"))[0]
    smallest = ask(harness, portal, "px-asc", sort=Sort(field="pixels", order="asc"))[0]

    assert [s[0] for s in set_ids(largest)] == ["24x", "25x", "23x"]
    assert [s[0] for s in set_ids(smallest)] == ["23x", "25x", "24x"]


def test_scope_limits_the_search(harness: Harness, portal: str, images: Path) -> None:
    path_a = write(images / "a.png", photo(30))
    path_b = write(images / "b.png", photo(31))
    upload_all(
        harness,
        portal,
        [
            ("a1", path_a, {"tags": ["red", "car"], "title": "Red Car", "uploaded_at": T0}),
            (
                "a2",
                path_a,
                {"tags": ["red"], "description": "a CAR at noon", "uploaded_at": T0 + DAY},
            ),
            ("a3", path_a, {"tags": ["blue"], "uploaded_at": T0 + 2 * DAY}),
            ("b1", path_b, {"tags": ["red", "car"], "uploaded_at": T0}),
            ("b2", path_b, {"tags": ["Car"], "uploaded_at": T0 + 5 * DAY}),
        ],
    )

    def sets(scope: Scope, request_id: str) -> list[set[str]]:
        return [set(ids) for ids in set_ids(ask(harness, portal, request_id, scope=scope)[0])]

    assert sets(Scope(tags_all=["red"]), "all") == [{"a1", "a2"}]
    assert sets(Scope(tags_any=["blue", "car"]), "any") == [{"a1", "a3"}]
    assert sets(Scope(text="car"), "text") == [{"b1", "b2"}, {"a1", "a2"}]
    assert sets(Scope(asset_ids=["a1", "a3", "b1"]), "ids") == [{"a1", "a3"}]
    assert sets(Scope(uploaded_from=T0, uploaded_to=T0 + DAY), "dates") == [{"a1", "a2"}]
    assert sets(Scope(tags_all=["red"], uploaded_from=T0 + DAY), "both") == []


def test_max_distance_widens_matches_around_originals(
    harness: Harness, portal: str, images: Path
) -> None:
    # Given a picture and a slightly altered copy whose pHash differs by a few bits
    base = photo(40)
    altered = base.copy()
    altered.paste((255, 255, 255), (0, 0, 120, 90))
    upload_all(
        harness,
        portal,
        [
            ("base", write(images / "base.png", base), {}),
            ("altered", write(images / "alt.png", altered), {}),
        ],
    )

    (exact,) = ask(harness, portal, "exact", match="phash")
    (near,) = ask(harness, portal, "near", match="phash", max_distance=16)
    (verified,) = ask(harness, portal, "verified")
    (radius_alone,) = ask(harness, portal, "radius-alone", max_distance=16)

    assert exact["sets"] == []
    # A radius without a rule is the phash rule's (v1 silently answered with verified sets)
    assert (radius_alone["match"], radius_alone["max_distance"]) == ("phash", 16)
    assert radius_alone["sets"] == near["sets"]
    (dup_set,) = near["sets"]
    assert near["max_distance"] == 16
    distances = {a["asset_id"]: a["distance"] for a in dup_set["assets"]}
    assert distances["base"] == 0 or distances["altered"] == 0
    assert 0 < max(distances.values()) <= 16
    # The shipped rule confirms the altered copy on its signature, without a radius to tune
    assert (verified["match"], verified["max_distance"]) == ("verified", None)
    (confirmed,) = verified["sets"]
    copy = confirmed["assets"][1]
    assert copy["match"] == "near" and copy["distance"] == max(distances.values())
    assert 0.92 <= copy["similarity"] <= 1


def test_large_answers_are_paged(harness: Harness, portal: str, images: Path) -> None:
    # The tests run with 20 sets a page (conftest): 41 pairs need three pages
    pairs = 41
    specs: list[tuple[str, Path, dict[str, Any]]] = []
    for n in range(pairs):
        path = write(images / f"{n}.png", photo(1000 + n, size=(64, 48)))
        specs += [(f"{n}a", path, {}), (f"{n}b", path, {})]
    upload_all(harness, portal, specs)

    pages = ask(harness, portal)

    assert [(p["page"], p["pages"], p["total_sets"]) for p in pages] == [
        (1, 3, pairs),
        (2, 3, pairs),
        (3, 3, pairs),
    ]
    assert [len(p["sets"]) for p in pages] == [20, 20, 1]
    all_ids = [a for p in pages for s in set_ids(p) for a in s]
    assert len(all_ids) == len(set(all_ids)) == 2 * pairs


def test_another_portals_assets_are_invisible(harness: Harness, portal: str, images: Path) -> None:
    path = write(images / "p.png", photo(50))
    other = portal + "-other"
    upload_all(harness, portal, [("mine", path, {})])
    upload_all(harness, other, [("theirs", path, {}), ("theirs2", path, {})])

    (page,) = ask(harness, portal, scope=Scope(asset_ids=["mine", "theirs", "theirs2"]))

    assert page["sets"] == []
    assert harness.events(other, "duplicates.found") == []


def test_verified_sets_name_how_each_copy_matches(
    harness: Harness, portal: str, images: Path
) -> None:
    # Given a picture, its byte copy, a re-encoded copy, a mirror and a quarter turn
    base = photo(70, size=(640, 480))
    original = write(images / "base.png", base)
    mirror = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    upload_all(
        harness,
        portal,
        [
            ("base", original, {"uploaded_at": T0}),
            ("bytes", original, {"uploaded_at": T0 + DAY}),
            ("jpeg", write(images / "b.jpg", base, "JPEG", quality=70), {"uploaded_at": T0 + DAY}),
            ("mirror", write(images / "m.png", mirror), {}),
            ("turned", write(images / "t.png", base.transpose(Image.Transpose.ROTATE_270)), {}),
            ("stranger", write(images / "s.png", photo(71, size=(640, 480))), {}),
        ],
    )

    (verified,) = ask(harness, portal, "v")
    (phash,) = ask(harness, portal, "p", match="phash", max_distance=8)

    (dup_set,) = verified["sets"]
    kinds = {a["asset_id"]: a["match"] for a in dup_set["assets"]}
    assert kinds == {
        "base": "original",
        "bytes": "identical",
        "jpeg": kinds["jpeg"],
        "mirror": "mirrored",
        "turned": "rotated",
    }
    assert kinds["jpeg"] in ("same_phash", "near")
    assert dup_set["assets"][0]["asset_id"] == "base"  # same pixels: the earliest upload
    # The product's rule cannot see a mirror or a turn
    (exact_set,) = phash["sets"]
    assert {a["asset_id"] for a in exact_set["assets"]} == {"base", "bytes", "jpeg"}


def test_a_framed_copy_joins_its_original_which_stays_the_original(
    harness: Harness, portal: str, images: Path
) -> None:
    # Given a picture, the same picture in a white frame (more pixels, uploaded first), and a
    # mirror of the picture
    base = photo(72, size=(640, 480))
    framed = Image.new("RGB", (704, 528), (255, 255, 255))
    framed.paste(base, (32, 24))
    upload_all(
        harness,
        portal,
        [
            ("framed", write(images / "f.jpg", framed, "JPEG", quality=90), {"uploaded_at": T0}),
            ("base", write(images / "b.png", base), {"uploaded_at": T0 + DAY}),
            (
                "mirror",
                write(images / "m.png", base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
                {"uploaded_at": T0 + DAY},
            ),
        ],
    )
    stored = harness.asset(portal, "framed")
    assert stored is not None and stored["content_i64"] != stored["phash_i64"]
    assert stored["pixels"] < 704 * 528  # the frame is not picture

    (verified,) = ask(harness, portal, "v")

    # Then one set: the picture leads it (the frame adds pixels, not picture), and both copies
    # are confirmed against it
    (dup_set,) = verified["sets"]
    kinds = {a["asset_id"]: a["match"] for a in dup_set["assets"]}
    assert kinds == {"base": "original", "framed": "near", "mirror": "mirrored"}
    framed_copy = next(a for a in dup_set["assets"] if a["asset_id"] == "framed")
    assert (framed_copy["width"], framed_copy["height"]) == (704, 528)  # as uploaded


def test_the_same_bytes_are_identical_under_the_phash_rule_too(
    harness: Harness, portal: str, images: Path
) -> None:
    path = write(images / "same.png", photo(45))
    upload_all(harness, portal, [("first", path, {"uploaded_at": T0}), ("again", path, {})])
    for rule in ("phash", "verified"):
        (page,) = ask(harness, portal, f"r-{rule}", match=rule)
        (dup_set,) = page["sets"]
        assert [a["match"] for a in dup_set["assets"]] == ["original", "identical"], rule


def test_a_thumbnail_smaller_than_the_signature_joins_its_original(
    harness: Harness, portal: str, images: Path
) -> None:
    # Given a photograph and its 24-pixel thumbnail, which matches only when compared at a
    # resolution both have: the search must read each asset's size with its hashes
    moon = sample_photo("moon.png")
    thumbnail = moon.resize((24, 24), Image.Resampling.LANCZOS)
    upload_all(
        harness,
        portal,
        [
            ("moon", write(images / "moon.jpg", moon, "JPEG", quality=90), {}),
            ("thumb", write(images / "thumb.jpg", thumbnail, "JPEG", quality=75), {}),
        ],
    )

    (verified,) = ask(harness, portal, "v")

    assert set_ids(verified) == [["moon", "thumb"]]
    assert verified["sets"][0]["assets"][1]["match"] == "near"


def test_a_photograph_with_a_thin_even_rim_leads_its_captioned_copy(
    harness: Harness, portal: str, images: Path
) -> None:
    # Given a photograph whose own dark rim is an even border (stored, as before the ranking
    # rule, with only the inside counted) and a captioned copy of it, uploaded later
    retina, captioned = retina_and_its_captioned_copy(images)
    upload_all(
        harness,
        portal,
        [
            ("retina", retina, {"uploaded_at": T0}),
            ("captioned", captioned, {"uploaded_at": T0 + DAY}),
        ],
    )
    harness.db.assets.update_one(
        {"portal_id": portal, "asset_id": "retina"}, {"$set": {"pixels": RETINA_INSIDE_PIXELS}}
    )

    (verified,) = ask(harness, portal, "v")

    # Then the photograph leads: a rim that thin counts as picture, stored before or after
    (dup_set,) = verified["sets"]
    assert [a["asset_id"] for a in dup_set["assets"]] == ["retina", "captioned"]
