"""The worker's cache of search columns against a real MongoDB-protocol server: after every kind
of write, by this process or another (a second client), a search reads from it what it would
read from the database; an unchanged portal costs no rebuild; budgets and portal walls hold."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from PIL import Image

from schemas.messages import AssetUploaded, Scope
from tests.images import encode, photo
from worker import column_cache
from worker.column_cache import ColumnCache
from worker.core import matching
from worker.core.fingerprint import CROP_COUNT
from worker.core.grouping import Candidates
from worker.core.hashing import HashedImage, hash_image, provenance
from worker.observability import REGISTRY
from worker.store import AssetStore, utcnow

T0 = datetime(2024, 1, 1, tzinfo=UTC)
#: Hashes of a few distinct pictures, made once.
_IMAGES: dict[int, HashedImage] = {}


def _hashed(seed: int) -> HashedImage:
    if seed not in _IMAGES:
        _IMAGES[seed] = hash_image(encode(photo(seed, (96, 72)), "PNG"), max_pixels=10**7)
    return _IMAGES[seed]


def _upload(portal: str, asset_id: str, **fields: Any) -> AssetUploaded:
    return AssetUploaded(
        portal_id=portal, asset_id=asset_id, source="/x.png", uploaded_at=T0, **fields
    )


async def _save(store: AssetStore, portal: str, asset_id: str, seed: int, **fields: Any) -> None:
    await store.save_hashed(_upload(portal, asset_id, **fields), _hashed(seed), provenance(), T0)


async def _portal_of(store: AssetStore, portal: str, count: int) -> None:
    """`count` hashed assets `a1`... of distinct pictures."""
    for n in range(1, count + 1):
        await _save(store, portal, f"a{n}", n)


KINDS = ("full", "refresh")


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _by_id(columns: Candidates) -> dict[str, tuple[Any, ...]]:
    """Every column a search reads, row by row, keyed by asset id."""
    prints = columns.prints
    assert prints is not None
    return {
        asset_id: (
            int(columns.phashes[n]),
            int(columns.pixels[n]),
            int(columns.uploaded_at_us[n]),
            int(columns.pinned_at_us[n]),
            columns.titles[n],
            prints.variants[n].tolist(),
            int(prints.centres[n]),
            prints.crops[n].tolist(),
            bool(prints.low_detail[n]),
            int(prints.content[n]),
            int(prints.pixels[n]),
        )
        for n, asset_id in enumerate(columns.asset_ids)
    }


async def _read_both(
    cache: ColumnCache, store: AssetStore, portal: str, scope: Scope | None = None
) -> tuple[Candidates, dict[str, tuple[Any, ...]]]:
    """The cache's columns, checked equal to what the database holds now."""
    scope = scope or Scope()
    cached = await cache.candidates(portal, scope, with_titles=True, with_prints=True)
    fresh = await store.candidates(
        portal, scope, with_titles=True, with_prints=True, with_signatures=False
    )
    assert _by_id(cached) == _by_id(fresh)
    return cached, _by_id(cached)


def _run(mongo_url: str, scenario: Callable[[AssetStore, AssetStore], Awaitable[None]]) -> None:
    """Runs `scenario` with two stores on one database: two processes' clients."""

    async def main() -> None:
        database = f"columns_{uuid.uuid4().hex[:8]}"
        ours = AssetStore.connect(mongo_url, database, timeout_ms=2000)
        theirs = AssetStore.connect(mongo_url, database, timeout_ms=2000)
        try:
            await ours.ensure_indexes()
            await scenario(ours, theirs)
        finally:
            await ours._client.drop_database(database)
            await ours.close()
            await theirs.close()

    asyncio.run(main())


def test_every_kind_of_write_by_another_process_reaches_the_next_search(mongo_url: str) -> None:
    async def scenario(ours: AssetStore, theirs: AssetStore) -> None:
        # Given a portal of six hashed assets, cached by this process
        cache = ColumnCache(ours, budget_bytes=64 * 2**20, lag_s=60)
        for n in range(1, 7):
            await _save(theirs, "p", f"a{n}", n, title=f"title {n}")
        await _save(theirs, "other", "x1", 1)
        _, before = await _read_both(cache, ours, "p")
        assert sorted(before) == [f"a{n}" for n in range(1, 7)]

        # When another process deletes one, pins one, merges metadata into one, fails one,
        # rehashes one from other bytes, adds one, and writes in another portal
        await theirs.tombstone("p", "a1", via="test")
        await theirs.pin("p", "a2", utcnow(), "c1")
        await theirs.set_metadata("p", "a3", title="merged", description="", tags=["t"])
        await theirs.mark_failed(_upload("p", "a4"), "unreadable", "test")
        await _save(theirs, "p", "a5", 50, title="title 5")
        await _save(theirs, "p", "a7", 7)
        await _save(theirs, "other", "x2", 2)

        # Then this process's next search reads exactly what the database holds
        _, after = await _read_both(cache, ours, "p")
        assert sorted(after) == ["a2", "a3", "a5", "a6", "a7"]
        assert after["a2"][3] > 0 and before["a2"][3] == 0  # pinned
        assert after["a3"][4] == "merged"
        assert after["a5"][0] != before["a5"][0]  # the new bytes' hash
        assert after["a6"] == before["a6"]
        assert cache.cached("p") == 5

    _run(mongo_url, scenario)


def test_an_unchanged_portal_is_served_from_the_columns_it_holds(mongo_url: str) -> None:
    async def scenario(ours: AssetStore, theirs: AssetStore) -> None:
        cache = ColumnCache(ours, budget_bytes=64 * 2**20, lag_s=60)
        await _portal_of(theirs, "p", 4)
        reads = {kind: _metric("dupfinder_search_cache_reads_total", kind=kind) for kind in KINDS}
        first, _ = await _read_both(cache, ours, "p")

        # Read again within the lag, every document is read and found as it is held
        second, _ = await _read_both(cache, ours, "p")

        assert second.phashes is first.phashes  # the same arrays: nothing was rebuilt
        assert second.prints is not None and first.prints is not None
        assert second.prints.variants is first.prints.variants
        # One full read, then a refresh; the memory gauge shows what the cache holds
        for kind, count in (("full", 1), ("refresh", 1)):
            assert _metric("dupfinder_search_cache_reads_total", kind=kind) == reads[kind] + count
        assert _metric("dupfinder_search_cache_bytes") == cache.held_bytes > 0

    _run(mongo_url, scenario)


@pytest.mark.parametrize(("lag_s", "seen"), [(60, True), (0, False)])
def test_a_write_stamped_by_a_clock_behind_this_one_is_read_within_the_lag(
    mongo_url: str, lag_s: float, seen: bool
) -> None:
    async def scenario(ours: AssetStore, theirs: AssetStore) -> None:
        cache = ColumnCache(ours, budget_bytes=64 * 2**20, lag_s=lag_s)
        await _save(theirs, "p", "a1", 1, title="old")
        await asyncio.sleep(0.01)
        await cache.candidates("p", Scope(), with_titles=True, with_prints=True)

        # Another host, its clock 30 s behind, renames the asset after this read began
        await theirs._assets.update_one(
            {"portal_id": "p", "asset_id": "a1"},
            {"$set": {"title": "new", "updated_at": utcnow() - timedelta(seconds=30)}},
        )
        cached = await cache.candidates("p", Scope(), with_titles=True, with_prints=True)

        assert cached.titles == (["new"] if seen else ["old"])

    _run(mongo_url, scenario)


def test_a_scoped_search_takes_the_rows_of_its_ids_from_the_cache(mongo_url: str) -> None:
    async def scenario(ours: AssetStore, theirs: AssetStore) -> None:
        cache = ColumnCache(ours, budget_bytes=64 * 2**20, lag_s=60)
        for n in range(1, 7):
            await _save(theirs, "p", f"a{n}", n, tags=["even"] if n % 2 == 0 else [])
        await _read_both(cache, ours, "p")

        by_tag, _ = await _read_both(cache, ours, "p", Scope(tags_all=["even"]))
        by_ids, _ = await _read_both(cache, ours, "p", Scope(asset_ids=["a5", "a1", "zz"]))
        by_text, _ = await _read_both(cache, ours, "p", Scope(text="nothing like it"))

        assert sorted(by_tag.asset_ids) == ["a2", "a4", "a6"]
        assert sorted(by_ids.asset_ids) == ["a1", "a5"]
        assert by_text.asset_ids == []
        # What a search did not ask for is left out
        plain = await cache.candidates("p", Scope(), with_titles=False, with_prints=False)
        assert plain.titles == [] and plain.prints is None and len(plain.asset_ids) == 6

    _run(mongo_url, scenario)


def test_the_budget_drops_the_portal_searched_least_recently(mongo_url: str) -> None:
    async def scenario(ours: AssetStore, theirs: AssetStore) -> None:
        for portal in ("p1", "p2"):
            await _portal_of(theirs, portal, 20)
        probe = ColumnCache(ours, budget_bytes=64 * 2**20, lag_s=60)
        await probe.candidates("p1", Scope(), with_titles=True, with_prints=True)
        one = probe.held_bytes

        # A budget for one portal: the second search drops the first portal
        cache = ColumnCache(ours, budget_bytes=one + one // 2, lag_s=60)
        await _read_both(cache, ours, "p1")
        await _read_both(cache, ours, "p2")
        assert cache.cached("p1") is None and cache.cached("p2") == 20
        assert cache.held_bytes <= one + one // 2

        # A portal larger than the whole budget is answered, not kept
        small = ColumnCache(ours, budget_bytes=one // 2, lag_s=60)
        answered, _ = await _read_both(small, ours, "p1")
        assert len(answered.asset_ids) == 20 and small.cached("p1") is None

    _run(mongo_url, scenario)


def test_concurrent_searches_of_one_portal_share_one_refresh(mongo_url: str) -> None:
    async def scenario(ours: AssetStore, theirs: AssetStore) -> None:
        cache = ColumnCache(ours, budget_bytes=64 * 2**20, lag_s=60)
        await _portal_of(theirs, "p", 5)
        reads: list[datetime | None] = []
        real = ours.changed_columns

        async def counted(portal_id: str, since: datetime | None) -> Any:
            reads.append(since)
            return await real(portal_id, since)

        ours.changed_columns = counted  # type: ignore[method-assign]
        found = await asyncio.gather(
            *(cache.candidates("p", Scope(), with_titles=True, with_prints=True) for _ in range(4))
        )

        assert all(sorted(f.asset_ids) == sorted(found[0].asset_ids) for f in found)
        assert len(found[0].asset_ids) == 5
        assert reads[0] is None and all(since is not None for since in reads[1:])
        assert np.all(found[3].phashes == found[0].phashes)

    _run(mongo_url, scenario)


def test_a_whole_portal_is_read_whatever_its_hashes(mongo_url: str) -> None:
    async def scenario(ours: AssetStore, theirs: AssetStore) -> None:
        # Given assets whose hashes sit at the ends and the middle of the 64-bit range
        await _save(theirs, "p", "a1", 1)
        stored = await theirs._assets.find_one({"portal_id": "p", "asset_id": "a1"}, {"_id": 0})
        assert stored is not None
        values = [-(2**63), -1, 0, 2**63 - 1]
        await theirs._assets.insert_many(
            [{**stored, "asset_id": f"x{n}", "phash_i64": v} for n, v in enumerate(values)]
        )

        # When the whole portal is read, from the database and through the cache
        cache = ColumnCache(ours, budget_bytes=64 * 2**20, lag_s=60)
        columns, _ = await _read_both(cache, ours, "p")

        # Then every asset is there once
        assert sorted(columns.asset_ids) == ["a1", "x0", "x1", "x2", "x3"]
        assert sorted(columns.phashes.view(np.int64).tolist())[:1] == [-(2**63)]

    _run(mongo_url, scenario)


async def _save_jpeg(store: AssetStore, portal: str, asset_id: str, seed: int) -> None:
    """A JPEG of picture `seed`: other bytes, nearly the same hashes."""
    image = hash_image(encode(photo(seed, (96, 72)), "JPEG", quality=80), max_pixels=10**7)
    await store.save_hashed(_upload(portal, asset_id), image, provenance(), T0)


def _pair_ids(columns: Candidates, pairs: tuple[np.ndarray, np.ndarray]) -> set[tuple[str, ...]]:
    ids = columns.asset_ids
    return {
        tuple(sorted((ids[a], ids[b])))
        for a, b in zip(pairs[0].tolist(), pairs[1].tolist(), strict=True)
    }


async def _pairs_both(
    cache: ColumnCache, store: AssetStore, portal: str, scope: Scope | None = None
) -> set[tuple[str, ...]]:
    """The cache's candidate pairs, checked equal to a full search over what the database holds
    now."""
    scope = scope or Scope()
    cached, pairs = await cache.verified(portal, scope, with_titles=False)
    fresh = await store.candidates(
        portal, scope, with_titles=False, with_prints=True, with_signatures=False
    )
    assert fresh.prints is not None
    expected = _pair_ids(fresh, matching.candidate_pairs(fresh.prints))
    assert _pair_ids(cached, pairs) == expected
    return expected


def test_candidate_pairs_kept_with_the_columns_follow_every_write(
    mongo_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    searches: list[int] = []
    full_search = column_cache.candidate_pairs

    def counted(prints: Any, **kwargs: Any) -> Any:
        searches.append(len(prints.phashes))
        return full_search(prints, **kwargs)

    monkeypatch.setattr(column_cache, "candidate_pairs", counted)

    async def scenario(ours: AssetStore, theirs: AssetStore) -> None:
        # Given a portal of pictures with copies: the same bytes twice, and JPEGs of two
        cache = ColumnCache(ours, budget_bytes=64 * 2**20, lag_s=60, threads=2)
        for n in range(1, 9):
            await _save(theirs, "p", f"a{n}", n)
        await _save(theirs, "p", "c1", 1)
        await _save_jpeg(theirs, "p", "j2", 2)
        await _save_jpeg(theirs, "p", "j3", 3)
        before = await _pairs_both(cache, ours, "p")
        assert {("a1", "c1"), ("a2", "j2"), ("a3", "j3")} <= before

        # When another process deletes one of a pair, rehashes an asset from another's bytes,
        # adds a copy, pins an asset of a pair and fails another
        await theirs.tombstone("p", "c1", via="test")
        await _save(theirs, "p", "a5", 4)
        await _save_jpeg(theirs, "p", "j6", 6)
        await theirs.pin("p", "a2", utcnow(), "c1")
        await theirs.mark_failed(_upload("p", "j3"), "unreadable", "test")
        after = await _pairs_both(cache, ours, "p")

        # Then the pairs the cache keeps are those a full search finds now
        assert {("a2", "j2"), ("a4", "a5"), ("a6", "j6")} <= after
        assert not any("c1" in pair or "j3" in pair for pair in after)
        # and a scoped search takes its assets' pairs from them
        scoped = await _pairs_both(cache, ours, "p", Scope(asset_ids=["a2", "j2", "a6"]))
        assert scoped == {("a2", "j2")}
        # The portal was searched whole once; the refresh searched only what changed
        assert searches == [11]

    _run(mongo_url, scenario)


def test_an_asset_hashed_before_the_wide_crops_and_halves_reads_with_none(
    mongo_url: str,
) -> None:
    async def scenario(ours: AssetStore, theirs: AssetStore) -> None:
        # Given an asset stored as version 5 stored it: nine crop hashes, no halves; and one
        # as version 6 did: fourteen crop hashes (before the aspect cut's)
        await _save(theirs, "p", "old", 1)
        await _save(theirs, "p", "v6", 3)
        await _save(theirs, "p", "new", 2)
        await theirs._assets.update_one(
            {"portal_id": "p", "asset_id": "old"},
            [{"$set": {"crops": {"$literal": bytes(range(72))}}}, {"$unset": "halves"}],
        )
        await theirs._assets.update_one(
            {"portal_id": "p", "asset_id": "v6"},
            [{"$set": {"crops": {"$literal": bytes(range(112))}}}],
        )
        columns = await ours.candidates(
            "p", Scope(), with_titles=False, with_prints=True, with_signatures=False
        )
        prints = columns.prints
        assert prints is not None
        old, v6, new = (columns.asset_ids.index(name) for name in ("old", "v6", "new"))
        # Then its crops are the nine it has and zeros, and its halves are unknown (0)
        assert prints.crops.shape == (3, CROP_COUNT) and CROP_COUNT == 15
        assert prints.crops[old, :9].tolist() == _hash_values(bytes(range(72)))
        assert prints.crops[old, 9:].tolist() == [0] * 6 and prints.halves[old].tolist() == [0] * 4
        # and the version 6 asset's are its fourteen and a zero
        assert prints.crops[v6, :14].tolist() == _hash_values(bytes(range(112)))
        assert prints.crops[v6, 14] == 0 and (prints.halves[v6] != 0).all()
        assert (prints.crops[new] != 0).all() and (prints.halves[new] != 0).all()

    _run(mongo_url, scenario)


def _hash_values(packed: bytes) -> list[int]:
    return np.frombuffer(packed, dtype=">u8").astype(np.uint64).tolist()


def test_new_bytes_without_a_border_drop_the_stored_picture_hash(mongo_url: str) -> None:
    async def scenario(ours: AssetStore, theirs: AssetStore) -> None:
        # Given an asset uploaded in a white frame
        framed = Image.new("RGB", (352, 264), (255, 255, 255))
        framed.paste(photo(40, (320, 240)), (16, 12))
        inside = hash_image(encode(framed, "PNG"), max_pixels=10**7)
        assert inside.fingerprint is not None and inside.fingerprint.content_phash is not None
        await theirs.save_hashed(_upload("p", "a1"), inside, provenance(), T0)
        stored = await theirs._assets.find_one({"portal_id": "p", "asset_id": "a1"})
        assert stored is not None and "content_i64" in stored

        # When it is uploaded again as another picture, with no border
        await _save(theirs, "p", "a1", 41)

        # Then no picture hash of the old bytes is left to propose or confirm a pair
        stored = await theirs._assets.find_one({"portal_id": "p", "asset_id": "a1"})
        assert stored is not None
        assert "content_i64" not in stored and "content_signature" not in stored
        columns = await ours.candidates(
            "p", Scope(), with_titles=False, with_prints=True, with_signatures=True
        )
        assert columns.prints is not None and columns.prints.contents.tolist() == [0]

    _run(mongo_url, scenario)
