"""Memory of one worker process fed decompression bombs: peak and idle resident size.

    python -m benchmarks.memory [--side 12000] [--budget-mb 768]

Starts SecantusDB and `dupfinder worker --processes 1` (2 hash threads, the shipped setting),
then uploads, one at a time and then four at once, the files that cost the most memory per byte:
flat PNGs of SIDE x SIDE in RGB, RGBA and 16-bit greyscale, and a bilevel TIFF (a few kB each).
It samples the worker process's resident size every 20 ms and prints its peak over the idle
size before, the idle size after, and, beside them, the same for a 12 MP camera-like JPEG.
Meanwhile another portal uploads a small image every 0.25 s: its worst publish-to-hashed time
shows whether the worker kept answering.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import services
from schemas.messages import AssetUploaded
from tests.memory_probe import bomb

MiB = 1024 * 1024
BOMBS = ("rgb", "rgba", "16bit", "bilevel")


class Sampler:
    """The resident size of one process, sampled every 20 ms; `peak` since the last `reset`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._peak = max(self._peak, services.resident_bytes(self.pid))

    def reset(self) -> int:
        now = services.resident_bytes(self.pid)
        self._peak = now
        return now

    @property
    def peak(self) -> int:
        return self._peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _upload(portal: str, asset_id: str, path: Path) -> AssetUploaded:
    return AssetUploaded(
        portal_id=portal, asset_id=asset_id, source=str(path), uploaded_at=datetime.now(UTC)
    )


def _settle(sampler: Sampler, seconds: float = 3.0) -> int:
    """The idle resident size, once the process has had `seconds` to give memory back."""
    time.sleep(seconds)
    return services.resident_bytes(sampler.pid)


def run(side: int, budget_mb: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="dupfinder-bombs-"))
    files = {}
    for kind in BOMBS:
        files[kind] = folder / f"{kind}.{'tif' if kind == 'bilevel' else 'png'}"
        files[kind].write_bytes(bomb(kind, (side, side)))
    files["camera"] = folder / "camera.jpg"
    files["camera"].write_bytes(bomb("jpeg", (4000, 3000)))
    small = folder / "small.png"
    small.write_bytes(bomb("jpeg", (64, 48)))
    sizes = ", ".join(f"{k} {p.stat().st_size / 1024:.0f} kB" for k, p in files.items())
    print(f"files: {sizes}")

    env = {"DUPFINDER_DECODE_MEMORY_MB": str(budget_mb), "DUPFINDER_SOURCE_ROOTS": str(folder)}
    with (
        services.database() as (url, _server),
        services.worker(url, processes=1, env=env) as main,
        services.Portal.open() as portal,
    ):
        done: dict[str, dict[str, Any]] = {}

        def until(asset_ids: set[str]) -> Any:
            def check(routing_key: str, event: dict[str, Any]) -> bool:
                if event.get("asset_id") in asset_ids and routing_key in (
                    "asset.hashed",
                    "asset.failed",
                ):
                    done[event["asset_id"]] = {"kind": routing_key, **event}
                return asset_ids <= done.keys()

            return check

        portal.publisher.publish(_upload("bench-warm", "warm", small))
        portal.events(until({"warm"}), 120)
        deadline = time.monotonic() + 30
        while not services.children(main.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        (child,) = services.children(main.pid)
        sampler = Sampler(child)
        idle = _settle(sampler)
        print(
            f"\nworker process idle after boot: {idle / MiB:.0f} MiB; decode budget {budget_mb} MiB"
        )
        print(f"{'upload':<22} {'peak over idle':>15} {'idle after':>11} {'outcome':>14}")

        latencies: list[float] = []
        stop_small = threading.Event()

        def small_uploads() -> None:
            # Another portal's light work, on a publisher of its own (pika is not thread-safe).
            with services.Portal.open() as other:
                n = 0
                while not stop_small.is_set():
                    asset_id = f"s{n}"
                    started = time.monotonic()
                    other.publisher.publish(_upload("bench-small", asset_id, small))

                    def hashed(key: str, event: dict[str, Any], a: str = asset_id) -> bool:
                        return event.get("asset_id") == a

                    other.events(hashed, 120)
                    latencies.append(time.monotonic() - started)
                    n += 1
                    time.sleep(0.25)

        def measure(label: str, kinds: list[str]) -> None:
            before = sampler.reset()
            ids = {f"{label}-{k}" for k in kinds}
            for kind in kinds:
                portal.publisher.publish(_upload("bench-bombs", f"{label}-{kind}", files[kind]))
            portal.events(until(ids), 600)
            peak = sampler.peak
            after = _settle(sampler)
            outcomes = {done[i]["kind"].split(".")[1] for i in ids}
            print(
                f"{label:<22} {(peak - before) / MiB:>11.0f} MiB {after / MiB:>7.0f} MiB "
                f"{'/'.join(sorted(outcomes)):>14}"
            )

        measure("camera 12 MP JPEG", ["camera"])
        for kind in BOMBS:
            measure(f"{kind} {side}x{side}", [kind])
        background = threading.Thread(target=small_uploads, daemon=True)
        background.start()
        measure("four bombs at once", list(BOMBS))
        stop_small.set()
        background.join(60)
        sampler.stop()
        final = services.resident_bytes(child)
        print(
            f"\nidle at the end: {final / MiB:.0f} MiB ({(final - idle) / idle:+.0%} of the idle "
            f"size after boot)"
        )
        if latencies:
            print(
                f"another portal's small uploads during the four bombs: {len(latencies)}, "
                f"median {statistics.median(latencies):.2f} s, worst {max(latencies):.2f} s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=12_000, help="side of the bombs in pixels")
    parser.add_argument("--budget-mb", type=int, default=768, help="DUPFINDER_DECODE_MEMORY_MB")
    args = parser.parse_args()
    run(args.side, args.budget_mb)


if __name__ == "__main__":
    main()
