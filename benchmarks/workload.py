"""Benchmark records as varied as a county's traffic: a catalog of realistic size and its records.

County 410102 publishes ``RESOURCES`` resources from ``len(DEPARTMENTS)`` departments (real county
catalogs list thousands); each resource is one of the three sample schemas with that schema's
items and quality rules, at grade 1 to 3. Records pick a resource with a Zipf-like skew (a few
resources carry most of the traffic, as population and licence data do), a target above the city
from a weighted mix (province, nation, other cities, other provinces), and carry a distinct id,
key and creation time. Values come from a pool of valid sample records per schema, padded to
between half and one and a half times the nominal size, so the mean payload is the nominal one.

Every record goes up from the city, so every bridge copies each record exactly once and the
copy counts of the node, the raw pipe and MirrorMaker 2 compare one to one.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common import DEPLOY_LOCAL  # noqa: F401 - puts deploy/local on the path
from sample_records import LEGAL_ENTITY, LICENCE, PERSON, sample

from node.codec import SchemaSet, load_schemas, packaged_schema_dir
from node.core.envelope import (
    CREATED_MS,
    GRADE,
    HOPS,
    RECORD_ID,
    RESOURCE,
    SHARING,
    SOURCE_DEPT,
    SOURCE_REGION,
    TARGET,
    Sharing,
    Target,
)

COUNTY = "410102"
RESOURCES = 2000
DEPARTMENTS = (
    "PSB", "SAMR", "DSB", "HRSS", "MCA", "NHC", "EDU", "TAX", "NRB", "HURD", "TRANS", "WRB",
    "AGRI", "COMM", "CULT", "EMB", "AUDIT", "STAT", "MEDI", "VETS", "ENV", "FOR", "JUS", "CIVIL",
)  # fmt: skip
SCHEMAS = (PERSON, LEGAL_ENTITY, LICENCE)
PADDED = {PERSON: "address", LEGAL_ENTITY: "business_scope", LICENCE: "licence_name"}
"""The free-text field of each schema that takes the padding."""
TARGETS = (
    ("region:410000", 35), ("region:000000", 20), ("region:410200", 8), ("region:410300", 7),
    ("region:410700", 5), ("region:411000", 5), ("region:411300", 5), ("region:420000", 5),
    ("region:440000", 4), ("region:110000", 3), ("subtree:420000", 3),
)  # fmt: skip
"""Where the county's records are addressed, with weights: all above the city (410100)."""
BEYOND_PROVINCE = tuple((t, w) for t, w in TARGETS if not t.split(":")[1].startswith("41"))
"""The targets outside the province (410000): what both hops of a two-hop chain hand up."""
POOL = 48
"""Distinct values per schema and size; ids, keys and envelopes are distinct per record."""
_TEMPLATE_CODE = {PERSON: "410102-PSB-00001", LEGAL_ENTITY: "410102-SAMR-00001",
                  LICENCE: "410102-DSB-00001"}  # fmt: skip
DEMO_CATALOG = Path(__file__).resolve().parents[1] / "schemas" / "catalog" / "demo.toml"

Header = tuple[str, bytes]
Row = tuple[bytes, bytes, list[Header]]


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One resource of the bench catalog."""

    code: str
    schema: str
    department: str
    grade: int


def catalog_entries(count: int = RESOURCES) -> list[CatalogEntry]:
    """The county's resources: departments in turn, schemas and grades spread over them."""
    rng = random.Random(7)
    entries = []
    for n in range(count):
        department = DEPARTMENTS[n % len(DEPARTMENTS)]
        code = f"{COUNTY}-{department}-{n // len(DEPARTMENTS) + 1:05d}"
        entries.append(CatalogEntry(code, rng.choice(SCHEMAS), department, rng.choice((1, 2, 3))))
    return entries


def write_catalog(directory: Path, entries: list[CatalogEntry]) -> Path:
    """Write ``entries`` as ``bench.toml`` in ``directory``, cloned from the demo's county entries."""
    blocks = _demo_blocks()
    out = []
    for entry in entries:
        block = blocks[_TEMPLATE_CODE[entry.schema]]
        block = re.sub(r'^code = ".*"$', f'code = "{entry.code}"', block, count=1, flags=re.M)
        block = re.sub(r'^name = ".*"$', f'name = "bench {entry.code}"', block, count=1, flags=re.M)
        block = re.sub(r"^source = \{.*\}$",
                       f'source = {{ department = "{entry.department}", region = "{COUNTY}" }}',
                       block, count=1, flags=re.M)  # fmt: skip
        block = re.sub(r"^grade = \d$", f"grade = {entry.grade}", block, count=1, flags=re.M)
        out.append(block)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "bench.toml"
    path.write_text("\n".join(out), encoding="utf-8")
    return path


def _demo_blocks() -> dict[str, str]:
    """The demo catalog's ``[[resource]]`` blocks (with their sub-tables), by code."""
    text = DEMO_CATALOG.read_text(encoding="utf-8")
    blocks = {}
    for part in text.split("[[resource]]")[1:]:
        code = re.search(r'^code = "(.*)"$', part, flags=re.M)
        assert code is not None
        blocks[code.group(1)] = "[[resource]]" + part
    return blocks


class Workload:
    """Makes rows (key, value, headers) of the county's records for one nominal payload size."""

    def __init__(
        self,
        size: int,
        *,
        fresh: bool,
        seed: int = 0,
        targets: tuple[tuple[str, int], ...] = TARGETS,
    ) -> None:
        self.size = size
        self.fresh = fresh
        self.targets = targets
        self.entries = catalog_entries()
        self._rng = random.Random(seed)
        weights = [1 / (rank + 1) ** 1.1 for rank in range(len(self.entries))]
        self._resource_weights = weights
        self._target_bytes = [str(Target.parse(t)).encode() for t, _ in targets]
        self._target_weights = [w for _, w in targets]
        self._headed = [_fixed_headers(entry) for entry in self.entries]
        self._pool = self._values(load_schemas(packaged_schema_dir()))

    def _values(self, schemas: SchemaSet) -> dict[str, list[bytes]]:
        pool: dict[str, list[bytes]] = {}
        now_ms = int(time.time() * 1000)
        for schema in SCHEMAS:
            values = []
            for n in range(POOL):
                base = sample(schemas, schema, COUNTY, "region:000000", seed=n, created_ms=now_ms)
                _, datum = schemas.decode(base.value)
                wanted = int(self.size * self._rng.uniform(0.5, 1.5))
                pad = max(0, wanted - len(base.value))
                datum[PADDED[schema]] = str(datum[PADDED[schema]]) + "路" * (pad // 3)
                values.append(schemas.encode(schema, datum))
            pool[schema] = values
        return pool

    def rows(self, count: int, first: int = 0) -> Iterator[Row]:
        """``count`` records with ids ``first``…; handed up by the county unless fresh.

        Headers are built as ``Envelope.to_headers`` would, from bytes prepared per resource and
        target, so a million records take seconds, not minutes.
        """
        rng = self._rng
        entries = rng.choices(self._headed, self._resource_weights, k=count)
        targets = rng.choices(self._target_bytes, self._target_weights, k=count)
        hops = b"" if self.fresh else f"{COUNTY}^".encode()
        now_ms = int(time.time() * 1000)
        bits = rng.getrandbits
        for n, ((schema, source, rules), target) in enumerate(zip(entries, targets, strict=True)):
            hexed = f"{bits(128):032x}"  # spelled as str(uuid.UUID(int=...)), in half the time
            record_id = (
                f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}".encode()
            )
            created = str(now_ms - (count - n)).encode()
            headers = [(RECORD_ID, record_id), *source, (TARGET, target), *rules,
                       (CREATED_MS, created), (HOPS, hops)]  # fmt: skip
            yield f"{first + n:012d}".encode(), rng.choice(self._pool[schema]), headers


def _fixed_headers(entry: CatalogEntry) -> tuple[str, list[Header], list[Header]]:
    """Return the schema and the headers all of ``entry``'s records share, around the target."""
    source = [(RESOURCE, entry.code.encode()), (SOURCE_REGION, COUNTY.encode()),
              (SOURCE_DEPT, entry.department.encode())]  # fmt: skip
    rules = [(GRADE, str(entry.grade).encode()), (SHARING, Sharing.UNCONDITIONAL.value.encode())]
    return entry.schema, source, rules


def memo_hit_rates(
    rows: list[Row], routing_size: int = 4096, policy_size: int = 8192
) -> dict[str, float]:
    """Hit rates the node's routing and policy memos would see on ``rows`` (same keys, same bounds)."""
    routing: set[tuple[bytes | None, ...]] = set()
    policy: set[tuple[bytes | None, ...]] = set()
    hits = [0, 0]
    for _, _, headers in rows:
        values = dict(headers)
        keys = (
            (values.get(TARGET), values.get(HOPS)),
            tuple(values.get(h) for h in (RESOURCE, SOURCE_REGION, SOURCE_DEPT, GRADE)),
        )
        for index, (memo, key, bound) in enumerate(
            ((routing, keys[0], routing_size), (policy, keys[1], policy_size))
        ):
            if key in memo:
                hits[index] += 1
                continue
            if len(memo) >= bound:
                memo.clear()
            memo.add(key)
    total = max(1, len(rows))
    return {"routing": hits[0] / total, "policy": hits[1] / total}
