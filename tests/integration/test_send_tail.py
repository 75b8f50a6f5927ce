"""``exchange-node send`` and ``tail`` and the Subscriber API against a real broker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from node.cli import main
from node.codec import load_schemas, packaged_schema_dir
from node.kafka.topics import TopicNames, ensure_topics
from node.subscriber import Delivered, Subscriber
from tests.integration.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

WAIT_S = 30.0
RESOURCE = "410102-PSB-00001"
SCHEMAS = load_schemas(packaged_schema_dir())


def person(number: int) -> dict[str, Any]:
    """A resident of 410102, as a department gives it in JSON."""
    return {
        "id_number": f"41010219850317{number:03d}X", "name": f"张{number}", "gender": "FEMALE",
        "birth_date": "1985-03-17", "ethnicity": "01", "household_region": "410102",
        "address": "建设路68号", "phone": None, "updated_at": "2026-03-01T08:30:15.123Z",
    }  # fmt: skip


def decoded(number: int) -> dict[str, Any]:
    """The value ``person(number)`` decodes to (the time normalised to ISO 8601 in UTC)."""
    return {**person(number), "updated_at": "2026-03-01T08:30:15.123000+00:00"}


def write_config(path: Path, bootstrap: str, prefix: str) -> Path:
    """A county node config (410102) whose local cluster is ``bootstrap``."""
    path.write_text(
        f'[node]\nid = "{prefix}-n"\nlevel = "county"\nregion = "410102"\n\n'
        f'[local]\nbootstrap = "{bootstrap}"\ntopic_prefix = "{prefix}"\n',
        encoding="utf-8",
    )
    return path


async def cli(*argv: str) -> int:
    """Run ``exchange-node`` in a thread (it runs its own event loop), bounded."""
    return await asyncio.wait_for(asyncio.to_thread(main, list(argv)), WAIT_S + 30)


def send_args(config: Path, source: Path, *extra: str) -> list[str]:
    """``send`` as PSB of 410102 to the city."""
    return [
        "send", "--config", str(config), "--dept", "PSB", "--resource", RESOURCE,
        "--target", "region:410100", *extra, str(source),
    ]  # fmt: skip


async def collect(subscriber: Subscriber, count: int, settle_s: float) -> list[Delivered]:
    """Poll until ``count`` records came, then ``settle_s`` more for any extra; bounded."""
    got: list[Delivered] = []
    async with asyncio.timeout(WAIT_S):
        while len(got) < count:
            got += await subscriber.poll(0.5)
    loop = asyncio.get_running_loop()
    end = loop.time() + settle_s
    while loop.time() < end:
        got += await subscriber.poll(0.5)
    return got


async def test_records_sent_as_json_are_tailed_back_with_their_envelopes(
    clusters: dict[str, str], prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three JSON lines are published and read back: same ids, values, envelopes, in order."""
    bootstrap = clusters["county"]
    outbox = TopicNames(prefix).outbox("PSB")  # send --dept PSB writes to PSB's own outbox
    await ensure_topics(bootstrap, [outbox], 1, 1)
    config = write_config(tmp_path / "node.toml", bootstrap, prefix)
    source = tmp_path / "people.jsonl"
    source.write_text("".join(json.dumps(person(n)) + "\n" for n in (1, 2, 3)), encoding="utf-8")

    assert await cli(*send_args(config, source)) == 0
    ids = capsys.readouterr().out.split()
    assert len(set(ids)) == 3

    tail = ["tail", "--config", str(config), "outbox.PSB", "--from-beginning", "--format", "json"]
    assert await cli(*tail, "--max", "3", "--timeout", str(WAIT_S)) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["id"] for line in lines] == ids
    assert [line["value"] for line in lines] == [decoded(n) for n in (1, 2, 3)]
    assert [line["offset"] for line in lines] == [0, 1, 2]
    for line in lines:
        envelope = line["envelope"]
        assert (line["topic"], line["refusal"], line["error"]) == (outbox, None, None)
        assert envelope["id"] == line["id"]
        assert (envelope["resource"], envelope["source_dept"], envelope["source_region"]) == (
            RESOURCE, "PSB", "410102",
        )  # fmt: skip
        assert (envelope["target"], envelope["grade"], envelope["hops"]) == ("region:410100", 2, [])

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([person(4), {**person(5), "birth_date": "1985-02-30"}, {}]))
    assert await cli(*send_args(config, bad)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[:3] == [
        "record 2: $.birth_date: expected a date YYYY-MM-DD, got '1985-02-30'",
        "record 3: $.id_number: is required (null or missing)",
        "exchange-node send: 2 problem(s); nothing was published",
    ]

    one = tmp_path / "one.json"
    one.write_text(json.dumps(person(6), indent=2))
    assert await cli(*send_args(config, one, "--format", "json")) == 0
    (sent,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (sent["topic"], sent["partition"], sent["offset"]) == (outbox, 0, 3)  # none of bad.json

    assert await cli(*tail, "--timeout", "3") == 0  # idle for 3 s after the last: it stops
    text = capsys.readouterr().out
    assert [json.loads(line)["id"] for line in text.splitlines()] == [*ids, sent["id"]]

    assert await cli("tail", "--config", str(config), outbox, "--from-beginning",
                     "--max", "1") == 0  # fmt: skip
    block = capsys.readouterr().out.splitlines()
    assert block[:6] == [
        f"record {ids[0]}  ({outbox}/0@0)",
        "  resource  410102-PSB-00001  (grade 2, unconditional)",
        "  source    PSB@410102",
        "  target    region:410100",
        "  hops      -",
        block[5],
    ]
    assert block[5].startswith("  created   20")
    assert json.loads(block[6].removeprefix("  value     ")) == decoded(1)


async def test_a_group_subscriber_resumes_after_its_commit(
    clusters: dict[str, str], prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a commit, the next member of the group gets only what was published since."""
    bootstrap = clusters["county"]
    outbox = TopicNames(prefix).outbox("PSB")
    await ensure_topics(bootstrap, [outbox], 2, 1)
    config = write_config(tmp_path / "node.toml", bootstrap, prefix)
    source = tmp_path / "people.json"
    source.write_text(json.dumps([person(n) for n in range(5)]), encoding="utf-8")
    assert await cli(*send_args(config, source)) == 0
    ids = capsys.readouterr().out.split()

    group = f"{prefix}-platform"
    async with Subscriber(
        bootstrap, outbox, group=group, schemas=SCHEMAS, from_beginning=True, timeout_s=WAIT_S
    ) as subscriber:
        first = await collect(subscriber, 5, settle_s=0)
        await subscriber.commit()
    assert sorted(d.envelope.record_id for d in first if d.envelope) == sorted(ids)
    assert sorted(str(d.value and d.value["name"]) for d in first) == [f"张{n}" for n in range(5)]
    assert all(d.error is None and d.raw is not None for d in first)

    source.write_text(json.dumps(person(9)), encoding="utf-8")
    assert await cli(*send_args(config, source)) == 0
    (later,) = capsys.readouterr().out.split()
    async with Subscriber(
        bootstrap, outbox, group=group, schemas=SCHEMAS, from_beginning=True, timeout_s=WAIT_S
    ) as subscriber:
        second = await collect(subscriber, 1, settle_s=2)
    assert [d.envelope.record_id for d in second if d.envelope] == [later]


async def test_send_and_tail_exit_1_when_the_cluster_is_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing listens at the configured address: both say so and exit 1."""
    config = write_config(tmp_path / "node.toml", f"127.0.0.1:{free_port()}", "nowhere")
    source = tmp_path / "one.json"
    source.write_text(json.dumps(person(1)), encoding="utf-8")
    assert await cli(*send_args(config, source, "--timeout", "5")) == 1
    assert "cannot reach the Kafka cluster at 127.0.0.1:" in capsys.readouterr().err
    assert await cli("tail", "--config", str(config), "refused", "--timeout", "5") == 1
    assert "cannot reach the Kafka cluster at 127.0.0.1:" in capsys.readouterr().err
