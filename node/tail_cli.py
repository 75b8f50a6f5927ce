"""``exchange-node tail``: follow a topic and print each record decoded, with its envelope.

    exchange-node tail --config FILE TOPIC [--cluster local|parent] [--from-beginning]
                       [--format text|json] [--max N] [--timeout S]

TOPIC is short (``outbox.PSB``, ``up.410102``, ``inbox``, ``refused``, ``deliver.PSB``,
``down.410102``) or full (``cascade.refused``); short names take the cluster's topic prefix from
the config. Each record is printed with its id, resource, source, target, hop path, creation
time, the refusal reason and message if it was refused, and its value decoded (``--format json``:
one object a line).
Heartbeats are skipped. Reads without a consumer group and commits nothing. Stops on Ctrl-C,
after ``--max`` records, or after ``--timeout`` seconds without a record.

Exit codes: 0 stopped, 1 the cluster could not be reached, 2 bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from contextlib import aclosing
from pathlib import Path
from typing import Any

from node.app import load_reference
from node.config import NodeConfig, load_config
from node.errors import CatalogError, ConfigError, SchemaError, TransportError
from node.kafka.connection import Connection
from node.subscriber import Delivered, Subscriber, iso_ms

EXIT_UNREACHABLE, EXIT_BAD_INPUT = 1, 2
SHORT_TOPICS = ("inbox", "refused", "grants", "stats")
SHORT_FAMILIES = ("outbox.", "up.", "deliver.", "down.")
CONNECT_TIMEOUT_S = 30.0
_NAME = "exchange-node tail"


def add_parser(commands: Any) -> None:
    """Add the ``tail`` command."""
    tail = commands.add_parser(
        "tail",
        help="follow a topic, printing records decoded",
        description=__doc__.split("\n\n")[2].replace("``", ""),
    )
    tail.add_argument("--config", type=Path, required=True, metavar="FILE", help="the node's TOML")
    tail.add_argument("topic", metavar="TOPIC", help="outbox.PSB, refused, ... or a full name")
    tail.add_argument("--cluster", choices=["local", "parent"], default="local")
    tail.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest record, not the end"
    )
    tail.add_argument("--format", choices=["text", "json"], default="text")
    tail.add_argument("--max", type=int, default=None, metavar="N", help="stop after N records")
    tail.add_argument(
        "--timeout", type=float, default=None, metavar="SECONDS",
        help="stop after this many seconds without a record",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Follow the topic until stopped; return the exit code."""
    if args.max is not None and args.max < 1:
        print(f"{_NAME}: --max: expected at least 1", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.timeout is not None and not 0 < args.timeout <= 86400:
        print(f"{_NAME}: --timeout: expected 0 < seconds <= 86400", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        config = load_config(args.config)
        reference = load_reference(config)
        bootstrap, prefix = cluster_of(config, args.cluster)
    except (ConfigError, SchemaError, CatalogError) as error:
        print(f"{_NAME}: invalid configuration: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    topic = resolve_topic(args.topic, prefix)
    subscriber = Subscriber(
        bootstrap, topic, schemas=reference.schemas, from_beginning=args.from_beginning,
        timeout_s=CONNECT_TIMEOUT_S, client_id="exchange-node-tail",
    )  # fmt: skip
    try:
        asyncio.run(follow(subscriber, args.format, args.max, args.timeout))
    except TransportError as error:
        print(f"{_NAME}: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        pass  # Ctrl-C: asyncio.run cancelled the loop, and the subscriber closed
    return 0


async def follow(
    subscriber: Subscriber, style: str, limit: int | None, idle_timeout_s: float | None
) -> int:
    """Print records as they come until ``limit`` of them or an idle ``idle_timeout_s``."""
    printed = 0
    async with subscriber, aclosing(subscriber.records(idle_timeout_s)) as records:
        async for delivered in records:
            text = render_json(delivered) if style == "json" else render_text(delivered)
            print(text, flush=True)
            printed += 1
            if limit is not None and printed >= limit:
                break
    return printed


def cluster_of(config: NodeConfig, cluster: str) -> tuple[Connection, str]:
    """Return the bootstrap and topic prefix of ``local`` or ``parent``; raise ConfigError."""
    if cluster == "local":
        return Connection.to(config.local, "local"), config.local.topic_prefix
    if config.parent is None:
        raise ConfigError("parent", "this node has no parent (it is the root): no parent cluster")
    return Connection.to(config.parent.cluster, "parent"), config.parent.cluster.topic_prefix


def resolve_topic(name: str, prefix: str) -> str:
    """Return the full topic name: short names (``refused``, ``deliver.PSB``) get ``prefix``."""
    if name.startswith(f"{prefix}."):
        return name
    if name in SHORT_TOPICS or name.startswith(SHORT_FAMILIES):
        return f"{prefix}.{name}"
    return name


def render_json(delivered: Delivered) -> str:
    """Return one JSON line describing the record."""
    return json.dumps(delivered.to_json(), ensure_ascii=False, separators=(",", ":"))


def render_text(delivered: Delivered) -> str:
    """Return a readable block: position, envelope, refusal, value (compact JSON), problems."""
    envelope = delivered.envelope
    where = f"{delivered.topic}/{delivered.partition}@{delivered.offset}"
    record_id = envelope.record_id if envelope else delivered.headers.get("cx-id", "?")
    lines = [f"record {record_id}  ({where})"]
    if envelope is not None:
        grade = f"grade {envelope.grade}, {envelope.sharing.value}"
        lines += [
            f"  resource  {envelope.resource}  ({grade})",
            f"  source    {envelope.source_dept}@{envelope.source_region}",
            f"  target    {envelope.target}",
            f"  hops      {','.join(str(hop) for hop in envelope.hops) or '-'}",
            f"  created   {iso_ms(envelope.created_ms)}",
        ]
    refusal = delivered.refusal
    if refusal is not None:
        lines.append(f"  refused   {refusal.reason}: {refusal.message} (by {refusal.refused_by})")
    if delivered.projection is not None:
        lines.append(f"  items     {','.join(delivered.projection)}")
    if delivered.value is not None:
        value = json.dumps(delivered.value, ensure_ascii=False, separators=(",", ":"))
        lines.append(f"  value     {value}")
    if delivered.error is not None:
        lines.append(f"  problem   {delivered.error}")
    return "\n".join(lines) + "\n"
