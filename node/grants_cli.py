"""``exchange-node grants``: the grants API from the command line.

    exchange-node grants [--admin URL] [CREDENTIALS] list [--status S]
    exchange-node grants [--admin URL] [CREDENTIALS] show ID
    exchange-node grants [--admin URL] [CREDENTIALS] request RESOURCE CONSUMER_DEPT [--items a,b]
                         [--note N]
    exchange-node grants [--admin URL] [CREDENTIALS] approve ID [--days N] [--note N]
    exchange-node grants [--admin URL] [CREDENTIALS] reject|revoke ID [--note N]

Credentials (``node/ops/access.py``): a bearer token read from ``--token-file PATH`` or else from
the environment variable ``EXCHANGE_NODE_TOKEN`` (never from the command line, where every user of
the machine could read it); over HTTPS, ``--ca-file`` names the CA of the node's certificate and
``--cert-file``/``--key-file`` a client certificate. Reading grants needs the operator role,
requesting and deciding them the admin role.

Prints the JSON answer. Exit codes: 0 done, 1 the node could not be reached, 2 the node refused
(the message says why: unknown resource, consumer or grant, wrong state, wrong node, missing or
unknown credentials, a role too low), 3 a credential file could not be read.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from typing import Any

EXIT_UNREACHABLE, EXIT_REFUSED, EXIT_CREDENTIALS = 1, 2, 3
TOKEN_ENV = "EXCHANGE_NODE_TOKEN"  # noqa: S105 - the variable's name, not a token


def add_parser(commands: Any) -> None:
    """Add the ``grants`` command and its subcommands."""
    grants = commands.add_parser("grants", help="request, list, approve, reject, revoke grants")
    grants.add_argument("--admin", default="http://127.0.0.1:9100", help="the node's admin URL")
    grants.add_argument(
        "--token-file", default=None, help=f"file holding the bearer token (else ${TOKEN_ENV})"
    )
    grants.add_argument("--ca-file", default=None, help="PEM CA of the node's certificate (HTTPS)")
    grants.add_argument("--cert-file", default=None, help="PEM client certificate (HTTPS)")
    grants.add_argument("--key-file", default=None, help="PEM key of --cert-file")
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


class CredentialsUnreadable(Exception):
    """A token, CA or certificate file named on the command line could not be used."""


def bearer_token(token_file: str | None, environ: dict[str, str] | None = None) -> str | None:
    """Return the token from ``token_file`` or else ``$EXCHANGE_NODE_TOKEN``; None without either.

    Raises CredentialsUnreadable when the file cannot be read or holds no token.
    """
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as file:
                token = file.read().strip()
        except OSError as error:
            raise CredentialsUnreadable(f"cannot read --token-file {token_file}: {error}") from None
        if not token:
            raise CredentialsUnreadable(f"--token-file {token_file} is empty")
        return token
    token = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    return token or None


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not (args.ca_file or args.cert_file):
        return None
    try:
        context = ssl.create_default_context(cafile=args.ca_file)
        if args.cert_file:
            context.load_cert_chain(args.cert_file, args.key_file)
    except (OSError, ssl.SSLError) as error:
        raise CredentialsUnreadable(f"cannot use the TLS files: {error}") from None
    return context


def _hint(code: int, message: str) -> str:
    """Say what to do about refused credentials (not about a grant's state or place)."""
    if code == 401:
        return f"; give a token with --token-file PATH or ${TOKEN_ENV}, or a client certificate"
    if code == 403 and str(message).startswith("role "):  # the access check, not NOT_HERE
        return "; reading grants needs the operator role, requesting and deciding the admin role"
    return ""


def run(args: argparse.Namespace) -> int:
    """Call the node's grants API for ``args``; print the answer; return the exit code."""
    base = args.admin.rstrip("/")
    try:
        token, tls = bearer_token(args.token_file), _tls(args)
    except CredentialsUnreadable as error:
        print(f"exchange-node grants: {error}", file=sys.stderr)
        return EXIT_CREDENTIALS
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
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(  # noqa: S310 - the operator names the node's admin URL
        base + path, data=data, method="GET" if body is None else "POST", headers=headers,
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30, context=tls) as response:  # noqa: S310
            print(json.dumps(json.loads(response.read()), ensure_ascii=False, indent=2))
    except urllib.error.HTTPError as error:
        try:
            message = json.loads(error.read()).get("error", error.reason)
        except ValueError:
            message = error.reason
        hint = _hint(error.code, message)
        print(f"exchange-node grants: {message} (HTTP {error.code}){hint}", file=sys.stderr)
        return EXIT_REFUSED
    except (urllib.error.URLError, OSError) as error:
        print(f"exchange-node grants: cannot reach {base}: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return 0
