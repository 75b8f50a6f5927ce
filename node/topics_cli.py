"""``exchange-node topics``: the topics and ACLs a node needs, shown as a plan and applied.

    exchange-node topics plan  --config FILE [--cluster local|parent|both] [--format text|json]
    exchange-node topics apply --config FILE [--cluster local|parent|both] [--format text|json]

``plan`` reads each cluster and prints what is in place and what would change; ``apply`` makes
those changes (create topics, add partitions, set configs, create ACLs) and prints them. Nothing is
ever deleted or shrunk: what exists but is not planned is printed as a warning. Applying twice
changes nothing the second time. ``[topics] create`` does not apply here (it governs what the node
creates by itself at start-up). The rules are in ``node/core/provisioning.py``.

Exit codes: 0 done, 1 a cluster could not be read or changed, 2 bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.app import feedback_departments, load_reference
from node.config import NodeConfig, load_config
from node.core.provisioning import (
    Action,
    AddPartitions,
    AlterConfigs,
    ClusterPlan,
    CreateAcl,
    CreateTopic,
    Desired,
    desired_local,
    desired_parent,
    plan,
)
from node.errors import CatalogError, ConfigError, SchemaError, TransportError
from node.kafka.connection import Connection
from node.kafka.provision import ClusterAdmin, layout_of

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2
_VERBS: dict[type, tuple[str, str, str]] = {
    CreateTopic: ("+", "create", "created"),
    AddPartitions: ("~", "add", "added"),
    AlterConfigs: ("~", "alter", "altered"),
    CreateAcl: ("+", "create", "created"),
}
"""Action type -> (mark, verb planned, verb done)."""


def add_parser(commands: Any) -> None:
    """Add the ``topics`` command."""
    topics = commands.add_parser(
        "topics",
        help="plan or apply the topics and ACLs the node needs",
        description=__doc__.split("\n\n")[2].replace("``", ""),
    )
    topics.add_argument("action", choices=["plan", "apply"])
    topics.add_argument(
        "--config", type=Path, required=True, metavar="FILE", help="the node's TOML file"
    )
    topics.add_argument(
        "--cluster",
        choices=["local", "parent", "both"],
        default="both",
        help="which cluster (default both; a node without a parent has only local)",
    )
    topics.add_argument("--format", choices=["text", "json"], default="text")
    topics.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="deadline of connecting and of each request (default 30)",
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """One cluster's plan (applied or not), or why it could not be read or changed."""

    cluster: str
    bootstrap: str
    plan: ClusterPlan | None
    applied: bool
    error: str | None = None


def run(args: argparse.Namespace) -> int:
    """Plan (and apply if asked) for the chosen clusters; print the result; return the exit code."""
    if not 0 < args.timeout <= 3600:
        print("exchange-node topics: --timeout: expected 0 < seconds <= 3600", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        config = load_config(args.config)
        reporters = feedback_departments(config, load_reference(config).catalog)
        targets = choose(config, args.cluster, reporters)
    except (ValueError, ConfigError, CatalogError, SchemaError) as error:
        print(f"exchange-node topics: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    outcomes = asyncio.run(
        provision(targets, apply=args.action == "apply", deadline_s=args.timeout)
    )
    if args.format == "json":
        print(json.dumps({"clusters": [document(outcome) for outcome in outcomes]}, indent=2))
    else:
        print("\n\n".join(render(outcome) for outcome in outcomes))
    for outcome in outcomes:
        if outcome.error is not None:
            print(f"exchange-node topics: {outcome.error}", file=sys.stderr)
    return EXIT_FAILED if any(outcome.error for outcome in outcomes) else 0


def choose(
    config: NodeConfig, cluster: str, reporters: Iterable[str] = ()
) -> list[tuple[Desired, Connection]]:
    """Return each chosen cluster's desired state and connection; ValueError: no parent."""
    layout = layout_of(config, reporters)
    targets = []
    if cluster in ("local", "both"):
        targets.append((desired_local(layout), Connection.to(config.local, "local")))
    parent = desired_parent(layout)
    if cluster in ("parent", "both") and parent is not None and config.parent is not None:
        targets.append((parent, Connection.to(config.parent.cluster, "parent")))
    elif cluster == "parent":
        raise ValueError(f"--cluster parent: {config.node_id} has no [parent] (it is the root)")
    return targets


async def provision(
    targets: list[tuple[Desired, Connection]], *, apply: bool, deadline_s: float
) -> list[Outcome]:
    """Read each cluster and plan; apply the plan if asked. A failing cluster spares the others."""
    outcomes = []
    for desired, bootstrap in targets:
        try:
            async with ClusterAdmin(desired.cluster, bootstrap, deadline_s=deadline_s) as admin:
                made = plan(desired, await admin.read(desired))
                if apply and made.actions:
                    await admin.apply(made)
            outcomes.append(Outcome(desired.cluster, str(bootstrap), made, applied=apply))
        except TransportError as error:
            outcomes.append(Outcome(desired.cluster, str(bootstrap), None, apply, str(error)))
    return outcomes


def render(outcome: Outcome) -> str:
    """Return a cluster's plan, or what was done, as text for people."""
    head = f"{outcome.cluster} cluster {outcome.bootstrap}"
    made = outcome.plan
    if made is None:
        return f"{head}\n  FAILED: {outcome.error}"
    desired = made.desired
    lines = [f"{head}, topics {desired.prefix}.*, this node as {desired.principal}"]
    lines.append(f"  topics: {len(desired.topics)} wanted, {len(made.topics_in_place)} in place")
    lines += [_line(action, outcome.applied) for action in made.actions if _is_topic(action)]
    if made.acls_enforced:
        in_place = len(made.acls_in_place)
        lines.append(f"  ACLs: {len(desired.acls)} wanted, {in_place} in place")
        lines += [
            _line(action, outcome.applied) for action in made.actions if not _is_topic(action)
        ]
    else:
        lines.append("  ACLs: not enforced on this cluster (no authorizer); none planned")
    lines += [f"  ! {warning}" for warning in made.warnings]
    count = len(made.actions)
    if not count:
        lines.append("  nothing to do")
    elif outcome.applied:
        lines.append(f"  {count} change(s) made")
    else:
        lines.append(f"  {count} change(s) to make (run `topics apply`)")
    return "\n".join(lines)


def _is_topic(action: Action) -> bool:
    return not isinstance(action, CreateAcl)


def _line(action: Action, applied: bool) -> str:
    mark, planned, done = _VERBS[type(action)]
    return f"  {mark} {done if applied else planned} {action}"


def document(outcome: Outcome) -> dict[str, Any]:
    """Return a cluster's plan, or what was done, as a JSON-ready document."""
    base: dict[str, Any] = {
        "cluster": outcome.cluster, "bootstrap": outcome.bootstrap, "applied": outcome.applied,
    }  # fmt: skip
    made = outcome.plan
    if made is None:
        return {**base, "error": outcome.error}
    desired = made.desired
    return {
        **base,
        "prefix": desired.prefix,
        "principal": desired.principal,
        "topics": {
            "wanted": [spec.name for spec in desired.topics],
            "in_place": list(made.topics_in_place),
        },
        "acls": {
            "enforced": made.acls_enforced,
            "wanted": [_acl_document(acl) for acl in sorted(desired.acls)],
            "in_place": len(made.acls_in_place),
        },
        "actions": [_action_document(action) for action in made.actions],
        "warnings": list(made.warnings),
        "nothing_to_do": made.nothing_to_do,
    }


def _acl_document(acl: Any) -> dict[str, str]:
    return {
        "principal": acl.principal, "resource": str(acl.resource), "pattern": str(acl.pattern),
        "name": acl.name, "operation": str(acl.operation), "permission": str(acl.permission),
        "host": acl.host,
    }  # fmt: skip


def _action_document(action: Action) -> dict[str, Any]:
    if isinstance(action, CreateTopic):
        spec = action.topic
        return {
            "action": "create_topic", "topic": spec.name, "partitions": spec.partitions,
            "replication_factor": spec.replication_factor, "configs": dict(spec.configs),
        }  # fmt: skip
    if isinstance(action, AddPartitions):
        return {
            "action": "add_partitions", "topic": action.topic, "from": action.current,
            "to": action.total,
        }  # fmt: skip
    if isinstance(action, AlterConfigs):
        changes = [{"key": key, "from": old, "to": new} for key, old, new in action.changes]
        return {"action": "alter_configs", "topic": action.topic, "changes": changes}
    return {"action": "create_acl", **_acl_document(action.acl)}
