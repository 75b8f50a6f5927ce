"""``exchange-node quality report``: pass rates in a period, read from the quality topic.

    exchange-node quality report --config FILE [--since WHEN] [--until WHEN]
                                 [--by dept,resource,dimension] [--threshold 0.8]
                                 [--format table|json] [--timeout S]

WHEN is read as by ``exchange-node stats``: an ISO date or date and time (no zone: UTC), ``now``,
or a time ago (``24h``, ``7d``). The period is [since, until), 7 days up to now by default;
buckets count, whole, when their start lies in it. Rows whose pass rate is under the threshold
(a fraction, default 0.8) are marked BELOW; with ``dept`` and more in ``--by``, each department
also gets an overall row (``(all)`` in the table, null in JSON).

Exit codes: 0 printed, 1 the cluster could not be read, 2 bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from node.core.quality_ledger import DEFAULT_THRESHOLD, QualityLine, QualityRow, report
from node.errors import ConfigError, TransportError
from node.kafka.stats import read_lines
from node.kafka.topics import TopicNames
from node.stats_cli import (
    EXIT_BAD_INPUT,
    EXIT_UNREADABLE,
    Query,
    check,
    iso,
    to_ms,
    warn_unreadable,
)

COMMAND = "quality report"
DIMENSIONS = {
    "dept": ("source_dept", "department"),
    "resource": ("resource", "resource"),
    "dimension": ("dimension", "dimension"),
    "node": ("node", "node"),
}
"""``--by`` name -> (the line's field, the table heading)."""
DEFAULT_BY = "dept,resource,dimension"
ALL = "(all)"
BELOW = "BELOW"


def add_parser(commands: Any) -> None:
    """Add the ``quality`` command and its ``report``."""
    quality = commands.add_parser("quality", help="data quality pass rates")
    actions = quality.add_subparsers(dest="quality_command", required=True)
    parser = actions.add_parser(
        "report",
        help="pass rates per department, resource and dimension in a period",
        description=__doc__.split("\n\n")[2].replace("``", ""),
    )
    parser.add_argument(
        "--config", type=Path, required=True, metavar="FILE", help="the node's TOML file"
    )
    parser.add_argument(
        "--since",
        default="7d",
        metavar="WHEN",
        help="start, included (default 7d): ISO date/time (no zone: UTC), or 24h, 7d ago",
    )
    parser.add_argument(
        "--until",
        default="now",
        metavar="WHEN",
        help="end, excluded (default now): ISO date/time (no zone: UTC), now, or 1h ago",
    )
    parser.add_argument(
        "--by",
        default=DEFAULT_BY,
        metavar="NAMES",
        help=f"group by some of {', '.join(DIMENSIONS)}",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        metavar="FRACTION",
        help=f"mark rows whose pass rate is under it (default {DEFAULT_THRESHOLD:g})",
    )
    parser.add_argument("--format", choices=["table", "json"], default="table")
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds to read the topic (default 30)",
    )


def _quality_topic(names: TopicNames) -> str:
    return names.quality


def check_quality(args: argparse.Namespace, now: datetime) -> Query:
    """Check the arguments as ``stats`` does, and the threshold; raise ValueError or ConfigError."""
    query = check(args, now, DIMENSIONS, _quality_topic)
    if not 0 <= args.threshold <= 1:
        raise ValueError(f"--threshold: expected a fraction from 0 to 1, got {args.threshold:g}")
    return query


def run(args: argparse.Namespace, now: datetime | None = None) -> int:
    """Read the node's quality topic and print the period's pass rates; return the exit code."""
    try:
        query = check_quality(args, now or datetime.now(UTC))
    except (ValueError, ConfigError) as error:
        print(f"exchange-node {COMMAND}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        reading = asyncio.run(
            read_lines(
                query.bootstrap,
                query.topic,
                QualityLine.from_json,
                deadline_s=args.timeout,
                client_id="exchange-node-quality",
            )
        )
    except TransportError as error:
        print(f"exchange-node {COMMAND}: {error}", file=sys.stderr)
        return EXIT_UNREADABLE
    warn_unreadable(query.topic, reading, COMMAND)
    fields = [field for field, _ in query.by.values()]
    since_ms, until_ms = to_ms(query.since), to_ms(query.until)
    rows = report(reading.lines, since_ms, until_ms, fields, args.threshold)
    if args.format == "json":
        print(render_json(rows, list(query.by), query.since, query.until, args.threshold))
    else:
        print(
            f"since {iso(query.since)} until {iso(query.until)} (buckets starting in it); "
            f"{BELOW}: pass rate under {percent(args.threshold)}"
        )
        print(render_table(rows, [heading for _, heading in query.by.values()]))
    return 0


def percent(fraction: float | None) -> str:
    """Return a fraction as a percentage with one decimal (``-`` for None)."""
    return "-" if fraction is None else f"{fraction * 100:.1f}%"


def render_table(rows: Sequence[QualityRow], headings: Sequence[str]) -> str:
    """Return aligned columns: the headings, checked, failed, pass rate and the BELOW marker."""
    cells = [[*headings, "checked", "failed", "pass rate", ""]]
    cells += [
        [
            *(ALL if value is None else value for value in row.group),
            str(row.checked),
            str(row.failed),
            percent(row.pass_rate),
            BELOW if row.below else "",
        ]
        for row in rows
    ]
    widths = [max(len(line[column]) for line in cells) for column in range(len(cells[0]))]
    numbers = range(len(headings), len(headings) + 3)
    return "\n".join(
        "  ".join(
            cell.rjust(width) if column in numbers else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in cells
    )


def render_json(
    rows: Sequence[QualityRow],
    names: Sequence[str],
    since: datetime,
    until: datetime,
    threshold: float,
) -> str:
    """Return the period, the threshold and one object per row (``--by`` names, null for all)."""
    document = {
        "since": iso(since),
        "until": iso(until),
        "by": list(names),
        "threshold": threshold,
        "rows": [
            {
                **dict(zip(names, row.group, strict=True)),
                "checked": row.checked,
                "failed": row.failed,
                "pass_rate": row.pass_rate,
                "below": row.below,
            }
            for row in rows
        ],
    }
    return json.dumps(document, ensure_ascii=False, indent=2)
