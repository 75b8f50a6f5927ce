"""Merkle trees over the record digests of one batch: the root, every inclusion proof, the fold.

The tree is RFC 9162's (Certificate Transparency v2): a tree of ``n`` leaves splits at the largest
power of two below ``n``; inner nodes are ``H(0x01 || left || right)``. Leaves are hashed by the
caller with the prefix ``0x00`` (``LEAF_PREFIX``), so a leaf can never pose as an inner node nor
the other way round. ``H`` is given by the caller (SHA-256, or SM3 for SM2 keys).

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence

Digest = Callable[[bytes], bytes]
"""A hash function: bytes in, a fixed-size digest out."""

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"


def tree(leaves: Sequence[bytes], digest: Digest) -> tuple[bytes, list[list[bytes]]]:
    """Return the root of ``leaves`` (hashed leaves) and the inclusion proof of each leaf.

    A proof lists sibling hashes from the leaf upwards. Raises ValueError on no leaves.
    """
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    proofs: list[list[bytes]] = [[] for _ in leaves]
    root = _build(leaves, 0, len(leaves), proofs, digest)
    return root, proofs


def _build(
    leaves: Sequence[bytes], start: int, end: int, proofs: list[list[bytes]], digest: Digest
) -> bytes:
    """Hash the subtree over ``leaves[start:end]``, appending siblings to the proofs below it."""
    count = end - start
    if count == 1:
        return leaves[start]
    split = 1 << ((count - 1).bit_length() - 1)  # the largest power of two below count
    left = _build(leaves, start, start + split, proofs, digest)
    right = _build(leaves, start + split, end, proofs, digest)
    for index in range(start, start + split):
        proofs[index].append(right)
    for index in range(start + split, end):
        proofs[index].append(left)
    return digest(NODE_PREFIX + left + right)


def fold(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], digest: Digest
) -> bytes | None:
    """Return the root that ``proof`` leads to from ``leaf`` at ``index`` of ``size`` leaves.

    None when the proof cannot belong to such a tree (wrong length, index out of range): the
    caller compares the result with a signed root. RFC 9162, section 2.1.3.2.
    """
    climbed = climb(leaf, index, size, proof, digest)
    if climbed is None:
        return None
    path, _ = climbed
    return path[-1] if path else leaf


def climb(
    leaf: bytes,
    index: int,
    size: int,
    proof: Iterable[bytes],
    digest: Digest,
    known: Collection[bytes] = (),
) -> tuple[list[bytes], bool] | None:
    """Fold like ``fold``, but stop at the first node found in ``known``.

    Returns the nodes computed above the leaf (the last one is the root, or the node found) and
    whether a known node was reached; None when the proof cannot belong to such a tree. A node
    of a verified tree vouches for everything below it, so checking a batch's leaves against
    the nodes of its first verified path costs about two hashes a leaf instead of log2(size).
    """
    if not 0 <= index < size:
        return None
    fn, sn = index, size - 1
    node = leaf
    path: list[bytes] = []
    for sibling in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            node = digest(NODE_PREFIX + sibling + node)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            node = digest(NODE_PREFIX + node + sibling)
        fn >>= 1
        sn >>= 1
        path.append(node)
        if node in known:
            return path, True
    return (path, False) if sn == 0 else None
