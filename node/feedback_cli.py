"""``exchange-node feedback status``: a correction report as this node knows it.

    exchange-node feedback status --config FILE REPORT_ID [--timeout S]

Reads the node's ``PREFIX.feedback`` topic to its end and prints the report and its status
history as JSON. Exit codes: 0 printed, 1 the cluster could not be read, 2 bad configuration,
3 the report never passed this node.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from node.config import load_config
from node.errors import ConfigError, TransportError
from node.kafka.connection import Connection
from node.kafka.feedback import read_feedback
from node.kafka.topics import TopicNames

EXIT_UNREADABLE, EXIT_BAD_INPUT, EXIT_UNKNOWN = 1, 2, 3


def add_parser(commands: Any) -> None:
    """Add the ``feedback`` command."""
    feedback = commands.add_parser("feedback", help="correction feedback that passed this node")
    actions = feedback.add_subparsers(dest="feedback_command", required=True)
    status = actions.add_parser("status", help="a report and its status history, as JSON")
    status.add_argument("--config", type=Path, required=True, metavar="FILE")
    status.add_argument("report_id", metavar="REPORT_ID")
    status.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS")


def run(args: argparse.Namespace) -> int:
    """Print what the node's feedback topic says of the report; return the exit code."""
    try:
        config = load_config(args.config)
        local = Connection.to(config.local, "local")
    except ConfigError as error:
        print(f"exchange-node feedback: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    topic = TopicNames(config.local.topic_prefix).feedback
    try:
        book = asyncio.run(read_feedback(local, topic, deadline_s=args.timeout))
    except TransportError as error:
        print(f"exchange-node feedback: {error}", file=sys.stderr)
        return EXIT_UNREADABLE
    state = book.state(args.report_id)
    if state is None:
        print(f"exchange-node feedback: report {args.report_id} never passed", file=sys.stderr)
        return EXIT_UNKNOWN
    print(json.dumps(state.to_json(), ensure_ascii=False, indent=2))
    return 0
