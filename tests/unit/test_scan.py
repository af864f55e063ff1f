"""`dupfinder scan`: the core on local folders, as a user runs it."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from schemas.messages import Sort
from tests.cli import dupfinder
from tests.images import photo, write
from worker.scan import ScanResult


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return dupfinder("scan", *args)


def make_folder(root: Path) -> None:
    big = photo(90, size=(800, 600))
    write(root / "big.png", big)
    write(root / "sub" / "copy.jpg", big, "JPEG", quality=92)
    write(root / "sub" / "small.png", big.resize((200, 150), Image.Resampling.LANCZOS))
    write(root / "other.png", photo(91))
    (root / "notes.txt").write_text("not an image, not scanned")
    for name, mtime in (
        ("big.png", 1_700_000_100),
        ("sub/copy.jpg", 1_700_000_200),
        ("sub/small.png", 1_700_000_000),
    ):
        os.utime(root / name, (mtime, mtime))


def test_scan_prints_sets_as_json_shaped_like_the_contract(tmp_path: Path) -> None:
    make_folder(tmp_path)
    result = run(str(tmp_path), "--json", "--quiet", "--match", "phash", "--max-distance", "4")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["files"] == 4 and body["failed"] == []
    (dup_set,) = body["sets"]
    # big and copy have the most pixels; big is older, so it is the original; then newest first
    ids = [a["asset_id"] for a in dup_set["assets"]]
    assert ids == [str(tmp_path / p) for p in ("big.png", "sub/copy.jpg", "sub/small.png")]
    copy, small = dup_set["assets"][1:]
    assert 0 <= copy["distance"] <= 4
    assert small["uploaded_at"] == "2023-11-14T22:13:20Z"
    assert set(small) == {
        "asset_id",
        "title",
        "description",
        "tags",
        "width",
        "height",
        "uploaded_at",
        "phash",
        "distance",
        "original",
        "match",
        "similarity",
        "original_reason",
        "new",
    }
    assert small["match"] in ("same_phash", "near") and small["similarity"] is None
    # Every original says why: big and copy have as many pixels, and big is the older
    assert [a["original_reason"] for a in dup_set["assets"]] == ["earliest_upload", None, None]


def test_scan_table_and_unreadable_files(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = run(str(tmp_path), "--match", "phash", "--max-distance", "4")
    assert result.returncode == 1  # some files could not be read
    assert "set 1: 3 images" in result.stdout
    assert "5 files, 1 unreadable, 1 duplicate set, 2 duplicates" in result.stdout
    assert "near: d= bits of hash apart, s= similarity" in result.stdout  # the legend
    assert "s= similarity" in " ".join(run("--help").stdout.split())
    assert f"skipped {tmp_path / 'broken.jpg'}: unreadable_image" in result.stderr
    assert "] hashed 5/5 files" in result.stderr  # progress bar, count, rate


def test_scan_phash_rule_at_radius_0_is_exact_match(tmp_path: Path) -> None:
    make_folder(tmp_path)
    body = json.loads(run(str(tmp_path), "--json", "--quiet", "--match", "phash").stdout)
    for dup_set in body["sets"]:
        assert {a["phash"] for a in dup_set["assets"]} == {dup_set["assets"][0]["phash"]}
        assert {a["distance"] for a in dup_set["assets"]} == {0}


def test_scan_default_is_verified_and_finds_turned_copies(tmp_path: Path) -> None:
    make_folder(tmp_path)
    big = photo(90, size=(800, 600))
    write(tmp_path / "mirrored.png", big.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    write(tmp_path / "turned.png", big.transpose(Image.Transpose.ROTATE_90))
    body = json.loads(run(str(tmp_path), "--json", "--quiet").stdout)
    (dup_set,) = body["sets"]
    kinds = {Path(a["asset_id"]).name: a["match"] for a in dup_set["assets"]}
    assert kinds["mirrored.png"] == "mirrored" and kinds["turned.png"] == "rotated"
    assert kinds["copy.jpg"] in ("same_phash", "near") and kinds["small.png"] in (
        "same_phash",
        "near",
    )
    assert all(a["similarity"] >= 0.92 for a in dup_set["assets"])
    table = run(str(tmp_path), "--quiet").stdout
    assert "mirrored" in table and "rotated" in table


def test_scan_radius_alone_means_phash_and_same_bytes_are_identical(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "again.png").write_bytes((tmp_path / "big.png").read_bytes())
    body = json.loads(run(str(tmp_path), "--json", "--quiet", "--max-distance", "0").stdout)
    kinds = {Path(a["asset_id"]).name: a["match"] for s in body["sets"] for a in s["assets"]}
    # phash names no kinds of its own (the verified rule would say `identical` as well)
    assert "identical" in {kinds["again.png"], kinds["big.png"]}
    assert all(a["similarity"] is None for s in body["sets"] for a in s["assets"])
    assert run(str(tmp_path), "--match", "verified", "--max-distance", "2").returncode == 2


def test_scan_usage_errors(tmp_path: Path) -> None:
    assert run(str(tmp_path / "missing")).returncode == 2
    assert run(str(tmp_path), "--max-distance", "40").returncode == 2


def scan_in_process(folder: Path, workers: int) -> ScanResult:
    """`worker.scan.scan` over `folder` with the command's defaults."""
    from worker.fetching import FetchLimits
    from worker.scan import scan

    return scan(
        [str(folder)],
        match="verified",
        max_distance=0,
        limits=FetchLimits(10_000_000, 5.0, 5.0),
        max_pixels=50_000_000,
        sort=Sort(field="uploaded_at", order="desc"),
        workers=workers,
    )


def test_one_worker_hashes_in_this_process_with_the_same_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-core scan starts no child (it would only add its start-up and copying), and finds
    what a pool of two finds."""
    make_folder(tmp_path)
    write(tmp_path / "unreadable.jpg", photo(92))
    (tmp_path / "unreadable.jpg").write_bytes(b"\xff\xd8 not really")

    def found(workers: int) -> tuple[list[list[str]], list[str]]:
        result = scan_in_process(tmp_path, workers)
        sets = [[member.asset_id for member in s.assets] for s in result.sets]
        return sets, [failure.path for failure in result.failures]

    pooled = found(2)

    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("a one-worker scan started a process pool")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", no_pool)
    assert found(1) == pooled
    assert pooled[0] and pooled[1] == [str(tmp_path / "unreadable.jpg")]


def test_a_one_worker_scan_does_not_import_multiprocessing(tmp_path: Path) -> None:
    """Its import is 5-6 ms of the start of a process that never forks (benchmarks/scan.py)."""
    make_folder(tmp_path)
    probe = (
        "import sys\n"
        "from worker.cli import main\n"
        f"code = main(['scan', '--quiet', '--json', '--workers', '1', {str(tmp_path)!r}])\n"
        "assert code == 0, code\n"
        "print(sorted(m for m in sys.modules if m.startswith(('multiprocessing', "
        "'concurrent.futures.process'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_only_files_whose_size_another_shares_are_checksummed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte copy has its original's size; files of a size no other has skip the checksum,
    and byte copies are still named `identical`."""
    from worker.core import hashing

    make_folder(tmp_path)
    (tmp_path / "again.png").write_bytes((tmp_path / "big.png").read_bytes())
    summed: list[int] = []
    real = hashing.sha256_hex

    def counted(data: bytes) -> str:
        summed.append(len(data))
        return real(data)

    monkeypatch.setattr(hashing, "sha256_hex", counted)
    result = scan_in_process(tmp_path, 1)
    big = (tmp_path / "big.png").stat().st_size
    assert summed == [big, big]
    (dup_set,) = result.sets
    matches = {m.asset_id: m.match for m in dup_set.assets}
    again, copy = str(tmp_path / "again.png"), str(tmp_path / "sub" / "copy.jpg")
    assert "identical" in {matches.get(again), matches.get(str(tmp_path / "big.png"))}
    assert matches[copy] not in ("identical", None)


def _scan_script(folder: Path, *, thread: bool = False) -> str:
    """A `dupfinder scan` process, as the script runs it, with an object that says when the
    interpreter tears its module down, an exit handler that says it ran and, if `thread`, a
    thread at work until the main thread is done."""
    return (
        "import atexit, sys, threading, time\n"
        "class Teardown:\n"
        "    def __del__(self):\n"
        "        print('torn down', flush=True)\n"
        "kept = Teardown()\n"
        "atexit.register(lambda: print('exit handlers ran', flush=True))\n"
        "def late():\n"
        "    while threading.main_thread().is_alive():\n"
        "        time.sleep(0.01)\n"
        "    print('thread finished', flush=True)\n"
        f"if {thread}:\n"
        "    threading.Thread(target=late).start()\n"
        "sys.argv = ['dupfinder', 'scan', '--json', '--quiet', '--workers', '1', "
        f"{str(folder)!r}]\n"
        "from worker.cli import run\n"
        "run()\n"
    )


def test_a_finished_scan_exits_without_the_interpreters_teardown(tmp_path: Path) -> None:
    """Tearing down NumPy, Pillow and pydantic took 0.15 s after the last line was printed."""
    make_folder(tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    done = subprocess.run(
        [sys.executable, "-c", _scan_script(tmp_path)], capture_output=True, text=True, timeout=120
    )
    # The output is whole, the status says a file failed, exit handlers ran; no teardown
    assert done.returncode == 1, done.stderr
    output, handlers, after = done.stdout.partition("exit handlers ran\n")
    body = json.loads(output)
    assert body["files"] == 5 and [f["path"] for f in body["failed"]] == [
        str(tmp_path / "broken.jpg")
    ]
    assert handlers and "torn down" not in after


def test_a_scan_with_a_thread_still_at_work_exits_as_python_does(tmp_path: Path) -> None:
    make_folder(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", _scan_script(tmp_path, thread=True)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # The thread is waited for, and the interpreter tears down as usual
    assert done.returncode == 0, done.stderr
    assert "thread finished" in done.stdout and "torn down" in done.stdout
