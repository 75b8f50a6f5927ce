"""Catalog files: loaded, checked against the schemas, and fast at Chongqing's scale."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.catalog_files import load_catalog, packaged_catalog_dir, read_catalog
from node.cli import main
from node.codec import load_schemas, packaged_schema_dir
from node.core.outcome import Copy, Delivered, Direction
from node.core.policy import Policy, PolicySnapshot
from node.errors import CatalogError

SCHEMAS = load_schemas(packaged_schema_dir())
PERSON = "cn.gov.exchange.population.Person"
PERSON_ITEMS = """items = [
  { name = "id_number", type = "string", required = true },
  { name = "name", type = "string", required = true },
  { name = "gender", type = "enum", required = true },
  { name = "birth_date", type = "date", required = true },
  { name = "ethnicity", type = "string", required = true },
  { name = "household_region", type = "string", required = true },
  { name = "address", type = "string", required = true },
  { name = "phone", type = "string", required = false },
  { name = "updated_at", type = "timestamp", required = true },
]"""


def entry(code: str, **overrides: str) -> str:
    """One [[resource]] table; ``overrides`` replace whole lines by key."""
    lines = {
        "code": f'"{code}"', "name": '"人口基本信息"', "schema": f'"{PERSON}"',
        "source": '{ department = "PSB", region = "410102" }', "sharing": '"unconditional"',
        "openness": '"closed"', "grade": "2", "update_cycle": '"daily"',
    }  # fmt: skip
    lines.update(overrides)
    body = "\n".join(f"{k} = {v}" for k, v in lines.items() if v != "")
    items = overrides.get("items_text", PERSON_ITEMS)
    return f"[[resource]]\n{body.replace('items_text = ' + items, '')}\n{items}\n\n"


def problems_of(tmp_path: Path, text: str) -> list[str]:
    """Write a catalog file and return its problems as text."""
    (tmp_path / "catalog.toml").write_text(text, encoding="utf-8")
    return [str(p) for p in read_catalog(tmp_path, SCHEMAS)[1]]


def test_the_shipped_catalog_is_valid() -> None:
    """The demo catalog loads: three base-database resources per platform, one not shared."""
    catalog = load_catalog(packaged_catalog_dir(), SCHEMAS)
    assert len(catalog) == 16
    sharing = {code: getattr(catalog.get(code), "sharing", None) for code in catalog.codes()}
    assert [code for code, kind in sharing.items() if kind == "not_shared"] == ["410102-PSB-00009"]


@pytest.mark.parametrize(
    ("overrides", "field", "needle"),
    [
        ({"schema": '"cn.gov.Nothing"'}, "schema", "unknown schema"),
        ({"sharing": '"not_shared"'}, "legal_basis", "must cite its legal basis"),
        ({"sharing": '"sometimes"'}, "sharing", "not one of"),
        ({"grade": "7"}, "grade", "1-4"),
        ({"source": '{ department = "PSB", region = "4101" }'}, "source.region", "six-digit"),
        (
            {
                "items_text": PERSON_ITEMS.replace(
                    '"name", type = "string"', '"name", type = "long"'
                )
            },
            "items.name",
            "type long in the catalog, string in",
        ),
        (
            {
                "items_text": PERSON_ITEMS.replace(
                    '"phone", type = "string", required = false',
                    '"phone", type = "string", required = true',
                )
            },
            "items.phone",
            "nullable",
        ),
        (
            {"items_text": PERSON_ITEMS.replace('"address"', '"adress"')},
            "items.adress",
            "not a field of",
        ),
        (
            {"items_text": PERSON_ITEMS.replace('"address"', '"adress"')},
            "items.address",
            "missing from the catalog",
        ),
    ],
)
def test_each_problem_names_the_resource_and_field(
    tmp_path: Path, overrides: dict[str, str], field: str, needle: str
) -> None:
    """Every kind of catalog mistake is reported with the resource code and the field."""
    found = problems_of(tmp_path, entry("410102-PSB-00001", **overrides))
    assert any(f"410102-PSB-00001 {field}: " in p and needle in p for p in found), found


def test_duplicate_codes_are_reported(tmp_path: Path) -> None:
    """The same code twice is a problem, reported once for the second entry."""
    found = problems_of(tmp_path, entry("410102-PSB-00001") * 2)
    assert found == [f"{tmp_path / 'catalog.toml'}: 410102-PSB-00001 code: duplicate code"]


def test_the_node_refuses_an_invalid_catalog(tmp_path: Path) -> None:
    """load_catalog raises with every problem listed."""
    (tmp_path / "catalog.toml").write_text(entry("A", grade="0") + entry("B", schema='"x.Y"'))
    with pytest.raises(CatalogError) as caught:
        load_catalog(tmp_path, SCHEMAS)
    assert len(caught.value.problems) == 2


def test_catalog_check_command_exits_2_listing_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``exchange-node catalog check`` prints each problem and exits 2; 0 for the shipped one."""
    (tmp_path / "catalog.toml").write_text(entry("A", grade="0"))
    assert main(["catalog", "check", "--catalog", str(tmp_path)]) == 2
    assert "A grade:" in capsys.readouterr().err
    assert main(["catalog", "check"]) == 0


def wide_schema(name: str, fields: int) -> str:
    """A synthetic record schema with ``fields`` string fields."""
    columns = ", ".join(f'{{"name": "f{i:02d}", "type": "string"}}' for i in range(fields))
    return f'{{"type": "record", "name": "{name}", "namespace": "cq", "fields": [{columns}]}}'


def test_a_chongqing_sized_catalog_loads_and_every_record_is_decided(tmp_path: Path) -> None:
    """3,640 resources with 53,253 information items load and every record gets its lookup-based decision."""
    schema_dir, catalog_dir = tmp_path / "schemas", tmp_path / "catalog"
    schema_dir.mkdir()
    catalog_dir.mkdir()
    (schema_dir / "w15.avsc").write_text(wide_schema("W15", 15))
    (schema_dir / "w14.avsc").write_text(wide_schema("W14", 14))
    schemas = load_schemas(schema_dir)
    count, wide = 3640, 2293  # 2293 x 15 + 1347 x 14 = 53,253 items
    with (catalog_dir / "chongqing.toml").open("w", encoding="utf-8") as out:
        for n in range(count):
            width = 15 if n < wide else 14
            items = ", ".join(f'{{ name = "f{i:02d}", type = "string" }}' for i in range(width))
            out.write(
                f'[[resource]]\ncode = "500000-D{n % 72:02d}-{n:05d}"\nname = "资源{n}"\n'
                f'schema = "cq.W{width}"\nsource = {{ department = "D{n % 72:02d}", region = "500101" }}\n'
                f'sharing = "{"not_shared" if n % 10 == 0 else "unconditional"}"\nlegal_basis = "法规"\n'
                f'grade = {1 + n % 4}\nupdate_cycle = "daily"\nitems = [{items}]\n\n'
            )
    catalog = load_catalog(catalog_dir, schemas)
    assert len(catalog) == count
    assert sum(len(r.items) for r in map(catalog.get, catalog.codes()) if r is not None) == 53_253
    policy = Policy(PolicySnapshot(catalog), memo_size=1)
    copy = Copy(Direction.UP, "500000", b"500101^")
    keys = [
        (f"500000-D{n % 72:02d}-{n:05d}".encode(), b"500101", f"D{n % 72:02d}".encode(), b"1")
        for n in range(count)
    ]
    outcomes = policy.apply_batch(keys, [Delivered((copy,))] * count)
    refused = [n for n, o in enumerate(outcomes) if not isinstance(o, Delivered)]
    assert refused == [n for n in range(count) if n % 10 == 0]


@pytest.mark.parametrize(
    "text",
    [b"a = " + b"1" * 5000, b"a = " + b"[" * 5000 + b"]" * 5000, b"a = {" * 3000, b"a = '\xff'"],
)
def test_a_catalog_file_the_parser_cannot_hold_is_a_problem_named_by_file(
    tmp_path: Path, text: bytes
) -> None:
    """An integer over 4,300 digits, deep nesting or bad UTF-8 is reported, not raised."""
    (tmp_path / "catalog.toml").write_bytes(text)
    found = [str(p) for p in read_catalog(tmp_path, SCHEMAS)[1]]
    assert len(found) == 1, found
    assert found[0].startswith(f"{tmp_path / 'catalog.toml'}: "), found
    assert "unreadable: " in found[0], found
