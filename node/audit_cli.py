"""``exchange-node audit verify``: check a node's audit chain and name its first problem.

    exchange-node audit verify --config FILE [--node ID] [--timeout S] [--format text|json]

Reads the whole chain of node ID (the configured node by default) from ``PREFIX.audit.ID`` on
the local cluster and walks it: every entry in turn, its hash, its seq, its link to the entry
before. Prints "chain of N entries intact" or the first problem with its seq and offset.

Exit codes: 0 intact, 1 the cluster or topic could not be read, 2 bad arguments or
configuration, 3 the chain is broken (an entry removed, altered or reordered).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from node.config import load_config
from node.core.audit import verify
from node.errors import ConfigError, TransportError
from node.kafka.audit import read_chain
from node.kafka.connection import Connection
from node.kafka.topics import TopicNames

EXIT_UNREADABLE, EXIT_BAD_INPUT, EXIT_BROKEN = 1, 2, 3


def add_parser(commands: Any) -> None:
    """Add the ``audit`` command and its ``verify`` action."""
    audit = commands.add_parser("audit", help="the tamper-evident audit trail")
    actions = audit.add_subparsers(dest="audit_command", required=True)
    check = actions.add_parser(
        "verify",
        help="check a node's audit chain; name the first removed, altered or reordered entry",
        description=__doc__.split("\n\n")[2],
    )
    check.add_argument(
        "--config", type=Path, required=True, metavar="FILE", help="the node's TOML file"
    )
    check.add_argument("--node", metavar="ID", help="whose chain (default: the configured node)")
    check.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="seconds to read the chain (default 60)",
    )
    check.add_argument("--format", choices=["text", "json"], default="text")


def run(args: argparse.Namespace) -> int:
    """Read and verify the chain, print the verdict; return the exit code."""
    if not 0 < args.timeout <= 3600:
        print(f"exchange-node audit: --timeout: expected 0 < seconds <= 3600, got {args.timeout:g}",
              file=sys.stderr)  # fmt: skip
        return EXIT_BAD_INPUT
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"exchange-node audit: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    node_id = args.node or config.node_id
    topic = TopicNames(config.local.topic_prefix).audit(node_id)
    local = Connection.to(config.local, "local")
    try:
        lines = asyncio.run(read_chain(local, topic, deadline_s=args.timeout))
    except TransportError as error:
        print(f"exchange-node audit: {error}", file=sys.stderr)
        return EXIT_UNREADABLE
    verdict = verify(lines)
    if args.format == "json":
        print(json.dumps({"node": node_id, "topic": topic, **verdict.to_json()}))
    else:
        print(f"{topic}: {verdict.describe()}")
    return 0 if verdict.intact else EXIT_BROKEN
