"""Held-out quality: the copies a DAM receives, on photographs no threshold was read off.

    python -m benchmarks.holdout            # needs: pip install -e '.[bench]'

The photographs (25, all from PyPI wheels) are split by a fixed rule: the 13 of
`benchmarks/quality.py`, off which every threshold of the verified matcher was read, are the
tuning half; the 12 others, which no threshold has seen, are the held-out half. Each half is
its own evaluation set: every photograph with every edit of `EDITS` (the copies of the
detection issue, and thumbnails smaller than the signature) and the older copies of
`benchmarks/evaluation.py`, then hard negatives the other half does not share (tuning: the
stereo pair's other view, regions of three large photographs, textures, text pages, flat
frames; held-out: regions of a large photograph and of a crowded illustration, flat frames of
another seed), the views and regions also as thumbnails.

Every rule is scored on the same files, pairwise on "in the same set as its original", with
sets formed as `find-duplicates` forms them (around originals, most pixels first):
- imagehash's pHash on the full decode, equal and within 8 bits;
- PDQ (`pdqhash`), any of the eight dihedral hashes of one within 31 bits of the other's, both
  of quality 50 or more: the reference implementation's recommended match distance and quality;
- dupfinder's `phash` rule at 0 and `verified`, through the worker's own hashing path.
imagededup's CNN method is not run: it loads pretrained network weights from the internet at
first use, and nothing may download here.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from benchmarks import evaluation
from benchmarks.corpus import PHOTOS, package_file
from benchmarks.evaluation import Sample
from benchmarks.quality import RECALL_TARGETS, Score, original_order, score
from worker.core import grouping, matching
from worker.core.hashing import hash_image
from worker.core.matching import hex_column

#: The held-out photographs: (package, folder, file). Real photographs (and two instrument
#: images, like the tuning half's Hubble field and retina) that `quality.py` never contained.
HELD_OUT: tuple[tuple[str, str, str], ...] = (
    ("imgaug", "", "quokka.jpg"),
    ("mahotas", "demos/data", "luispedro.jpg"),
    ("mahotas", "demos/data", "nuclear.png"),
    ("glymur", "data", "nemo.jp2"),
    ("glymur", "data", "goodstuff.j2k"),
    ("glymur", "data", "heliov.jpx"),
    ("skimage", "data", "clock_motion.png"),
    ("skimage", "data", "coins.png"),
    ("skimage", "data", "cell.png"),
    ("skimage", "data", "microaneurysms.png"),
    ("pywt", "data", "aero.npz"),
    ("pywt", "data", "ascent.npz"),
)
#: Large images cut into regions (hard negatives), per half.
REGIONS = {
    "tuning": (
        ("skimage", "data", "hubble_deep_field.jpg"),
        ("skimage", "data", "retina.jpg"),
        ("sklearn", "datasets/images", "china.jpg"),
    ),
    "held-out": (
        ("mahotas", "demos/data", "DepartmentStore.jpg"),
        ("glymur", "data", "nemo.jp2"),
    ),
}

#: The edits of the detection issue: (row, recall target, [(detail, edit)]).
Edit = Callable[[Image.Image], bytes]
EDITS: list[tuple[str, float, list[tuple[str, Edit]]]] = []


def _jpeg(image: Image.Image, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _crop(image: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = image.size
    box = (round(w * left), round(h * top), round(w * (1 - right)), round(h * (1 - bottom)))
    return image.crop(box)


def _scale(image: Image.Image, factor: float) -> Image.Image:
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _thumbnail(image: Image.Image, short_side: int) -> Image.Image:
    """`image` scaled to `short_side` pixels on its shorter side: smaller than the signature."""
    return _scale(image, short_side / min(image.size))


def _framed(image: Image.Image, share: float = 0.05) -> Image.Image:
    """A white frame of `share` of the width (sides) and of the height (top and bottom)."""
    dx, dy = round(image.width * share), round(image.height * share)
    framed = Image.new("RGB", (image.width + 2 * dx, image.height + 2 * dy), (255, 255, 255))
    framed.paste(image.convert("RGB"), (dx, dy))
    return framed


def _captioned(image: Image.Image, share: float = 0.10) -> Image.Image:
    """A dark band over the bottom `share` of the picture, with a line of white text."""
    captioned = image.convert("RGB")
    band = max(4, round(image.height * share))
    draw = ImageDraw.Draw(captioned)
    draw.rectangle((0, image.height - band, image.width, image.height), fill=(24, 24, 28))
    font = ImageFont.load_default(size=max(6, band // 2))
    draw.text(
        (band // 2, image.height - band * 0.8),
        "Archive photo - all rights reserved",
        fill=(255, 255, 255),
        font=font,
    )
    return captioned


def _tone(image: Image.Image) -> Image.Image:
    brighter = ImageEnhance.Brightness(image).enhance(1.25)
    return ImageEnhance.Contrast(brighter).enhance(0.8)


def _logo_edit(corner: str, logo: Image.Image) -> Edit:
    def edit(photo: Image.Image) -> bytes:
        return _jpeg(evaluation._watermarked(photo, corner, 0.20, logo))

    return edit


def _thumbnail_edit(side: int) -> Edit:
    def edit(photo: Image.Image) -> bytes:
        return _jpeg(_thumbnail(photo, side), 75)

    return edit


def _edits(logo: Image.Image) -> list[tuple[str, float, list[tuple[str, Edit]]]]:
    turn = Image.Transpose
    return [
        (
            "re-saved, recompressed, 1/4 size q50, grey",
            0.99,
            [
                ("PNG re-save", _png),
                ("JPEG q70", lambda p: _jpeg(p, 70)),
                ("JPEG q50", lambda p: _jpeg(p, 50)),
                ("quarter size q50", lambda p: _jpeg(_scale(p, 0.25), 50)),
                ("greyscale", lambda p: _jpeg(p.convert("L"))),
            ],
        ),
        (
            "thumbnail, 24 or 16 px, q75",
            0.90,
            [(f"{side} px thumbnail", _thumbnail_edit(side)) for side in (24, 16)],
        ),
        ("brightness x1.25, contrast x0.8", 0.99, [("tone", lambda p: _jpeg(_tone(p)))]),
        (
            "mirror, quarter turn",
            0.98,
            [
                ("mirror", lambda p: _jpeg(p.transpose(turn.FLIP_LEFT_RIGHT))),
                ("quarter turn", lambda p: _jpeg(p.transpose(turn.ROTATE_90))),
            ],
        ),
        ("4 % off every side", 0.95, [("4% all", lambda p: _jpeg(_crop(p, *[0.04] * 4)))]),
        (
            "5 % off left and right",
            0.95,
            [("5% sides", lambda p: _jpeg(_crop(p, 0.05, 0, 0.05, 0)))],
        ),
        (
            "3 % off every side, 1/2 size, q75",
            0.95,
            [("3% all, half, q75", lambda p: _jpeg(_scale(_crop(p, *[0.03] * 4), 0.5), 75))],
        ),
        ("5 % white frame", 0.95, [("white frame", lambda p: _jpeg(_framed(p)))]),
        ("10 % caption band, bottom", 0.95, [("caption", lambda p: _jpeg(_captioned(p)))]),
        (
            "20 %-wide logo in a corner",
            0.95,
            [
                (f"logo {corner}", _logo_edit(corner, logo))
                for corner in ("bottom-right", "top-left")
            ],
        ),
        (
            "8 % off right and bottom",
            0.90,
            [("8% right+bottom", lambda p: _jpeg(_crop(p, 0, 0, 0.08, 0.08)))],
        ),
    ]


def _load(package: str, folder: str, name: str) -> Image.Image | None:
    path = package_file(package, folder, name)
    if path is None:
        return None
    if name.endswith(".npz"):
        with np.load(path) as data:
            return Image.fromarray(data["data"]).convert("RGB")
    with Image.open(path) as image:
        return image.convert("RGB")


def halves() -> dict[str, list[tuple[str, Image.Image]]]:
    """Each half's photographs by name, split by the fixed rule (see the module's docs)."""
    found: dict[str, list[tuple[str, Image.Image]]] = {"tuning": [], "held-out": []}
    for half, sources in (("tuning", PHOTOS), ("held-out", HELD_OUT)):
        for package, folder, name in sources:
            image = _load(package, folder, name)
            if image is None:
                raise SystemExit(f"{package} is missing: pip install -e '.[bench]'")
            found[half].append((f"{package}/{name}", image))
    return found


def half_samples(half: str, photos: list[tuple[str, Image.Image]]) -> list[Sample]:
    """One half's evaluation set: each photo, its copies, then the half's hard negatives."""
    logo = evaluation._logo()
    rows = _edits(logo)
    out: list[Sample] = []
    for name, photo in photos:
        original = _jpeg(photo, 95)
        out.append(Sample(f"{name} original", name, "original", original))
        for row, _target, edits in rows:
            out += [Sample(f"{name} {detail}", name, row, edit(photo)) for detail, edit in edits]
        for kind, detail, data in evaluation._copies(photo, original, logo):
            out.append(Sample(f"{name} {detail}", name, kind, data))
    for package, folder, name in REGIONS[half]:
        big = _load(package, folder, name)
        if big is not None:
            out += _with_thumbnails(evaluation._regions(big, f"{name} region"))
    if half == "tuning":
        right = _load("skimage", "data", "motorcycle_right.png")
        if right is not None:
            stereo = Sample("motorcycle right view", "motorcycle right", "negative", _jpeg(right))
            out += _with_thumbnails([stereo], sides=(24, 12))
        for name in ("brick.png", "grass.png", "gravel.png", "page.png", "text.png"):
            texture = _load("skimage", "data", name)
            if texture is not None:
                out.append(Sample(name, name, "negative", _png(texture)))
    out += evaluation._low_detail(seed=7 if half == "tuning" else 8)
    return out


def _with_thumbnails(negatives: list[Sample], sides: tuple[int, ...] = (24,)) -> list[Sample]:
    """Hard negatives and their thumbnails, of their own family: at a thumbnail's size a stereo
    view or a neighbouring region is closer to the other than at full size."""
    out = list(negatives)
    for sample in negatives:
        with Image.open(io.BytesIO(sample.data)) as image:
            for side in sides:
                data = _thumbnail_edit(side)(image.convert("RGB"))
                out.append(Sample(f"{sample.name} {side} px", sample.family, "negative", data))
    return out


@dataclass(frozen=True)
class Rule:
    name: str
    groups: Callable[[list[Sample], np.ndarray], list[grouping.Group]]


def _greedy(close: np.ndarray, order: np.ndarray) -> list[grouping.Group]:
    """Sets as `find-duplicates` forms them, for any pairwise test: the first asset of the pool
    in original order takes every asset close to it, then leaves the pool with them."""
    pool = order.copy()
    groups = []
    while len(pool) > 1:
        hit = close[pool[0], pool]
        hit[0] = True
        if hit.sum() >= 2:
            members = pool[hit]
            groups.append(grouping.Group(members, np.zeros(len(members), dtype=np.int64)))
        pool = pool[~hit]
    return groups


def _imagehash(samples: list[Sample]) -> np.ndarray:
    return hex_column([str(imagehash.phash(Image.open(io.BytesIO(s.data)))) for s in samples])


#: PDQ's recommended match distance (of 256 bits) and least quality, from its reference.
PDQ_DISTANCE = 31
PDQ_QUALITY = 50


def pdq_close(samples: list[Sample]) -> np.ndarray:
    """Which pairs PDQ matches: some dihedral hash of one within `PDQ_DISTANCE` of the other's
    plain hash, both of quality `PDQ_QUALITY` or more."""
    import pdqhash

    hashes, ok = [], []
    for sample in samples:
        pixels = np.asarray(Image.open(io.BytesIO(sample.data)).convert("RGB"))
        dihedral, quality = pdqhash.compute_dihedral(pixels)
        hashes.append(np.packbits(np.asarray(dihedral, dtype=np.uint8), axis=1))
        ok.append(quality >= PDQ_QUALITY)
    packed = np.stack(hashes)  # (n, 8, 32): the plain hash first
    plain = packed[:, 0]
    distance = np.full((len(samples), len(samples)), 256)
    for turn in range(8):
        bits = np.unpackbits(packed[:, turn][:, None, :] ^ plain[None, :, :], axis=2)
        distance = np.minimum(distance, bits.sum(axis=2))
    distance = np.minimum(distance, distance.T)
    good = np.array(ok)
    return (distance <= PDQ_DISTANCE) & good[:, None] & good[None, :]


def evaluate(samples: list[Sample]) -> tuple[dict[str, Score], dict[str, float]]:
    """Every rule's score on one half, and each rule's seconds."""
    hashed = [hash_image(s.data, max_pixels=200_000_000) for s in samples]
    order = original_order(hashed)
    prints = matching.columns(hashed)
    scores: dict[str, Score] = {}
    seconds: dict[str, float] = {}

    def timed(name: str, groups: Callable[[], list[grouping.Group]]) -> None:
        started = time.perf_counter()
        scores[name] = score(groups(), samples)
        seconds[name] = time.perf_counter() - started

    full = _imagehash(samples)
    timed("pHash =", lambda: grouping.form_sets(full, order, 0))
    timed("pHash <=8", lambda: grouping.form_sets(full, order, 8))
    timed("PDQ <=31", lambda: _greedy(pdq_close(samples), order))
    timed("ours =", lambda: grouping.form_sets(prints.phashes, order, 0))
    timed("verified", lambda: grouping.form_verified_sets(prints, order))
    return scores, seconds


def _split_rule(name: str) -> str:
    """The fixed rule, printed with the table: a photograph of `quality.py` tunes."""
    tuning = {f"{package}/{file}" for package, _, file in PHOTOS}
    return "tuning" if name in tuning else "held-out"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    split = halves()
    results: dict[str, dict[str, Score]] = {}
    for half, photos in split.items():
        assert all(_split_rule(name) == half for name, _ in photos)
        samples = half_samples(half, photos)
        copies = sum(s.kind not in ("original", "negative") for s in samples)
        negatives = sum(s.kind == "negative" for s in samples)
        digest = hashlib.sha256(b"".join(s.data for s in samples)).hexdigest()[:12]
        print(
            f"{half}: {len(photos)} photographs, {copies} copies, {negatives} hard negatives, "
            f"{len(samples)} files (content digest {digest})"
        )
        results[half], _ = evaluate(samples)
    rules = list(next(iter(results.values())))
    rows = [(row, target) for row, target, _ in _edits(evaluation._logo())]
    rows += list(RECALL_TARGETS.items())
    width = 9
    print("\n== recall per edit (copy in the same set as its original); tuning | held-out")
    head = "".join(f"{r:>{width}s}" for r in rules)
    print(f"{'edit':36s}{head} |{head}  target")
    for row, target in rows:
        cells = [
            "".join(f"{results[h][r].recall.get(row, float('nan')):{width}.2f}" for r in rules)
            for h in results
        ]
        print(f"{row[:36]:36s}{cells[0]} |{cells[1]}  {target:.2f}")
    for label, field, fmt in (
        ("all copies", "overall_recall", ".2f"),
        ("precision (pairs in sets)", "precision", ".3f"),
        ("merges with a hard negative", "negative_merges", "d"),
        ("pairs in sets", "pairs", "d"),
    ):
        cells = [
            "".join(f"{getattr(results[h][r], field):{width}{fmt}}" for r in rules) for h in results
        ]
        print(f"{label:36s}{cells[0]} |{cells[1]}")
    held = results["held-out"]["verified"]
    misses = [row for row, target in rows if held.recall.get(row, 0.0) < target]
    print(
        f"\nverified on the held-out half: precision {held.precision:.3f} (target 0.995), "
        f"{held.negative_merges} merges (target 0); below target: {', '.join(misses) or 'none'}"
    )


if __name__ == "__main__":
    main()
