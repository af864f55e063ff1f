"""Decoding within a memory budget: estimates that bound the real peak, and admission by them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from contextlib import AbstractContextManager

import pytest

from worker.budget import DecodeBudget
from worker.core.errors import MemoryBusy, TooLarge

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("kind", "pixel_bytes"), [("rgb", 4), ("rgba", 4), ("16bit", 2), ("bilevel", 1), ("jpeg", 0)]
)
def test_hashing_a_bomb_holds_no_more_than_its_estimate(kind: str, pixel_bytes: int) -> None:
    # Given a 12-megapixel file of the kind that costs most memory per byte, hashed in a fresh
    # process whose peak resident size is reset just before
    probe = subprocess.run(
        [sys.executable, "-m", "tests.memory_probe", kind, "4000", "3000"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    measured = json.loads(probe.stdout)
    # Then the peak stays within what was reserved for it (what the budget admits by), and the
    # reservation stays near one decoded copy: the decode, its greyscale copy and small bands
    assert measured["peak_mb"] <= measured["reserved_mb"], measured
    decoded_mb = 12e6 * pixel_bytes / MiB
    assert measured["reserved_mb"] <= decoded_mb + 12e6 * 1.25 / MiB + 17, measured
    assert measured["after_mb"] < 8, measured  # and it is handed back afterwards


def test_short_lived_buffers_of_a_hash_thread_are_not_faulted_in_afresh_each_time() -> None:
    # Given the worker's allocator settings, in a process of their own (they are global), and
    # buffers the size of an upload's file bytes allocated, written and freed in turn
    probe = subprocess.run(
        [sys.executable, "-m", "tests.memory_probe", "refaults"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    shares = json.loads(probe.stdout)
    # Then their pages are reused, on a hash thread as on the main thread: with only the mmap
    # threshold fixed, every page of every buffer was a fresh fault (a share of 1.0)
    assert shares["thread"] < 0.05, shares
    assert shares["main"] < 0.05, shares


def test_the_budget_refuses_what_never_fits_with_the_figures() -> None:
    budget = DecodeBudget(100 * MiB)
    with (
        pytest.raises(TooLarge, match=r"about 150 MiB, more than .* 100 MiB"),
        budget.reserve(150 * MiB),
    ):
        pass


def test_the_budget_admits_while_there_is_room_and_makes_the_rest_wait() -> None:
    budget = DecodeBudget(100 * MiB, wait_s=5)
    entered = threading.Event()
    release = threading.Event()

    def big() -> None:
        with budget.reserve(70 * MiB):
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=big)
    holder.start()
    assert entered.wait(5)
    with budget.reserve(30 * MiB):  # fits beside it
        assert budget.used_bytes == 100 * MiB
    # One that does not fit waits for the first to finish
    threading.Timer(0.3, release.set).start()
    started = time.monotonic()
    with budget.reserve(60 * MiB):
        waited = time.monotonic() - started
    holder.join()
    assert 0.2 < waited < 3
    assert budget.used_bytes == 0


def test_room_that_does_not_come_in_time_is_a_retry() -> None:
    budget = DecodeBudget(100 * MiB, wait_s=0.2)
    with (
        budget.reserve(80 * MiB),
        pytest.raises(MemoryBusy, match="80 of 100 MiB are taken"),
        budget.reserve(40 * MiB),
    ):
        pass


@pytest.mark.parametrize("kind", ["rgba", "bilevel", "jpeg"])
def test_no_pixel_is_decoded_before_the_budget_admits_the_image(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import ImageFile

    from tests.memory_probe import bomb
    from worker.core.hashing import hash_image

    # Given an image, and a budget that refuses it
    data = bomb(kind, (600, 400))
    loads: list[str] = []
    real_load = ImageFile.ImageFile.load

    def load(self: ImageFile.ImageFile) -> object:
        loads.append(type(self).__name__)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)

    def refuse(needed: int) -> AbstractContextManager[object]:
        raise TooLarge(f"{needed} bytes refused")

    # Then it is refused before anything was decoded (a PNG's EXIF lookup decodes it whole)
    with pytest.raises(TooLarge, match="bytes refused"):
        hash_image(data, max_pixels=10**9, admit=refuse)
    assert loads == []
