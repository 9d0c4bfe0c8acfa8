"""Merkle tree hashing and inclusion proofs of RFC 9162 (Certificate Transparency 2.0, whose
tree is RFC 6962's), SHA-256. Pure: bytes in, bytes out.

Written here rather than taken from a library: PyPI has no maintained RFC 6962/9162
implementation for Python (the CT and Trillian code is Go), and the part needed is four short
recursions, checked in tests/test_audit_merkle.py against the test vectors of
transparency-dev/merkle (Trillian's tree).

    leaf hash   SHA-256(0x00 || leaf bytes)
    node hash   SHA-256(0x01 || left || right)
    MTH(D[n])   the empty string's hash for n = 0; the leaf hash for n = 1; otherwise, with k
                the largest power of two below n, node(MTH(D[0:k]), MTH(D[k:n]))

`root` and `inclusion_path` take a list of subtree hashes rather than leaves: given leaf hashes
they are MTH and RFC 9162's PATH; given the roots of consecutive full subtrees of a power-of-two
size (the audit log's chunks, the last one possibly short), they give the same root and the
upper part of the path, because every split of a range longer than one chunk falls on a chunk
boundary. So a checkpoint keeps its chunks' roots, a chunk is verified alone, and an entry's
proof is its path in its chunk followed by its chunk's path among the chunk roots.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """An inclusion proof that does not lead to the root it is checked against."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(hashes: Sequence[bytes]) -> bytes:
    """MTH over subtree hashes (leaf hashes: the tree's root)."""
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = _split(n)
    return node_hash(root(hashes[:k]), root(hashes[k:]))


def inclusion_path(index: int, hashes: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 PATH(index, D[n]): the sibling hashes from the leaf up to the root."""
    n = len(hashes)
    if not 0 <= index < n:
        raise IndexError(f"index {index} outside a tree of {n}")
    path: list[bytes] = []
    lo, hi = 0, n
    # Walk down from the root, collecting the other side's root at each split; the path lists
    # them from the bottom up, so they are gathered top-down and reversed.
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(root(hashes[lo + k : hi]))
            hi = lo + k
        else:
            path.append(root(hashes[lo : lo + k]))
            lo = lo + k
    path.reverse()
    return path


def root_from_path(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 section 2.1.3.2); ProofError when the
    proof cannot belong to a tree of `size` (wrong length, index out of range)."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} outside a tree of {size}")
    if len(leaf) != HASH_SIZE or any(len(h) != HASH_SIZE for h in path):
        raise ProofError("every hash is 32 bytes")
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            raise ProofError("the proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the proof is shorter than the tree is deep")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], expected_root: bytes
) -> None:
    """Raise ProofError unless `path` proves `leaf` is leaf `index` of the tree `expected_root`."""
    if root_from_path(index, size, leaf, path) != expected_root:
        raise ProofError("the proof does not lead to the checkpoint's root")
