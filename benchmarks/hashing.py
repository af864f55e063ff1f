"""Hashing throughput, memory and faithfulness: dupfinder's path against imagehash's.

    python -m benchmarks.hashing [--quick] [--e2e N]

Per size and format it prints images/s of the baseline (`imagehash.phash(Image.open(f))`), of
dupfinder's `hash_image`, and of the decoder's floor (the bare reduced-scale decode for JPEG,
`load()` for the rest), all on the same bytes in memory in the same run; the peak memory of one
image in flight for each; and the drift of our hashes from the baseline's. Then the exact-match
recall on re-saved and resized copies under both, the scaling from one core to two, and (with
--e2e) uploads end to end through RabbitMQ and MongoDB against pure hashing on the same files.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import imagehash
from PIL import Image

from benchmarks.corpus import camera_files, encoded, photos
from worker.core.hashing import REDUCED_MIN_SIDE, hash_image

Image.MAX_IMAGE_PIXELS = 200_000_000
LIMIT = 200_000_000


def baseline(data: bytes) -> str:
    return str(imagehash.phash(Image.open(io.BytesIO(data))))


def ours(data: bytes) -> str:
    return hash_image(data, max_pixels=LIMIT).phash


def floor(data: bytes) -> None:
    image = Image.open(io.BytesIO(data))
    if image.format == "JPEG":
        image.draft("L" if image.mode in ("RGB", "L") else image.mode, (REDUCED_MIN_SIDE,) * 2)
    image.load()


def rates(
    fns: list[Callable[[bytes], object]], blobs: list[bytes], seconds: float, rounds: int = 5
) -> list[float]:
    """Images per second of each function: the best of `rounds` passes of at least `seconds`.

    The passes of the functions alternate, so a slow spell of a shared machine (measured here:
    the same loop varying by half from one run to the next) falls on all of them alike rather
    than on whichever happened to be measured then.
    """
    best = [0.0] * len(fns)
    for _ in range(rounds):
        for k, fn in enumerate(fns):
            done, start = 0, time.perf_counter()
            while True:
                for blob in blobs:
                    fn(blob)
                done += len(blobs)
                elapsed = time.perf_counter() - start
                if elapsed >= seconds:
                    break
            best[k] = max(best[k], done / elapsed)
    return best


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _peak_in_fresh_process(method: str, path: str) -> int:
    fn = {"baseline": baseline, "ours": ours, "floor": floor}[method]
    data = Path(path).read_bytes()
    fn(encoded(Image.new("RGB", (64, 64)), Image.open(path).format or "PNG"))  # load plug-ins
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
    before = _status("VmRSS")
    fn(data)
    return max(0, _status("VmHWM") - before)


def peak_bytes(method: str, path: Path) -> int:
    """Extra resident memory at the peak of hashing one image, in a process of its own."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(_peak_in_fresh_process, method, str(path)).result()


def mib(n: float) -> str:
    return f"{n / 2**20:6.1f}"


def throughput_table(quick: bool) -> None:
    seconds = 0.3 if quick else 1.0
    sizes = [(1, "JPEG"), (4, "JPEG"), (12, "JPEG"), (4, "PNG"), (4, "WEBP"), (4, "TIFF")]
    print("== throughput (one core, images/s), peak memory of one image (MiB), drift (bits)")
    print(
        f"{'set':<10} {'n':>3} {'imagehash':>9} {'ours':>7} {'floor':>7} {'ours/base':>9} "
        f"{'ours/floor':>10} {'mem base':>8} {'mem ours':>8} {'mem floor':>9} "
        f"{'drift mean':>10} {'max':>4}"
    )
    for megapixels, fmt in sizes:
        paths = camera_files(megapixels, fmt)[: 4 if quick else None]
        blobs = [p.read_bytes() for p in paths]
        base_rate, our_rate, floor_rate = rates([baseline, ours, floor], blobs, seconds)
        largest = max(paths, key=lambda p: p.stat().st_size)
        mems = [peak_bytes(m, largest) for m in ("baseline", "ours", "floor")]
        drift = [
            int(imagehash.hex_to_hash(ours(b)) - imagehash.hex_to_hash(baseline(b))) for b in blobs
        ]
        print(
            f"{fmt.lower() + ' ' + str(megapixels) + 'MP':<10} {len(blobs):>3} "
            f"{base_rate:>9.1f} {our_rate:>7.1f} {floor_rate:>7.1f} "
            f"{our_rate / base_rate:>8.2f}x {our_rate / floor_rate:>9.0%} "
            f"{mib(mems[0]):>8} {mib(mems[1]):>8} {mib(mems[2]):>9} "
            f"{statistics.mean(drift):>10.2f} {max(drift):>4}"
        )


COPIES: dict[str, Callable[[Image.Image], bytes]] = {
    "jpeg q90": lambda im: jpeg(im, 90),
    "jpeg q70": lambda im: jpeg(im, 70),
    "jpeg q50": lambda im: jpeg(im, 50),
    "png re-save": lambda im: encoded(im, "PNG"),
    "resize 75%": lambda im: jpeg(scaled(im, 0.75), 90),
    "resize 50%": lambda im: jpeg(scaled(im, 0.5), 90),
    "resize 33%": lambda im: jpeg(scaled(im, 0.33), 90),
    "resize 25%": lambda im: jpeg(scaled(im, 0.25), 90),
    "greyscale": lambda im: jpeg(im.convert("L"), 90),
}


def jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def scaled(image: Image.Image, factor: float) -> Image.Image:
    size = (round(image.width * factor), round(image.height * factor))
    return image.resize(size, Image.Resampling.LANCZOS)


def recall_table(quick: bool) -> None:
    """Share of copies whose hash stays exactly equal to the original's, under both paths."""
    print("\n== exact-match recall (max_distance 0) on copies of the 1, 4 and 12 MP camera JPEGs")
    sizes = (4,) if quick else (1, 4, 12)
    files = [p for mp in sizes for p in camera_files(mp, "JPEG")][: 4 if quick else None]
    hits = {name: {"imagehash": 0, "ours": 0} for name in COPIES}
    for path in files:
        data = path.read_bytes()
        image = Image.open(io.BytesIO(data)).convert("RGB")
        originals = {"imagehash": baseline(data), "ours": ours(data)}
        for name, make in COPIES.items():
            copy = make(image)
            hits[name]["imagehash"] += baseline(copy) == originals["imagehash"]
            hits[name]["ours"] += ours(copy) == originals["ours"]
    print(f"{'copy':<12} {'imagehash':>9} {'ours':>6}")
    for name, count in hits.items():
        base_share, our_share = count["imagehash"] / len(files), count["ours"] / len(files)
        print(f"{name:<12} {base_share:>9.0%} {our_share:>6.0%}")
    total = len(files) * len(COPIES)
    base_hits = sum(c["imagehash"] for c in hits.values())
    our_hits = sum(c["ours"] for c in hits.values())
    print(
        f"{'all':<12} {base_hits / total:>9.1%} {our_hits / total:>6.1%}   "
        f"difference {(our_hits - base_hits) / total * 100:+.1f} points over {total} copies"
    )


def _hash_file(path: str) -> str:
    return hash_image(Path(path).read_bytes(), max_pixels=LIMIT).phash


def pool_rate(paths: list[str], workers: int, rounds: int) -> float:
    work = paths * rounds
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_hash_file, paths))  # warm the workers up
        start = time.perf_counter()
        list(pool.map(_hash_file, work, chunksize=1))
        return len(work) / (time.perf_counter() - start)


def scaling_table(quick: bool, megapixels: int) -> float:
    print(
        f"\n== all cores ({os.cpu_count()} here): ours on {megapixels} MP camera JPEGs, from files"
    )
    paths = [str(p) for p in camera_files(megapixels, "JPEG")]
    rounds = 2 if quick else 6
    one = two = 0.0
    for _ in range(2 if quick else 3):  # alternated, best of each (see `rates`)
        one = max(one, pool_rate(paths, 1, rounds))
        two = max(two, pool_rate(paths, 2, rounds))
    print(f"1 process {one:.1f} images/s, 2 processes {two:.1f} images/s: {two / one:.2f}x")
    return two


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer files and shorter passes")
    parser.add_argument(
        "--e2e",
        type=int,
        metavar="N",
        default=0,
        help="also publish N uploads through RabbitMQ and MongoDB",
    )
    parser.add_argument(
        "--e2e-megapixels",
        type=int,
        default=12,
        choices=(1, 4, 12),
        help="size of the camera JPEGs for the scaling and end-to-end runs",
    )
    args = parser.parse_args()
    print(
        f"{len(photos())} base photos; Pillow {Image.__version__}, imagehash "
        f"{imagehash.__version__}; reduced decoding down to {REDUCED_MIN_SIDE} px"
    )
    throughput_table(args.quick)
    recall_table(args.quick)
    scaling_table(args.quick, args.e2e_megapixels)
    if args.e2e:
        from benchmarks.e2e import end_to_end

        end_to_end(args.e2e, camera_files(args.e2e_megapixels, "JPEG"))


if __name__ == "__main__":
    main()
