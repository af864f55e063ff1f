"""`dupfinder scan --html`: the sets as one page people can look at, thumbnails beside it.

The page is one self-contained file (inline style, no external resources); thumbnails are small
JPEGs in a folder next to it, made only for the files that are in a set, from a reduced-scale
decode (JPEG's DCT scaling through `Image.draft`), in parallel processes. Every text on the page
comes from file names and is escaped.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image, ImageOps

from schemas.events import DuplicateSet, SetMember

THUMBNAIL_SIDE = 160

REASONS = {
    "pinned": "pinned",
    "most_pixels": "the most pixels",
    "earliest_upload": "the oldest file",
    "smallest_id": "the first path",
}


def thumbnail(source: str, target: str) -> bool:
    """Write a JPEG thumbnail of `source` at `target`; False when it cannot be read.

    Hashing's own decode cannot serve: it decodes JPEGs in greyscale, and before the sets are
    known. So members are decoded again, at the smallest DCT scale that still covers the
    thumbnail, then box-reduced (the cheapest filter; at this size it looks the same).
    """
    try:
        with Image.open(source) as image:
            image.draft("RGB", draft_size(image.size))
            turned = image.getexif().get(ORIENTATION, 1) != 1
            small = ImageOps.exif_transpose(image) if turned else image
            small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BOX)
            small.convert("RGB").save(target, "JPEG", quality=75)
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    return True


#: The EXIF tag that says how a picture is turned.
ORIENTATION = 0x0112


def draft_size(size: tuple[int, int], side: int = THUMBNAIL_SIDE) -> tuple[int, int]:
    """The size to ask the JPEG decoder for: the thumbnail's own, not a `side` x `side` square.

    libjpeg's scaled decode keeps both sides at least as large as asked, so asking a square of a
    4:3 photo decodes twice as many rows and columns as the thumbnail has (640 x 480 at 1/2
    instead of 1/4): a quarter of the pixels is what the report's cost comes down to. A turned
    picture swaps its sides, which leaves the longest side, and so the scale, as it is.
    """
    width, height = size
    longest = max(width, height)
    if longest <= side:
        return size
    return max(1, -(-width * side // longest)), max(1, -(-height * side // longest))


def thumbnails_folder(report: Path) -> Path:
    """Where the thumbnails of a report go: `<name>_files/` beside it."""
    return report.with_name(f"{report.stem}_files")


def write_report(
    report: Path, sets: Sequence[DuplicateSet], *, files: int, unreadable: int, workers: int
) -> Path:
    """Write the page and its thumbnails; returns the thumbnails' folder."""
    folder = thumbnails_folder(report)
    folder.mkdir(parents=True, exist_ok=True)
    members = [m for s in sets for m in s.assets]
    names = {m.asset_id: f"{n}.jpg" for n, m in enumerate(members)}
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        made = dict(
            zip(
                names,
                pool.map(
                    thumbnail,
                    list(names),
                    [str(folder / name) for name in names.values()],
                    chunksize=16,
                ),
                strict=True,
            )
        )
    sizes = {m.asset_id: _size(m.asset_id) for m in members}
    freed = sum(sizes[m.asset_id] for s in sets for m in s.assets[1:])
    rows = "\n".join(
        _row(number, s, folder.name, names, made, sizes) for number, s in enumerate(sets, 1)
    )
    duplicates = sum(len(s.assets) - 1 for s in sets)
    summary = (
        f"{files} files, {unreadable} unreadable, {len(sets)} duplicate "
        f"{'set' if len(sets) == 1 else 'sets'}, {duplicates} "
        f"{'duplicate' if duplicates == 1 else 'duplicates'}; deleting every duplicate would "
        f"free {_bytes(freed)}"
    )
    report.write_text(_PAGE.format(summary=html.escape(summary), rows=rows), encoding="utf-8")
    return folder


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{count} bytes"


def _row(
    number: int,
    dup_set: DuplicateSet,
    folder: str,
    names: dict[str, str],
    made: dict[str, bool],
    sizes: dict[str, int],
) -> str:
    cards = "".join(_card(m, folder, names, made, sizes) for m in dup_set.assets)
    return (
        f'<section class="set"><h2>Set {number}: {len(dup_set.assets)} images</h2>'
        f'<div class="row">{cards}</div></section>'
    )


def _card(
    member: SetMember,
    folder: str,
    names: dict[str, str],
    made: dict[str, bool],
    sizes: dict[str, int],
) -> str:
    if member.original:
        reason = REASONS.get(member.original_reason or "", "")
        label = f"original{f' ({reason})' if reason else ''}"
    elif member.match == "near":
        label = f"near, {member.distance} bits apart"
        if member.similarity is not None:
            label += f", similarity {member.similarity:.2f}"
    else:
        label = member.match
    image = (
        f'<img src="{html.escape(folder)}/{names[member.asset_id]}" alt="">'
        if made.get(member.asset_id)
        else '<div class="none">no preview</div>'
    )
    return (
        f'<figure class="{"original" if member.original else "copy"}">{image}'
        f"<figcaption><b>{html.escape(label)}</b><br>{member.width} &times; {member.height} px, "
        f"{_bytes(sizes[member.asset_id])}<br>"
        f'<span class="path">{html.escape(member.asset_id)}</span></figcaption></figure>'
    )


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dupfinder scan</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
.summary {{ font-size: 1.1em; margin-bottom: 1em; }}
.set {{ border-top: 1px solid #ddd; padding: .5em 0; }}
.set h2 {{ font-size: 1em; margin: .3em 0; }}
.row {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; width: 180px; padding: 6px; border: 2px solid #eee; border-radius: 6px; }}
figure.original {{ border-color: #2a7; background: #f3fbf6; }}
figure img, .none {{ width: 160px; height: 120px; object-fit: contain; background: #f6f6f6; }}
.none {{ display: flex; align-items: center; justify-content: center; color: #999; }}
img.broken {{ outline: 2px solid #c33; }}
.path {{ word-break: break-all; color: #555; font-size: .9em; }}
</style></head>
<body data-state="loading">
<h1>Duplicate images</h1>
<p class="summary">{summary}</p>
{rows}
<script>
// Marks thumbnails that did not load, so they show (and a browser test can count them).
window.addEventListener("load", () => {{
  let broken = 0;
  for (const img of document.images) {{
    if (!img.complete || img.naturalWidth === 0) {{ img.classList.add("broken"); broken++; }}
  }}
  document.body.dataset.broken = String(broken);
  document.body.dataset.images = String(document.images.length);
  document.body.dataset.state = "loaded";
}});
</script>
</body></html>
"""
