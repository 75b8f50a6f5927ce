"""``exchange-node send``: publish records given as JSON, as a department of the node's region.

    exchange-node send --config FILE --dept DEPT --resource CODE --target TARGET
                       [--format text|json] [--timeout S] [FILE|-]

The input (a file, or standard input for ``-`` or none) is a JSON object, a JSON array of
objects, or JSON lines. Every record is checked against the resource's schema first (the catalog
must name DEPT of the node's region as the resource's one source); if any is bad, each problem is
printed as ``record N: $.field: problem`` and nothing is published. Otherwise the records go to
DEPT's own topic ``PREFIX.outbox.DEPT`` on the node's local cluster with acks=all, each with a
fresh id, and their ids are printed one a line (``--format json``: one object a line with the id,
partition and offset).

Exit codes: 0 published, 1 the cluster could not be reached or did not ack in time, 2 bad
arguments, configuration or records.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from node.app import Reference, load_reference
from node.compose import Composed, ComposeError, compose
from node.config import load_config
from node.errors import CatalogError, ConfigError, SchemaError, TransportError
from node.kafka.closing import close_quietly
from node.kafka.connection import Connection, client_options
from node.kafka.topics import TopicNames

EXIT_UNREACHABLE, EXIT_BAD_INPUT = 1, 2
_NAME = "exchange-node send"


class InputError(ValueError):
    """The input is not JSON records; the message says where."""


def add_parser(commands: Any) -> None:
    """Add the ``send`` command."""
    send = commands.add_parser(
        "send",
        help="publish records given as JSON to the department's outbox",
        description=__doc__.split("\n\n")[2].replace("``", ""),
    )
    send.add_argument("--config", type=Path, required=True, metavar="FILE", help="the node's TOML")
    send.add_argument("--dept", required=True, help="the publishing department of this region")
    send.add_argument("--resource", required=True, metavar="CODE", help="catalog resource code")
    send.add_argument("--target", required=True, help="region:CODE, subtree:CODE or level:NAME")
    send.add_argument("--format", choices=["text", "json"], default="text")
    send.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="deadline to connect and have every record acked (default 30)",
    )
    send.add_argument("input", nargs="?", default="-", metavar="FILE|-", help="JSON records")


@dataclass(frozen=True, slots=True)
class Sent:
    """Where one record was written."""

    record_id: str
    partition: int
    offset: int


def run(args: argparse.Namespace) -> int:
    """Check every record, then publish them all; return the exit code."""
    if not 0 < args.timeout <= 3600:
        print(f"{_NAME}: --timeout: expected 0 < seconds <= 3600", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        config = load_config(args.config)
        reference = load_reference(config)
        local = Connection.to(config.local, "local")
    except (ConfigError, SchemaError, CatalogError) as error:
        print(f"{_NAME}: invalid configuration: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        text = read_input(args.input)
        records = parse_records(text)
    except InputError as error:
        print(f"{_NAME}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    region = config.topology.region
    composed, problems = check_records(
        records, reference, region=region, dept=args.dept, resource=args.resource,
        target=args.target, now_ms=int(time.time() * 1000),
    )  # fmt: skip
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{_NAME}: {len(problems)} problem(s); nothing was published", file=sys.stderr)
        return EXIT_BAD_INPUT
    topic = TopicNames(config.local.topic_prefix).outbox(args.dept)
    try:
        sent = asyncio.run(publish(local, topic, composed, args.timeout))
    except TransportError as error:
        print(f"{_NAME}: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    for one in sent:
        if args.format == "json":
            line = {"id": one.record_id, "topic": topic, "partition": one.partition,
                    "offset": one.offset}  # fmt: skip
            print(json.dumps(line, ensure_ascii=False))
        else:
            print(one.record_id)
    return 0


def read_input(name: str) -> str:
    """Return the text of file ``name``, or of standard input for ``-``; raise InputError."""
    try:
        if name == "-":
            return sys.stdin.read()
        return Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read {name}: {error}") from None


def parse_records(text: str) -> list[Any]:
    """Read a JSON object, a JSON array of records, or JSON lines; raise InputError.

    Records are returned as given (compose checks that each is an object of the right shape).
    """
    stripped = text.strip()
    if not stripped:
        raise InputError("no records in the input")
    try:
        whole = json.loads(stripped)
    except json.JSONDecodeError as error:
        if stripped.startswith("[") or error.msg != "Extra data":
            raise InputError(f"not JSON: {error}") from None
    else:
        if isinstance(whole, list):
            if not whole:
                raise InputError("no records in the input (an empty array)")
            return whole
        if isinstance(whole, dict):
            return [whole]
        raise InputError("expected a JSON object, an array of objects, or JSON lines")
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise InputError(f"line {number}: not JSON: {error}") from None
    return records


def check_records(
    records: Sequence[Any],
    reference: Reference,
    *,
    region: str,
    dept: str,
    resource: str,
    target: str,
    now_ms: int,
) -> tuple[list[Composed], list[str]]:
    """Compose every record; return them and every problem (``record N: $.field: problem``).

    A problem of the arguments (the resource, the department, the target) is reported once.
    """
    composed: list[Composed] = []
    problems: list[str] = []
    for number, record in enumerate(records, 1):
        try:
            one = compose(
                reference.catalog, reference.schemas, resource, record, region=region,
                department=dept, target=target, created_ms=now_ms, record_id=str(uuid.uuid4()),
            )  # fmt: skip
        except ComposeError as error:
            if not error.field.startswith("$"):
                return [], [f"{_NAME}: --{error.field}: {error.problem}"]
            problems.append(f"record {number}: {error}")
        else:
            composed.append(one)
    return composed, problems


async def publish(
    bootstrap: Connection | str, topic: str, records: Sequence[Composed], deadline_s: float
) -> list[Sent]:
    """Produce ``records`` to ``topic`` with acks=all and wait for every ack, within the deadline.

    Raises TransportError if the cluster cannot be reached, the topic does not exist, or not
    every record is acked in time (some may then have been written).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    producer = AIOKafkaProducer(
        **client_options(bootstrap),
        client_id="exchange-node-send",
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=max(1000, int(deadline_s * 1000)),
    )
    try:
        try:
            await asyncio.wait_for(producer.start(), deadline_s)
            metadata = await asyncio.wait_for(
                producer.client.fetch_all_metadata(), max(0.0, deadline - loop.time())
            )
        except (TimeoutError, KafkaError, OSError) as error:
            raise TransportError(
                f"cannot reach the Kafka cluster at {bootstrap} within {deadline_s:g} s: {error!r}"
            ) from error
        if not metadata.partitions_for_topic(topic):
            raise TransportError(f"topic {topic} does not exist on {bootstrap} (has the node run?)")
        try:
            return await asyncio.wait_for(
                _send_all(producer, topic, records), max(0.0, deadline - loop.time())
            )
        except (TimeoutError, KafkaError) as error:
            raise TransportError(
                f"{topic} on {bootstrap}: not every record was acked within {deadline_s:g} s "
                f"(some may have been published): {error!r}"
            ) from error
    finally:
        await close_quietly(producer.stop())


async def _send_all(
    producer: AIOKafkaProducer, topic: str, records: Sequence[Composed]
) -> list[Sent]:
    futures = [
        await producer.send(
            topic, record.value, key=record.key, headers=record.envelope.to_headers()
        )
        for record in records
    ]
    acked = await asyncio.gather(*futures)
    return [
        Sent(record.envelope.record_id, meta.partition, meta.offset)
        for record, meta in zip(records, acked, strict=True)
    ]
