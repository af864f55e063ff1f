"""`dupfinder backfill`: hashes for old assets, safely, resumably, through the backfill queue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.cli import dupfinder
from tests.harness import Harness
from tests.images import photo, write


def backfill(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return dupfinder("backfill", "--quiet", *args, timeout=timeout)


def line(portal: str, asset_id: str, source: Path, **extra: Any) -> str:
    return json.dumps(
        {
            "portal_id": portal,
            "asset_id": asset_id,
            "source": str(source),
            "uploaded_at": "2020-01-01T00:00:00Z",
            **extra,
        }
    )


def test_backfill_hashes_valid_lines_and_lists_the_refused(
    harness: Harness, portal: str, images: Path, tmp_path: Path
) -> None:
    paths = [write(images / f"{n}.png", photo(120 + n)) for n in range(3)]
    feed = tmp_path / "old.jsonl"
    feed.write_text(
        "\n".join(
            [
                line(portal, "a0", paths[0], title="first"),
                "{broken json",
                line(portal, "a1", paths[1]),
                json.dumps({"portal_id": portal, "asset_id": "a2"}),  # no source, no date
                "",
                line(portal, "a2", paths[2], tags=["x"]),
            ]
        )
        + "\n"
    )

    result = backfill(str(feed), "--json")

    assert result.returncode == 1, result.stderr  # some lines were refused
    report = json.loads(result.stdout)
    assert (report["sent"], report["skipped"]) == (3, 0)
    assert [r["line"] for r in report["refused"]] == [2, 4]
    assert report["refused"][0]["reason"].startswith("not JSON")
    assert "source" in report["refused"][1]["reason"]
    harness.wait_for(portal, "asset.hashed", count=3)
    doc = harness.asset(portal, "a0")
    assert doc is not None and doc["title"] == "first"
    # The messages went through the backfill queue, not the live one
    assert harness.queue_depth("dupfinder.backfill") == 0

    # A second run of the same file says it is complete; --restart skips what is hashed already
    again = backfill(str(feed))
    assert again.returncode == 0 and "completely already" in again.stdout
    restarted = backfill(str(feed), "--restart", "--json")
    assert json.loads(restarted.stdout)["skip_reasons"] == {"already hashed from the same bytes": 3}
    forced = backfill(str(feed), "--restart", "--force", "--json")
    assert json.loads(forced.stdout)["sent"] == 3


def test_csv_with_the_same_columns(
    harness: Harness, portal: str, images: Path, tmp_path: Path
) -> None:
    path = write(images / "c.png", photo(130))
    feed = tmp_path / "old.csv"
    feed.write_text(
        "portal_id,asset_id,source,title,tags,uploaded_at\n"
        f"{portal},c1,{path},Harbour,sea;boats,2020-01-01T00:00:00+00:00\n"
        f"{portal},c2,{path},,,not-a-date\n"
    )
    result = backfill(str(feed), "--json")
    report = json.loads(result.stdout)
    assert report["sent"] == 1
    assert [r["line"] for r in report["refused"]] == [3]
    harness.wait_for(portal, "asset.hashed")
    doc = harness.asset(portal, "c1")
    assert doc is not None and (doc["title"], doc["tags"]) == ("Harbour", ["sea", "boats"])


def test_lines_no_parser_expected_are_refused_lines(
    harness: Harness, portal: str, images: Path, tmp_path: Path
) -> None:
    # Given a CSV file with tags that are not JSON, a stray field, bytes that are not UTF-8
    # and a NUL byte among good lines
    path = write(images / "c.png", photo(141, size=(64, 48)))
    good = f"{portal},c{{}},{path},2020-01-01T00:00:00Z,a;b\r\n"
    feed = tmp_path / "odd.csv"
    feed.write_bytes(
        b"portal_id,asset_id,source,uploaded_at,tags\r\n"
        + good.format(1).encode()
        + f"{portal},c2,{path},2020-01-01T00:00:00Z,[not json\r\n".encode()
        + f"{portal},c3,{path},2020-01-01T00:00:00Z,x,extra\r\n".encode()
        + f"{portal},c4,{path},2020-01-01T00:00:00Z,\xff\xfe\r\n".encode("latin-1")
        + f"{portal},c5,{path},2020-01-01T00:00:00Z,a\x00b\r\n".encode()
        + good.format(6).encode()
    )

    # When it is backfilled
    result = backfill(str(feed), "--json")

    # Then the good lines are sent, each other line is refused with its reason, and the run
    # ends as a run, with its state saved
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["sent"] == 2
    reasons = {r["line"]: r["reason"] for r in report["refused"]}
    assert sorted(reasons) == [3, 4, 5, 6], reasons
    assert reasons[3].startswith("tags: not a JSON list")
    assert reasons[5] == "not UTF-8 text"
    assert json.loads(Path(str(feed) + ".backfill-state").read_text())["done"] is True
    harness.wait_for(portal, "asset.hashed", count=2)


def test_an_interrupted_backfill_resumes_where_it_stopped(
    harness: Harness, portal: str, images: Path, tmp_path: Path
) -> None:
    path = write(images / "r.png", photo(140, size=(64, 48)))
    count = 60
    feed = tmp_path / "many.jsonl"
    lines = [line(portal, f"r{n}", path) for n in range(count)]
    lines.insert(10, '{"portal_id": "broken')  # line 11, refused before the interruption
    feed.write_text("\n".join(lines) + "\n")
    state = Path(str(feed) + ".backfill-state")

    # Given a slow run killed without warning part-way, after it refused line 11
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "backfill", "--quiet", "--rate", "20", str(feed)],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if state.exists() and json.loads(state.read_text())["line"] >= 15:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    stopped_at = json.loads(state.read_text())
    assert not stopped_at["done"] and 15 <= stopped_at["line"] < count

    # When it is run again
    result = backfill(str(feed), "--force", "--json")

    # Then it continues after the recorded line, its summary lists every refused line of the
    # file, and every asset ends hashed
    report = json.loads(result.stdout)
    assert report["resumed_after_line"] == stopped_at["line"]
    assert report["sent"] == count + 1 - stopped_at["line"]
    assert [r["line"] for r in report["refused"]] == [11]
    assert result.returncode == 1
    assert json.loads(state.read_text())["done"] is True
    harness.wait_for(portal, "asset.hashed", lambda e: e["asset_id"] == f"r{count - 1}", timeout=60)
    hashed = harness.db.assets.count_documents({"portal_id": portal, "state": "hashed"})
    deadline = time.monotonic() + 30
    while hashed < count and time.monotonic() < deadline:
        time.sleep(0.2)
        hashed = harness.db.assets.count_documents({"portal_id": portal, "state": "hashed"})
    assert hashed == count


def test_rehash_re_enqueues_hashes_made_by_an_older_method(
    harness: Harness, portal: str, images: Path
) -> None:
    from worker.core.hashing import HASH_VERSION

    for n in range(2):
        harness.upload(portal, f"h{n}", write(images / f"h{n}.png", photo(150 + n)))
    harness.wait_for(portal, "asset.hashed", count=2)
    # Given one asset whose hash an older method made
    harness.db.assets.update_one(
        {"portal_id": portal, "asset_id": "h0"},
        {"$set": {"hash_provenance.version": HASH_VERSION - 1}},
    )
    before = harness.asset(portal, "h0")
    assert before is not None

    result = dupfinder("rehash", "--portal", portal)

    assert result.returncode == 0, result.stderr
    assert "re-enqueued 1 assets" in result.stdout
    (event,) = harness.wait_for(portal, "asset.hashed", lambda e: e["asset_id"] == "h0", count=2)[
        1:
    ]
    after = harness.asset(portal, "h0")
    assert after is not None
    assert after["hash_provenance"]["version"] == HASH_VERSION
    assert after["hashed_at"] > before["hashed_at"]
    assert event["phash"] == after["phash"]
