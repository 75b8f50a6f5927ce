"""The HTTP gateway over an in-memory cluster: auth, validation, cursors, feedback, config.

The OpenAPI document is checked against the routes ``Gateway.add_routes`` mounts.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from node.catalog_files import load_catalog, packaged_catalog_dir
from node.codec import load_schemas, packaged_schema_dir
from node.compose import compose
from node.config import GatewayClient, GatewayConfig, parse_config
from node.core.envelope import Envelope, header_texts
from node.core.feedback import (
    FEEDBACK,
    MAX_TEXT,
    FeedbackBook,
    Report,
    Status,
    StatusChange,
    decode,
)
from node.core.heartbeat import HEARTBEAT
from node.errors import ConfigError
from node.kafka.topics import TopicNames
from node.ops.gateway import OPENAPI, Gateway, decode_cursor, encode_cursor
from node.transport import Record
from tests.memory_transport import MemoryCluster, MemorySink

SCHEMAS = load_schemas(packaged_schema_dir())
CATALOG = load_catalog(packaged_catalog_dir(), SCHEMAS)
REGION = "410102"
PERSON = f"{REGION}-PSB-00001"
TOPICS = TopicNames("gw")
PSB_OUTBOX, HRSS_OUTBOX = TOPICS.outbox("PSB"), TOPICS.outbox("HRSS")
"""Each gateway client writes to its department's own outbox."""
PSB_TOKEN, HRSS_TOKEN = "psb-secret-token", "hrss-secret-token"
NOW_S = 1_780_000_000.0
Client = TestClient[web.Request, web.Application]


def digest(token: str) -> str:
    """The SHA-256 a config stores for ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


def person(**changes: Any) -> dict[str, Any]:
    """A valid Person value as JSON, with ``changes`` applied (None removes a field)."""
    value: dict[str, Any] = {
        "id_number": "410102199001011234", "name": "王伟", "gender": "MALE",
        "birth_date": "1990-01-01", "ethnicity": "01", "household_region": REGION,
        "address": "人民路1号", "phone": None, "updated_at": "2026-03-01T08:00:00+00:00",
    }  # fmt: skip
    value.update(changes)
    return {k: v for k, v in value.items() if v is not None or k == "phone"}


def written(setup: Setup) -> int:
    """Records written to any department's outbox."""
    cluster = setup.cluster
    return sum(cluster.count(t) for t in list(cluster.topics) if t.startswith("gw.outbox."))


class MemoryReader:
    """Reads a MemoryCluster topic from caller-kept offsets (the gateway's DeliveryReader)."""

    def __init__(self, cluster: MemoryCluster) -> None:
        self.cluster = cluster
        self.closed = False

    async def read(
        self, topic: str, after: Mapping[int, int], limit: int, wait_s: float
    ) -> tuple[list[Record], dict[int, int]] | None:
        """Records from ``after`` (missing partitions from 0), at most ``limit``; no waiting."""
        if topic not in self.cluster.topics:
            return None
        partitions = self.cluster.topics[topic].partitions
        positions = {p: after.get(p, 0) for p in range(len(partitions))}
        records: list[Record] = []
        for p, log in enumerate(partitions):
            taken = log[positions[p] : positions[p] + limit - len(records)]
            records.extend(taken)
            if taken:
                positions[p] = taken[-1].offset + 1
        return records, positions

    async def close(self) -> None:
        """Nothing to release."""
        self.closed = True


@dataclass
class Setup:
    """A gateway's client and what it writes to and reads from."""

    client: Client
    cluster: MemoryCluster
    sink: MemorySink
    answers: list[tuple[str, int, int]]
    book: FeedbackBook


def gateway_over(
    cluster: MemoryCluster, sink: MemorySink, book: FeedbackBook,
    answers: list[tuple[str, int, int]],
) -> Gateway:  # fmt: skip
    """A gateway at REGION for PSB (max 3 records a request) and HRSS, as the node builds it."""
    clients = [
        GatewayClient("PSB", digest(PSB_TOKEN), max_batch=3),
        GatewayClient("HRSS", digest(HRSS_TOKEN)),
    ]
    return Gateway(
        clients, CATALOG, SCHEMAS, REGION, TOPICS, sink, MemoryReader(cluster),
        deadline_s=0.5, clock=lambda: NOW_S,
        on_answer=lambda route, status, records: answers.append((route, status, records)),
        feedback=book,
    )  # fmt: skip


@pytest.fixture
async def gw() -> AsyncIterator[Setup]:
    """A gateway for PSB and HRSS over an in-memory cluster, with an empty feedback book."""
    cluster = MemoryCluster()
    sink = MemorySink(cluster)
    answers: list[tuple[str, int, int]] = []
    book = FeedbackBook()
    app = web.Application()
    gateway_over(cluster, sink, book, answers).add_routes(app)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Setup(client, cluster, sink, answers, book)


def auth(token: str) -> dict[str, str]:
    """The Authorization header for ``token``."""
    return {"Authorization": f"Bearer {token}"}


async def publish(
    setup: Setup, body: Any, token: str = PSB_TOKEN, code: str = PERSON
) -> tuple[int, Any]:
    """POST a publication; return the status and the JSON body."""
    response = await setup.client.post(
        f"/gateway/v1/resources/{code}/records", json=body, headers=auth(token)
    )
    return response.status, await response.json()


async def deliveries(setup: Setup, token: str, **query: str) -> tuple[int, Any]:
    """GET deliveries; return the status and the JSON body."""
    response = await setup.client.get("/gateway/v1/deliveries", params=query, headers=auth(token))
    return response.status, await response.json()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic cHNiOnB3"},
        {"Authorization": "Bearer "},
        auth("not-a-configured-token"),
    ],
)
async def test_requests_without_a_known_bearer_token_are_refused(
    gw: Setup, headers: dict[str, str]
) -> None:
    """No token, another scheme or an unknown token: 401 with a challenge, and nothing written."""
    for response in (
        await gw.client.post(
            f"/gateway/v1/resources/{PERSON}/records",
            json={"target": "region:410100", "record": {"value": person()}}, headers=headers,
        ),
        await gw.client.get("/gateway/v1/deliveries", headers=headers),
        await gw.client.post("/gateway/v1/feedback", json=report_body(), headers=headers),
        await gw.client.post(
            "/gateway/v1/feedback/rep-1/reject", json={"reason": "it is right"}, headers=headers
        ),
    ):  # fmt: skip
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "error" in await response.json()
    assert written(gw) == 0


async def test_a_department_publishes_only_resources_it_is_the_source_of(gw: Setup) -> None:
    """HRSS may not publish PSB's resource (403); an unknown resource is 404."""
    body = {"target": "region:410100", "record": {"value": person()}}
    status, answer = await publish(gw, body, token=HRSS_TOKEN)
    assert status == 403
    assert "published only by PSB@410102" in answer["error"]
    status, answer = await publish(gw, body, code="410102-PSB-09999")
    assert status == 404
    assert "410102-PSB-09999" in answer["error"]
    status, _ = await publish(gw, body, code="410100-PSB-00001")  # PSB, but of the city
    assert status == 403
    assert written(gw) == 0


async def test_published_records_carry_their_envelope_and_decode_to_what_was_sent(
    gw: Setup,
) -> None:
    """201 with the ids; each record is on PSB's outbox keyed by its id, its envelope complete."""
    names = ["王伟", "李娜"]
    records = [{"id": "given-1", "value": person(name=names[0])}, {"value": person(name=names[1])}]
    body = {"target": "region:410100", "records": records}
    status, answer = await publish(gw, body)
    assert status == 201
    ids = answer["ids"]
    assert ids[0] == "given-1"
    assert len(ids) == 2
    assert len(ids[1]) == 36  # a UUID
    stored = sorted(
        gw.cluster.records(PSB_OUTBOX),
        key=lambda r: [i.encode() for i in ids].index(r.key or b""),
    )
    assert [r.key for r in stored] == [i.encode() for i in ids]
    for record, name in zip(stored, names, strict=True):
        envelope = Envelope.from_headers(record.headers)
        assert envelope.record_id.encode() == record.key
        assert (envelope.resource, envelope.source_dept, envelope.source_region) == (
            PERSON, "PSB", REGION)  # fmt: skip
        assert str(envelope.target) == "region:410100"
        assert envelope.created_ms == int(NOW_S * 1000)
        assert envelope.hops == ()
        assert header_texts(record.headers)["cx-hops"] == ""
        _, datum = SCHEMAS.decode(record.value or b"")
        assert datum["name"] == name
        assert datum["birth_date"].isoformat() == "1990-01-01"


async def test_every_answer_is_told_with_its_route_status_and_records(gw: Setup) -> None:
    """The metrics hear each request's route, status and records published or read."""
    body = {"target": "region:410100", "records": [{"value": person()}, {"value": person()}]}
    assert (await publish(gw, body))[0] == 201
    assert (await publish(gw, {"target": "region:410100", "records": [{"value": {}}]}))[0] == 422
    assert (await deliveries(gw, HRSS_TOKEN))[0] == 200
    assert (await publish(gw, body, "not-a-configured-token"))[0] == 401
    assert gw.answers == [
        ("publish", 201, 2),
        ("publish", 422, 0),
        ("deliveries", 200, 0),
        ("publish", 401, 0),
    ]


async def test_one_bad_record_names_its_index_and_field_and_nothing_is_published(
    gw: Setup,
) -> None:
    """All or nothing: records 1 and 2 fail, so record 0 is not published either."""
    body = {"target": "region:410100", "records": [
        {"value": person()}, {"value": person(birth_date="1990-13-45")},
        {"id": "ok-id", "value": person(gender="M", extra=1)},
    ]}  # fmt: skip
    status, answer = await publish(gw, body)
    assert status == 422
    assert answer["errors"] == [
        {"record": 1, "field": "$.birth_date",
         "problem": "expected a date YYYY-MM-DD, got '1990-13-45'"},
        {"record": 2, "field": "$.extra", "problem": "is not a field of this resource"},
    ]  # fmt: skip
    assert "none was published" in answer["error"]
    assert written(gw) == 0
    assert gw.sink.calls == 0


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"id": "", "value": person()}, "id"),
        ({"id": "has space", "value": person()}, "id"),
        ({"id": "x" * 65, "value": person()}, "id"),
        ({"id": 7, "value": person()}, "id"),
        ({"id": "fine"}, "value"),
        ({"value": person(), "target": "region:410100"}, "target"),
        ("not an object", "$item"),
        ({"value": person(gender="M")}, "$.gender"),
        ({"value": person(updated_at="yesterday")}, "$.updated_at"),
        ({"value": {k: v for k, v in person().items() if k != "name"}}, "$.name"),
        ({"value": [1, 2]}, "$"),
    ],
)
async def test_each_bad_record_item_is_named(gw: Setup, item: Any, field: str) -> None:
    """Ids must be 1-64 printable ASCII; values must fit the schema: 422 naming record 0's field."""
    status, answer = await publish(gw, {"target": "region:410100", "records": [item]})
    assert status == 422
    assert [(e["record"], e["field"]) for e in answer["errors"]] == [(0, field)]
    assert written(gw) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "$body"),
        ({"record": {"value": person()}}, "target"),
        ({"target": "region:41", "record": {"value": person()}}, "target"),
        ({"target": "galaxy:1", "record": {"value": person()}}, "target"),
        ({"target": "region:410100"}, "records"),
        ({"target": "region:410100", "records": []}, "records"),
        ({"target": "region:410100", "records": {"value": person()}}, "records"),
        (
            {
                "target": "region:410100",
                "record": {"value": person()},
                "records": [{"value": person()}],
            },
            "records",
        ),
        ({"target": "region:410100", "record": {"value": person()}, "dept": "X"}, "dept"),
    ],
)
async def test_a_bad_request_field_is_named_without_a_record_index(
    gw: Setup, body: Any, field: str
) -> None:
    """Problems of the request itself (target, records, unknown fields) are 422 naming the field."""
    status, answer = await publish(gw, body)
    assert status == 422
    assert [e["field"] for e in answer["errors"]] == [field]
    assert all("record" not in e for e in answer["errors"])


async def test_a_body_that_is_not_json_is_a_bad_request(gw: Setup) -> None:
    """400 for a body that does not parse."""
    response = await gw.client.post(
        f"/gateway/v1/resources/{PERSON}/records", data=b"{not json", headers=auth(PSB_TOKEN)
    )
    assert response.status == 400
    assert (await response.json())["error"] == "the body is not valid JSON"


async def test_more_records_than_the_clients_max_batch_is_413(gw: Setup) -> None:
    """PSB may send 3 records a request: 4 are refused whole, 3 pass."""
    records = [{"value": person()} for _ in range(4)]
    status, answer = await publish(gw, {"target": "region:410100", "records": records})
    assert status == 413
    assert "max_batch of 3" in answer["error"]
    assert written(gw) == 0
    status, _ = await publish(gw, {"target": "region:410100", "records": records[:3]})
    assert status == 201
    assert gw.cluster.count(PSB_OUTBOX) == 3


async def test_kafka_not_acking_in_time_is_503_and_the_next_request_starts_afresh(
    gw: Setup,
) -> None:
    """A stalled cluster: 503 past the deadline, the sink is reset, and later requests succeed."""
    body = {"target": "region:410100", "record": {"id": "again-1", "value": person()}}
    gw.cluster.stall()
    status, answer = await publish(gw, body)
    assert status == 503
    assert "send again with the same ids" in answer["error"]
    assert gw.sink.resets == 1
    gw.cluster.release()
    status, answer = await publish(gw, body)
    assert (status, answer) == (201, {"ids": ["again-1"]})
    assert [r.key for r in gw.cluster.records(PSB_OUTBOX)] == [b"again-1"]


def deliver(cluster: MemoryCluster, department: str, value: dict[str, Any], n: int,
            extra: list[tuple[str, bytes]] | None = None) -> None:  # fmt: skip
    """Put a Person record on ``department``'s delivery topic, as the node would."""
    envelope = Envelope.from_headers([
        ("cx-id", f"r{n}".encode()), ("cx-resource", PERSON.encode()),
        ("cx-source-region", REGION.encode()), ("cx-source-dept", b"PSB"),
        ("cx-target", f"region:{REGION}".encode()), ("cx-grade", b"2"),
        ("cx-sharing", b"unconditional"), ("cx-created-ms", b"1700000000000"),
        ("cx-hops", f"{REGION}.".encode()),
    ])  # fmt: skip
    composed = compose(
        CATALOG, SCHEMAS, PERSON, value, region=REGION, department="PSB",
        target=str(envelope.target), created_ms=envelope.created_ms, record_id=envelope.record_id,
    )  # fmt: skip
    headers = [*envelope.to_headers(), *(extra or [])]
    cluster.produce(
        TOPICS.deliver(department), envelope.record_id.encode(), composed.value, headers
    )


async def test_deliveries_page_on_with_the_cursor_and_show_only_the_callers_topic(
    gw: Setup,
) -> None:
    """HRSS reads its own records (decoded, envelope as JSON); the cursor resumes after them."""
    gw.cluster.create_topic(TOPICS.deliver("HRSS"), partitions=2)
    for n in range(3):
        deliver(gw.cluster, "HRSS", person(name=f"张{n}"), n)
    deliver(gw.cluster, "PSB", person(name="not for HRSS"), 9)
    gw.cluster.produce(TOPICS.deliver("HRSS"), None, b"{}", [(HEARTBEAT, b"1")])
    status, page = await deliveries(gw, HRSS_TOKEN)
    assert status == 200
    assert sorted(r["id"] for r in page["records"]) == ["r0", "r1", "r2"]
    first = next(r for r in page["records"] if r["id"] == "r0")
    assert first == {
        "id": "r0", "resource": PERSON, "source_region": REGION, "source_dept": "PSB",
        "target": f"region:{REGION}", "created_ms": 1_700_000_000_000, "hops": [f"{REGION}."],
        "projection": None, "value": {**person(name="张0"), "updated_at": "2026-03-01T08:00:00+00:00"},
    }  # fmt: skip
    status, again = await deliveries(gw, HRSS_TOKEN, cursor=page["cursor"])
    assert (status, again["records"]) == (200, [])
    deliver(gw.cluster, "HRSS", person(name="新"), 3)
    status, newer = await deliveries(gw, HRSS_TOKEN, cursor=page["cursor"])
    assert [r["id"] for r in newer["records"]] == ["r3"]
    assert newer["records"][0]["value"]["name"] == "新"


async def test_a_limit_pages_through_every_record_exactly_once(gw: Setup) -> None:
    """limit=2 over 5 records: pages of at most 2 that together hold each record once."""
    for n in range(5):
        deliver(gw.cluster, "HRSS", person(), n)
    seen: list[str] = []
    cursor = ""
    for _ in range(5):
        status, page = await deliveries(gw, HRSS_TOKEN, limit="2", cursor=cursor)
        assert status == 200
        assert len(page["records"]) <= 2
        seen += [r["id"] for r in page["records"]]
        cursor = page["cursor"]
    assert sorted(seen) == [f"r{n}" for n in range(5)]


async def test_a_projected_delivery_decodes_with_its_granted_items(gw: Setup) -> None:
    """A value cut down to the cx-projection items decodes to just those fields."""
    full = compose(
        CATALOG, SCHEMAS, PERSON, person(), region=REGION, department="PSB",
        target="region:410102", created_ms=0, record_id="p1",
    ).value  # fmt: skip
    projected = SCHEMAS.project(full, ("id_number", "name"))
    headers = [("cx-id", b"p1"), ("cx-resource", PERSON.encode()), ("cx-hops", b""),
               ("cx-projection", b"id_number,name")]  # fmt: skip
    gw.cluster.produce(TOPICS.deliver("HRSS"), b"p1", projected, headers)
    gw.cluster.produce(TOPICS.deliver("HRSS"), b"p2", b"garbage", [("cx-id", b"p2")])
    _, page = await deliveries(gw, HRSS_TOKEN)
    by_id = {r["id"]: r for r in page["records"]}
    assert by_id["p1"]["value"] == {"id_number": "410102199001011234", "name": "王伟"}
    assert by_id["p1"]["projection"] == ["id_number", "name"]
    assert by_id["p2"]["value"] is None
    assert "single-object" in by_id["p2"]["problem"]


async def test_a_department_without_a_delivery_topic_reads_an_empty_page(gw: Setup) -> None:
    """No topic yet: 200, no records, a cursor to come back with."""
    status, page = await deliveries(gw, PSB_TOKEN)
    assert status == 200
    assert page["records"] == []
    assert decode_cursor(page["cursor"]) == {}


@pytest.mark.parametrize(
    "query",
    [
        {"cursor": "!!!"}, {"cursor": "bm90IGpzb24"}, {"cursor": encode_cursor({}) + "A"},
        {"cursor": "WzEsMl0"},  # [1,2]
        {"cursor": "eyJhIjoxfQ"},  # {"a":1}
        {"cursor": "eyIwIjotMX0"},  # {"0":-1}
        {"cursor": "eyIwIjoxLjV9"},  # {"0":1.5}
        {"cursor": "eyIwIjp0cnVlfQ"},  # {"0":true}
        {"cursor": "A" * 5000}, {"cursor": "é"},
        {"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}, {"limit": "-1"},
        {"wait_ms": "20001"}, {"wait_ms": "1.5"}, {"limit": "\uff11"},  # a full-width digit
    ],
)  # fmt: skip
async def test_a_malformed_cursor_limit_or_wait_is_a_bad_request(
    gw: Setup, query: dict[str, str]
) -> None:
    """400 with an error naming what is wrong."""
    status, answer = await deliveries(gw, HRSS_TOKEN, **query)
    assert status == 400
    assert next(iter(query)) in answer["error"]


@given(st.dictionaries(st.integers(0, 99_999), st.integers(0, 2**63 - 1), max_size=50))
def test_a_cursor_round_trips(positions: dict[int, int]) -> None:
    """decode_cursor(encode_cursor(p)) == p, and the cursor is URL-safe."""
    cursor = encode_cursor(positions)
    assert decode_cursor(cursor) == positions
    assert all(c.isalnum() or c in "-_" for c in cursor)


def report_body(**changes: Any) -> dict[str, Any]:
    """A valid report about one of PSB's Person records, with ``changes`` (None removes a field)."""
    body: dict[str, Any] = {
        "record_id": "r1", "resource": PERSON, "fields": ["address", "phone"],
        "problem": "地址已变更",
    }  # fmt: skip
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


async def post_json(setup: Setup, path: str, body: Any, token: str) -> tuple[int, Any]:
    """POST ``body`` (JSON, or bytes as they are) to a gateway path; (status, JSON)."""
    sent: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    response = await setup.client.post(f"/gateway/v1{path}", headers=auth(token), **sent)
    return response.status, await response.json()


async def report(setup: Setup, body: Any, token: str = HRSS_TOKEN) -> tuple[int, Any]:
    """POST a feedback report; (status, JSON)."""
    return await post_json(setup, "/feedback", body, token)


async def reject(
    setup: Setup, report_id: str, body: Any, token: str = PSB_TOKEN
) -> tuple[int, Any]:
    """POST the rejection of a report; (status, JSON)."""
    return await post_json(setup, f"/feedback/{report_id}/reject", body, token)


def known_report(report_id: str = "rep-1", resource: str = PERSON) -> Report:
    """HRSS's report about a record of ``resource``, as it reaches the source's node."""
    entry = CATALOG.get(resource)
    assert entry is not None
    return Report(
        report_id, "r1", resource, entry.source_region, entry.source_dept, ("address",),
        "地址已变更", REGION, "HRSS", 1_700_000_000_000,
    )  # fmt: skip


async def test_a_report_is_written_to_the_outbox_for_the_resources_source(gw: Setup) -> None:
    """201 names the report and its source; HRSS's outbox holds it as feedback (JSON value)."""
    status, answer = await report(gw, report_body())
    assert status == 201
    report_id = answer["report_id"]
    assert answer == {"report_id": report_id, "source_region": REGION, "source_dept": "PSB"}
    assert len(report_id) == 36  # a UUID
    [stored] = gw.cluster.records(HRSS_OUTBOX)
    assert stored.key == report_id.encode()
    assert stored.headers[0] == (FEEDBACK, b"report")
    assert stored.headers == [(FEEDBACK, b"report"), ("cx-hops", b"")]
    assert json.loads(stored.value or b"") == {
        "report_id": report_id, "record_id": "r1", "resource": PERSON, "source_region": REGION,
        "source_dept": "PSB", "fields": ["address", "phone"], "problem": "地址已变更",
        "reporter_region": REGION, "reporter_dept": "HRSS", "reported_ms": int(NOW_S * 1000),
    }  # fmt: skip
    assert isinstance(decode(b"report", stored.value), Report)  # links will take it
    assert gw.answers == [("feedback", 201, 1)]


async def test_a_report_about_an_unknown_resource_is_404(gw: Setup) -> None:
    """A resource code the catalog does not have: 404 naming it, nothing written."""
    status, answer = await report(gw, report_body(resource="410102-PSB-09999"))
    assert status == 404
    assert "410102-PSB-09999" in answer["error"]
    assert written(gw) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (report_body(record_id=None), "record_id"),
        (report_body(record_id=""), "record_id"),
        (report_body(record_id="has space"), "record_id"),
        (report_body(record_id="x" * 65), "record_id"),
        (report_body(record_id=7), "record_id"),
        (report_body(resource=None), "resource"),
        (report_body(resource=["410102-PSB-00001"]), "resource"),
        (report_body(fields=None), "fields"),
        (report_body(fields="address"), "fields"),
        (report_body(fields=[]), "fields"),
        (report_body(fields=[1]), "fields"),
        (report_body(fields=[["address"]]), "fields"),
        (report_body(fields=[{"name": "address"}]), "fields"),
        (report_body(fields=["address", "nickname"]), "fields"),
        (report_body(problem=None), "problem"),
        (report_body(problem=""), "problem"),
        (report_body(problem=" \n\t"), "problem"),
        (report_body(problem="x" * (MAX_TEXT + 1)), "problem"),
        (report_body(problem=5), "problem"),
        (report_body(reporter_dept="PSB"), "reporter_dept"),
        ([report_body()], "$body"),
        ("地址已变更", "$body"),
    ],
)
async def test_each_bad_field_of_a_report_is_named(gw: Setup, body: Any, field: str) -> None:
    """422 naming the one field that is wrong, without a record index; nothing is written."""
    status, answer = await report(gw, body)
    assert status == 422, answer
    assert answer["errors"] == [{"field": field, "problem": answer["errors"][0]["problem"]}]
    assert answer["error"].startswith(f"{field}: ")
    assert written(gw) == 0


async def test_a_text_that_is_not_unicode_is_named_not_a_server_error(gw: Setup) -> None:
    """A lone surrogate escape parses as JSON but cannot be written as UTF-8: 422, not 500."""
    body = json.dumps(report_body(problem="x")).replace('"x"', '"bad \\ud800"').encode()
    status, answer = await report(gw, body)
    assert (status, answer["errors"][0]["field"]) == (422, "problem")
    gw.book.add(known_report())
    status, answer = await reject(gw, "rep-1", b'{"reason": "\\udfff"}')
    assert (status, answer["errors"][0]["field"]) == (422, "reason")
    assert written(gw) == 0


async def test_a_report_that_is_not_json_is_a_bad_request(gw: Setup) -> None:
    """400 for a body that does not parse."""
    status, answer = await report(gw, b"{not json")
    assert (status, answer) == (400, {"error": "the body is not valid JSON"})


async def test_a_report_kafka_does_not_ack_in_time_is_503(gw: Setup) -> None:
    """A stalled cluster: 503 past the deadline, and the sink is reset."""
    gw.cluster.stall()
    status, answer = await report(gw, report_body())
    assert status == 503
    assert "in time" in answer["error"]
    assert gw.sink.resets == 1


async def test_the_source_department_rejects_a_report_with_a_reason(gw: Setup) -> None:
    """201; PSB's outbox holds the rejected status for the reporter; a second rejection is 409."""
    gw.book.add(known_report())
    status, answer = await reject(gw, "rep-1", {"reason": "核实无误"})
    assert (status, answer) == (201, {"report_id": "rep-1", "status": "rejected"})
    [stored] = gw.cluster.records(PSB_OUTBOX)
    assert stored.headers == [(FEEDBACK, b"status"), ("cx-hops", b"")]
    assert stored.key == f"rep-1/rejected/{int(NOW_S * 1000)}".encode()
    assert json.loads(stored.value or b"") == {
        "report_id": "rep-1", "status": "rejected", "reason": "核实无误", "version": 0,
        "at_region": REGION, "by_dept": "PSB", "at_ms": int(NOW_S * 1000), "record_id": "r1",
        "resource": PERSON, "reporter_region": REGION, "reporter_dept": "HRSS",
    }  # fmt: skip
    status, answer = await reject(gw, "rep-1", {"reason": "again"})
    assert status == 409, answer
    assert gw.cluster.count(PSB_OUTBOX) == 1
    assert gw.answers == [("reject", 201, 1), ("reject", 409, 0)]


async def test_only_the_source_department_at_the_source_node_rejects(gw: Setup) -> None:
    """403 for another department, and for the source department of a resource of another region."""
    gw.book.add(known_report())
    gw.book.add(known_report("rep-city", "410100-PSB-00001"))  # PSB of the city is its source
    status, answer = await reject(gw, "rep-1", {"reason": "not mine"}, token=HRSS_TOKEN)
    assert status == 403
    assert "only PSB@410102" in answer["error"]
    status, answer = await reject(gw, "rep-city", {"reason": "not here"})
    assert status == 403
    assert "only PSB@410100" in answer["error"]
    assert written(gw) == 0


async def test_rejecting_an_unknown_or_closed_report_is_refused(gw: Setup) -> None:
    """404 for a report this node has not seen (or knows only by its status); 409 once closed."""
    status, answer = await reject(gw, "nope", {"reason": "x"})
    assert status == 404
    assert "'nope'" in answer["error"]
    corrected = StatusChange(
        "rep-1", Status.CORRECTED, "", 2, REGION, "PSB", 5, "r1", PERSON, REGION, "HRSS"
    )
    gw.book.add(corrected)  # the status alone: the report itself never passed here
    assert (await reject(gw, "rep-1", {"reason": "x"}))[0] == 404
    gw.book.add(known_report())
    status, answer = await reject(gw, "rep-1", {"reason": "x"})
    assert status == 409
    assert "already corrected" in answer["error"]
    assert written(gw) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "reason"),
        ({"reason": ""}, "reason"),
        ({"reason": "   "}, "reason"),
        ({"reason": None}, "reason"),
        ({"reason": 1}, "reason"),
        ({"reason": "x" * (MAX_TEXT + 1)}, "reason"),
        ({"reason": "fine", "status": "corrected"}, "status"),
        (["reason"], "$body"),
        ("reason", "$body"),
    ],
)
async def test_a_rejection_without_a_valid_reason_is_named(
    gw: Setup, body: Any, field: str
) -> None:
    """422 naming the field; nothing is written."""
    gw.book.add(known_report())
    status, answer = await reject(gw, "rep-1", body)
    assert status == 422, answer
    assert [e["field"] for e in answer["errors"]] == [field]
    assert written(gw) == 0


async def test_a_rejection_that_is_not_json_is_a_bad_request(gw: Setup) -> None:
    """400 for a body that does not parse (once the report is known and the caller its source)."""
    gw.book.add(known_report())
    status, answer = await reject(gw, "rep-1", b"reason: none")
    assert (status, answer) == (400, {"error": "the body is not valid JSON"})


def mounted_operations() -> set[tuple[str, str]]:
    """(method, path template) of every route ``Gateway.add_routes`` mounts, but the catch-all."""
    app = web.Application()
    gateway_over(MemoryCluster(), MemorySink(MemoryCluster()), FeedbackBook(), []).add_routes(app)
    operations = set()
    for route in app.router.routes():
        if route.method in {"*", "HEAD"}:  # _elsewhere's JSON 404/405; aiohttp's HEAD of each GET
            continue
        assert route.resource is not None
        operations.add((route.method, route.resource.canonical))
    return operations


async def test_the_openapi_document_describes_exactly_the_served_routes(gw: Setup) -> None:
    """The served document is the file, and its operations are exactly the routes mounted."""
    response = await gw.client.get("/gateway/v1/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document == json.loads(OPENAPI.read_text(encoding="utf-8"))
    operations = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    mounted = mounted_operations()
    assert ("POST", "/gateway/v1/feedback/{report_id}/reject") in mounted  # the check sees them
    assert operations == mounted
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_every_operation_but_the_document_needs_a_token_and_documents_its_errors() -> None:
    """Bearer security applies to every operation but openapi.json; 401 and 422s are described."""
    document = json.loads(OPENAPI.read_text(encoding="utf-8"))
    assert document["security"] == [{"bearer": []}]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path.endswith("/openapi.json"):
                assert operation["security"] == []
                continue
            assert "security" not in operation, (method, path)  # the document's bearer applies
            responses = operation["responses"]
            assert responses["401"] == {"$ref": "#/components/responses/Unauthorized"}
            if method == "post":
                assert set(responses) >= {"201", "400", "401", "413", "422", "503"}, path
                invalid = responses["422"]["content"]["application/json"]["schema"]
                assert invalid == {"$ref": "#/components/schemas/Invalid"}


@pytest.mark.parametrize(
    ("route", "statuses"),
    [
        ("/gateway/v1/feedback", {"201", "400", "401", "404", "413", "422", "503"}),
        ("/gateway/v1/feedback/{report_id}/reject",
         {"201", "400", "401", "403", "404", "409", "413", "422", "503"}),
    ],
)  # fmt: skip
def test_the_feedback_routes_document_every_answer_they_give(
    route: str, statuses: set[str]
) -> None:
    """Each status the handler can answer with is in the document, and no other."""
    operation = json.loads(OPENAPI.read_text(encoding="utf-8"))["paths"][route]["post"]
    assert set(operation["responses"]) == statuses
    assert operation["requestBody"]["required"] is True


async def test_other_paths_and_methods_answer_json(gw: Setup) -> None:
    """An unknown path is a JSON 404; a wrong method a JSON 405 naming what is allowed."""
    response = await gw.client.get("/gateway/v1/nothing", headers=auth(PSB_TOKEN))
    assert (response.status, response.content_type) == (404, "application/json")
    response = await gw.client.put(f"/gateway/v1/resources/{PERSON}/records")
    assert (response.status, response.headers["Allow"]) == (405, "POST")
    response = await gw.client.post("/gateway/v1/deliveries")
    assert (response.status, response.headers["Allow"]) == (405, "GET")


BASE_CONFIG: dict[str, Any] = {
    "node": {"id": "gw", "level": "county", "region": REGION},
    "local": {"bootstrap": "127.0.0.1:9092"},
}


def test_the_gateway_is_off_unless_enabled() -> None:
    """No [gateway] table: disabled, no clients."""
    assert parse_config(copy.deepcopy(BASE_CONFIG)).gateway == GatewayConfig()


def test_gateway_clients_are_read_with_their_hash_lower_cased() -> None:
    """Clients keep department, hash and max_batch (default 500)."""
    config = parse_config({**copy.deepcopy(BASE_CONFIG), "gateway": {"enabled": True, "clients": [
        {"department": "PSB", "token_sha256": digest("a").upper()},
        {"department": "PSB", "token_sha256": digest("b"), "max_batch": 20},
    ]}})  # fmt: skip
    assert config.gateway == GatewayConfig(True, (
        GatewayClient("PSB", digest("a"), 500), GatewayClient("PSB", digest("b"), 20),
    ))  # fmt: skip


@pytest.mark.parametrize(
    ("gateway", "path", "says"),
    [
        ({"enabled": "yes"}, "gateway.enabled", "expected bool"),
        ({"enabled": True}, "gateway.clients", "at least one client"),
        ({"clients": [{"department": "PSB", "token_sha256": "ab"}]},
         "gateway.clients[0].token_sha256", "64 hex digits"),
        ({"clients": [{"department": "PSB", "token_sha256": "g" * 64}]},
         "gateway.clients[0].token_sha256", "64 hex digits"),
        ({"clients": [{"department": "PSB", "token": "plain"}]},
         "gateway.clients[0].token_sha256", "missing"),
        ({"clients": [{"department": "PSB", "token_sha256": "a" * 64},
                      {"department": "HRSS", "token_sha256": "A" * 64}]},
         "gateway.clients[1].token_sha256", "no other client has"),
        ({"clients": [{"department": "P S B", "token_sha256": "a" * 64}]},
         "gateway.clients[0].department", "[A-Za-z0-9._-]"),
        ({"clients": [{"department": "PSB", "token_sha256": "a" * 64, "max_batch": 0}]},
         "gateway.clients[0].max_batch", "1-10000"),
        ({"clients": [{"department": "PSB", "token_sha256": "a" * 64, "tokens": 1}]},
         "gateway.clients[0].tokens", "unknown key"),
        ({"port": 1}, "gateway.port", "unknown key"),
    ],
)  # fmt: skip
def test_each_wrong_gateway_field_is_named(gateway: dict[str, Any], path: str, says: str) -> None:
    """ConfigError names the field path and what was expected."""
    with pytest.raises(ConfigError) as raised:
        parse_config({**copy.deepcopy(BASE_CONFIG), "gateway": gateway})
    assert raised.value.path == path
    assert says in raised.value.problem
