"""``exchange-node stats``: records and bytes exchanged in a period, read from the stats topic.

    exchange-node stats --config FILE [--since WHEN] [--until WHEN]
                        [--by dept,resource,direction] [--format table|json] [--timeout S]

WHEN is an ISO date or date and time (``2026-01-01``, ``2026-01-01T08:00``, optionally with a
zone such as ``+08:00`` or ``Z``; without one it is UTC), ``now``, or a time ago (``90m``,
``24h``, ``7d``, ``2w``). The period is [since, until), 24 hours up to now by default. Buckets
are the resolution: a bucket counts, whole, when its start lies in the period.

Exit codes: 0 printed, 1 the cluster could not be read, 2 bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from node.config import load_config
from node.core.stats import StatsRow, summarize, total
from node.errors import ConfigError, TransportError
from node.kafka.connection import Connection
from node.kafka.stats import Reading, read_stats
from node.kafka.topics import TopicNames

EXIT_UNREADABLE, EXIT_BAD_INPUT = 1, 2

DIMENSIONS = {
    "dept": ("source_dept", "department"),
    "resource": ("resource", "resource"),
    "direction": ("direction", "direction"),
    "destination": ("destination", "destination"),
    "node": ("node", "node"),
}
"""``--by`` name -> (the line's field, the table heading)."""
DEFAULT_BY = "dept,resource,direction"
_AGO = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def add_parser(commands: Any) -> None:
    """Add the ``stats`` command."""
    stats = commands.add_parser(
        "stats",
        help="records and bytes exchanged in a period",
        description=__doc__.split("\n\n")[2].replace("``", ""),
    )
    stats.add_argument(
        "--config", type=Path, required=True, metavar="FILE", help="the node's TOML file"
    )
    stats.add_argument(
        "--since",
        default="24h",
        metavar="WHEN",
        help="start, included (default 24h): ISO date/time (no zone: UTC), or 24h, 7d ago",
    )
    stats.add_argument(
        "--until",
        default="now",
        metavar="WHEN",
        help="end, excluded (default now): ISO date/time (no zone: UTC), now, or 1h ago",
    )
    stats.add_argument(
        "--by",
        default=DEFAULT_BY,
        metavar="NAMES",
        help=f"group by some of {', '.join(DIMENSIONS)}",
    )
    stats.add_argument("--format", choices=["table", "json"], default="table")
    stats.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds to read the topic (default 30)",
    )


@dataclass(frozen=True, slots=True)
class Query:
    """A checked ``stats`` request."""

    since: datetime
    until: datetime
    by: dict[str, tuple[str, str]]
    bootstrap: Connection
    topic: str


def run(args: argparse.Namespace, now: datetime | None = None) -> int:
    """Read the node's stats topic and print the period's totals; return the exit code."""
    try:
        query = check(args, now or datetime.now(UTC))
    except (ValueError, ConfigError) as error:
        print(f"exchange-node stats: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        reading = asyncio.run(read_stats(query.bootstrap, query.topic, deadline_s=args.timeout))
    except TransportError as error:
        print(f"exchange-node stats: {error}", file=sys.stderr)
        return EXIT_UNREADABLE
    warn_unreadable(query.topic, reading)
    fields = [field for field, _ in query.by.values()]
    rows = summarize(reading.lines, to_ms(query.since), to_ms(query.until), fields)
    if args.format == "json":
        print(render_json(rows, list(query.by), query.since, query.until))
    else:
        print(f"since {iso(query.since)} until {iso(query.until)} (buckets starting in it)")
        print(render_table(rows, [heading for _, heading in query.by.values()]))
    return 0


def _stats_topic(names: TopicNames) -> str:
    return names.stats


def check(
    args: argparse.Namespace,
    now: datetime,
    dimensions: Mapping[str, tuple[str, str]] = DIMENSIONS,
    topic: Callable[[TopicNames], str] = _stats_topic,
) -> Query:
    """Check the arguments and read the configuration; raise ValueError or ConfigError.

    ``--by`` names come from ``dimensions``; ``topic`` picks the topic (the quality command's).
    """
    since, until = parse_when(args.since, now), parse_when(args.until, now)
    if since >= until:
        raise ValueError(f"--since {iso(since)} is not before --until {iso(until)}")
    if not 0 < args.timeout <= 3600:
        raise ValueError(f"--timeout: expected 0 < seconds <= 3600, got {args.timeout:g}")
    by = parse_by(args.by, dimensions)
    config = load_config(args.config)
    name = topic(TopicNames(config.local.topic_prefix))
    return Query(since, until, by, Connection.to(config.local, "local"), name)


def parse_when(text: str, now: datetime) -> datetime:
    """Read a WHEN (ISO date/time, naive meaning UTC; ``now``; or ``24h`` ago); ValueError."""
    text = text.strip()
    if text == "now":
        return now
    ago = _AGO.fullmatch(text)
    if ago is not None:
        try:
            return now - timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
        except OverflowError:
            raise ValueError(f"time {text!r} is too long ago") from None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"cannot read time {text!r}: expected an ISO date or date and time "
            "(2026-01-01, 2026-01-01T08:00, optionally +08:00), now, or a time ago (24h, 7d)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def parse_by(
    text: str, dimensions: Mapping[str, tuple[str, str]] = DIMENSIONS
) -> dict[str, tuple[str, str]]:
    """Read ``--by`` (comma-separated, possibly empty); return name -> (field, heading)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in dimensions:
            raise ValueError(f"--by: unknown {name!r}; expected some of {', '.join(dimensions)}")
    if len(set(names)) != len(names):
        raise ValueError("--by: a name is given twice")
    return {name: dimensions[name] for name in names}


def to_ms(when: datetime) -> int:
    """Return milliseconds since the epoch."""
    return int(when.timestamp() * 1000)


def iso(when: datetime) -> str:
    """Return an ISO date and time in UTC."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def render_table(rows: Sequence[StatsRow], headings: Sequence[str]) -> str:
    """Return aligned columns (the headings, records, bytes) and a total line."""
    records, size = total(rows)
    labels = list(headings) or [""]
    cells = [[*row.group, str(row.records), str(row.bytes)] for row in rows] if headings else []
    cells = [[*labels, "records", "bytes"], *cells]
    cells.append(["total", *[""] * (len(labels) - 1), str(records), str(size)])
    widths = [max(len(line[column]) for line in cells) for column in range(len(cells[0]))]
    text_columns = len(labels)
    return "\n".join(
        "  ".join(
            cell.ljust(width) if column < text_columns else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in cells
    )


def render_json(
    rows: Sequence[StatsRow], names: Sequence[str], since: datetime, until: datetime
) -> str:
    """Return the period, one object per row (``--by`` names, records, bytes) and the total."""
    records, size = total(rows)
    document = {
        "since": iso(since),
        "until": iso(until),
        "by": list(names),
        "rows": [
            {**dict(zip(names, row.group, strict=True)), "records": row.records, "bytes": row.bytes}
            for row in rows
        ],
        "total": {"records": records, "bytes": size},
    }
    return json.dumps(document, ensure_ascii=False, indent=2)


def warn_unreadable(topic: str, reading: Reading[Any], command: str = "stats") -> None:
    """Say on stderr how many records were skipped, and where the first one is."""
    if reading.unreadable:
        first = reading.unreadable[0]
        print(
            f"exchange-node {command}: warning: skipped {len(reading.unreadable)} unreadable "
            f"record(s) of {topic}; first at partition {first.partition} offset {first.offset}: "
            f"{first.problem}",
            file=sys.stderr,
        )
