"""Merkle trees over a batch's record digests: every leaf's proof folds to the root, nothing else does."""

from __future__ import annotations

import hashlib

import pytest

from node.core.merkle import LEAF_PREFIX, climb, fold, tree


def sha256(data: bytes) -> bytes:
    """The digest the tests use."""
    return hashlib.sha256(data).digest()


def leaves(count: int) -> list[bytes]:
    """``count`` distinct hashed leaves."""
    return [sha256(LEAF_PREFIX + i.to_bytes(4, "big")) for i in range(count)]


@pytest.mark.parametrize("size", range(1, 41))
def test_every_leaf_proof_folds_to_the_root(size: int) -> None:
    """For trees of 1..40 leaves, each leaf's proof folds to the root at its index only.

    (A proof may also fold for another tree size; the signature covers the leaf count.)
    """
    hashed = leaves(size)
    root, proofs = tree(hashed, sha256)
    for index, (leaf, proof) in enumerate(zip(hashed, proofs, strict=True)):
        assert len(proof) <= (size - 1).bit_length()
        assert fold(leaf, index, size, proof, sha256) == root
        if size > 1:
            assert fold(leaf, (index + 1) % size, size, proof, sha256) != root


def test_a_single_leaf_is_its_own_root() -> None:
    """A tree of one leaf has that leaf as root and an empty proof."""
    hashed = leaves(1)
    root, proofs = tree(hashed, sha256)
    assert root == hashed[0]
    assert proofs == [[]]


@pytest.mark.parametrize("size", [2, 3, 7, 16, 40])
def test_tampering_any_byte_of_a_proof_or_leaf_fails(size: int) -> None:
    """Flipping any bit of any proof hash or of the leaf leads elsewhere than the root."""
    hashed = leaves(size)
    root, proofs = tree(hashed, sha256)
    for index, proof in enumerate(proofs):
        for position in range(len(proof)):
            for byte in range(32):
                altered = bytearray(proof[position])
                altered[byte] ^= 0x01
                bad = [*proof[:position], bytes(altered), *proof[position + 1 :]]
                assert fold(hashed[index], index, size, bad, sha256) != root
        for byte in range(32):
            leaf = bytearray(hashed[index])
            leaf[byte] ^= 0x80
            assert fold(bytes(leaf), index, size, proof, sha256) != root


def test_a_proof_of_the_wrong_length_or_index_does_not_fold() -> None:
    """A proof too short, too long, or an index outside the tree gives no root."""
    hashed = leaves(5)
    root, proofs = tree(hashed, sha256)
    assert fold(hashed[0], 0, 5, proofs[0][:-1], sha256) is None
    assert fold(hashed[0], 0, 5, [*proofs[0], root], sha256) is None
    assert fold(hashed[0], 5, 5, proofs[0], sha256) is None
    assert fold(hashed[0], -1, 5, proofs[0], sha256) is None


def test_an_inner_node_cannot_pose_as_a_leaf() -> None:
    """The two children of the root, joined, are not a leaf that folds to the root."""
    hashed = leaves(2)
    root, _ = tree(hashed, sha256)
    assert fold(hashed[0] + hashed[1], 0, 1, [], sha256) != root


def test_no_leaves_is_an_error() -> None:
    """A tree needs a leaf."""
    with pytest.raises(ValueError, match="at least one leaf"):
        tree([], sha256)


@pytest.mark.parametrize("size", range(1, 41))
def test_climbing_stops_at_a_verified_node_and_never_for_a_forged_leaf(size: int) -> None:
    """With leaf 0's path known, every leaf meets it; a forged leaf climbs to another root."""
    hashed = leaves(size)
    root, proofs = tree(hashed, sha256)
    first = climb(hashed[0], 0, size, proofs[0], sha256)
    assert first is not None
    path, reached = first
    assert not reached
    assert (path[-1] if path else hashed[0]) == root
    known = set(path)
    for index in range(1, size):
        climbed = climb(hashed[index], index, size, proofs[index], sha256, known)
        assert climbed is not None
        assert climbed[1], index
        forged = climb(sha256(b"\x00forged"), index, size, proofs[index], sha256, known)
        assert forged is not None
        assert not forged[1]
        assert forged[0][-1] != root
