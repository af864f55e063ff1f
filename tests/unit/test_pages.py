"""Paging an answer: bounded by sets and by bytes, in set order, nothing lost or repeated."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core import pages
from worker.core.grouping import Group

MAX = 10_000


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 3000), min_size=2, max_size=30), max_size=40),
    st.integers(1, 8),
)
def test_layout_bounds_pages_and_keeps_every_member_once_in_order(
    sizes: list[list[int]], max_sets: int
) -> None:
    layout = pages.layout(sizes, max_sets=max_sets, max_bytes=MAX)
    assert layout  # an empty answer is one empty page
    room = MAX - pages.PAGE_OVERHEAD_BYTES
    seen: list[tuple[int, int]] = []
    for page in layout:
        assert len(page) <= max_sets
        spent = sum(pages.SET_OVERHEAD_BYTES + sum(sizes[p.group][p.start : p.stop]) for p in page)
        # Only a part holding a single member may exceed the page (none does in practice).
        assert spent <= room or (len(page) == 1 and page[0].stop - page[0].start == 1)
        for part in page:
            seen.extend((part.group, n) for n in range(part.start, part.stop))
    assert seen == [(g, n) for g, members in enumerate(sizes) for n in range(len(members))]
    for g, members in enumerate(sizes):
        parts = [p for page in layout for p in page if p.group == g]
        if pages.SET_OVERHEAD_BYTES + sum(members) <= room:
            assert len(parts) == 1  # a set that fits on an empty page is never split
        else:
            assert all(len(page) == 1 for page in layout if any(p.group == g for p in page))


def test_a_set_larger_than_a_page_continues_under_its_set_id() -> None:
    ids = [f"a{n}" for n in range(40)]
    group = Group(members=np.arange(40, dtype=np.intp), distances=np.zeros(40, dtype=np.int64))
    docs = {
        asset_id: {
            "asset_id": asset_id,
            "title": "t",
            "description": "é" * 20_000,  # 120 000 bytes once JSON escapes it
            "tags": [],
            "width": 10,
            "height": 10,
            "uploaded_at": datetime(2024, 1, 1, tzinfo=UTC),
            "phash": "8000000000000000",
        }
        for asset_id in ids
    }
    layout = pages.layout([pages.member_sizes(group, ids, docs)], max_sets=500)
    assert len(layout) > 1
    built = [
        pages.build_page(
            request_id="r",
            portal_id="p",
            match="phash",
            max_distance=0,
            groups=[group],
            asset_ids=ids,
            docs=docs,
            total_sets=1,
            page=n,
            pages=len(layout),
            parts=parts,
        )
        for n, parts in enumerate(layout, start=1)
    ]
    assert all(len(pages.encoded(page)) <= pages.MAX_PAGE_BYTES for page in built)
    members = [a.asset_id for page in built for s in page.sets for a in s.assets]
    assert members == ids
    assert {s.set_id for page in built for s in page.sets} == {"a0"}
    assert [a.original for page in built for s in page.sets for a in s.assets].count(True) == 1
