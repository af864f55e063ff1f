"""What looking for a uniform border costs the upload path: hashing with and without it.

    python -m benchmarks.borders [--megapixels 12] [--rounds 5]

Hashes the camera-like JPEGs of `benchmarks.hashing` (no border: the usual case, where the cost
is the look alone) and the same photographs in a 5 % white frame (where the picture is hashed a
second time), in memory, with `hashing._border` as shipped and replaced by one that finds
nothing, taking turns; prints the best pass of each (the machine's speed wanders between passes).
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable

from PIL import Image

from benchmarks.corpus import camera_files
from worker.core import hashing


def _framed(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        picture = image.convert("RGB")
    dx, dy = round(picture.width * 0.05), round(picture.height * 0.05)
    framed = Image.new("RGB", (picture.width + 2 * dx, picture.height + 2 * dy), "white")
    framed.paste(picture, (dx, dy))
    buffer = io.BytesIO()
    framed.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def _per_image(files: list[bytes]) -> float:
    started = time.perf_counter()
    for data in files:
        hashing.hash_image(data, max_pixels=10**9)
    return (time.perf_counter() - started) / len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megapixels", type=int, default=12, choices=(1, 4, 12))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    plain = [p.read_bytes() for p in camera_files(args.megapixels, "JPEG")]
    sets = {"no border": plain, "5 % white frame": [_framed(d) for d in plain]}
    shipped = hashing._border
    looks: dict[str, Callable[..., object]] = {"without the look": lambda gray: None}
    looks["with it (shipped)"] = shipped
    print(f"== hashing {args.megapixels} MP camera JPEGs, ms an image (best of {args.rounds})")
    for label, files in sets.items():
        best = dict.fromkeys(looks, float("inf"))
        for _ in range(args.rounds):
            for name, look in looks.items():
                hashing._border = look  # type: ignore[assignment]
                best[name] = min(best[name], _per_image(files))
        hashing._border = shipped
        base, ours = best["without the look"], best["with it (shipped)"]
        print(
            f"{label:16s} {base * 1000:7.2f} without, {ours * 1000:7.2f} with "
            f"({ours / base - 1:+.1%}; the limit is +15 %)"
        )


if __name__ == "__main__":
    main()
