"""Hostile configuration: ``parse_config`` over TOML documents mutated at any depth.

Every example starts from a shipped configuration (deploy/examples, the local demo) and replaces,
removes or adds a key anywhere in it with a value TOML can hold: huge or negative integers,
non-finite floats, Unicode digits, dates, arrays and tables where scalars belong. Fully random
documents are fuzzed too. Property: a NodeConfig, or ConfigError naming the field.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.config import NodeConfig, parse_config
from node.errors import ConfigError
from tests.unit.test_fuzz_headers import HANG_LIMIT_S, attempt, fuzz

FUZZ = fuzz(150)
REPO = Path(__file__).resolve().parents[2]
SHIPPED = [
    tomllib.loads(path.read_text(encoding="utf-8"))
    for path in sorted(
        [*REPO.glob("deploy/examples/*.toml"), *REPO.glob("deploy/local/demo/*.toml")]
    )
]
toml_scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([10**400, -(10**400), 2**64, 0, -1, 65536]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324]),
    st.booleans(),
    st.text(max_size=30),
    st.sampled_from(["²", "١٢", "410102", "h:²", "h:" + "1" * 5000, "h:0", ":9092", "a:1,", "x" * 101,
                     "county", "earliest", "json", "SCRAM-SHA-512", "sasl_ssl", "admin"]),
    st.dates(), st.times(), st.datetimes(),
    st.datetimes(timezones=st.just(dt.UTC)),
)  # fmt: skip
"""Every kind of value a TOML document can hold, and the sharp ones among them."""
sharp_values = st.sampled_from([
    10**400, -(10**400), 2**64, -1, 0, math.nan, math.inf, -math.inf, "²", "h:²", "h:" + "1" * 5000,
    "h:١٢", "", " ", "\x00", [], {}, [[]], [{}], {"": 1}, dt.date(1, 1, 1),
])  # fmt: skip
"""Values that have broken parsers before: past float or int() limits, Unicode digits, empties."""
toml_values = st.recursive(
    toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=6,
)


def _slots(document: Any, found: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key or index) pair of a parsed TOML document, tables and arrays included."""
    if isinstance(document, dict):
        for key, value in document.items():
            found.append((document, key))
            _slots(value, found)
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found.append((document, index))
            _slots(value, found)
    return found


@st.composite
def mutated_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A shipped configuration with one to three keys replaced, removed or added anywhere."""
    document: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(SHIPPED)))
    for _ in range(draw(st.integers(1, 3))):
        slots = _slots(document, [])
        container, key = draw(st.sampled_from(slots))
        how = draw(st.sampled_from(["replace", "replace", "remove", "add", "wrap"]))
        if how == "replace":
            container[key] = draw(toml_values)
        elif how == "wrap":
            container[key] = [container[key]]
        elif how == "remove":
            del container[key]
        elif isinstance(container, dict):
            container[draw(st.text(max_size=12))] = draw(toml_values)
        else:
            container.append(draw(toml_values))
    return document


def _check(document: Any) -> None:
    made = attempt(lambda: parse_config(document), ConfigError)
    if isinstance(made, ConfigError):
        assert made.path
        assert made.problem
        return
    assert isinstance(made, NodeConfig)


@pytest.mark.timeout(HANG_LIMIT_S)
@FUZZ
@given(mutated_documents())
def test_a_mutated_configuration_is_read_or_refused_naming_the_field(
    document: dict[str, Any],
) -> None:
    """A shipped config broken anywhere parses or raises ConfigError with a path and problem."""
    _check(document)


def _leaf_paths(document: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path (keys and indexes) of every scalar of a document."""
    if isinstance(document, dict):
        return [p for key, value in document.items() for p in _leaf_paths(value, (*at, key))]
    if isinstance(document, list) and document:
        return [p for index, value in enumerate(document) for p in _leaf_paths(value, (*at, index))]
    return [at]


SASL_VARIABLE = "CX_FUZZ_CONFIG_SASL"
RICHEST = copy.deepcopy(max(SHIPPED, key=lambda document: len(_leaf_paths(document))))
RICHEST["local"]["security"] = {
    "protocol": "sasl_plaintext", "sasl_mechanism": "SCRAM-SHA-512", "username": "node",
    "password_env": SASL_VARIABLE,
}  # fmt: skip
LEAVES = sorted(
    {p[:1] + tuple(k if isinstance(k, str) else 0 for k in p[1:]) for p in _leaf_paths(RICHEST)},
    key=str,
)
"""Every field of the richest shipped configuration (first entry of each array), with a SASL link."""


@pytest.mark.timeout(HANG_LIMIT_S)
@pytest.mark.parametrize("path", LEAVES, ids=lambda p: ".".join(map(str, p)))
@fuzz(12)
@given(value=sharp_values | toml_values)
def test_each_field_takes_any_toml_value_or_is_refused_by_name(
    path: tuple[Any, ...], value: Any
) -> None:
    """Per field of a real configuration: any value parses or ConfigError names that field."""
    document = copy.deepcopy(RICHEST)
    container = document
    for key in path[:-1]:
        container = container[key]
    container[path[-1]] = value
    os.environ[SASL_VARIABLE] = "not-a-real-password"
    try:
        made = attempt(lambda: parse_config(document), ConfigError)
    finally:
        del os.environ[SASL_VARIABLE]
    if isinstance(made, ConfigError):
        assert made.problem
        assert str(path[0]) in made.path, (path, made)


@pytest.mark.timeout(HANG_LIMIT_S)
@fuzz(100)
@given(st.dictionaries(st.sampled_from(["node", "local", "parent", "flow", "admin", "x"]), toml_values)
       | toml_values)  # fmt: skip
def test_a_random_document_is_refused_with_a_config_error(document: Any) -> None:
    """Random documents (or not even a table) give only ConfigError."""
    _check(document)
