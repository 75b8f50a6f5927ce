"""Avro codec per record: encode and decode of the three resource schemas with fastavro."""

from __future__ import annotations

import argparse
import random
import time

from common import table, write
from sample_records import BUILDERS

from node.codec import load_schemas, packaged_schema_dir


def per_second(step: object, count: int, seconds: float) -> float:
    """Operations per second of calling ``step`` ``count`` times, best of repeated runs."""
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        for _ in range(count):
            step()  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    return count / best


def main() -> None:
    """Measure, print, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seconds = 0.3 if args.quick else 1.5
    schemas = load_schemas(packaged_schema_dir())
    rows = []
    for name, build in BUILDERS.items():
        datum = build(random.Random(3), "410102")
        value = schemas.encode(name, datum)
        encode = per_second(lambda n=name, d=datum: schemas.encode(n, d), 2000, seconds)
        decode = per_second(lambda v=value: schemas.decode(v), 2000, seconds)
        first_two = tuple(field["name"] for field in schemas.by_name[name].definition["fields"][:2])
        project = per_second(lambda v=value, i=first_two: schemas.project(v, i), 2000, seconds)
        rows.append({"schema": name.rsplit(".", 1)[1], "bytes": len(value), "encode_per_s": encode,
                     "decode_per_s": decode, "project_per_s": project})  # fmt: skip
    print("Avro single-object codec, one core (operations/s):")
    print(table(["schema", "bytes", "encode", "decode", "project 2 items"],
                [[r["schema"], r["bytes"], r["encode_per_s"], r["decode_per_s"], r["project_per_s"]] for r in rows]))  # fmt: skip
    print(f"\nwrote {write('codec', {'codec': rows, 'quick': args.quick})}")


if __name__ == "__main__":
    main()
