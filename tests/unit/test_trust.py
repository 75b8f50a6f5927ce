"""The trust store: keys per region with validity, where a key may come from, and rotation."""

from __future__ import annotations

import dataclasses

import pytest

from node.core.trust import (
    Origin,
    TrustedKey,
    TrustStore,
    acceptable,
    key_id_of,
    newer,
    rotation,
)

DAY_MS = 86_400_000
NOW = 1_700_000_000_000


def key(region: str = "410102", key_id: str = "k1", **change: object) -> TrustedKey:
    """A key record of ``region``."""
    made = TrustedKey(region, key_id, "ed25519", b"\x01" * 32, NOW - DAY_MS)
    return dataclasses.replace(made, **change)  # type: ignore[arg-type]


def real(region: str = "410102", public_key: bytes = b"\x01" * 32) -> TrustedKey:
    """A key record whose key id is the id of its public key."""
    return key(region, key_id_of("ed25519", public_key), public_key=public_key)


def test_a_key_record_survives_json() -> None:
    """to_json and from_json are inverse, also with a closed window."""
    for made in (real(), dataclasses.replace(real(), valid_until_ms=NOW, issued_ms=NOW)):
        assert TrustedKey.from_json(made.to_json()) == made


def test_a_key_record_whose_id_is_not_its_public_keys_is_refused() -> None:
    """A parent publishing its own public key under a county's key id is refused when read."""
    county, parent = real("410102", b"\x01" * 32), real("420000", b"\x02" * 32)
    borrowed = dataclasses.replace(parent, key_id=county.key_id)
    with pytest.raises(ValueError, match=f"key_id: '{county.key_id}' is not the id"):
        TrustedKey.from_json(borrowed.to_json())
    other_algorithm = dataclasses.replace(county, algorithm="sm2")  # the id hashes it in too
    with pytest.raises(ValueError, match="key_id"):
        TrustedKey.from_json(other_algorithm.to_json())


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"[]", "JSON object"),
        (b'{"region": "41", "key_id": "k", "algorithm": "ed25519"}', "region"),
        (b'{"region": "410102", "key_id": "k", "algorithm": "rsa"}', "algorithm"),
        (
            b'{"region": "410102", "key_id": "", "algorithm": "ed25519", "public_key": "AA=="}',
            "key_id",
        ),
        (
            b'{"region": "410102", "key_id": "k", "algorithm": "ed25519", "public_key": "!"}',
            "base64",
        ),
        (
            b'{"region": "410102", "key_id": "aea8d5faafbaaad7", "algorithm": "ed25519",'
            b' "public_key": "AA==", "valid_from_ms": -1}',
            "valid_from_ms",
        ),
    ],
)
def test_a_bad_key_record_names_its_field(data: bytes, problem: str) -> None:
    """Each malformed record raises ValueError naming what is wrong."""
    with pytest.raises(ValueError, match=problem):
        TrustedKey.from_json(data)


def test_what_is_trusted_from_where() -> None:
    """Own topic: anything; a child: only its subtree; the parent: only outside this subtree."""
    city = "410100"
    assert acceptable(key("410102"), Origin.OWN, city)
    assert acceptable(key("410102"), Origin.CHILD, city, writer="410102")
    assert not acceptable(key("410103"), Origin.CHILD, city, writer="410102")
    assert not acceptable(key("410100"), Origin.CHILD, city, writer="410102")  # its parent's region
    assert not acceptable(key("410102"), Origin.CHILD, city, writer=None)
    assert acceptable(key("410000"), Origin.PARENT, city)
    assert acceptable(key("410200"), Origin.PARENT, city)  # a sibling city
    assert not acceptable(key("410100"), Origin.PARENT, city)  # this node's own keys
    assert not acceptable(key("410102"), Origin.PARENT, city)  # a region below


def test_a_key_vouches_only_for_its_region_within_its_window() -> None:
    """trusted() finds the key for the region and time, or says why not."""
    store = TrustStore([key(valid_until_ms=NOW), key("410103", "k2")])
    assert store.trusted("k1", "410102", NOW) == key(valid_until_ms=NOW)
    assert "not at the signing time" in str(store.trusted("k1", "410102", NOW + 1))
    assert "not at the signing time" in str(store.trusted("k1", "410102", NOW - 2 * DAY_MS))
    assert "not for source region 410102" in str(store.trusted("k2", "410102", NOW))
    assert "not in the trust store" in str(store.trusted("k3", "410102", NOW))
    assert len(store) == 2
    assert store.known("k2")


def test_the_later_version_of_a_key_wins() -> None:
    """A re-published key (shortened window) replaces the older version, never the reverse."""
    old, cut = key(issued_ms=1), key(issued_ms=2, valid_until_ms=NOW)
    assert newer(None, old)
    assert newer(old, cut)
    assert not newer(cut, old)


def test_rotation_publishes_the_new_key_and_cuts_the_old_ones_to_the_grace() -> None:
    """A new key is published open; each older open key ends at now + grace."""
    new, old = key(key_id="new", valid_from_ms=NOW), key(key_id="old")
    published = rotation(new, [old, key("410103", "other")], NOW, DAY_MS)
    assert [k.key_id for k in published] == ["new", "old"]
    assert published[0].valid_until_ms is None
    assert published[1].valid_until_ms == NOW + DAY_MS
    assert published[1].valid_from_ms == old.valid_from_ms
    assert all(k.issued_ms == NOW for k in published)
    assert TrustStore(published).trusted("old", "410102", NOW + DAY_MS) == published[1]
    assert isinstance(TrustStore(published).trusted("old", "410102", NOW + DAY_MS + 1), str)


def test_a_restart_neither_extends_a_grace_nor_moves_a_key_start() -> None:
    """Restarting later with the same key keeps its first valid_from; an old key's end stays."""
    own = key(key_id="new", valid_from_ms=NOW)
    cut_old = key(key_id="old", valid_until_ms=NOW + DAY_MS)
    later = NOW + 3600_000
    published = rotation(
        dataclasses.replace(own, valid_from_ms=later), [own, cut_old], later, DAY_MS
    )
    assert [(k.key_id, k.valid_from_ms) for k in published] == [("new", NOW)]
