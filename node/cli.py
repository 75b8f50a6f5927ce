"""The ``exchange-node`` command line.

    exchange-node run --config FILE       run the node until SIGTERM or SIGINT
    exchange-node check-config FILE       check a configuration file; exit 0 if valid, 2 if not
    exchange-node catalog check [--catalog DIR] [--schemas DIR]
                                          check the resource catalog against the schemas
    exchange-node grants [--admin URL] ACTION ...
                                          request, list, approve, reject, revoke grants
    exchange-node stats --config FILE [--since WHEN] [--until WHEN] [--by ...] [--format ...]
                                          records and bytes exchanged in a period
    exchange-node quality report --config FILE [--since WHEN] [--by ...] [--threshold F] ...
                                          quality pass rates in a period, those below marked
    exchange-node send --config FILE --dept DEPT --resource CODE --target TARGET [FILE|-]
                                          publish records given as JSON to DEPT's outbox
    exchange-node tail --config FILE TOPIC [--from-beginning] [--format ...] [--max N]
                                          follow a topic, printing records decoded
    exchange-node topics plan|apply --config FILE [--cluster local|parent|both] [--format ...]
                                          the topics and ACLs the node needs, planned or applied
    exchange-node feedback status --config FILE REPORT_ID
                                          a correction report and its status history (JSON)
    exchange-node audit verify --config FILE [--node ID] [--timeout S] [--format text|json]
                                          check a node's audit chain, name its first problem
    exchange-node keys new --out FILE [--algorithm ed25519|sm2]
                                          write a new provenance signing key (mode 0600)

Exit codes: 0 success, 1 the node failed while running, 2 bad configuration or schemas.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from node import (
    audit_cli,
    feedback_cli,
    grants_cli,
    heap,
    keys_cli,
    quality_cli,
    send_cli,
    stats_cli,
    tail_cli,
    topics_cli,
)
from node.app import load_reference, run_node
from node.catalog_files import packaged_catalog_dir, read_catalog
from node.codec import load_schemas, packaged_schema_dir
from node.config import load_config
from node.errors import CatalogError, ConfigError, NodeError, SchemaError
from node.ops.events import NodeFailed, emit
from node.ops.logs import configure_logging

EXIT_FAILED, EXIT_CONFIG = 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the chosen command; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="exchange-node",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the node")
    run.add_argument("--config", type=Path, required=True, help="the node's TOML file")
    check = commands.add_parser("check-config", help="check a configuration file")
    check.add_argument("config", type=Path)
    catalog = commands.add_parser("catalog", help="resource catalog tools")
    catalog_commands = catalog.add_subparsers(dest="catalog_command", required=True)
    catalog_check = catalog_commands.add_parser("check", help="check the catalog")
    catalog_check.add_argument("--catalog", type=Path, default=None, help="catalog folder")
    catalog_check.add_argument("--schemas", type=Path, default=None, help="Avro schema folder")
    grants_cli.add_parser(commands)
    stats_cli.add_parser(commands)
    quality_cli.add_parser(commands)
    send_cli.add_parser(commands)
    tail_cli.add_parser(commands)
    topics_cli.add_parser(commands)
    feedback_cli.add_parser(commands)
    audit_cli.add_parser(commands)
    keys_cli.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "catalog":
        return check_catalog(args.catalog, args.schemas)
    tools = {
        "grants": grants_cli, "stats": stats_cli, "quality": quality_cli, "send": send_cli,
        "tail": tail_cli, "topics": topics_cli, "feedback": feedback_cli, "audit": audit_cli,
        "keys": keys_cli,
    }  # fmt: skip
    if args.command in tools:
        code: int = tools[args.command].run(args)
        return code

    try:
        config = load_config(args.config)
        reference = load_reference(config)
    except (ConfigError, SchemaError, CatalogError) as error:
        print(f"exchange-node: invalid configuration: {error}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        print(f"{args.config}: valid ({config.node_id}, region {config.topology.region})")
        return 0

    configure_logging(config.log.format, config.log.level)
    log = structlog.get_logger("node")
    heap.settle()

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with heap.paced():
            await run_node(config, stop, reference=reference)

    try:
        asyncio.run(serve())
    except (NodeError, ExceptionGroup) as failure:
        errors = failure.exceptions if isinstance(failure, ExceptionGroup) else (failure,)
        for cause in errors:
            emit(log, NodeFailed(str(cause), type(cause).__name__))
        refused = all(isinstance(cause, ConfigError) for cause in errors)  # e.g. a link's password
        return EXIT_CONFIG if refused else EXIT_FAILED
    return 0


def check_catalog(catalog_dir: Path | None, schema_dir: Path | None) -> int:
    """Print every catalog problem; return 0 if there is none, else 2."""
    try:
        schemas = load_schemas(schema_dir or packaged_schema_dir())
    except SchemaError as error:
        print(f"exchange-node: {error}", file=sys.stderr)
        return EXIT_CONFIG
    directory = catalog_dir or packaged_catalog_dir()
    catalog, problems = read_catalog(directory, schemas)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{directory}: {len(problems)} problem(s)", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{directory}: {len(catalog)} resources, valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
