"""The scan report's thumbnails: decoded at the smallest DCT scale that covers them."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, JpegImagePlugin

from tests.images import photo, write
from worker.report import THUMBNAIL_SIDE, draft_size, thumbnail


@pytest.mark.parametrize(
    ("size", "decoded"),
    [
        ((640, 480), (160, 120)),  # 1/4: a square request would have decoded 320 x 240
        ((320, 240), (160, 120)),  # 1/2 instead of the full size
        ((480, 640), (120, 160)),
        ((1000, 750), (250, 188)),  # 1/4: 1/8 would be smaller than the thumbnail
        ((120, 90), (120, 90)),  # already smaller: decoded as it is
    ],
)
def test_a_thumbnail_decodes_no_more_than_its_scale_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int], decoded: tuple[int, int]
) -> None:
    # Given a JPEG of this size, and the decoder's draft watched
    source = write(tmp_path / "a.jpg", photo(7, size), "JPEG", quality=90)
    seen: list[tuple[int, int]] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def watched(self: JpegImagePlugin.JpegImageFile, *args: object) -> object:
        outcome = original(self, *args)  # type: ignore[arg-type]
        seen.append(self.size)
        return outcome

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", watched)

    # When its thumbnail is made
    assert thumbnail(str(source), str(tmp_path / "t.jpg"))

    # Then the decoder handed out the thumbnail's scale, and the thumbnail fits the box
    assert seen[0] == decoded
    with Image.open(tmp_path / "t.jpg") as made:
        assert max(made.size) == min(THUMBNAIL_SIDE, max(size))
        assert abs(made.size[0] / made.size[1] - size[0] / size[1]) < 0.02


def test_the_draft_request_covers_the_thumbnail_on_both_sides() -> None:
    for size in [(4000, 3000), (3000, 4000), (161, 5), (5, 161), (160, 160), (10_000, 1)]:
        request = draft_size(size)
        longest, side = max(size), min(max(size), THUMBNAIL_SIDE)
        assert max(request) == side
        # Each side at least the source's, scaled as the thumbnail scales it.
        assert all(r * longest >= s * side for r, s in zip(request, size, strict=True))
