"""``exchange-node grants``: the grants API from the command line.

    exchange-node grants [--admin URL] list [--status S]
    exchange-node grants [--admin URL] show ID
    exchange-node grants [--admin URL] request RESOURCE CONSUMER_DEPT [--items a,b] [--note N]
    exchange-node grants [--admin URL] approve ID [--days N] [--note N]
    exchange-node grants [--admin URL] reject|revoke ID [--note N]

Prints the JSON answer. Exit codes: 0 done, 1 the node could not be reached, 2 the node refused
(the message says why: unknown resource, consumer or grant, wrong state, wrong node).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

EXIT_UNREACHABLE, EXIT_REFUSED = 1, 2


def add_parser(commands: Any) -> None:
    """Add the ``grants`` command and its subcommands."""
    grants = commands.add_parser("grants", help="request, list, approve, reject, revoke grants")
    grants.add_argument("--admin", default="http://127.0.0.1:9100", help="the node's admin URL")
    actions = grants.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every grant the node knows")
    listing.add_argument("--status", choices=["requested", "approved", "rejected", "revoked"])
    actions.add_parser("show", help="one grant").add_argument("grant_id")
    request = actions.add_parser("request", help="request a conditional resource")
    request.add_argument("resource")
    request.add_argument("consumer_dept")
    request.add_argument("--items", default="", help="comma-separated information items")
    request.add_argument("--note", default="")
    for action in ("approve", "reject", "revoke"):
        decide = actions.add_parser(action, help=f"{action} a grant (at the provider's node)")
        decide.add_argument("grant_id")
        decide.add_argument("--note", default="")
        if action == "approve":
            decide.add_argument("--days", type=int, default=None, help="validity in days")


def run(args: argparse.Namespace) -> int:
    """Call the node's grants API for ``args``; print the answer; return the exit code."""
    base = args.admin.rstrip("/")
    body: dict[str, Any] | None = None
    if args.action == "list":
        path = "/grants" + (f"?status={args.status}" if args.status else "")
    elif args.action == "show":
        path = f"/grants/{args.grant_id}"
    elif args.action == "request":
        path = "/grants"
        items = [i for i in args.items.split(",") if i]
        body = {"resource": args.resource, "consumer_dept": args.consumer_dept, "note": args.note}
        if items:
            body["items"] = items
    else:
        path = f"/grants/{args.grant_id}/{args.action}"
        body = {"note": args.note}
        if getattr(args, "days", None):
            body["validity_days"] = args.days
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - the operator names the node's admin URL
        base + path, data=data, method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            print(json.dumps(json.loads(response.read()), ensure_ascii=False, indent=2))
    except urllib.error.HTTPError as error:
        try:
            message = json.loads(error.read()).get("error", error.reason)
        except ValueError:
            message = error.reason
        print(f"exchange-node grants: {message} (HTTP {error.code})", file=sys.stderr)
        return EXIT_REFUSED
    except (urllib.error.URLError, OSError) as error:
        print(f"exchange-node grants: cannot reach {base}: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return 0
