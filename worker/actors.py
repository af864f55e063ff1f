"""The Dramatiq actors: thin adapters from the wire contract to the core and the store.

Each actor is a plain function that Dramatiq runs on a worker thread: it checks the envelope's
arguments against the payload model, then runs the matching coroutine on the event-loop thread
(where the MongoDB client lives). Outcomes are stored before they are published, and published
before the message is acknowledged, so a crash anywhere re-runs the work and re-publishes.

Failure sorting, per actor:
- contract violations raise `InvalidMessage` (a `PermanentError`): a failure event when the ids
  are readable, then straight to the dead-letter queue;
- unreadable images are an answer, not a failure: the asset is marked failed, `asset.failed` is
  published and the message is done;
- a missing source is marked failed and dead-lettered too, so ops can re-drive it once the file
  appears;
- `TransientError`s are retried with bounded backoff by `SafeRetries`; the last attempt publishes
  the failure event (reason `source_unavailable`, `store_unavailable`...) before the message is
  dead-lettered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import CurrentMessage
from dramatiq.middleware.time_limit import TimeLimitExceeded
from pydantic import ValidationError

from schemas.contract import (
    ACTORS,
    BACKFILL_ROUTE,
    PORTAL_ID_PATTERN,
    ActorRoute,
    result_routing_key,
)
from schemas.events import (
    AssetFailed,
    AssetHashed,
    AssetRemovalStored,
    CommandRejected,
    Decided,
    DecisionsForgotten,
    DistinctMarked,
    DuplicatesDeleted,
    Event,
    MergedMetadata,
    OriginalChanged,
    Rejection,
    RequestFailed,
    SetKept,
)
from schemas.messages import (
    AssetRemoved,
    AssetUploaded,
    DeleteDuplicates,
    FindDuplicates,
    ForgetDecisions,
    KeepSet,
    MakeOriginal,
    MarkDistinct,
    MatchRule,
    Payload,
    Scope,
    chosen_rule,
)
from worker.broker import build_broker, mark_dead
from worker.budget import DecodeBudget
from worker.config import get_settings
from worker.core import decisions, deletion, grouping, matching, merging, pages
from worker.core.errors import (
    Forbidden,
    ImageError,
    InvalidMessage,
    PermanentError,
    SourceError,
    StoreUnavailable,
    TransientError,
    clipped,
    describe,
)
from worker.core.hashing import HashedImage, hash_image, is_current, provenance, sha256_hex
from worker.fetching import FetchLimits, fetch
from worker.observability import (
    ASSETS_FAILED,
    ASSETS_HASHED,
    COMMANDS,
    HASH_SECONDS,
    HASHING,
    LOG_CONTEXT,
    SEARCH_SECONDS,
    SEARCH_SETS,
    Watch,
)
from worker.resources import Resources, Runtime
from worker.store import DELETED, HASHED, socket_timeout_ms, utcnow

log = logging.getLogger(__name__)

PayloadT = TypeVar("PayloadT", bound=Payload)
T = TypeVar("T")

resources = Resources()
watch = Watch(
    port=get_settings().http_port,
    liveness_timeout_s=get_settings().liveness_timeout_s,
    ready_check=resources.ready_problems,
    stuck_after_s=get_settings().fetch_timeout_s + get_settings().hash_time_s,
)
broker = build_broker(get_settings(), [resources, watch])
dramatiq.set_broker(broker)


@dataclass(frozen=True, slots=True)
class Delivery:
    """Facts about the message being handled, for logs."""

    message_id: str


def _readable_ids(raw: Any, *names: str) -> dict[str, str] | None:
    """The ids a failure event can be addressed with, or None. A portal id off the contract's
    pattern is not one: it would route the event where no portal's binding expects it, or
    into another portal's (`acme.x` lands in `acme.#`)."""
    if not isinstance(raw, dict):
        return None
    ids = {name: raw.get(name) for name in names}
    if not all(isinstance(value, str) and value for value in ids.values()):
        return None
    if "portal_id" in ids and not re.fullmatch(PORTAL_ID_PATTERN, str(ids["portal_id"])):
        return None
    return {name: str(value) for name, value in ids.items()}


FailureEvent = Callable[[dict[str, str], str, str], Event]
"""Builds the failure event of an actor from the message's ids, a reason code and a detail."""


def _contract_actor(
    model: type[PayloadT],
    failure_event: FailureEvent,
    id_fields: tuple[str, ...],
    route: ActorRoute | None = None,
) -> Callable[[Callable[[PayloadT, Runtime, Delivery], Awaitable[None]]], dramatiq.Actor[Any, Any]]:
    """Register `handler` as the actor the contract names for `model`."""
    route = route or ACTORS[model.__name__]
    settings = get_settings()

    def decorator(
        handler: Callable[[PayloadT, Runtime, Delivery], Awaitable[None]],
    ) -> dramatiq.Actor[Any, Any]:
        def run(*args: Any, **kwargs: Any) -> None:
            message = CurrentMessage.get_current_message()
            try:
                attempt_once(message, args, kwargs)
            except PermanentError as e:
                mark_dead(message, e.reason, e.detail)  # every give-up says why in its letter
                raise

        def attempt_once(message: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            attempt = int(message.options.get("retries", 0)) if message else 0
            delivery = Delivery(message_id=message.message_id if message else "unknown")
            runtime = resources.runtime
            raw = args[0] if len(args) == 1 else None
            context = {
                "message_id": delivery.message_id,
                "actor": route.actor_name,
                **(_readable_ids(raw, *id_fields) or {}),
            }
            LOG_CONTEXT.set(context)
            _authorise(message, raw, route)
            try:
                if kwargs or len(args) != 1:
                    raise InvalidMessage("args must be exactly [payload] and kwargs empty")
                try:
                    payload = model.model_validate(raw)
                except ValidationError as e:
                    raise InvalidMessage(describe(e)) from None
            except InvalidMessage as e:
                log.error(
                    "dead-lettering invalid %s message %s: %s",
                    route.actor_name,
                    delivery.message_id,
                    e.detail,
                )
                ids = _readable_ids(raw, *id_fields)
                if ids is not None:
                    runtime.publisher.publish_blocking(failure_event(ids, e.reason, e.detail))
                raise

            async def in_context() -> None:
                LOG_CONTEXT.set(context)  # the coroutine runs on the loop thread's own context
                await handler(payload, runtime, delivery)

            try:
                _loop().run_coroutine(in_context())
            except Deferred as later:
                # Not a failure and not a retry: the same message, back in line a little later.
                assert message is not None
                broker.enqueue(message.copy(), delay=later.delay_ms)
                log.info("%s message %s deferred: %s", route.actor_name, message.message_id, later)
                return
            except PermanentError:
                raise  # its outcome was published where it was raised
            except (Exception, TimeLimitExceeded) as e:
                # Transient faults are expected; anything else (a bug, a time limit, a driver
                # error nobody foresaw) is retried alike, and the portal hears of it at the end.
                reason, detail = (
                    (e.reason, e.detail)
                    if isinstance(e, TransientError)
                    else ("internal_error", _short(e))
                )
                log.warning(
                    "%s message %s, attempt %d of %d: %s",
                    route.actor_name,
                    delivery.message_id,
                    attempt + 1,
                    settings.max_retries + 1,
                    detail,
                )
                if attempt >= settings.max_retries:  # the last attempt: it goes to the XQ now
                    mark_dead(message, reason, f"gave up after {attempt + 1} attempts: {detail}")
                    ids = {name: getattr(payload, name) for name in id_fields}
                    if isinstance(payload, AssetUploaded):
                        _try_mark_failed(payload, reason, detail)
                    runtime.publisher.publish_blocking(failure_event(ids, reason, detail))
                raise

        run.__name__ = route.actor_name
        run.__qualname__ = route.actor_name
        register = dramatiq.actor(
            actor_name=route.actor_name,
            queue_name=route.queue_name,
            throws=(PermanentError,),
            max_retries=settings.max_retries,
            min_backoff=settings.min_backoff_ms,
            max_backoff=settings.max_backoff_ms,
            time_limit=settings.time_limit_ms,
        )
        return register(run)

    return decorator


def _authorise(message: Any, raw: Any, route: ActorRoute) -> None:
    """Refuse, before anything else happens, a message whose publisher may not act for the
    portal it names (when `DUPFINDER_PORTAL_USERS` is set).

    Nothing is published for a refused message: the portal it names did not send it. The
    worker's own re-publishes (retries, deferrals, due delayed messages, re-driven dead
    letters) carry the worker's login and were authorised on their first delivery.
    """
    users = get_settings().portal_users
    if users is None:
        return
    publisher = getattr(message, "publisher", None)
    portal = raw.get("portal_id") if isinstance(raw, dict) else None
    if publisher is not None and publisher == broker.login:
        return
    allowed = users.get(publisher) if publisher is not None else None
    if allowed is not None and (allowed == "*" or allowed == portal):
        return
    detail = (
        "the message carries no AMQP user_id"
        if publisher is None
        else f"user {publisher!r} may not act for portal {portal!r}"
    )
    log.error(
        "dead-lettering forbidden %s message %s: %s",
        route.actor_name,
        getattr(message, "message_id", "unknown"),
        detail,
    )
    raise Forbidden(detail)


def _try_mark_failed(upload: AssetUploaded, reason: str, detail: str) -> None:
    """Best effort: the fault may be the database itself, and the message is kept anyway."""
    try:
        _loop().run_coroutine(resources.runtime.store.mark_failed(upload, reason, detail))
    except Exception:  # whatever kept the upload from its hash may keep this write too
        log.warning("could not mark %s/%s failed", upload.portal_id, upload.asset_id)


#: How much of an unforeseen error's text reaches a failure event.
DETAIL_CHARS = 300


def _short(error: BaseException) -> str:
    """An unforeseen error in one short line, for a failure event's `detail`."""
    text = " ".join(str(error).split())
    detail = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return clipped(detail, DETAIL_CHARS)


class Deferred(Exception):
    """Raised by a handler that must not run now: its message is enqueued again with a delay
    and acknowledged, without counting as an attempt."""

    def __init__(self, why: str, delay_ms: int) -> None:
        super().__init__(why)
        self.delay_ms = delay_ms


#: How long a search of a portal whose search slots are all taken waits before it asks again
#: (plus up to as much again at random, so that a backlog does not ask in lockstep). Short: a
#: slot left free until the next ask is time the portal's backlog loses.
SEARCH_RETRY_DELAY_MS = 250


def _loop() -> Any:
    loop_thread = get_event_loop_thread()
    if loop_thread is None:
        raise RuntimeError("the AsyncIO middleware is not running")
    return loop_thread


# ----- assets -----------------------------------------------------------------------------------


def _asset_failed(ids: dict[str, str], reason: str, detail: str) -> Event:
    return AssetFailed(**ids, reason=reason, detail=detail)


def _read_and_hash(
    source: str,
    limits: FetchLimits,
    max_pixels: int,
    stored: Callable[[], dict[str, Any] | None],
    budget: DecodeBudget,
) -> tuple[dict[str, Any] | None, HashedImage | None]:
    """Runs on a hashing thread: the asset's stored state, then, unless it is deleted or holds
    the hash of these same bytes, their hash.

    The state is waited for here, when the upload leaves the queue of the hashing threads, not
    when it was received: the look-ups of the uploads received meanwhile go in one query.
    """
    existing = stored()
    if existing is not None and existing["state"] == DELETED:
        return existing, None
    # Unchanged bytes need no new hash, unless the stored one was made by an older method.
    current = existing is not None and is_current(existing.get("hash_provenance"))
    known = existing.get("sha256") if existing and existing["state"] == HASHED and current else None
    with HASHING.busy():
        data = fetch(source, limits)
        checksum = sha256_hex(data)
        if checksum == known:
            return existing, None
        return existing, hash_image(
            data, max_pixels=max_pixels, sha256=checksum, admit=budget.reserve
        )


async def _hash_upload(upload: AssetUploaded, rt: Runtime, delivery: Delivery) -> None:
    """Hash the uploaded image and store it with the asset's metadata; publish `asset.hashed`.

    A first upload is written once, with its outcome, as an insert: it is marked `pending` only
    when its fetch and hash outlast `DUPFINDER_PENDING_AFTER_S`. Its look-up shares a query with
    those of the uploads received while it waited for a hashing thread, so the database's cost
    of an upload is a share of a read and a share of a bulk insert.
    """
    with rt.store.asset_writes.coming():  # its write may share a request with the others'
        await _fetch_hash_store(upload, rt, delivery)


async def _fetch_hash_store(upload: AssetUploaded, rt: Runtime, delivery: Delivery) -> None:
    loop = asyncio.get_running_loop()
    asked = rt.store.ask_upload_state(upload.portal_id, upload.asset_id)
    # The longest one query may take by the client's own bounds (server selection, then the
    # socket's timeout), so that a hashing thread never waits for ever on a lost event loop.
    timeout_ms = rt.settings.mongodb_timeout_ms
    wait_s = (timeout_ms + socket_timeout_ms(timeout_ms)) / 1000

    def stored() -> dict[str, Any] | None:
        answer = asyncio.run_coroutine_threadsafe(rt.store.upload_state(asked), loop)
        try:
            return answer.result(timeout=wait_s)
        except concurrent.futures.TimeoutError:
            answer.cancel()
            raise StoreUnavailable(f"no answer to an asset's look-up in {wait_s:.0f} s") from None

    limits = FetchLimits(
        rt.settings.max_source_bytes,
        rt.settings.fetch_timeout_s,
        rt.settings.fetch_connect_timeout_s,
        roots=rt.settings.source_roots,
        hosts=rt.settings.source_hosts,
    )
    started = time.perf_counter()
    hashing = loop.run_in_executor(
        rt.hash_pool,
        _read_and_hash,
        upload.source,
        limits,
        rt.settings.max_pixels,
        stored,
        rt.decode_budget,
    )
    try:
        marked = await _pending_if_slow(upload, rt, hashing, asked)
        existing, image = await hashing
    except (ImageError, SourceError) as e:
        ASSETS_FAILED.labels(e.reason).inc()
        log.warning(
            "asset %s/%s failed (%s, message %s): %s",
            upload.portal_id,
            upload.asset_id,
            e.reason,
            delivery.message_id,
            e.detail,
        )
        if await rt.store.mark_failed(upload, e.reason, e.detail):
            await rt.publisher.publish(
                AssetFailed(
                    portal_id=upload.portal_id,
                    asset_id=upload.asset_id,
                    reason=e.reason,
                    detail=e.detail,
                )
            )
        else:
            await _refuse_deleted(rt, upload, delivery)
            return
        if isinstance(e, SourceError):
            raise  # dead-letter it: it can be re-driven once the source is there
        return
    if existing is not None and existing["state"] == DELETED:
        await _refuse_deleted(rt, upload, delivery)
        return
    if image is None:  # same bytes as stored: refresh the metadata, keep the hash
        assert existing is not None
        image = HashedImage(
            phash=existing["phash"],
            width=existing["width"],
            height=existing["height"],
            format=existing["format"],
            sha256=existing["sha256"],
            size_bytes=existing["size_bytes"],
            decoder=existing["hash_provenance"]["decoder"],
            picture=existing.get("pixels"),
        )
        saved = await rt.store.save_hashed(
            upload, image, existing["hash_provenance"], existing["hashed_at"]
        )
    else:
        HASH_SECONDS.observe(time.perf_counter() - started)
        ASSETS_HASHED.labels(image.decoder).inc()
        first = existing is None and not marked  # no document was there, none is known to be
        saved = await rt.store.save_hashed(
            upload, image, provenance(image.decoder), utcnow(), first=first
        )
    if not saved:
        await _refuse_deleted(rt, upload, delivery)
        return
    await rt.publisher.publish(
        AssetHashed(
            portal_id=upload.portal_id,
            asset_id=upload.asset_id,
            phash=image.phash,
            width=image.width,
            height=image.height,
        )
    )


async def _pending_if_slow(
    upload: AssetUploaded, rt: Runtime, hashing: asyncio.Future[Any], asked: asyncio.Future[Any]
) -> bool:
    """Record a first upload as `pending` once its hashing has run `pending_after_s`; whether
    this delivery wrote that mark.

    `dupfinder status` counts pending assets, so one stuck on a slow source shows there; one
    hashed in time never needs the mark, which saves most uploads a write.
    """
    done, _ = await asyncio.wait({hashing}, timeout=rt.settings.pending_after_s)
    if done:
        return False
    try:
        if await rt.store.upload_state(asked) is not None:
            return False  # not a first upload: its document keeps its state until the outcome
        return await rt.store.mark_pending(upload)  # False: a concurrent delivery got there first
    except BaseException:
        # The message is retried; the orphaned hash still finishes, and its outcome is dropped.
        hashing.add_done_callback(lambda f: f.cancelled() or f.exception())
        raise


asset_uploaded = _contract_actor(AssetUploaded, _asset_failed, ("portal_id", "asset_id"))(
    _hash_upload
)
#: The same work on the backfill queue, so bulk replays never delay live uploads.
backfill_asset = _contract_actor(
    AssetUploaded, _asset_failed, ("portal_id", "asset_id"), BACKFILL_ROUTE
)(_hash_upload)


async def _refuse_deleted(rt: Runtime, upload: AssetUploaded, delivery: Delivery) -> None:
    log.info(
        "ignoring upload of deleted asset %s/%s (message %s)",
        upload.portal_id,
        upload.asset_id,
        delivery.message_id,
    )
    await rt.publisher.publish(
        AssetFailed(
            portal_id=upload.portal_id,
            asset_id=upload.asset_id,
            reason="asset_deleted",
            detail="the asset was deleted; a deleted asset is never brought back by an upload",
        )
    )


@_contract_actor(AssetRemoved, _asset_failed, ("portal_id", "asset_id"))
async def asset_removed(removed: AssetRemoved, rt: Runtime, delivery: Delivery) -> None:
    """Tombstone an asset the portal deleted by its own means."""
    await rt.store.tombstone(removed.portal_id, removed.asset_id, via="asset-removed", create=True)
    # Every time, not only when the tombstone is new: a crash may have come between the two.
    await rt.store.leave_decisions(removed.portal_id, [removed.asset_id])
    await rt.publisher.publish(
        AssetRemovalStored(portal_id=removed.portal_id, asset_id=removed.asset_id)
    )
    log.info(
        "asset %s/%s removed by the portal (message %s)",
        removed.portal_id,
        removed.asset_id,
        delivery.message_id,
    )


# ----- searches ---------------------------------------------------------------------------------


def _request_failed(ids: dict[str, str], reason: str, detail: str) -> Event:
    return RequestFailed(**ids, reason=reason, detail=detail)


@_contract_actor(FindDuplicates, _request_failed, ("request_id", "portal_id"))
async def find_duplicates(request: FindDuplicates, rt: Runtime, delivery: Delivery) -> None:
    """Answer with the duplicate sets in scope, paged, in the asset bank's order; at most
    `searches_per_portal` searches of one portal at a time (the others wait their turn)."""
    slots = rt.settings.searches_per_portal
    if slots == 0:
        await _search(request, rt, delivery)
        return
    owner = uuid.uuid4().hex
    ttl_ms = rt.settings.command_lock_ttl_ms
    async with rt.store.search_slot(request.portal_id, owner, slots=slots, ttl_ms=ttl_ms) as ok:
        if ok:
            await _search(request, rt, delivery)
            return
    raise Deferred(
        f"portal {request.portal_id} has {slots} searches running",
        SEARCH_RETRY_DELAY_MS + random.randrange(SEARCH_RETRY_DELAY_MS),
    )


async def _search(request: FindDuplicates, rt: Runtime, delivery: Delivery) -> None:
    started = time.perf_counter()
    rule, max_distance = _rule(rt, request.match, request.max_distance)
    with_titles = request.sort.field == "title"
    pairs = near = None
    if rule == "verified":  # the candidate pairs come with the columns (see ColumnCache)
        candidates, pairs = await rt.columns.verified(
            request.portal_id, request.scope, with_titles=with_titles
        )
    else:
        candidates = await rt.columns.candidates(
            request.portal_id, request.scope, with_titles=with_titles, with_prints=False
        )
    order = grouping.original_order(
        candidates.pinned_at_us, candidates.pixels, candidates.uploaded_at_us, candidates.asset_ids
    )
    threads = rt.settings.search_threads
    # Searching is CPU work over arrays: off the event loop, so heartbeats and other actors run.
    loop = asyncio.get_running_loop()

    def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Awaitable[T]:
        return loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))

    recorded = await rt.store.decisions(request.portal_id)
    involved = None
    if pairs is not None:  # verified: signatures only for the candidates' assets
        involved = matching.named_assets(pairs)
    elif recorded:  # phash: the pairs first, so decisions are placed on their assets only
        near = await off_loop(grouping.near_pairs, candidates.phashes, max_distance, threads)
        involved = matching.named_assets(near[:2])
    decided = decisions.NONE
    if recorded:
        decided = await off_loop(decisions.decided, candidates.asset_ids, recorded, involved)
    apart = None if decided.distinct.count == 0 else decided
    if pairs is not None and candidates.prints is not None:
        # A pair a user keeps apart needs no signatures either (the core checks again: cheap).
        pairs = grouping.without_apart(apart, *pairs)  # type: ignore[assignment]
        named = matching.named_assets(pairs)
        ids = [candidates.asset_ids[i] for i in named.tolist()]
        stored = await rt.store.signatures(request.portal_id, ids)
        read = [stored.get(i, (None, None)) for i in ids]
        candidates = dataclasses.replace(
            candidates,
            prints=matching.with_signatures(
                candidates.prints, named, [r[0] for r in read], [r[1] for r in read]
            ),
        )
    found = await off_loop(
        grouping.find_sets,
        candidates,
        order,
        rule,
        max_distance,
        threads=threads,
        pairs=pairs,
        near=near,
        apart=apart,
    )
    found = decisions.review(
        grouping.with_reasons(candidates, found), decided, include_kept=request.include_kept
    )
    groups = pages.bank_order(candidates, found, request.sort)
    total = len(groups)
    layout, kept = await _page_layout(rt, request.portal_id, groups, candidates.asset_ids)
    for page, parts in enumerate(layout, start=1):
        ids = pages.member_ids(groups, candidates.asset_ids, parts)
        docs = kept if kept is not None else await rt.store.members(request.portal_id, ids)
        await rt.publisher.publish(
            pages.build_page(
                request_id=request.request_id,
                portal_id=request.portal_id,
                match=rule,
                max_distance=max_distance if rule == "phash" else None,
                groups=groups,
                asset_ids=candidates.asset_ids,
                docs=docs,
                total_sets=total,
                page=page,
                pages=len(layout),
                parts=parts,
            )
        )
    SEARCH_SECONDS.observe(time.perf_counter() - started)
    SEARCH_SETS.observe(total)
    log.info(
        "request %s of portal %s: %d sets (%s) from %d assets (message %s)",
        request.request_id,
        request.portal_id,
        total,
        rule,
        len(candidates.asset_ids),
        delivery.message_id,
    )


#: Member documents an answer keeps between sizing its pages and sending them; a larger answer
#: reads them again, page by page, rather than holding them all.
KEPT_MEMBER_BYTES = 32 * 1024 * 1024


async def _page_layout(
    rt: Runtime, portal_id: str, groups: list[grouping.Group], asset_ids: list[str]
) -> tuple[list[list[pages.Part]], dict[str, dict[str, Any]] | None]:
    """The answer's pages, bounded by sets and bytes, and the member documents read to size
    them when they are few enough to keep (None: read them again for each page)."""
    sizes: list[list[int]] = []
    kept: dict[str, dict[str, Any]] | None = {}
    held = 0
    step = rt.settings.page_size
    for start in range(0, len(groups), step):
        chunk = groups[start : start + step]
        docs = await rt.store.members(portal_id, pages.member_ids(chunk, asset_ids))
        chunk_sizes = [pages.member_sizes(group, asset_ids, docs) for group in chunk]
        sizes.extend(chunk_sizes)
        held += sum(map(sum, chunk_sizes))
        if kept is not None and held <= KEPT_MEMBER_BYTES:
            kept.update(docs)
        else:
            kept = None
    return pages.layout(sizes, max_sets=step), kept


def _rule(rt: Runtime, match: MatchRule | None, max_distance: int | None) -> tuple[MatchRule, int]:
    """The request's matching rule and pHash radius (`chosen_rule`, with configured defaults)."""
    return chosen_rule(
        match,
        max_distance,
        default_match=rt.settings.match,
        default_max_distance=rt.settings.max_distance,
    )


# ----- commands ---------------------------------------------------------------------------------


def _command_failed(ids: dict[str, str], reason: str, detail: str) -> Event:
    return CommandRejected(**ids, reason=reason, detail=detail)


async def _once(
    rt: Runtime,
    command: str,
    portal_id: str,
    command_id: str,
    act: Callable[[], Awaitable[Event]],
) -> None:
    """Carry a command out at most once per (portal, command id), then publish its outcome.

    A redelivered or replayed command re-publishes the recorded outcome and changes nothing.
    """
    owner = uuid.uuid4().hex
    async with rt.store.command_lock(portal_id, owner, ttl_ms=rt.settings.command_lock_ttl_ms):
        recorded = await rt.store.command_outcome(portal_id, command_id)
        if recorded is None:
            event = await act()
            recorded = await rt.store.record_command(
                portal_id, command_id, event.event_type, event.model_dump(mode="json")
            )
            COMMANDS.labels(command, event.event_type).inc()
    # Outcomes recorded under contract v1 hold the bare event type too: the key is made here.
    key = result_routing_key(portal_id, recorded["routing_key"].removeprefix(f"{portal_id}."))
    await rt.publisher.publish_raw(key, _json(recorded["body"]))


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


@_contract_actor(MakeOriginal, _command_failed, ("command_id", "portal_id"))
async def make_original(command: MakeOriginal, rt: Runtime, delivery: Delivery) -> None:
    """Pin an asset as the original of any set it belongs to."""

    async def act() -> Event:
        if not await rt.store.pin(
            # The instant is the worker's own, so the latest pin carried out wins, whatever the
            # publisher's clock said; the outcome is recorded, so a replay changes nothing.
            command.portal_id,
            command.asset_id,
            utcnow(),
            command.command_id,
        ):
            return CommandRejected(
                command_id=command.command_id,
                portal_id=command.portal_id,
                reason="asset_not_found",
                detail=f"no live asset {command.asset_id!r} in this portal",
            )
        return OriginalChanged(
            command_id=command.command_id, portal_id=command.portal_id, asset_id=command.asset_id
        )

    await _once(rt, "make_original", command.portal_id, command.command_id, act)


@_contract_actor(DeleteDuplicates, _command_failed, ("command_id", "portal_id"))
async def delete_duplicates(command: DeleteDuplicates, rt: Runtime, delivery: Delivery) -> None:
    """Delete duplicates of an original, never the original itself."""
    rule, max_distance = _rule(rt, command.match, command.max_distance)

    async def act() -> Event:
        ids = [command.original_id, *command.asset_ids]
        live, deleted = await rt.store.facts(command.portal_id, ids)
        original = live.get(command.original_id)
        missing = CommandRejected(
            command_id=command.command_id,
            portal_id=command.portal_id,
            reason="original_not_found",
            detail=f"no live asset {command.original_id!r} in this portal",
        )
        if original is None:
            return missing
        # Each asset must still match the original under the rule the sets were found with.
        pair = await rt.store.candidates(
            command.portal_id,
            Scope(asset_ids=[command.original_id, *live]),
            with_titles=False,
            with_prints=rule == "verified",
        )
        if command.original_id not in pair.asset_ids:  # the portal removed it meanwhile
            return missing
        at = pair.asset_ids.index(command.original_id)
        duplicates = {pair.asset_ids[i] for i in grouping.matches_of(pair, at, rule, max_distance)}
        apart = await rt.store.distinct_from(command.portal_id, command.original_id)
        decision = deletion.decide(original, command.asset_ids, live, deleted, duplicates, apart)
        # Merged before the tombstones, so a retry after a crash in between merges the same
        # assets again (a union, appended lines and the longest title come out the same).
        docs = await rt.store.members(command.portal_id, [command.original_id, *decision.delete])
        if command.original_id not in docs:
            return missing
        own = _metadata(docs[command.original_id])
        kept = merging.merged(
            own, [_metadata(docs[a]) for a in decision.delete if a in docs], command.merge
        )
        if kept != own:
            await rt.store.set_metadata(
                command.portal_id,
                command.original_id,
                title=kept.title,
                description=kept.description,
                tags=list(kept.tags),
            )
        done = set(decision.already_deleted)
        rejected = list(decision.rejected)
        for asset_id in decision.delete:
            if await rt.store.tombstone(
                command.portal_id,
                asset_id,
                via="delete-duplicates",
                command_id=command.command_id,
                original_id=command.original_id,
            ):
                done.add(asset_id)
            else:  # an upload marked it failed, or the portal removed it, since we read it
                now = await rt.store.get(command.portal_id, asset_id)
                if now is not None and now["state"] == DELETED:
                    done.add(asset_id)
                else:
                    rejected.append((asset_id, "not_found"))
        # A deleted asset's decisions are forgotten (those left naming one asset go too).
        await rt.store.leave_decisions(command.portal_id, sorted(done))
        log.info(
            "command %s of portal %s deleted %d, rejected %d (message %s)",
            command.command_id,
            command.portal_id,
            len(done),
            len(rejected),
            delivery.message_id,
        )
        return DuplicatesDeleted(
            command_id=command.command_id,
            portal_id=command.portal_id,
            original_id=command.original_id,
            deleted=[a for a in dict.fromkeys(command.asset_ids) if a in done],
            rejected=[Rejection(asset_id=a, reason=r) for a, r in rejected],
            original=MergedMetadata(
                asset_id=command.original_id,
                title=kept.title,
                description=kept.description,
                tags=list(kept.tags),
            ),
        )

    await _once(rt, "delete_duplicates", command.portal_id, command.command_id, act)


def _metadata(doc: dict[str, Any]) -> merging.Metadata:
    return merging.Metadata(
        title=doc.get("title", ""),
        description=doc.get("description", ""),
        tags=tuple(doc.get("tags", [])),
    )


# ----- review decisions -------------------------------------------------------------------------


async def _decide(
    rt: Runtime,
    command: MarkDistinct | KeepSet,
    name: str,
    kind: str,
    answer: type[DistinctMarked | SetKept],
    delivery: Delivery,
) -> None:
    """Record a command's decisions over the portal's live assets; ids it does not know (of
    another portal, deleted, never hashed) are left out and said so."""

    async def act() -> Event:
        sets = command.decided_sets()
        state = await rt.store.known(command.portal_id, [a for ids in sets for a in ids])
        outcomes = []
        for ids in sets:
            live = [a for a in ids if state.get(a) == HASHED]
            outcomes.append(
                Decided(
                    asset_ids=live if len(live) >= 2 else [],
                    rejected=[
                        Rejection(asset_id=a, reason="not_found")
                        for a in ids
                        if state.get(a) != HASHED
                    ],
                )
            )
        await rt.store.record_decisions(
            command.portal_id, command.command_id, kind, [o.asset_ids for o in outcomes]
        )
        log.info(
            "command %s of portal %s recorded %d %s decisions (message %s)",
            command.command_id,
            command.portal_id,
            sum(1 for o in outcomes if o.asset_ids),
            kind,
            delivery.message_id,
        )
        return answer(
            command_id=command.command_id, portal_id=command.portal_id, decisions=outcomes
        )

    await _once(rt, name, command.portal_id, command.command_id, act)


@_contract_actor(MarkDistinct, _command_failed, ("command_id", "portal_id"))
async def mark_distinct(command: MarkDistinct, rt: Runtime, delivery: Delivery) -> None:
    """A user's "Not duplicates": no two of these assets share a set again, under any rule."""
    await _decide(rt, command, "mark_distinct", decisions.DISTINCT, DistinctMarked, delivery)


@_contract_actor(KeepSet, _command_failed, ("command_id", "portal_id"))
async def keep_set(command: KeepSet, rt: Runtime, delivery: Delivery) -> None:
    """A user's "Keep all": sets within these assets leave answers until a new asset joins."""
    await _decide(rt, command, "keep_set", decisions.KEPT, SetKept, delivery)


@_contract_actor(ForgetDecisions, _command_failed, ("command_id", "portal_id"))
async def forget_decisions(command: ForgetDecisions, rt: Runtime, delivery: Delivery) -> None:
    """Remove every decision naming any of the assets: their sets are answered as found."""

    async def act() -> Event:
        ids = list(dict.fromkeys(command.asset_ids))
        state = await rt.store.known(command.portal_id, ids)
        known = [a for a in ids if a in state]
        forgotten = await rt.store.forget_decisions(command.portal_id, known)
        return DecisionsForgotten(
            command_id=command.command_id,
            portal_id=command.portal_id,
            asset_ids=known,
            forgotten=forgotten,
            rejected=[Rejection(asset_id=a, reason="not_found") for a in ids if a not in state],
        )

    await _once(rt, "forget_decisions", command.portal_id, command.command_id, act)
