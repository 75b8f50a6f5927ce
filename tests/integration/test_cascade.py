"""Records move up and down three real clusters: province 410000, city 410100, county 410102.

A second county, 410103, runs as a logical platform on the county cluster under its own topic
prefix, so "no sibling" can be checked against a real node. Topics have one partition here, so a
marker record published after the record under test arrives after it on every path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from department_client import Published, Received, publish, publish_to_outboxes, read_topic
from sample_records import LEGAL_ENTITY, LICENCE, PERSON, sample

from node.codec import load_schemas, packaged_schema_dir
from node.kafka.topics import TopicNames, ensure_topics
from tests.integration.conftest import RunningNode, node_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SCHEMAS = load_schemas(packaged_schema_dir())
WAIT_S = 60.0
PROVINCE, CITY, COUNTY, SIBLING = "410000", "410100", "410102", "410103"


def record(schema: str, source: str, target: str, seed: int) -> Published:
    """A sample record created now."""
    return sample(SCHEMAS, schema, source, target, seed=seed, created_ms=int(time.time() * 1000))


def has_ids(*ids: str) -> Callable[[list[Received]], bool]:
    """A read_topic stop condition: every id in ``ids`` was read."""
    return lambda got: set(ids) <= {r.record_id for r in got}


async def cascade(clusters: dict[str, str], prefix: str, nodes: Any) -> dict[str, RunningNode]:
    """Start the four nodes of the test cascade."""
    sibling_prefix = f"{prefix}-b"
    return {
        PROVINCE: await nodes(
            node_config(PROVINCE, "province", clusters["province"], prefix, children=(CITY,))
        ),
        CITY: await nodes(
            node_config(
                CITY, "city", clusters["city"], prefix,
                parent=(clusters["province"], PROVINCE, prefix), children=(COUNTY, SIBLING),
            )
        ),
        COUNTY: await nodes(
            node_config(COUNTY, "county", clusters["county"], prefix,
                        parent=(clusters["city"], CITY, prefix))
        ),
        SIBLING: await nodes(
            node_config(SIBLING, "county", clusters["county"], sibling_prefix,
                        parent=(clusters["city"], CITY, prefix))
        ),
    }  # fmt: skip


async def test_county_record_reaches_the_province_unchanged(
    clusters: dict[str, str], prefix: str, nodes: Any
) -> None:
    """A county record reaches the province inbox with identical bytes and its provenance."""
    running = await cascade(clusters, prefix, nodes)
    sent = [
        record(s, COUNTY, f"region:{PROVINCE}", seed)
        for seed, s in enumerate((PERSON, LEGAL_ENTITY, LICENCE))
    ]
    await publish_to_outboxes(clusters["county"], prefix, sent)

    ids = [p.envelope.record_id for p in sent]
    got = await read_topic(
        clusters["province"], TopicNames(prefix).inbox, until=has_ids(*ids), timeout_s=WAIT_S
    )

    by_id = {r.record_id: r for r in got}
    assert set(by_id) == set(ids)
    for published in sent:
        arrived = by_id[published.envelope.record_id]
        assert arrived.value == published.value
        assert arrived.headers["cx-source-region"] == COUNTY
        assert arrived.headers["cx-source-dept"] == published.envelope.source_dept
        assert arrived.headers["cx-hops"] == f"{COUNTY}^,{CITY}^,{PROVINCE}."
    assert len(got) == len(sent)
    assert (
        await running[CITY].settled("exchange_records_out_total", 3, link="local", direction="up")
        == 3
    )


async def test_province_record_for_one_county_reaches_no_sibling(
    clusters: dict[str, str], prefix: str, nodes: Any
) -> None:
    """A record addressed to county 410102 arrives there and not at its sibling 410103."""
    await cascade(clusters, prefix, nodes)
    for_county = record(PERSON, PROVINCE, f"region:{COUNTY}", seed=11)
    marker = record(PERSON, PROVINCE, f"region:{SIBLING}", seed=12)
    await publish_to_outboxes(clusters["province"], prefix, [for_county, marker])

    county = await read_topic(
        clusters["county"], TopicNames(prefix).inbox,
        until=has_ids(for_county.envelope.record_id), timeout_s=WAIT_S,
    )  # fmt: skip
    sibling = await read_topic(
        clusters["county"], TopicNames(f"{prefix}-b").inbox,
        until=has_ids(marker.envelope.record_id), timeout_s=WAIT_S,
    )  # fmt: skip

    assert [r.record_id for r in county] == [for_county.envelope.record_id]
    assert county[0].headers["cx-hops"] == f"{PROVINCE}v,{CITY}v,{COUNTY}."
    assert [r.record_id for r in sibling] == [marker.envelope.record_id]


async def test_city_subtree_record_reaches_every_county_below(
    clusters: dict[str, str], prefix: str, nodes: Any
) -> None:
    """A record for the city's whole subtree reaches the city and both counties, once each."""
    await cascade(clusters, prefix, nodes)
    broadcast = record(LICENCE, PROVINCE, f"subtree:{CITY}", seed=21)
    record_id = broadcast.envelope.record_id
    await publish_to_outboxes(clusters["province"], prefix, [broadcast])

    for cluster, topic in (
        ("city", TopicNames(prefix).inbox),
        ("county", TopicNames(prefix).inbox),
        ("county", TopicNames(f"{prefix}-b").inbox),
    ):
        got = await read_topic(clusters[cluster], topic, until=has_ids(record_id), timeout_s=WAIT_S)
        assert [r.record_id for r in got] == [record_id], topic
        assert got[0].value == broadcast.value


async def test_restart_resumes_from_the_committed_position(
    clusters: dict[str, str], prefix: str, nodes: Any
) -> None:
    """After a restart the node forwards only new records: none lost, none copied twice."""
    config = node_config(
        COUNTY, "county", clusters["county"], prefix, parent=(clusters["city"], CITY, prefix)
    )
    outbox_up = TopicNames(prefix).up(COUNTY)
    first = [record(PERSON, COUNTY, f"region:{CITY}", seed=100 + i) for i in range(30)]
    second = [record(PERSON, COUNTY, f"region:{CITY}", seed=200 + i) for i in range(30)]

    node = await nodes(config)
    await publish_to_outboxes(clusters["county"], prefix, first)
    await read_topic(
        clusters["city"],
        outbox_up,
        until=has_ids(*(p.envelope.record_id for p in first)),
        timeout_s=WAIT_S,
    )
    await node.stop()

    await publish_to_outboxes(clusters["county"], prefix, second)
    restarted = await nodes(config)
    all_ids = [p.envelope.record_id for p in first + second]
    got = await read_topic(clusters["city"], outbox_up, until=has_ids(*all_ids), timeout_s=WAIT_S)

    assert sorted(r.record_id for r in got) == sorted(all_ids)
    assert await restarted.settled("exchange_records_in_total", len(second), link="local") == len(
        second
    )


async def test_misconfigured_cycle_terminates_with_a_cycle_refusal(
    clusters: dict[str, str], prefix: str, nodes: Any
) -> None:
    """Two nodes that name each other as parent refuse the record as ``cycle`` instead of looping.

    The city also names the county as its child, so it reads what the county hands up.
    """
    county = node_config(
        COUNTY, "county", clusters["county"], prefix, parent=(clusters["city"], CITY, prefix)
    )
    city = node_config(
        CITY, "city", clusters["city"], prefix, parent=(clusters["county"], COUNTY, prefix),
        children=(COUNTY,),
    )  # fmt: skip
    await nodes(county)
    city_node = await nodes(city)
    lost = record(PERSON, COUNTY, "region:320000", seed=31)
    await publish_to_outboxes(clusters["county"], prefix, [lost])

    refused = await read_topic(
        clusters["city"], TopicNames(prefix).refused,
        until=has_ids(lost.envelope.record_id), timeout_s=WAIT_S,
    )  # fmt: skip

    assert [r.record_id for r in refused] == [lost.envelope.record_id]
    assert refused[0].headers["cx-refusal-reason"] == "cycle"
    assert COUNTY in refused[0].headers["cx-refusal-message"]
    assert refused[0].value == lost.value
    assert (
        await city_node.settled("exchange_records_refused_total", 1, link="local", reason="cycle")
        == 1
    )
    handed_back = await read_topic(
        clusters["county"], TopicNames(prefix).up(CITY), until=lambda got: len(got) > 0,
        timeout_s=2,
    )  # fmt: skip
    assert handed_back == []


async def test_undecodable_value_goes_to_the_refusal_topic(
    clusters: dict[str, str], prefix: str, nodes: Any
) -> None:
    """A freshly published value that is not valid Avro is refused with ``bad_payload``, not lost."""
    node = await nodes(
        node_config(
            COUNTY, "county", clusters["county"], prefix, parent=(clusters["city"], CITY, prefix)
        )
    )
    good = record(PERSON, COUNTY, f"region:{COUNTY}", seed=41)
    broken = Published(
        record(PERSON, COUNTY, f"region:{COUNTY}", seed=42).envelope, good.value[:-4]
    )
    await publish_to_outboxes(clusters["county"], prefix, [broken, good])

    refused = await read_topic(
        clusters["county"], TopicNames(prefix).refused,
        until=has_ids(broken.envelope.record_id), timeout_s=WAIT_S,
    )  # fmt: skip
    delivered = await read_topic(
        clusters["county"], TopicNames(prefix).inbox,
        until=has_ids(good.envelope.record_id), timeout_s=WAIT_S,
    )  # fmt: skip

    assert [r.headers["cx-refusal-reason"] for r in refused] == ["bad_payload"]
    assert refused[0].value == broken.value
    assert refused[0].headers["cx-refused-by"] == f"{COUNTY}/local"
    assert [r.record_id for r in delivered] == [good.envelope.record_id]
    assert (
        await node.settled("exchange_records_refused_total", 1, link="local", reason="bad_payload")
        == 1
    )


async def test_a_record_the_destination_rejects_for_size_is_refused_alone(
    clusters: dict[str, str], prefix: str, nodes: Any
) -> None:
    """A record too large for the parent's topic goes to the refusal topic; its batch mates go up."""
    names = TopicNames(prefix)
    await ensure_topics(clusters["city"], [names.up(COUNTY)], 1, 1, {"max.message.bytes": "50000"})
    node = await nodes(
        node_config(
            COUNTY, "county", clusters["county"], prefix, parent=(clusters["city"], CITY, prefix)
        )
    )
    small = [record(PERSON, COUNTY, f"region:{CITY}", seed=s) for s in (61, 63)]
    base = record(PERSON, COUNTY, f"region:{CITY}", seed=62)
    _, datum = SCHEMAS.decode(base.value)
    big = Published(base.envelope, SCHEMAS.encode(PERSON, {**datum, "address": "号" * 40_000}))
    await publish_to_outboxes(clusters["county"], prefix, [small[0], big, small[1]])

    forwarded = await read_topic(
        clusters["city"],
        names.up(COUNTY),
        until=has_ids(*(p.envelope.record_id for p in small)),
        timeout_s=WAIT_S,
    )
    refused = await read_topic(
        clusters["county"], names.refused, until=has_ids(big.envelope.record_id), timeout_s=WAIT_S
    )

    assert sorted(r.record_id for r in forwarded) == sorted(p.envelope.record_id for p in small)
    assert [r.headers["cx-refusal-reason"] for r in refused] == ["undeliverable"]
    assert refused[0].value == big.value
    assert (
        await node.settled(
            "exchange_records_refused_total", 1, link="local", reason="undeliverable"
        )
        == 1
    )


@pytest.mark.parametrize("parent_partitions", [3, 2])
async def test_a_copy_keeps_its_partition_when_the_partition_counts_match(
    clusters: dict[str, str], prefix: str, nodes: Any, parent_partitions: int
) -> None:
    """Same count: a copy keeps its source partition (even one its key would not pick).

    Different count: the key partitioner picks, as Kafka's default does.
    """
    names = TopicNames(prefix)
    outbox = names.outbox(record(PERSON, COUNTY, f"region:{CITY}", 70).envelope.source_dept)
    await ensure_topics(clusters["county"], [outbox], 3, 1)
    await ensure_topics(clusters["city"], [names.up(COUNTY)], parent_partitions, 1)
    await nodes(
        node_config(
            COUNTY, "county", clusters["county"], prefix, parent=(clusters["city"], CITY, prefix),
            topics={"partitions": 3},
        )
    )  # fmt: skip
    by_key = DefaultPartitioner()
    sent = []
    for seed in range(70, 79):
        base = record(PERSON, COUNTY, f"region:{CITY}", seed)
        key = base.envelope.record_id.encode()
        not_the_key_s = (by_key(key, [0, 1, 2], [0, 1, 2]) + 1) % 3
        sent.append(Published(base.envelope, base.value, key, partition=not_the_key_s))
    await publish(clusters["county"], outbox, sent)

    got = await read_topic(
        clusters["city"], names.up(COUNTY),
        until=has_ids(*(p.envelope.record_id for p in sent)), timeout_s=WAIT_S,
    )  # fmt: skip

    every = list(range(parent_partitions))
    expected = {
        p.envelope.record_id: p.partition if parent_partitions == 3 else by_key(p.key, every, every)
        for p in sent
    }
    assert {r.record_id: r.partition for r in got} == expected
