"""``exchange-node keys``: the node's provenance signing key.

    exchange-node keys new --out FILE [--algorithm ed25519|sm2]

Writes a new private key to FILE (mode 0600; an existing file is never overwritten) and prints
its key id, algorithm and public key (base64) as JSON. Name the file in ``[provenance]
key_file``; when the node next starts with it, it publishes the new key and keeps the previous
one valid for ``rotation_grace_s``. Exit codes: 0 written, 2 not written (the message says why).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

from node.signing import write_new_key

EXIT_NOT_WRITTEN = 2


def add_parser(commands: Any) -> None:
    """Add the ``keys`` command and its subcommands."""
    keys = commands.add_parser("keys", help="make the node's provenance signing key")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    new = actions.add_parser("new", help="write a new private key (mode 0600)")
    new.add_argument("--out", type=Path, required=True, help="the key file to write")
    new.add_argument("--algorithm", choices=("ed25519", "sm2"), default="ed25519")


def run(args: argparse.Namespace) -> int:
    """Write the key; print its public part; return the exit code."""
    try:
        key = write_new_key(args.out, args.algorithm)
    except FileExistsError:
        print(f"exchange-node keys: {args.out} exists; not overwritten", file=sys.stderr)
        return EXIT_NOT_WRITTEN
    except (OSError, ValueError) as error:
        print(f"exchange-node keys: {args.out}: {error}", file=sys.stderr)
        return EXIT_NOT_WRITTEN
    public = base64.b64encode(key.public_key).decode()
    print(json.dumps({"key_id": key.key_id, "algorithm": key.algorithm, "public_key": public}))
    return 0
