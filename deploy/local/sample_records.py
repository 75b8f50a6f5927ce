"""Realistic sample resource records for the demo, the tests and the benchmarks.

Deterministic for a given seed: a person (population), a legal-entity registration and an
electronic licence, framed with the shipped schemas and wrapped in an envelope.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

from department_client import Published

from node.codec import SchemaSet
from node.core.envelope import Envelope, Sharing, Target

PERSON = "cn.gov.exchange.population.Person"
LEGAL_ENTITY = "cn.gov.exchange.legalentity.LegalEntity"
LICENCE = "cn.gov.exchange.licence.ElectronicLicence"
DEPARTMENT_OF = {PERSON: "PSB", LEGAL_ENTITY: "SAMR", LICENCE: "DSB"}
"""Source department of each sample resource: public security, market regulation, data bureau."""


def resource_code(schema: str, region: str) -> str:
    """Return the catalog code of ``schema``'s resource as published by ``region``."""
    return f"{region}-{DEPARTMENT_OF[schema]}-00001"


_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英"
_STREETS = ("人民路", "建设路", "中原路", "解放路", "金水路", "文化路", "农业路", "花园路")
_EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def person(rng: random.Random, region: str) -> dict[str, Any]:
    """Return a resident of ``region``."""
    birth = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(30_000))
    return {
        "id_number": f"{region}{birth:%Y%m%d}{rng.randrange(1000):03d}{rng.choice('0123456789X')}",
        "name": rng.choice(_SURNAMES) + "".join(rng.choices(_GIVEN, k=rng.choice((1, 2)))),
        "gender": rng.choice(("MALE", "FEMALE")),
        "birth_date": birth,
        "ethnicity": rng.choice(("01", "01", "01", "03", "05")),
        "household_region": region,
        "address": f"{rng.choice(_STREETS)}{rng.randrange(1, 300)}号{rng.randrange(1, 30)}栋",
        "phone": f"1{rng.choice('3589')}{rng.randrange(10**9):09d}" if rng.random() < 0.7 else None,
        "updated_at": _EPOCH + dt.timedelta(seconds=rng.randrange(10**7)),
    }


def legal_entity(rng: random.Random, region: str) -> dict[str, Any]:
    """Return a company registered in ``region``."""
    return {
        "credit_code": f"91{region}{rng.randrange(10**9):09d}X",
        "name": rng.choice(("郑州", "中原", "豫东")) + rng.choice(("科技", "物流")) + "有限公司",
        "entity_type": "有限责任公司",
        "legal_representative": rng.choice(_SURNAMES) + rng.choice(_GIVEN),
        "registered_capital_fen": rng.randrange(10**6, 10**11),
        "established_date": dt.date(1995, 1, 1) + dt.timedelta(days=rng.randrange(11_000)),
        "registration_authority": "市场监督管理局",
        "region": region,
        "address": f"{rng.choice(_STREETS)}{rng.randrange(1, 300)}号",
        "status": rng.choice(("ACTIVE", "ACTIVE", "ACTIVE", "REVOKED")),
        "business_scope": "技术开发、技术咨询、货物进出口",
        "updated_at": _EPOCH + dt.timedelta(seconds=rng.randrange(10**7)),
    }


def licence(rng: random.Random, region: str) -> dict[str, Any]:
    """Return a business licence issued in ``region``."""
    issued = dt.date(2015, 1, 1) + dt.timedelta(days=rng.randrange(4000))
    return {
        "licence_id": f"LIC-{region}-{rng.randrange(10**10):010d}",
        "licence_type": "11100000000000000X",
        "licence_name": "营业执照",
        "holder_name": f"{rng.choice(('郑州', '开封'))}{rng.choice(('商贸', '建材'))}有限公司",
        "holder_id_type": "CREDIT_CODE",
        "holder_id": f"91{region}{rng.randrange(10**9):09d}X",
        "issuer": "市场监督管理局",
        "issuer_code": f"11{region}0000000000",
        "issue_date": issued,
        "valid_until": None if rng.random() < 0.5 else issued + dt.timedelta(days=3650),
        "status": "VALID",
        "file_sha256": f"{rng.getrandbits(256):064x}",
    }


BUILDERS = {PERSON: person, LEGAL_ENTITY: legal_entity, LICENCE: licence}


def sample(
    schemas: SchemaSet,
    schema: str,
    source_region: str,
    target: str,
    *,
    seed: int,
    created_ms: int,
    grade: int = 2,
    sharing: Sharing = Sharing.UNCONDITIONAL,
    resource: str | None = None,
    source_dept: str | None = None,
) -> Published:
    """Return one framed record of ``schema`` published at ``source_region`` for ``target``."""
    rng = random.Random(seed)  # noqa: S311 - sample data, not secrets
    envelope = Envelope(
        record_id=str(uuid.UUID(int=rng.getrandbits(128))),
        resource=resource or resource_code(schema, source_region),
        source_region=source_region,
        source_dept=source_dept or DEPARTMENT_OF[schema],
        target=Target.parse(target),
        grade=grade,
        sharing=sharing,
        created_ms=created_ms,
    )
    value = schemas.encode(schema, BUILDERS[schema](rng, source_region))
    return Published(envelope, value)
