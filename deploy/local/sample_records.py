"""Realistic sample resource records for the demo, the tests and the benchmarks.

Deterministic for a given seed: a person (population), a legal-entity registration and an
electronic licence, framed with the shipped schemas and wrapped in an envelope. Identity numbers
and credit codes carry real check characters, and a person's birth date and sex agree with the
identity number, so the records pass the demo catalog's quality rules; ``flawed`` breaks one rule
on purpose (a wrong check character, an identity number that disagrees with the birth date, a bad
region code, ...) for the demo's refusals.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from enum import StrEnum
from typing import Any

from department_client import Published

from node.codec import SchemaSet
from node.core.envelope import Envelope, Sharing, Target
from node.core.identifiers import CREDIT_ALPHABET, credit_code_check_char, id_number_check_char

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


def id_number(rng: random.Random, region: str, birth: dt.date, *, male: bool) -> str:
    """Return a valid identity number registered in ``region``: birth date, sex digit, check."""
    first17 = (
        f"{region}{birth:%Y%m%d}{rng.randrange(100):02d}{rng.choice('13579' if male else '02468')}"
    )
    return first17 + id_number_check_char(first17)


def _organisation_code(rng: random.Random) -> str:
    """Return a GB 11714 organisation code: eight digits and their MOD 11 check character."""
    body = f"{rng.randrange(10**8):08d}"
    check = 11 - sum(int(c) * w for c, w in zip(body, (3, 7, 9, 10, 5, 8, 4, 2), strict=True)) % 11
    return body + {10: "X", 11: "0"}.get(check, str(check))


def credit_code(rng: random.Random, region: str, kind: str = "91") -> str:
    """Return a valid credit code registered in ``region``; ``kind`` 91 is a company, 11 an office."""
    first17 = f"{kind}{region}{_organisation_code(rng)}"
    return first17 + credit_code_check_char(first17)


def _updated(rng: random.Random, updated_at: dt.datetime | None) -> dt.datetime:
    return updated_at or _EPOCH + dt.timedelta(seconds=rng.randrange(10**7))


def person(
    rng: random.Random, region: str, *, updated_at: dt.datetime | None = None
) -> dict[str, Any]:
    """Return a resident of ``region``; ``updated_at`` defaults to a time in early 2026."""
    birth = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(30_000))
    gender = rng.choice(("MALE", "FEMALE"))
    return {
        "id_number": id_number(rng, region, birth, male=gender == "MALE"),
        "name": rng.choice(_SURNAMES) + "".join(rng.choices(_GIVEN, k=rng.choice((1, 2)))),
        "gender": gender,
        "birth_date": birth,
        "ethnicity": rng.choice(("01", "01", "01", "03", "05")),
        "household_region": region,
        "address": f"{rng.choice(_STREETS)}{rng.randrange(1, 300)}号{rng.randrange(1, 30)}栋",
        "phone": f"1{rng.choice('3589')}{rng.randrange(10**9):09d}" if rng.random() < 0.7 else None,
        "updated_at": _updated(rng, updated_at),
    }


def legal_entity(
    rng: random.Random, region: str, *, updated_at: dt.datetime | None = None
) -> dict[str, Any]:
    """Return a company registered in ``region``."""
    return {
        "credit_code": credit_code(rng, region),
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
        "updated_at": _updated(rng, updated_at),
    }


def licence(
    rng: random.Random, region: str, *, updated_at: dt.datetime | None = None
) -> dict[str, Any]:
    """Return a business licence issued in ``region`` (it has no update time: ``updated_at`` is unused)."""
    del updated_at
    issued = dt.date(2015, 1, 1) + dt.timedelta(days=rng.randrange(4000))
    return {
        "licence_id": f"LIC-{region}-{rng.randrange(10**10):010d}",
        "licence_type": "11100000000000000X",
        "licence_name": "营业执照",
        "holder_name": f"{rng.choice(('郑州', '开封'))}{rng.choice(('商贸', '建材'))}有限公司",
        "holder_id_type": "CREDIT_CODE",
        "holder_id": credit_code(rng, region),
        "issuer": "市场监督管理局",
        "issuer_code": credit_code(rng, region, "11"),
        "issue_date": issued,
        "valid_until": None if rng.random() < 0.5 else issued + dt.timedelta(days=3650),
        "status": "VALID",
        "file_sha256": f"{rng.getrandbits(256):064x}",
    }


class Flaw(StrEnum):
    """A deliberate mistake ``flawed`` puts into a sample record."""

    ID_CHECK_CHAR = "id_check_char"  # Person: the identity number's check character is wrong
    ID_BIRTH = "id_birth"  # Person: the birth date is a day off the identity number's
    ID_SEX = "id_sex"  # Person: the gender disagrees with the identity number's sex digit
    REGION_CODE = "region_code"  # Person, LegalEntity: the region is no GB/T 2260 code
    CREDIT_CHECK_CHAR = "credit_check_char"  # LegalEntity, Licence: a credit code's check character
    EMPTY_REQUIRED = "empty_required"  # any: a required item (the address, the issuer) is blank


FLAWS: dict[str, dict[Flaw, tuple[str, str, str]]] = {
    PERSON: {
        Flaw.ID_CHECK_CHAR: ("accuracy", "id_number_check", "$.id_number"),
        Flaw.ID_BIRTH: ("consistency", "id_matches_birth_and_sex", "$.birth_date"),
        Flaw.ID_SEX: ("consistency", "id_matches_birth_and_sex", "$.gender"),
        Flaw.REGION_CODE: ("conformity", "region_code", "$.household_region"),
        Flaw.EMPTY_REQUIRED: ("completeness", "required", "$.address"),
    },
    LEGAL_ENTITY: {
        Flaw.CREDIT_CHECK_CHAR: ("accuracy", "credit_code_check", "$.credit_code"),
        Flaw.REGION_CODE: ("conformity", "region_code", "$.region"),
        Flaw.EMPTY_REQUIRED: ("completeness", "required", "$.address"),
    },
    LICENCE: {
        Flaw.CREDIT_CHECK_CHAR: ("accuracy", "credit_code_check", "$.holder_id"),
        Flaw.EMPTY_REQUIRED: ("completeness", "required", "$.issuer"),
    },
}
"""The flaws each schema's sample can carry, and the failure each must cause: (dimension, rule, field)."""

_FIELD = {
    Flaw.ID_CHECK_CHAR: "id_number", Flaw.ID_BIRTH: "birth_date", Flaw.ID_SEX: "gender",
    Flaw.CREDIT_CHECK_CHAR: "credit_code", Flaw.REGION_CODE: "region",
    Flaw.EMPTY_REQUIRED: "address",
}  # fmt: skip
_FIELD_IN = {
    (PERSON, Flaw.REGION_CODE): "household_region",
    (LICENCE, Flaw.CREDIT_CHECK_CHAR): "holder_id",
    (LICENCE, Flaw.EMPTY_REQUIRED): "issuer",
}


def _other_check_char(text: str, alphabet: str) -> str:
    return text[:-1] + alphabet[(alphabet.index(text[-1]) + 1) % len(alphabet)]


def flawed(value: dict[str, Any], schema: str, flaw: Flaw) -> dict[str, Any]:
    """Return a copy of the sample ``value`` of ``schema`` with ``flaw``; see FLAWS for which fit."""
    if flaw not in FLAWS[schema]:
        raise ValueError(f"a {schema} sample cannot carry the flaw {flaw}")
    name = _FIELD_IN.get((schema, flaw), _FIELD[flaw])
    current = value[name]
    broken: Any
    if flaw is Flaw.ID_CHECK_CHAR:
        broken = _other_check_char(current, "0123456789X")
    elif flaw is Flaw.CREDIT_CHECK_CHAR:
        broken = _other_check_char(current, CREDIT_ALPHABET)
    elif flaw is Flaw.ID_BIRTH:
        broken = current + dt.timedelta(days=1)
    elif flaw is Flaw.ID_SEX:
        broken = "FEMALE" if current == "MALE" else "MALE"
    elif flaw is Flaw.REGION_CODE:
        broken = f"{current[:2]}00{current[4:] if current[4:] != '00' else '01'}"
    else:
        broken = " "
    return {**value, name: broken}


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
    flaw: Flaw | None = None,
) -> Published:
    """Return one framed record of ``schema`` published at ``source_region`` for ``target``.

    The record was updated up to half an hour before ``created_ms``; ``flaw`` breaks one quality rule.
    """
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
    updated_ms = created_ms - min(rng.randrange(1_800_000), max(created_ms, 0))
    updated = dt.datetime.fromtimestamp(updated_ms / 1000, dt.UTC)
    datum = BUILDERS[schema](rng, source_region, updated_at=updated)
    value = schemas.encode(schema, datum if flaw is None else flawed(datum, schema, flaw))
    return Published(envelope, value)
