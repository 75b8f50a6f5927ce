"""The HTTP gateway: departments without Kafka publish and read resource records as JSON.

Mounted on the admin server when ``[gateway] enabled = true``; described by the OpenAPI document
``/gateway/v1/openapi.json`` (``node/ops/static/gateway-openapi.json``)::

    POST /gateway/v1/resources/{code}/records   {"target", "record" | "records"} -> 201 {"ids"}
    GET  /gateway/v1/deliveries?cursor=&limit=&wait_ms=   -> 200 {"records", "cursor"}
    GET  /gateway/v1/openapi.json                         (no token needed)
    POST /gateway/v1/feedback   {"record_id", "resource", "fields", "problem"} -> 201 {"report_id"}
    POST /gateway/v1/feedback/{report_id}/reject          {"reason"} -> 201 (the source only)

Every other request carries ``Authorization: Bearer TOKEN``; the token's SHA-256 names one
configured department. A department publishes only the resources it is the source of (``compose``
checks it) and reads only its own delivery topic ``PREFIX.deliver.DEPT``.

Publishing is all or nothing per request: every record is checked against the catalog and its
schema before any is sent, and the answer names each failing record and field (422). Once sent,
201 means every record was acked by Kafka (``acks=all``); 503 means not all were acked within
``flow.delivery_timeout_s`` and some may have been written: send the same request again with the
same record ids (ids are the Kafka keys; consumers see a duplicate, never a loss).

Reading is at least once: the cursor names, per partition, the next record to read. A client
stores the cursor of each page only after it has processed the page, and resumes from the last
one stored, so after a crash it may see records again but never misses one.

Correction feedback: a department reports a problem with a record it received (the node fills
in the resource's one source from the catalog, and its own region); the report travels to the
source. The source department rejects a report with a reason at the source's node (403 anywhere
else, 404 for a report this node has not seen, 409 once it is corrected or rejected); it
corrects one by publishing the record again with a higher ``cx-version`` and ``cx-corrects``.

Errors are ``{"error": "..."}`` (422 adds ``"errors"``: ``{"record", "field", "problem"}``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from node.compose import ComposeError, compose, to_json
from node.config import GatewayClient
from node.core.avro import SchemaSet
from node.core.catalog import Catalog
from node.core.envelope import (
    CREATED_MS,
    HOPS,
    RECORD_ID,
    RESOURCE,
    SOURCE_DEPT,
    SOURCE_REGION,
    TARGET,
    header_texts,
    is_number,
)
from node.core.feedback import (
    FEEDBACK,
    MAX_TEXT,
    REPORT,
    STATUS,
    FeedbackBook,
    Report,
    Status,
    StatusChange,
    key_of,
)
from node.core.heartbeat import is_heartbeat
from node.errors import EnvelopeError, PayloadError, TransportError
from node.kafka.bridge import PROJECTION
from node.kafka.topics import TopicNames
from node.transport import Clock, Message, Record, RecordSink

OPENAPI = Path(__file__).parent / "static" / "gateway-openapi.json"
BASE = "/gateway/v1"
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_LIMIT = 1000
MAX_WAIT_MS = 20_000
MAX_CURSOR_CHARS = 4096
_RECORD_ID = re.compile(r"[\x21-\x7e]{1,64}")


class DeliveryReader(Protocol):
    """Reads a topic from caller-kept offsets (``node.kafka.deliveries.KafkaDeliveryReader``)."""

    async def read(
        self, topic: str, after: Mapping[int, int], limit: int, wait_s: float
    ) -> tuple[list[Record], dict[int, int]] | None:
        """Return records from ``after`` and the next offsets; None without the topic."""

    async def close(self) -> None:
        """Release the reader's connections."""


class _Answer(Exception):
    """Ends a request early with ``status`` and a JSON body."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **extra}


class Gateway:
    """Publishes JSON records for authenticated departments and reads their deliveries back.

    ``sink`` writes to the local cluster (a producer of the gateway's own); ``reader`` reads
    the delivery topics there. ``clock`` stamps ``created_ms``.
    """

    def __init__(
        self,
        clients: Sequence[GatewayClient],
        catalog: Catalog,
        schemas: SchemaSet,
        region: str,
        topics: TopicNames,
        sink: RecordSink,
        reader: DeliveryReader,
        *,
        deadline_s: float,
        clock: Clock = time.time,
        on_answer: Callable[[str, int, int], None] = lambda route, status, records: None,
        feedback: FeedbackBook | None = None,
    ) -> None:
        self._clients = {client.token_sha256: client for client in clients}
        self._on_answer = on_answer  # (route, status, records published or read): the metrics
        self._catalog = catalog
        self._schemas = schemas
        self._region = region
        self._topics = topics
        self._sink = sink
        self._reader = reader
        self._deadline_s = deadline_s
        self._clock = clock
        self._projections: dict[tuple[str, tuple[str, ...]], SchemaSet] = {}
        self._closing = False
        self._feedback = feedback

    def add_routes(self, app: web.Application) -> None:
        """Mount the gateway's routes on ``app``."""
        app.router.add_get(f"{BASE}/openapi.json", self._openapi)
        publish = _answering("publish", self._publish, self._on_answer)
        app.router.add_post(f"{BASE}/resources/{{code}}/records", publish)
        app.router.add_get(
            f"{BASE}/deliveries", _answering("deliveries", self._deliveries, self._on_answer)
        )
        if self._feedback is not None:
            app.router.add_post(
                f"{BASE}/feedback", _answering("feedback", self._report, self._on_answer)
            )
            reject = _answering("reject", self._reject, self._on_answer)
            app.router.add_post(f"{BASE}/feedback/{{report_id}}/reject", reject)
        app.router.add_route("*", f"{BASE}/{{rest:.*}}", _elsewhere)  # JSON, not aiohttp's text

    async def close(self) -> None:
        """Refuse new publications (503) and release the reader."""
        self._closing = True
        await self._reader.close()

    async def _openapi(self, _: web.Request) -> web.StreamResponse:
        return web.FileResponse(OPENAPI, headers={"Content-Type": "application/json"})

    def _caller(self, request: web.Request) -> GatewayClient:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Answer(401, "a bearer token is required")
        client = self._clients.get(hashlib.sha256(token.strip().encode()).hexdigest())
        if client is None:
            raise _Answer(401, "unknown token")
        return client

    async def _publish(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        code = request.match_info["code"]
        if self._catalog.get(code) is None:
            raise _Answer(404, f"unknown resource {code!r}")
        body = await _json_body(request)
        target, items = _publication(body, caller.max_batch)
        created_ms = int(self._clock() * 1000)
        messages: list[Message] = []
        problems: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            try:
                record_id, value = _record_item(item)
            except ComposeError as error:
                problems.append(_problem(error, index))
                continue
            try:
                composed = compose(
                    self._catalog, self._schemas, code, value, region=self._region,
                    department=caller.department, target=target, created_ms=created_ms,
                    record_id=record_id,
                )  # fmt: skip
            except ComposeError as error:
                if error.field == "resource":
                    raise _Answer(403, error.problem) from None
                if error.field == "target":
                    raise _invalid(error.field, error.problem) from None
                problems.append(_problem(error, index))
                continue
            headers = composed.envelope.to_headers()
            outbox = self._topics.outbox(caller.department)
            messages.append(Message(outbox, composed.key, composed.value, headers))
        if problems:
            raise _Answer(422, f"{len(problems)} record(s) are not valid; none was published",
                          errors=problems)  # fmt: skip
        ids = await self._send(messages)
        request[RECORDS] = len(ids)
        return web.json_response({"ids": ids}, status=201)

    async def _report(self, request: web.Request) -> web.Response:
        """Write a report about a record to the caller's outbox, for the resource's source."""
        caller = self._caller(request)
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise _invalid("$body", "expected a JSON object")
        unknown = sorted(set(body) - {"record_id", "resource", "fields", "problem"})
        if unknown:
            raise _invalid(unknown[0], "is not a field (record_id, resource, fields, problem)")
        record_id, code = body.get("record_id"), body.get("resource")
        if not isinstance(record_id, str) or not _RECORD_ID.fullmatch(record_id):
            raise _invalid("record_id", "expected 1-64 printable ASCII characters (no spaces)")
        if not isinstance(code, str):
            raise _invalid("resource", "expected a resource code from the catalog")
        entry = self._catalog.get(code)
        if entry is None:
            raise _Answer(404, f"unknown resource {code!r}")
        fields, items = body.get("fields"), {item.name for item in entry.items}
        names = isinstance(fields, list) and all(isinstance(f, str) for f in fields)
        if not names or not fields or not set(fields) <= items:  # names first: [[]] is unhashable
            raise _invalid("fields", f"expected a non-empty list of items of {entry.code}")
        problem = _text(body, "problem")
        report = Report(
            str(uuid.uuid4()), record_id, entry.code, entry.source_region, entry.source_dept,
            tuple(fields), problem, self._region, caller.department, int(self._clock() * 1000),
        )  # fmt: skip
        headers = [(FEEDBACK, REPORT), (HOPS, b"")]
        outbox = self._topics.outbox(caller.department)
        await self._send([Message(outbox, key_of(report), report.encode(), headers)])
        request[RECORDS] = 1
        answer = {"report_id": report.report_id, "source_region": report.source_region,
                  "source_dept": report.source_dept}  # fmt: skip
        return web.json_response(answer, status=201)

    async def _reject(self, request: web.Request) -> web.Response:
        """Write a rejection of a report, by its source department at the source's node."""
        caller = self._caller(request)
        assert self._feedback is not None
        report_id = request.match_info["report_id"]
        state = self._feedback.state(report_id)
        report = state.report if state is not None else None
        if state is None or report is None:
            raise _Answer(404, f"report {report_id!r} has not reached this node")
        if (caller.department, self._region) != (report.source_dept, report.source_region):
            raise _Answer(403, f"only {report.source_dept}@{report.source_region} may reject it")
        if state.closed:
            raise _Answer(409, f"report {report_id} is already {state.status.value}")
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise _invalid("$body", "expected a JSON object")
        unknown = sorted(set(body) - {"reason"})
        if unknown:
            raise _invalid(unknown[0], "is not a field (reason)")
        change = StatusChange(
            report_id, Status.REJECTED, _text(body, "reason"), 0, self._region, caller.department,
            int(self._clock() * 1000), report.record_id, report.resource, report.reporter_region,
            report.reporter_dept,
        )  # fmt: skip
        headers = [(FEEDBACK, STATUS), (HOPS, b"")]
        outbox = self._topics.outbox(caller.department)
        await self._send([Message(outbox, key_of(change), change.encode(), headers)])
        self._feedback.add(change)  # closed now: a second rejection is 409 before links fold it in
        request[RECORDS] = 1
        return web.json_response({"report_id": report_id, "status": "rejected"}, status=201)

    async def _send(self, messages: list[Message]) -> list[str]:
        """Produce ``messages`` within the deadline; return their ids; _Answer otherwise."""
        if self._closing:
            raise _Answer(503, "the node is stopping")
        try:
            async with asyncio.timeout(self._deadline_s):
                results = await self._sink.deliver(messages)
        except (TransportError, TimeoutError) as error:
            await self._sink.reset()  # later writes must not queue behind a failed one
            raise _Answer(
                503, f"Kafka did not acknowledge every record in time ({error}); "
                "some may be written: send again with the same ids",
            ) from None  # fmt: skip
        ids = [_id_of(message) for message in messages]
        rejected = [
            {"record": index, "field": "$", "problem": str(result)}
            for index, result in enumerate(results)
            if result is not None
        ]
        if rejected:
            published = [ids[i] for i, result in enumerate(results) if result is None]
            raise _Answer(422, "record(s) too large for the outbox topic", errors=rejected,
                          published=published)  # fmt: skip
        return ids

    async def _deliveries(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        query = request.query
        limit = _bounded_int(query, "limit", 100, 1, MAX_LIMIT)
        wait_ms = _bounded_int(query, "wait_ms", 0, 0, MAX_WAIT_MS)
        cursor = query.get("cursor")
        after = decode_cursor(cursor) if cursor else {}
        topic = self._topics.deliver(caller.department)
        try:
            page = await self._reader.read(topic, after, limit, wait_ms / 1000)
        except TransportError as error:
            raise _Answer(503, f"the delivery topic cannot be read now ({error})") from None
        if page is None:  # no such topic yet: nothing was ever delivered
            return web.json_response({"records": [], "cursor": encode_cursor(after)})
        records, positions = page
        shown = [self._delivered(r) for r in records if not is_heartbeat(r.headers)]
        request[RECORDS] = len(shown)
        return web.json_response({"records": shown, "cursor": encode_cursor(positions)})

    def _delivered(self, record: Record) -> dict[str, Any]:
        """Show a delivered record as JSON: its envelope and its decoded value."""
        try:
            texts = header_texts(record.headers)
        except EnvelopeError:
            texts = {}
        hops = texts.get(HOPS, "")
        created = texts.get(CREATED_MS, "")
        projection = texts.get(PROJECTION)
        shown: dict[str, Any] = {
            "id": texts.get(RECORD_ID, ""), "resource": texts.get(RESOURCE, ""),
            "source_region": texts.get(SOURCE_REGION, ""),
            "source_dept": texts.get(SOURCE_DEPT, ""), "target": texts.get(TARGET, ""),
            "created_ms": int(created) if is_number(created) else 0,
            "hops": hops.split(",") if hops else [],
            "projection": projection.split(",") if projection else None,
        }  # fmt: skip
        try:
            shown["value"] = to_json(self._decode(shown["resource"], projection, record.value))
        except PayloadError as error:
            shown["value"] = None
            shown["problem"] = str(error)
        return shown

    def _decode(self, resource: str, projection: str | None, value: bytes | None) -> Any:
        """Decode a value, projected to the items of ``cx-projection`` if it names any."""
        schemas = self._schemas
        if projection:
            entry = self._catalog.get(resource)
            if entry is None or entry.schema not in schemas.by_name:
                raise PayloadError(f"projected value of unknown resource {resource!r}")
            key = (entry.schema, tuple(projection.split(",")))
            projected = self._projections.get(key)
            if projected is None:
                try:
                    schema = schemas.projection(*key)
                except (ValueError, KeyError) as error:
                    raise PayloadError(f"projection {projection!r}: {error}") from None
                projected = self._projections[key] = SchemaSet({schema.name: schema})
            schemas = projected
        return schemas.decode(value or b"")[1]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_ROUTES = re.compile(
    rf"{BASE}/(openapi\.json|deliveries|resources/[^/]+/records|feedback|feedback/[^/]+/reject)"
)


async def _elsewhere(request: web.Request) -> web.Response:
    """Answer a path or method the gateway does not serve, in the API's JSON error style."""
    if _ROUTES.fullmatch(request.path):
        posts = request.path.endswith(("/records", "/feedback", "/reject"))
        allow = "POST" if posts else "GET"
        return web.json_response(
            {"error": f"{request.method} is not allowed here"}, status=405, headers={"Allow": allow}
        )
    return web.json_response({"error": f"no gateway route {request.path}"}, status=404)


RECORDS = web.RequestKey("records", int)
"""Set on a request by its handler: the records it published or read."""


def _answering(route: str, handler: Handler, on_answer: Callable[[str, int, int], None]) -> Handler:
    """Turn an early _Answer into its JSON response; tell ``on_answer`` how each request ended."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except _Answer as answer:
            headers = {"WWW-Authenticate": "Bearer"} if answer.status == 401 else None
            response = web.json_response(answer.body, status=answer.status, headers=headers)
        on_answer(route, response.status, request.get(RECORDS, 0))
        return response

    return wrapped


async def _json_body(request: web.Request) -> Any:
    """Read at most MAX_BODY_BYTES and parse them as JSON; _Answer 413 or 400 otherwise."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise _Answer(413, f"the body exceeds {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(65536):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _Answer(413, f"the body exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError):
        raise _Answer(400, "the body is not valid JSON") from None


def _invalid(field: str, problem: str) -> _Answer:
    """Return the 422 answer to a request whose ``field`` (not a record's) is wrong."""
    return _Answer(422, f"{field}: {problem}", errors=[{"field": field, "problem": problem}])


def _publication(body: Any, max_batch: int) -> tuple[str, list[Any]]:
    """Return the target and the record items of a publication body; _Answer 422 or 413."""
    if not isinstance(body, dict):
        raise _invalid("$body", "expected a JSON object")
    unknown = sorted(set(body) - {"target", "record", "records"})
    if unknown:
        raise _invalid(unknown[0], "is not a field of the request (target, record, records)")
    target = body.get("target")
    if not isinstance(target, str):
        raise _invalid("target", "expected a string such as region:410100")
    if ("record" in body) == ("records" in body):
        raise _invalid("records", "give exactly one of record, records")
    items = [body["record"]] if "record" in body else body["records"]
    if not isinstance(items, list) or not items:
        raise _invalid("records", "expected a non-empty array")
    if len(items) > max_batch:
        raise _Answer(413, f"{len(items)} records exceed this client's max_batch of {max_batch}")
    return target, items


def _text(body: dict[str, Any], name: str) -> str:
    """Return a non-empty text field of at most MAX_TEXT characters; _Answer 422 otherwise."""
    text = body.get(name)
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        raise _invalid(name, f"expected a text of 1-{MAX_TEXT} characters")
    try:
        text.encode()
    except UnicodeEncodeError:  # JSON "\ud800" parses to a lone surrogate, which UTF-8 cannot hold
        raise _invalid(name, "is not Unicode text (a lone surrogate escape)") from None
    return text


def _record_item(item: Any) -> tuple[str, Any]:
    """Return the id (given, or a new UUID) and the value of a record item; ComposeError."""
    if not isinstance(item, dict):
        raise ComposeError("$item", "expected an object with value and, optionally, id")
    unknown = sorted(set(item) - {"id", "value"})
    if unknown:
        named = unknown[0][:64] or '""'  # bounded, and never an empty field name
        raise ComposeError(named, "is not a field of a record item (id, value)")
    if "value" not in item:
        raise ComposeError("value", "is required")
    record_id = item.get("id")
    if record_id is None:
        return str(uuid.uuid4()), item["value"]
    if not isinstance(record_id, str) or not _RECORD_ID.fullmatch(record_id):
        raise ComposeError("id", "expected 1-64 printable ASCII characters (no spaces)")
    return record_id, item["value"]


def _problem(error: ComposeError, index: int | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"field": error.field, "problem": error.problem}
    if index is not None:
        found = {"record": index, **found}
    return found


def _id_of(message: Message) -> str:
    return message.key.decode() if message.key else ""


def _bounded_int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise _Answer(400, f"{name} must be an integer {low}-{high}")
    return int(text)


def encode_cursor(positions: Mapping[int, int]) -> str:
    """Return an opaque cursor for ``positions`` (partition → next offset to read)."""
    text = json.dumps({str(p): o for p, o in sorted(positions.items())}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> dict[int, int]:
    """Parse a cursor made by ``encode_cursor``; _Answer 400 if it is not one."""
    bad = _Answer(400, "the cursor is malformed: pass back a cursor this API returned")
    if len(cursor) > MAX_CURSOR_CHARS or not cursor.isascii():
        raise bad
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        raise bad from None
    if not isinstance(data, dict):
        raise bad
    positions: dict[int, int] = {}
    for key, value in data.items():
        if not (key.isascii() and key.isdigit() and len(key) <= 5):
            raise bad
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
            raise bad
        positions[int(key)] = value
    return positions
