"""Provenance CPU per record: signing at the entry node, checking at a pass-through node.

What is timed is what a link adds to a batch's decision (``node.core.provenance.vouch``):

- ``sign``: at the entry node, the leaf of every fresh record (signed envelope fields + digest of
  its 1 KB value), the Merkle tree, one signature, one ``cx-prov`` header per record, the
  annotation of each outcome;
- ``verify, cached``: at a pass-through node whose cache already holds the batch's root (the
  usual case after the first record of a batch): header parse, trust look-up, leaf, proof fold;
- ``verify, cold``: the same with an empty cache: one signature verification per batch.

Batch sizes 1, 100, 500, 2000; thread CPU time (``time.thread_time``) over several batches,
rounds interleaved, median with min and max. Ed25519, and SM2 (pure-Python gmssl) if installed.
Also: the raw cost of one sign and one verify call, and the header bytes per record.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from common import table, write
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.core.envelope import HOPS, Envelope, Sharing, Target, TargetKind
from node.core.outcome import Copy, Delivered, Direction, Outcome
from node.core.provenance import PROVENANCE, Checker, Provenance, Stamper, vouch
from node.core.trust import TrustedKey, TrustStore
from node.signing import Ed25519Signer, KeyPair, Sm2Signer, sm2_available, verifiers

SIZES = (1, 100, 500, 2000)
NOW = 1_700_000_000_000
REGION = "410102"


class Seen(NamedTuple):
    """A record as the decision sees it."""

    headers: list[tuple[str, bytes]]
    value: bytes | None


def fresh(count: int, offset: int) -> list[Seen]:
    """``count`` distinct fresh records with 1 KB values."""
    made = []
    for index in range(offset, offset + count):
        envelope = Envelope(
            f"{index:08d}-4a7b-4c1e-9f00-{index:012d}", f"R{index % 7}", REGION, f"D{index % 5}",
            Target(TargetKind.REGION, "410000"), 1 + index % 3, Sharing.UNCONDITIONAL,
            NOW - index,
        )  # fmt: skip
        made.append(Seen(envelope.to_headers(), os.urandom(1024)))
    return made


DELIVERED = Delivered((Copy(Direction.UP, "410100", b"410102^"),))


def signed(records: list[Seen], stamper: Stamper) -> list[Seen]:
    """The records as the next node reads them: stamped, hop path set."""
    outcomes: list[Outcome] = [DELIVERED] * len(records)
    keys: list[tuple[bytes | None, bytes | None]] = [(None, b"")] * len(records)
    vouch(Provenance(stamper, None), records, keys, outcomes, now_ms=NOW, entry=True)
    out = []
    for record, outcome in zip(records, outcomes, strict=True):
        assert isinstance(outcome, Delivered)
        headers = [h for h in record.headers if h[0] != HOPS]
        headers += [*outcome.annotations, (HOPS, b"410102^")]
        out.append(Seen(headers, record.value))
    return out


def cpu_us_per_record(step: Callable[[], None], records: int, repeat: int) -> float:
    """Thread CPU µs per record of ``repeat`` calls of ``step`` (each over ``records``)."""
    started = time.thread_time()
    for _ in range(repeat):
        step()
    return (time.thread_time() - started) / (repeat * records) * 1e6


def measure(key: KeyPair, size: int, budget: int) -> dict[str, float]:
    """One round of sign, verify cached and verify cold for batches of ``size``."""
    stamper = Stamper(key)
    trust = TrustStore([TrustedKey(REGION, key.key_id, key.algorithm, key.public_key, 0)])
    batches = max(2, budget // size)
    raw = [fresh(size, i * size) for i in range(batches)]
    hops: list[tuple[bytes | None, bytes | None]] = [(None, b"")] * size
    passed = [signed(batch, stamper) for batch in raw]
    passed_hops: list[tuple[bytes | None, bytes | None]] = [(None, b"410102^")] * size
    sign_batches = iter(raw * 1000)

    def sign() -> None:
        vouch(Provenance(stamper, None), next(sign_batches), hops, [DELIVERED] * size,
              now_ms=NOW, entry=True)  # fmt: skip

    warm = Checker(trust, verifiers(), require=True, cache_size=4096)
    for batch in passed:
        check(warm, batch, passed_hops)
    cached_batches = iter(passed * 1000)
    cold_batches = iter(passed * 1000)

    def cached() -> None:
        check(warm, next(cached_batches), passed_hops)

    def cold() -> None:
        check(Checker(trust, verifiers(), require=True, cache_size=4096), next(cold_batches),
              passed_hops)  # fmt: skip

    return {
        "sign": cpu_us_per_record(sign, size, batches),
        "verify_cached": cpu_us_per_record(cached, size, batches),
        "verify_cold": cpu_us_per_record(cold, size, batches),
    }


def check(
    checker: Checker, batch: list[Seen], hops: list[tuple[bytes | None, bytes | None]]
) -> None:
    """Check a batch as a pass-through link does; every record must pass."""
    outcomes: list[Outcome] = [DELIVERED] * len(batch)
    vouch(Provenance(None, checker), batch, hops, outcomes, now_ms=NOW, entry=False)
    if any(outcome is not DELIVERED for outcome in outcomes):
        raise AssertionError(f"a record failed: {outcomes}")


def raw_calls(key: KeyPair, calls: int) -> dict[str, float]:
    """µs of one sign and one verify call (median of ``calls``)."""
    verifier = verifiers()[key.algorithm]
    signs, checks = [], []
    for index in range(calls):
        message = index.to_bytes(8, "big") * 8
        started = time.thread_time()
        signature = key.sign(message)
        signs.append(time.thread_time() - started)
        started = time.thread_time()
        assert verifier.verify(key.public_key, message, signature)
        checks.append(time.thread_time() - started)
    return {"sign_us": statistics.median(signs) * 1e6, "verify_us": statistics.median(checks) * 1e6}


def main() -> None:
    """Measure, print, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer records per measurement")
    args = parser.parse_args()
    keys: dict[str, KeyPair] = {"ed25519": Ed25519Signer.of(Ed25519PrivateKey.generate())}
    if sm2_available():
        keys["sm2"] = Sm2Signer.of(0x1234567890ABCDEF1234567890ABCDEF)
    budgets = {"ed25519": 1000 if args.quick else 4000, "sm2": 200 if args.quick else 1000}
    samples: dict[tuple[str, int], list[dict[str, float]]] = {}
    began = time.monotonic()
    for _ in range(args.rounds):  # interleaved: every (algorithm, size) once per round
        for algorithm, key in keys.items():
            for size in SIZES:
                budget = budgets[algorithm] if size > 1 or algorithm == "ed25519" else 20
                samples.setdefault((algorithm, size), []).append(measure(key, size, budget))
    results: dict[str, Any] = {"rounds": args.rounds, "payload_bytes": 1024, "figures": []}
    rows = []
    for (algorithm, size), found in samples.items():
        entry: dict[str, Any] = {"algorithm": algorithm, "batch": size}
        row: list[Any] = [algorithm, size]
        for what in ("sign", "verify_cached", "verify_cold"):
            values = [sample[what] for sample in found]
            figure = {"median": statistics.median(values), "min": min(values), "max": max(values)}
            entry[what] = figure
            row.append(f"{figure['median']:.1f} ({figure['min']:.1f}-{figure['max']:.1f})")
        stamped = signed(fresh(size, 0), Stamper(keys[algorithm]))
        entry["header_bytes"] = max(
            len(v) for r in stamped for n, v in r.headers if n == PROVENANCE
        )
        row.append(entry["header_bytes"])
        results["figures"].append(entry)
        rows.append(row)
    print("provenance CPU µs per record, median (min-max) of", args.rounds, "rounds, 1 KB payloads")
    print(table(["algorithm", "batch", "sign (entry)", "verify cached", "verify cold",
                 "cx-prov bytes"], rows))  # fmt: skip
    calls = {a: raw_calls(k, 200 if a == "ed25519" else 10) for a, k in keys.items()}
    results["raw_calls"] = calls
    for algorithm, figures in calls.items():
        print(f"{algorithm}: one sign {figures['sign_us']:.0f} µs, "
              f"one verify {figures['verify_us']:.0f} µs")  # fmt: skip
    results["seconds"] = round(time.monotonic() - began, 1)
    results["quick"] = args.quick
    print(f"wrote {write('provenance', results)} in {results['seconds']} s")


if __name__ == "__main__":
    main()
