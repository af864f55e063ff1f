"""What an original inherits from the duplicates deleted into it."""

from __future__ import annotations

from schemas.messages import Merge
from worker.core.merging import MAX_DESCRIPTION, MAX_TAGS, Metadata, merged

ORIGINAL = Metadata(title="Harbour", description="Harbour at dawn", tags=("sea",))
COPIES = [
    Metadata(
        title="Harbour at dawn, pier",
        description="Shot from the pier\n\nHarbour at dawn",
        tags=("boats", "sea"),
    ),
    Metadata(title="Harbour 2", description="  Shot from the pier  \nLow tide", tags=("tide",)),
]


def test_by_default_the_original_keeps_its_own_metadata() -> None:
    assert merged(ORIGINAL, COPIES, Merge()) == ORIGINAL


def test_union_append_and_longest_merge_in_set_order() -> None:
    result = merged(ORIGINAL, COPIES, Merge(tags="union", description="append", title="longest"))
    assert result == Metadata(
        title="Harbour at dawn, pier",
        description="Harbour at dawn\nShot from the pier\nLow tide",
        tags=("sea", "boats", "tide"),
    )


def test_a_tie_for_the_longest_title_keeps_the_originals() -> None:
    same = Metadata(title="Harbouz", description="", tags=())
    assert merged(ORIGINAL, [same], Merge(title="longest")).title == "Harbour"


def test_the_merge_stays_within_what_an_upload_may_carry() -> None:
    big = Metadata(
        title="",
        description="x" * (MAX_DESCRIPTION - 20),
        tags=tuple(f"t{i}" for i in range(MAX_TAGS)),
    )
    more = Metadata(title="", description="short line\n" + "y" * 50, tags=("extra",))
    result = merged(big, [more], Merge(tags="union", description="append"))
    assert len(result.description) <= MAX_DESCRIPTION
    assert result.description.endswith("\nshort line")  # the line that fits; the long one not
    assert len(result.tags) == MAX_TAGS and "extra" not in result.tags
