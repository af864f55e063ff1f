"""MongoDB persistence through PyMongo's async API, every query scoped by `portal_id`.

Collections:
- `assets`: one document per (portal_id, asset_id) — metadata, hash facts, state (`hashed`,
  `failed` or `deleted`), pins, failure reason, and for deleted assets a tombstone that keeps the
  metadata (who deleted it, when, through which command).
- `commands`: the first outcome of every command id, so a redelivery re-publishes it instead of
  acting twice.
- `locks`: short per-portal leases that serialise commands across worker processes.
- `search_slots`: leases that bound how many searches of one portal run at once.
- `decisions`: review decisions (`distinct`, `kept`), one document per decision, naming its
  assets; indexed by portal and asset, for the delete that checks one original's and the
  forgetting that finds those naming an asset.
- `decision_digests`: the same decisions packed into a few texts per portal (chunks of up to
  `DIGEST_DECISIONS`), for the search that reads all of a portal's at once.

Driver errors that mean "the database is not reachable right now" become `StoreUnavailable`
(retried); anything else is a bug and propagates. A replica set's step-down (`NotPrimaryError`,
an `AutoReconnect`) is one of them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Sequence,
    Set,
)
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import numpy as np
from numpy.typing import NDArray
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, InsertOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
)

from schemas.messages import AssetUploaded, Scope
from worker.batching import MAX_WRITES, WINDOW_MS, LookupBatcher, WriteBatcher, Written
from worker.config import Settings
from worker.core.deletion import AssetFacts
from worker.core.errors import StoreUnavailable
from worker.core.fingerprint import CROP_COUNT, HALVES, SIGNATURE_SIDE, VARIANTS
from worker.core.grouping import Candidates
from worker.core.hashing import HashedImage, phash_to_signed, ranked_pixels
from worker.core.matching import Fingerprints, checksum_column, content_columns
from worker.observability import UPLOAD_WRITES

P = ParamSpec("P")
T = TypeVar("T")

HASHED, FAILED, DELETED, PENDING = "hashed", "failed", "deleted", "pending"
#: Every state but deleted, named rather than `{"$ne": "deleted"}`: SecantusDB looks an
#: equality or `$in` up in an index, a `$ne` it scans for (0.6 s instead of 3 ms an upload
#: among 20 000 assets).
LIVE = [HASHED, FAILED, PENDING]

#: What an upload reads of its asset before hashing: whether it is deleted, and, when the bytes
#: are the same, the stored hash to keep. Not the fingerprint (about 1.2 KiB a document).
UPLOAD_STATE_FIELDS = {
    "_id": 0,
    "state": 1,
    "sha256": 1,
    "hash_provenance": 1,
    "hashed_at": 1,
    "phash": 1,
    "width": 1,
    "height": 1,
    "format": 1,
    "size_bytes": 1,
    "pixels": 1,
}

#: Most decisions, and most asset ids, one digest chunk holds: rewriting one (after a
#: command changed it) reads at most this many ids back.
DIGEST_DECISIONS = 500
DIGEST_IDS = 5000

log = logging.getLogger(__name__)


def socket_timeout_ms(timeout_ms: int) -> int:
    """How long the client waits for a server's answer on an open connection: long enough for
    the slowest legitimate query, far past the selection and connect `timeout_ms`."""
    return max(timeout_ms * 6, 30_000)


def utcnow() -> datetime:
    """Now, as an aware UTC datetime at MongoDB's millisecond precision."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def to_us(value: datetime | None) -> int:
    """Microseconds since the epoch (0 for None), the grouping core's time unit."""
    return 0 if value is None else int(value.timestamp() * 1_000_000)


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except (ConnectionFailure, ExecutionTimeout) as e:
        raise StoreUnavailable(f"MongoDB unavailable: {e}") from e
    except PyMongoError as e:
        if e.has_error_label("RetryableWriteError") or e.has_error_label(
            "TransientTransactionError"
        ):
            raise StoreUnavailable(f"MongoDB transient error: {e}") from e
        raise


def _store_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    @wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with _translated():
            return await fn(*args, **kwargs)

    return wrapper


#: Bounds on the ids one query names: MongoDB refuses a command over 16 MiB (PyMongo raises
#: `DocumentTooLarge`), so a long list of long ids is asked for in several queries. And a
#: server may match `$in` value by value: SecantusDB took 37 ms for 100 ids and 1.9 s for
#: 1 000 in one query; in queries of 100 ids a list costs about linear time there, and a real
#: mongod one round trip per 100.
ID_QUERY_BYTES = 4 * 1024 * 1024
ID_QUERY_COUNT = 100


def id_chunks(asset_ids: Sequence[str]) -> Iterator[list[str]]:
    """The distinct ids in order, in lists that each fit one query (`ID_QUERY_BYTES`)."""
    chunk: list[str] = []
    size = 0
    for asset_id in dict.fromkeys(asset_ids):
        cost = len(asset_id.encode()) + 16  # BSON: type byte, index key, length, terminator
        if chunk and (size + cost > ID_QUERY_BYTES or len(chunk) >= ID_QUERY_COUNT):
            yield chunk
            chunk, size = [], 0
        chunk.append(asset_id)
        size += cost
    if chunk:
        yield chunk


def scope_filters(portal_id: str, scope: Scope) -> list[dict[str, Any]]:
    """The queries for the live, hashed assets of a portal inside `scope`: one, or one per chunk
    of the scope's ids that fits the server (`id_chunks`; an empty list of ids, none)."""
    query: dict[str, Any] = {"portal_id": portal_id, "state": HASHED}
    # An empty tag list is read as "no tag criterion", not as "no asset can match".
    if scope.tags_all:
        query["tags"] = {"$all": scope.tags_all}
    if scope.tags_any:
        query.setdefault("$and", []).append({"tags": {"$in": scope.tags_any}})
    if scope.text is not None:
        pattern = {"$regex": re.escape(scope.text), "$options": "i"}
        query.setdefault("$and", []).append(
            {"$or": [{"title": pattern}, {"description": pattern}, {"tags": pattern}]}
        )
    dates: dict[str, Any] = {}
    if scope.uploaded_from is not None:
        dates["$gte"] = scope.uploaded_from
    if scope.uploaded_to is not None:
        dates["$lte"] = scope.uploaded_to
    if dates:
        query["uploaded_at"] = dates
    if scope.asset_ids is not None:
        return [{**query, "asset_id": {"$in": chunk}} for chunk in id_chunks(scope.asset_ids)]
    if len(query) == 2:  # the whole portal
        return hash_slices(query)
    return [query]


#: A whole portal is read in this many ranges of its hashes. SecantusDB holds all of a query's
#: documents in memory before it answers (about 4 KB each: past 10 GB for a million, which it
#: did not finish reading in minutes); a slice of a million-asset portal holds 60 000 of them
#: at most, as pHashes fill the negative half of the range (their top bit is always set). The
#: index (portal_id, state, phash_i64) serves each slice; a real mongod streams either way.
HASH_SLICES = 32


def hash_slices(query: dict[str, Any]) -> list[dict[str, Any]]:
    """`query` once for each of `HASH_SLICES` equal ranges of `phash_i64`, covering all of it."""
    bounds = [-(2**63) + (2**64 * k) // HASH_SLICES for k in range(HASH_SLICES)]
    ranges = [{"$gte": lo, "$lt": hi} for lo, hi in itertools.pairwise(bounds)]
    return [{**query, "phash_i64": r} for r in [*ranges, {"$gte": bounds[-1]}]]


def _fingerprint_fields(image: HashedImage) -> dict[str, Any]:
    """What the verified matcher needs, as stored (absent when the hash was reused)."""
    prints = image.fingerprint
    if prints is None:
        return {}
    return {
        # Several hashes as one binary field (8 bytes each, big-endian, like the hex text): a
        # third the size of a BSON array and read back without per-element work.
        "variants": b"".join(bytes.fromhex(v) for v in prints.variants),
        "centre_i64": phash_to_signed(prints.centre),
        "crops": b"".join(bytes.fromhex(c) for c in prints.crops),
        "halves": b"".join(bytes.fromhex(h) for h in prints.halves),
        "signature": prints.signature,
        "detail": prints.detail,
        "low_detail": prints.low_detail,
        "pixels_sha256": image.pixels_sha256,
        **(
            {}
            if prints.content_phash is None
            else {
                "content_i64": phash_to_signed(prints.content_phash),
                "content_signature": prints.content_signature,
            }
        ),
    }


#: What an asset's rank as an original is read from (`_ranked`).
_RANK_FIELDS = ("pixels", "width", "height")


def _ranked(doc: dict[str, Any]) -> int:
    """The pixels a stored asset ranks by: its stored count, made before the ranking rule or
    after, ranked as `hashing.ranked_pixels` ranks a fresh image."""
    return ranked_pixels(doc["width"], doc["height"], doc["pixels"])


def _hash_matrix(packed: bytearray, per_asset: int) -> NDArray[np.uint64]:
    """Packed big-endian 64-bit hashes as an (assets, per_asset) column block."""
    values = np.frombuffer(bytes(packed), dtype=">u8").astype(np.uint64)
    return values.reshape(-1, per_asset)


class _PrintColumns:
    """Accumulates the verified matcher's columns from streamed documents.

    An asset hashed before fingerprints existed (hash version < 3) has none: it is treated as
    low-detail, so it matches only by identical bytes until `dupfinder rehash` refreshes it.
    """

    FIELDS = (
        "variants",
        "centre_i64",
        "crops",
        "low_detail",
        "sha256",
        "pixels_sha256",
        "content_i64",
        "halves",
        "width",
        "height",
    )
    _NO_SIGNATURE = bytes(SIGNATURE_SIDE * SIGNATURE_SIDE)

    def __init__(self, with_signatures: bool) -> None:
        self.with_signatures = with_signatures
        self.variants = bytearray()
        self.centres: list[int] = []
        self.crops = bytearray()
        self.signatures = bytearray()
        self.low_detail: list[bool] = []
        self.content: list[str | None] = []
        self.pixels: list[str | None] = []
        self.contents: list[int] = []
        self.halves = bytearray()
        self.short_sides: list[int] = []
        self.content_signatures: list[bytes | None] = []
        self.missing = 0

    def add(self, doc: dict[str, Any]) -> None:
        if doc.get("variants") is None:
            self.missing += 1
            self.variants += bytes(8 * len(VARIANTS))
            self.centres.append(0)
            self.crops += bytes(8 * CROP_COUNT)
            self.low_detail.append(True)
        else:
            self.variants += doc["variants"]
            self.centres.append(doc["centre_i64"])
            # Hashed before the wide crops: theirs are 0, which no pHash is near.
            self.crops += doc["crops"].ljust(8 * CROP_COUNT, b"\0")
            self.low_detail.append(doc["low_detail"])
        if self.with_signatures:
            self.signatures += doc.get("signature") or self._NO_SIGNATURE
            self.content_signatures.append(doc.get("content_signature"))
        self.contents.append(doc.get("content_i64") or 0)
        self.halves += doc.get("halves") or bytes(8 * len(HALVES))
        self.content.append(doc.get("sha256"))
        self.pixels.append(doc.get("pixels_sha256"))
        self.short_sides.append(min(doc["width"], doc["height"]))

    def build(self, phashes: NDArray[np.int64]) -> Fingerprints:
        if self.missing:
            log.warning(
                "%d assets in scope were hashed before fingerprints existed and match only by "
                "identical bytes under `verified`; `dupfinder rehash` refreshes them",
                self.missing,
            )
        inside, inside_rows = content_columns(self.content_signatures)
        return Fingerprints(
            phashes=phashes.view(np.uint64),
            variants=_hash_matrix(self.variants, len(VARIANTS)),
            centres=np.array(self.centres, dtype=np.int64).view(np.uint64),
            crops=_hash_matrix(self.crops, CROP_COUNT),
            signatures=np.frombuffer(bytes(self.signatures), dtype=np.uint8).reshape(
                -1, SIGNATURE_SIDE * SIGNATURE_SIDE
            ),
            low_detail=np.array(self.low_detail, dtype=bool),
            content=checksum_column(self.content),
            pixels=checksum_column(self.pixels),
            contents=np.array(self.contents, dtype=np.int64).view(np.uint64),
            halves=_hash_matrix(self.halves, len(HALVES)),
            short_sides=np.array(self.short_sides, dtype=np.int32),
            signature_rows=None
            if self.with_signatures
            else np.full(len(self.centres), -1, dtype=np.intp),
            content_signatures=inside,
            content_rows=inside_rows if self.with_signatures else None,
        )


@dataclass(frozen=True, slots=True)
class ColumnChanges:
    """What `AssetStore.changed_columns` read: the hashed assets' columns, and the ids read that
    are no longer hashed."""

    columns: Candidates
    gone: list[str]


class _Columns:
    """Accumulates a search's columns from streamed documents (no documents are kept)."""

    def __init__(self, *, with_titles: bool, with_prints: bool, with_signatures: bool) -> None:
        self.with_titles = with_titles
        self.prints = _PrintColumns(with_signatures) if with_prints else None
        self.ids: list[str] = []
        self.hashes: list[int] = []
        self.pixels: list[int] = []
        self.uploaded: list[int] = []
        self.pinned: list[int] = []
        self.titles: list[str] = []

    @property
    def projection(self) -> dict[str, Any]:
        """The fields `add` reads."""
        fields = ["asset_id", "phash_i64", *_RANK_FIELDS, "uploaded_at", "pinned_at"]
        if self.with_titles:
            fields.append("title")
        if self.prints is not None:
            fields.extend(_PrintColumns.FIELDS)
            if self.prints.with_signatures:
                fields += ["signature", "content_signature"]
        return {"_id": 0, **dict.fromkeys(fields, 1)}

    def add(self, doc: dict[str, Any]) -> None:
        self.ids.append(doc["asset_id"])
        self.hashes.append(doc["phash_i64"])
        self.pixels.append(_ranked(doc))
        self.uploaded.append(to_us(doc["uploaded_at"]))
        self.pinned.append(to_us(doc.get("pinned_at")))
        if self.with_titles:
            self.titles.append(doc.get("title", ""))
        if self.prints is not None:
            self.prints.add(doc)

    def build(self) -> Candidates:
        hashes = np.array(self.hashes, dtype=np.int64)
        return Candidates(
            asset_ids=self.ids,
            phashes=hashes.view(np.uint64),
            pixels=np.array(self.pixels, dtype=np.int64),
            uploaded_at_us=np.array(self.uploaded, dtype=np.int64),
            pinned_at_us=np.array(self.pinned, dtype=np.int64),
            titles=self.titles,
            prints=None if self.prints is None else self.prints.build(hashes),
        )


#: The shard key of each collection, for a sharded cluster: every query and update the worker
#: sends names the key's first field (tests/integration/test_shard_keys.py checks it), so each
#: goes to the shards of one portal. The leases' `_id` is the portal id (a command lock) or
#: starts with it (a search slot). Only `dupfinder status` without `--portal` asks every shard.
SHARD_KEYS: dict[str, dict[str, int]] = {
    "assets": {"portal_id": 1, "asset_id": 1},
    "commands": {"portal_id": 1, "command_id": 1},
    "decisions": {"portal_id": 1, "decision_id": 1},
    "decision_digests": {"portal_id": 1, "chunk": 1},
    "locks": {"_id": 1},
    "search_slots": {"_id": 1},
}


class AssetStore:
    """The worker's only door to MongoDB."""

    def __init__(
        self,
        client: AsyncMongoClient[dict[str, Any]],
        database: str,
        *,
        write_batch: int = MAX_WRITES,
        write_window_ms: float = WINDOW_MS,
        hash_threads: int = 0,
    ) -> None:
        db = client[database]
        self._client = client
        self._assets: AsyncCollection[dict[str, Any]] = db["assets"]
        #: The uploads' writes of this process, sent together (see `worker.batching`); a batch
        #: does not wait for the uploads the process's `hash_threads` may be hashing.
        self.asset_writes = WriteBatcher(
            self._assets,
            max_writes=write_batch,
            window_s=write_window_ms / 1000,
            hashing=hash_threads,
        )
        #: The uploads' look-ups of this process, asked early and sent together.
        self.upload_lookups = LookupBatcher(self._assets, UPLOAD_STATE_FIELDS, max_keys=write_batch)
        self._commands: AsyncCollection[dict[str, Any]] = db["commands"]
        self._locks: AsyncCollection[dict[str, Any]] = db["locks"]
        self._slots: AsyncCollection[dict[str, Any]] = db["search_slots"]
        self._decisions: AsyncCollection[dict[str, Any]] = db["decisions"]
        self._digests: AsyncCollection[dict[str, Any]] = db["decision_digests"]

    @classmethod
    def connect(
        cls,
        url: str,
        database: str,
        *,
        timeout_ms: int,
        write_concern: str = "majority",
        write_batch: int = MAX_WRITES,
        write_window_ms: float = WINDOW_MS,
        hash_threads: int = 0,
    ) -> AssetStore:
        """A store on a new client. Must run on the event loop that will use it.

        With `majority`, every write is acknowledged once a majority of a replica set holds it
        (so a new primary has it), and every read sees only such writes, so a command outcome
        or a lease read after a step-down is one that cannot be rolled back. Retryable writes
        and reads are on: the driver retries a single-document write once after a step-down,
        and the actors retry the rest, which is safe because every write is idempotent (see
        docs/replication.md).
        """
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            url,
            w="majority" if write_concern == "majority" else int(write_concern),
            readConcernLevel="majority" if write_concern == "majority" else "local",
            retryWrites=True,
            retryReads=True,
            tz_aware=True,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=socket_timeout_ms(timeout_ms),
            appname="dupfinder-worker",
        )
        return cls(
            client,
            database,
            write_batch=write_batch,
            write_window_ms=write_window_ms,
            hash_threads=hash_threads,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> AssetStore:
        """A store on the configured server and database (see `connect`)."""
        return cls.connect(
            settings.mongodb_url,
            settings.mongodb_database,
            timeout_ms=settings.mongodb_timeout_ms,
            write_concern=settings.mongodb_write_concern,
            write_batch=settings.write_batch,
            write_window_ms=settings.write_window_ms,
            hash_threads=settings.hash_threads,
        )

    async def close(self) -> None:
        """Close the client and its pools."""
        await self._client.close()

    @_store_errors
    async def ensure_indexes(self) -> None:
        """Create the indexes every query relies on (idempotent)."""
        await self._assets.create_index(
            [("portal_id", ASCENDING), ("asset_id", ASCENDING)], unique=True, name="portal_asset"
        )
        # What updates of one asset in a given state name (a pin, a tombstone, a merge), so a
        # server that uses an index only when it holds every field of the query still does.
        await self._assets.create_index(
            [("portal_id", ASCENDING), ("asset_id", ASCENDING), ("state", ASCENDING)],
            name="portal_asset_state",
        )
        await self._assets.create_index(
            [("portal_id", ASCENDING), ("state", ASCENDING), ("uploaded_at", ASCENDING)],
            name="portal_state_uploaded",
        )
        await self._assets.create_index(
            [("portal_id", ASCENDING), ("state", ASCENDING), ("phash_i64", ASCENDING)],
            name="portal_state_phash",
        )
        # What a refresh of a portal's cached search columns asks for: what was written since.
        await self._assets.create_index(
            [("portal_id", ASCENDING), ("updated_at", ASCENDING)], name="portal_updated"
        )
        await self._commands.create_index(
            [("portal_id", ASCENDING), ("command_id", ASCENDING)], unique=True, name="portal_cmd"
        )
        await self._decisions.create_index(
            [("portal_id", ASCENDING), ("decision_id", ASCENDING)],
            unique=True,
            name="portal_decision",
        )
        await self._decisions.create_index(
            [("portal_id", ASCENDING), ("asset_ids", ASCENDING)], name="portal_decided_asset"
        )
        await self._decisions.create_index(
            [("portal_id", ASCENDING), ("command_id", ASCENDING)], name="portal_decision_cmd"
        )
        await self._decisions.create_index(
            [("portal_id", ASCENDING), ("chunk", ASCENDING)], name="portal_decision_chunk"
        )
        await self._digests.create_index(
            [("portal_id", ASCENDING), ("chunk", ASCENDING)], unique=True, name="portal_chunk"
        )

    @_store_errors
    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless the server answers."""
        await self._client.admin.command("ping")

    # ----- assets -------------------------------------------------------------------------------

    @_store_errors
    async def get(self, portal_id: str, asset_id: str) -> dict[str, Any] | None:
        """The asset document, whatever its state."""
        return await self._assets.find_one(
            {"portal_id": portal_id, "asset_id": asset_id}, {"_id": 0}
        )

    def ask_upload_state(self, portal_id: str, asset_id: str) -> asyncio.Future[Any]:
        """Ask now for what an upload needs of its asset's document; `upload_state` answers.

        Asked when the upload is received and answered when it is hashed, so the look-ups of
        the uploads queued in between share one query (`worker.batching.LookupBatcher`).
        """
        return self.upload_lookups.ask(portal_id, asset_id)

    @_store_errors
    async def upload_state(self, asked: asyncio.Future[Any]) -> dict[str, Any] | None:
        """The asset's `UPLOAD_STATE_FIELDS` (None: no document), as `ask_upload_state` asked."""
        return await self.upload_lookups.answer(asked)

    @_store_errors
    async def save_hashed(
        self,
        upload: AssetUploaded,
        image: HashedImage,
        provenance: dict[str, Any],
        hashed_at: datetime,
        *,
        first: bool = False,
    ) -> bool:
        """Upsert the asset as hashed; False when it is deleted (a tombstone is never revived).

        `first`: its look-up found no document, so it is inserted, which costs the database
        less than an upsert (SecantusDB: 0.64 against 1.37 ms of CPU a document in bulks of
        16); should another delivery have created it meanwhile, it is upserted after all.
        """
        now = utcnow()
        fields = {
            **_metadata(upload),
            "state": HASHED,
            "phash": image.phash,
            "phash_i64": phash_to_signed(image.phash),
            "width": image.width,
            "height": image.height,
            "pixels": image.pixels,
            "format": image.format,
            "sha256": image.sha256,
            "size_bytes": image.size_bytes,
            "hash_provenance": provenance,
            "hashed_at": hashed_at,
            "updated_at": now,
            **_fingerprint_fields(image),
        }
        if first:
            UPLOAD_WRITES.labels(HASHED).inc()
            written = await self.asset_writes.write(InsertOne({**fields, "created_at": now}))
            if not _refused(written):
                return True
        stale = {"failure": "", "received_at": ""}
        if image.fingerprint is not None and image.fingerprint.content_phash is None:
            # New bytes without the border the stored ones had: their picture hash goes too.
            stale |= {"content_i64": "", "content_signature": ""}
        return await self._upsert_live(upload, {"$set": fields, "$unset": stale})

    @_store_errors
    async def mark_pending(self, upload: AssetUploaded) -> bool:
        """Record a first upload as received, so it counts as pending until hashed or failed.

        Only inserts: an asset that exists in any state is left as it is, and False says so.
        Trying the insert first saves a first upload, the common case, a look-up.
        """
        now = utcnow()
        document = {
            **_metadata(upload),
            "state": PENDING,
            "received_at": now,
            "created_at": now,
            "updated_at": now,
        }
        UPLOAD_WRITES.labels(PENDING).inc()
        written = await self.asset_writes.write(InsertOne(document))
        # A duplicate key: it exists (or a concurrent delivery just created it).
        return not _refused(written)

    @_store_errors
    async def mark_failed(self, upload: AssetUploaded, reason: str, detail: str) -> bool:
        """Record that this upload cannot be hashed; False when the asset is deleted."""
        now = utcnow()
        fields = {
            **_metadata(upload),
            "state": FAILED,
            "failure": {"reason": reason, "detail": detail, "at": now},
            "updated_at": now,
        }
        return await self._upsert_live(upload, {"$set": fields})

    async def _upsert_live(self, upload: AssetUploaded, update: dict[str, Any]) -> bool:
        UPLOAD_WRITES.labels(update["$set"]["state"]).inc()
        update = {**update, "$setOnInsert": {"created_at": utcnow()}}
        query = {
            "portal_id": upload.portal_id,
            "asset_id": upload.asset_id,
            "state": {"$in": LIVE},
        }
        written = await self.asset_writes.write(UpdateOne(query, update, upsert=True))
        # A duplicate key: the (portal_id, asset_id) document exists but did not match, so it
        # is a tombstone.
        return not _refused(written)

    @_store_errors
    async def tombstone(
        self,
        portal_id: str,
        asset_id: str,
        *,
        via: str,
        command_id: str | None = None,
        original_id: str | None = None,
        create: bool = False,
    ) -> bool:
        """Mark an asset deleted, keeping its metadata; False when nothing changed.

        `create` records a tombstone even for an asset never seen, so that a replayed upload
        cannot bring it in later. Otherwise only a hashed asset is deleted.
        """
        now = utcnow()
        tomb = {"at": now, "via": via, "command_id": command_id, "original_id": original_id}
        update = {"$set": {"state": DELETED, "deleted": tomb, "updated_at": now}}
        query: dict[str, Any] = {"portal_id": portal_id, "asset_id": asset_id}
        if create:
            query["state"] = {"$in": LIVE}
            try:
                await self._assets.update_one(
                    query, {**update, "$setOnInsert": {"created_at": now}}, upsert=True
                )
            except DuplicateKeyError:
                return False
            return True
        query["state"] = HASHED
        result = await self._assets.update_one(query, update)
        return result.modified_count == 1

    @_store_errors
    async def pin(
        self, portal_id: str, asset_id: str, pinned_at: datetime, command_id: str
    ) -> bool:
        """Make a hashed asset rank first among originals; False when it is not live."""
        result = await self._assets.update_one(
            {"portal_id": portal_id, "asset_id": asset_id, "state": HASHED},
            {"$set": {"pinned_at": pinned_at, "pinned_by": command_id, "updated_at": utcnow()}},
        )
        return result.matched_count == 1

    @_store_errors
    async def facts(
        self, portal_id: str, asset_ids: list[str]
    ) -> tuple[dict[str, AssetFacts], frozenset[str]]:
        """Facts of the live assets among `asset_ids`, and which of them are deleted."""
        live: dict[str, AssetFacts] = {}
        deleted: set[str] = set()
        fields = ("asset_id", "state", "uploaded_at", "pinned_at", *_RANK_FIELDS)
        projection = {"_id": 0, **dict.fromkeys(fields, 1)}
        async for doc in self._by_ids(portal_id, asset_ids, projection):
            if doc["state"] == DELETED:
                deleted.add(doc["asset_id"])
            elif doc["state"] == HASHED:
                live[doc["asset_id"]] = AssetFacts(
                    asset_id=doc["asset_id"],
                    pixels=_ranked(doc),
                    uploaded_at_us=to_us(doc["uploaded_at"]),
                    pinned_at_us=to_us(doc.get("pinned_at")),
                )
        return live, frozenset(deleted)

    async def candidates(
        self,
        portal_id: str,
        scope: Scope,
        *,
        with_titles: bool,
        with_prints: bool = False,
        with_signatures: bool = True,
        batch_size: int | None = None,
    ) -> Candidates:
        """Stream the in-scope assets' projected fields into columns (no documents are kept).

        `with_prints` adds what the verified matcher reads: its hashes (about 140 bytes an
        asset) and, unless `with_signatures` is False, the 1 KiB signatures; a large search
        reads those later, for its candidates only (`signatures`).
        """
        columns = _Columns(
            with_titles=with_titles, with_prints=with_prints, with_signatures=with_signatures
        )
        # A few MB a batch either way: a signature is 1 KiB, a bare hash ~0.1 KiB.
        batch = batch_size or (1000 if with_prints and with_signatures else 5000)
        with _translated():
            async for doc in self._each(scope_filters(portal_id, scope), columns.projection, batch):
                columns.add(doc)
        return columns.build()

    async def changed_columns(self, portal_id: str, since: datetime | None) -> ColumnChanges:
        """A search's columns (titles and the verified matcher's hashes, no signatures) of the
        portal's hashed assets: all of them, or those whose document was written at or after
        `since`, with the ids written since then that are no longer hashed.

        Every write of an asset document stamps `updated_at`, and the index
        (portal_id, updated_at) finds the stamped ones without reading the rest.
        """
        columns = _Columns(with_titles=True, with_prints=True, with_signatures=False)
        projection = {**columns.projection, "state": 1}
        queries = (
            scope_filters(portal_id, Scope())
            if since is None
            else [{"portal_id": portal_id, "updated_at": {"$gte": since}}]
        )
        gone: list[str] = []
        with _translated():
            async for doc in self._each(queries, projection, 5000):
                if doc["state"] == HASHED:
                    columns.add(doc)
                else:
                    gone.append(doc["asset_id"])
        return ColumnChanges(columns.build(), gone)

    @_store_errors
    async def scope_ids(self, portal_id: str, scope: Scope) -> list[str]:
        """The ids of the portal's hashed assets inside `scope`, and nothing else of them."""
        projection = {"_id": 0, "asset_id": 1}
        return [
            doc["asset_id"]
            async for doc in self._each(scope_filters(portal_id, scope), projection, 10_000)
        ]

    @_store_errors
    async def signatures(
        self, portal_id: str, asset_ids: Sequence[str]
    ) -> dict[str, tuple[bytes, bytes | None]]:
        """The stored signatures of the given live assets, with their content signatures
        (`Fingerprint.content_signature`, or None), by asset id (none for an asset deleted or
        hashed before fingerprints existed)."""
        found: dict[str, tuple[bytes, bytes | None]] = {}
        projection = {"_id": 0, "asset_id": 1, "signature": 1, "content_signature": 1}
        async for doc in self._by_ids(portal_id, asset_ids, projection, state=HASHED):
            if doc.get("signature") is not None:
                found[doc["asset_id"]] = (doc["signature"], doc.get("content_signature"))
        return found

    def _by_ids(
        self,
        portal_id: str,
        asset_ids: Sequence[str],
        projection: dict[str, Any],
        *,
        state: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """The portal's documents among `asset_ids` (in `state`, when given), asked for in
        queries that fit the server.

        The state is checked here, not in the query: SecantusDB uses an index only when it
        holds every field a query names, and otherwise scans the collection (5.7 s instead of
        25 ms for 100 ids among 20 000 assets).
        """
        queries = [
            {"portal_id": portal_id, "asset_id": {"$in": chunk}} for chunk in id_chunks(asset_ids)
        ]
        found = self._each(queries, {**projection, "state": 1}, 1000)
        if state is None:
            return found
        return (doc async for doc in found if doc["state"] == state)

    async def _each(
        self, queries: list[dict[str, Any]], projection: dict[str, Any], batch_size: int
    ) -> AsyncIterator[dict[str, Any]]:
        for query in queries:
            async for doc in self._assets.find(query, projection, batch_size=batch_size):
                yield doc

    @_store_errors
    async def members(self, portal_id: str, asset_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Display fields of the given live assets, by asset id."""
        fields = ("asset_id", "title", "description", "tags", "width", "height", "uploaded_at")
        projection = {"_id": 0, "phash": 1, "sha256": 1, **dict.fromkeys(fields, 1)}
        return {
            doc["asset_id"]: doc
            async for doc in self._by_ids(portal_id, asset_ids, projection, state=HASHED)
        }

    async def stale_hashes(self, portal_id: str, version: int) -> AsyncIterator[dict[str, Any]]:
        """Hashed assets of a portal whose hash was made by another method version."""
        with _translated():
            cursor = self._assets.find(
                {
                    "portal_id": portal_id,
                    "state": HASHED,
                    "hash_provenance.version": {"$ne": version},
                },
                {
                    "_id": 0,
                    "portal_id": 1,
                    "asset_id": 1,
                    "source": 1,
                    "title": 1,
                    "description": 1,
                    "tags": 1,
                    "uploaded_at": 1,
                },
                batch_size=1000,
            )
            async for doc in cursor:
                yield doc

    @_store_errors
    async def state_counts(self, portal_id: str | None = None) -> list[dict[str, Any]]:
        """Assets per portal, state and failure reason (for `dupfinder status`)."""
        match: dict[str, Any] = {} if portal_id is None else {"portal_id": portal_id}
        cursor = await self._assets.aggregate(
            [
                {"$match": match},
                {
                    "$group": {
                        "_id": {
                            "portal": "$portal_id",
                            "state": "$state",
                            "reason": "$failure.reason",
                        },
                        "count": {"$sum": 1},
                    }
                },
            ]
        )
        rows = [
            {
                "portal_id": doc["_id"]["portal"],
                "state": doc["_id"]["state"],
                "reason": doc["_id"].get("reason"),
                "count": doc["count"],
            }
            async for doc in cursor
        ]
        return sorted(rows, key=lambda r: (r["portal_id"], r["state"], r["reason"] or ""))

    @_store_errors
    async def known(self, portal_id: str, asset_ids: Sequence[str]) -> dict[str, str]:
        """The state of each of `asset_ids` this portal has a document for, by asset id."""
        projection = {"_id": 0, "asset_id": 1, "state": 1}
        return {
            doc["asset_id"]: doc["state"]
            async for doc in self._by_ids(portal_id, asset_ids, projection)
        }

    @_store_errors
    async def set_metadata(
        self, portal_id: str, asset_id: str, *, title: str, description: str, tags: list[str]
    ) -> None:
        """Store merged metadata on a live asset (a later upload may replace it again)."""
        await self._assets.update_one(
            {"portal_id": portal_id, "asset_id": asset_id, "state": HASHED},
            {
                "$set": {
                    "title": title,
                    "description": description,
                    "tags": tags,
                    "updated_at": utcnow(),
                }
            },
        )

    # ----- decisions ----------------------------------------------------------------------------

    @_store_errors
    async def record_decisions(
        self, portal_id: str, command_id: str, kind: str, decided: Sequence[Sequence[str]]
    ) -> None:
        """Record a command's decisions, the n-th as `<command_id>/<n>`, and the digests that
        hold them; recording them again (a retried command) changes nothing.

        Call it under the portal's command lock: digests are rewritten, not appended to.
        """
        docs: list[dict[str, Any]] = [
            {
                "portal_id": portal_id,
                "decision_id": f"{command_id}/{n}",
                "kind": kind,
                "asset_ids": list(ids),
                "command_id": command_id,
            }
            for n, ids in enumerate(decided)
            if len(ids) >= 2
        ]
        if not docs:
            return
        # A retry finds its decisions where the first attempt put them.
        placed = {
            doc["decision_id"]: doc["chunk"]
            async for doc in self._decisions.find(
                {"portal_id": portal_id, "command_id": command_id},
                {"_id": 0, "decision_id": 1, "chunk": 1},
            )
        }
        last = await self._digests.find_one(
            {"portal_id": portal_id}, {"_id": 0}, sort=[("chunk", DESCENDING)]
        )
        chunk, held, ids = (last["chunk"], last["decisions"], last["ids"]) if last else (0, 0, 0)
        now = utcnow()
        touched: set[int] = set()
        for doc in docs:
            if doc["decision_id"] in placed:
                touched.add(placed[doc["decision_id"]])
                continue
            size = len(doc["asset_ids"])
            if held and (held >= DIGEST_DECISIONS or ids + size > DIGEST_IDS):
                chunk, held, ids = chunk + 1, 0, 0
            held, ids = held + 1, ids + size
            touched.add(chunk)
            doc.update(chunk=chunk, at=now)
        fresh = [doc for doc in docs if doc["decision_id"] not in placed]
        if fresh:
            try:
                await self._decisions.insert_many(fresh, ordered=False)
            except BulkWriteError as e:
                if any(error.get("code") != 11000 for error in e.details.get("writeErrors", [])):
                    raise  # anything but "recorded already"
        await self._rebuild_digests(portal_id, touched)

    async def _rebuild_digests(
        self, portal_id: str, chunks: Iterable[int], leaving: Set[str] = frozenset()
    ) -> None:
        """Write each chunk's digest again from the decisions it holds (but `leaving`)."""
        for chunk in sorted(set(chunks)):
            lines: list[str] = []
            ids = 0
            query = {"portal_id": portal_id, "chunk": chunk}
            projection = {"_id": 0, "decision_id": 1, "kind": 1, "asset_ids": 1}
            async for doc in self._decisions.find(query, projection):
                if doc["decision_id"] not in leaving:
                    lines.append("\t".join([doc["kind"], *doc["asset_ids"]]))
                    ids += len(doc["asset_ids"])
            await self._digests.update_one(
                query,
                {"$set": {"packed": "\n".join(lines), "decisions": len(lines), "ids": ids}},
                upsert=True,
            )

    async def decisions(self, portal_id: str) -> list[tuple[str, list[str]]]:
        """(kind, asset ids) of all the portal's decisions, read from their digests: a few
        documents holding one text each, where reading the decisions themselves would decode
        every id array (ten times slower on SecantusDB at 100 000 decisions).

        A deleted asset may still be named (the search finds it among no candidates).
        """
        found: list[tuple[str, list[str]]] = []
        with _translated():
            async for doc in self._digests.find({"portal_id": portal_id}, {"_id": 0, "packed": 1}):
                for line in doc["packed"].split("\n") if doc["packed"] else ():
                    kind, *ids = line.split("\t")
                    found.append((kind, ids))
        return found

    @_store_errors
    async def distinct_from(self, portal_id: str, asset_id: str) -> set[str]:
        """Every asset a distinct decision keeps apart from `asset_id`."""
        # The kind is checked here, not in the query, for the reason `_by_ids` gives.
        query = {"portal_id": portal_id, "asset_ids": asset_id}
        apart: set[str] = set()
        async for doc in self._decisions.find(query, {"_id": 0, "kind": 1, "asset_ids": 1}):
            if doc["kind"] == "distinct":
                apart.update(doc["asset_ids"])
        apart.discard(asset_id)
        return apart

    @_store_errors
    async def forget_decisions(self, portal_id: str, asset_ids: Sequence[str]) -> int:
        """Remove every decision of the portal that names any of `asset_ids`; how many went.

        The digests are rewritten without them before they are deleted, so a retry after a
        crash in between finds them again and finishes. Call it under the command lock.
        """
        named = await self._named(portal_id, asset_ids)
        if not named:
            return 0
        await self._rebuild_digests(portal_id, set(named.values()), leaving=set(named))
        await self._delete_decisions(portal_id, list(named))
        return len(named)

    async def _delete_decisions(self, portal_id: str, decision_ids: Sequence[str]) -> None:
        for chunk in id_chunks(decision_ids):
            await self._decisions.delete_many(
                {"portal_id": portal_id, "decision_id": {"$in": chunk}}
            )

    async def _named(self, portal_id: str, asset_ids: Sequence[str]) -> dict[str, int]:
        """The decisions naming any of `asset_ids`: decision id -> its digest chunk."""
        named: dict[str, int] = {}
        projection = {"_id": 0, "decision_id": 1, "chunk": 1}
        for chunk in id_chunks(asset_ids):
            query = {"portal_id": portal_id, "asset_ids": {"$in": chunk}}
            async for doc in self._decisions.find(query, projection):
                named[doc["decision_id"]] = doc["chunk"]
        return named

    @_store_errors
    async def leave_decisions(self, portal_id: str, asset_ids: Sequence[str]) -> None:
        """Take deleted assets out of the decisions naming them; a decision left with fewer
        than two assets says nothing more and goes (idempotent, so a retry may repeat it).

        The digests keep naming them until their chunk is next rewritten: a deleted asset is
        never a search's candidate, so what they say is the same.
        """
        named = await self._named(portal_id, asset_ids)
        if not named:
            return
        for chunk in id_chunks(asset_ids):
            await self._decisions.update_many(
                {"portal_id": portal_id, "asset_ids": {"$in": chunk}},
                {"$pull": {"asset_ids": {"$in": chunk}}},
            )
        # Read again after the pulls (not before), so that of two removals racing on one
        # decision, the later one sees what both left; the length is checked here, as in
        # `_by_ids`, so the query stays on its index.
        short: list[str] = []
        projection = {"_id": 0, "decision_id": 1, "asset_ids": 1}
        for chunk in id_chunks(list(named)):
            query = {"portal_id": portal_id, "decision_id": {"$in": chunk}}
            async for doc in self._decisions.find(query, projection):
                if len(doc["asset_ids"]) < 2:
                    short.append(doc["decision_id"])
        await self._delete_decisions(portal_id, short)

    # ----- commands -----------------------------------------------------------------------------

    @_store_errors
    async def command_outcome(self, portal_id: str, command_id: str) -> dict[str, Any] | None:
        """The recorded outcome of a command already carried out, if any."""
        return await self._commands.find_one(
            {"portal_id": portal_id, "command_id": command_id}, {"_id": 0}
        )

    @_store_errors
    async def record_command(
        self, portal_id: str, command_id: str, event_type: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Record a command's outcome once; returns whichever outcome was recorded first."""
        doc = {
            "portal_id": portal_id,
            "command_id": command_id,
            "routing_key": event_type,  # the event type; the key is `<portal_id>.<type>`
            "body": body,
            "at": utcnow(),
        }
        try:
            await self._commands.insert_one(dict(doc))
        except DuplicateKeyError:
            first = await self.command_outcome(portal_id, command_id)
            if first is not None:
                return first
            raise
        return doc

    @asynccontextmanager
    async def command_lock(
        self, portal_id: str, owner: str, *, ttl_ms: int, wait_s: float = 10.0
    ) -> AsyncIterator[None]:
        """Hold the portal's command lease, so commands on one portal never interleave.

        Commands are rare user clicks; serialising them per portal makes "exactly one original,
        never a deleted one" hold without multi-document transactions. The lease is renewed
        while the command runs, however long it takes; a crashed holder's lease expires after
        `ttl_ms`. Raises `StoreUnavailable` when it stays busy for `wait_s`.
        """
        deadline = asyncio.get_running_loop().time() + wait_s
        delay = 0.01
        while not await self._take_lease(self._locks, portal_id, owner, ttl_ms):
            if asyncio.get_running_loop().time() > deadline:
                raise StoreUnavailable(f"command lock of portal {portal_id} stays busy")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
        async with self._renewed(self._locks, portal_id, owner, ttl_ms):
            yield

    @asynccontextmanager
    async def search_slot(
        self, portal_id: str, owner: str, *, slots: int, ttl_ms: int
    ) -> AsyncIterator[bool]:
        """Try to take one of the portal's `slots` search slots, without waiting.

        Yields whether a slot was taken; it is held (and renewed) until the block ends. What
        bounds one portal's share of the search threads across every worker process.
        """
        for slot in range(slots):
            key = f"{portal_id}/{slot}"
            if await self._take_lease(self._slots, key, owner, ttl_ms):
                async with self._renewed(self._slots, key, owner, ttl_ms):
                    yield True
                return
        yield False

    @_store_errors
    async def _take_lease(
        self, leases: AsyncCollection[dict[str, Any]], key: str, owner: str, ttl_ms: int
    ) -> bool:
        now = utcnow()
        try:
            await leases.update_one(
                {"_id": key, "$or": [{"expires_at": {"$lt": now}}, {"owner": owner}]},
                {"$set": {"owner": owner, "expires_at": now + timedelta(milliseconds=ttl_ms)}},
                upsert=True,
            )
        except DuplicateKeyError:  # held by another owner, not yet expired
            return False
        return True

    @asynccontextmanager
    async def _renewed(
        self, leases: AsyncCollection[dict[str, Any]], key: str, owner: str, ttl_ms: int
    ) -> AsyncIterator[None]:
        """Keep a taken lease alive (renewed every third of its TTL) until the block ends, then
        release it."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(ttl_ms / 3000)
                try:
                    with _translated():
                        result = await leases.update_one(
                            {"_id": key, "owner": owner},
                            {"$set": {"expires_at": utcnow() + timedelta(milliseconds=ttl_ms)}},
                        )
                except StoreUnavailable as e:
                    # A cancellation the driver turned into a connection error (it closes the
                    # connection an operation was cancelled on) ends the renewals all the same;
                    # otherwise the next renewal may get through.
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise asyncio.CancelledError from e
                    log.warning("could not renew the lease %s: %s", key, e.detail)
                    continue
                if result.matched_count == 0:
                    log.error("the lease %s was lost (held past its TTL by a stalled loop?)", key)
                    return

        renewer = asyncio.create_task(renew())
        try:
            yield
        finally:
            renewer.cancel()
            # Bounded: a renewal that does not stop must not keep the lease from its release.
            await asyncio.wait({renewer}, timeout=max(1.0, ttl_ms / 1000))
            if not renewer.done():
                log.error("the renewal of the lease %s did not stop; releasing it anyway", key)
            with _translated():
                await leases.delete_one({"_id": key, "owner": owner})


def _refused(written: Written) -> bool:
    """Whether a batched write was refused for a duplicate key; any other write error is
    raised, as the single write would have raised it."""
    if written.error_code is None:
        return False
    if written.duplicate_key:
        return True
    raise OperationFailure(f"write refused with code {written.error_code}", written.error_code)


def _metadata(upload: AssetUploaded) -> dict[str, Any]:
    return {
        "portal_id": upload.portal_id,
        "asset_id": upload.asset_id,
        "source": upload.source,
        "title": upload.title,
        "description": upload.description,
        "tags": list(upload.tags),
        "uploaded_at": upload.uploaded_at,
    }
