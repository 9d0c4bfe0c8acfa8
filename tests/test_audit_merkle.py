"""RFC 9162 (RFC 6962) Merkle hashing and inclusion proofs against known vectors, and the
chunked trees the audit log's checkpoints keep. Pure: no emulator.

The vectors are those of transparency-dev/merkle (Trillian's tree): rfc6962/rfc6962_test.go,
testonly/constants.go (leaf inputs, roots of every size 0..8) and proof/verify_test.go
(inclusion proofs, and the ways a proof is corrupted that must not verify).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.audit import merkle

LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243")] + [
    bytes.fromhex("5051525354555657"),
    bytes.fromhex("606162636465666768696a6b6c6d6e6f"),
]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, path) from proof/verify_test.go (its leaf numbers are 1-based).
INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (0, 1, []),
]


def test_leaf_and_node_hashes_are_rfc_6962s():
    assert merkle.EMPTY_ROOT.hex() == ROOTS[0]
    assert merkle.leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert merkle.leaf_hash(b"L123456").hex() == (
        "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    )
    assert merkle.node_hash(b"N123", b"N456").hex() == (
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )
    # a leaf is never mistaken for a node over the same bytes
    left, right = merkle.leaf_hash(b"Hello"), merkle.leaf_hash(b"World")
    assert merkle.node_hash(left, right) != merkle.leaf_hash(left + right)
    assert merkle.node_hash(left, right) != merkle.node_hash(right, left)


@pytest.mark.parametrize("size", range(len(ROOTS)))
def test_roots_of_every_size_match_the_vectors(size):
    hashes = [merkle.leaf_hash(leaf) for leaf in LEAVES[:size]]
    assert merkle.root(hashes).hex() == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_paths_match_the_vectors_and_verify(index, size, path):
    hashes = [merkle.leaf_hash(leaf) for leaf in LEAVES[:size]]
    made = merkle.inclusion_path(index, hashes)
    assert [h.hex() for h in made] == path
    root = bytes.fromhex(ROOTS[size])
    merkle.verify_inclusion(index, size, hashes[index], made, root)


def _corruptions(index, size, leaf, path, root):
    """proof/verify_test.go's corruptInclusionProof: none of these may verify."""
    some = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
    yield "index - 1", index - 1, size, leaf, path, root
    yield "index + 1", index + 1, size, leaf, path, root
    yield "index ^ 2", index ^ 2, size, leaf, path, root
    yield "size * 2", index, size * 2, leaf, path, root
    yield "size / 2", index, size // 2, leaf, path, root
    yield "wrong leaf", index, size, merkle.leaf_hash(b"WrongLeaf"), path, root
    yield "empty root", index, size, leaf, path, merkle.EMPTY_ROOT
    yield "random root", index, size, leaf, path, some
    yield "trailing root", index, size, leaf, [*path, root], root
    yield "preceding root", index, size, leaf, [root, *path], root
    for i in range(len(path)):
        flipped = bytearray(path[i])
        flipped[0] ^= 8
        yield f"bit flip {i}", index, size, leaf, [*path[:i], bytes(flipped), *path[i + 1 :]], root
    if path:
        yield "removed component", index, size, leaf, path[:-1], root
    if len(path) > 1:
        yield "inserted component", index, size, leaf, [path[0], some, *path[1:]], root


@pytest.mark.parametrize(("index", "size", "path"), [v for v in INCLUSION if v[2]])
def test_corrupted_proofs_do_not_verify(index, size, path):
    hashes = [merkle.leaf_hash(leaf) for leaf in LEAVES[:size]]
    proof = [bytes.fromhex(h) for h in path]
    root = bytes.fromhex(ROOTS[size])
    verified = []
    for label, i, n, leaf, p, r in _corruptions(index, size, hashes[index], proof, root):
        try:
            merkle.verify_inclusion(i, n, leaf, p, r)
        except merkle.ProofError:
            continue
        verified.append(label)
    assert verified == []


@given(
    n=st.integers(min_value=1, max_value=300),
    chunk_bits=st.integers(min_value=0, max_value=5),
    data=st.data(),
)
def test_a_tree_kept_as_chunk_roots_has_the_same_root_and_paths(n, chunk_bits, data):
    """What checkpoints rely on: chunk roots of a power-of-two size are subtrees, so the root
    over them is the tree's root, and a leaf's path is its path in its chunk followed by its
    chunk's path among the chunk roots."""
    size = 1 << chunk_bits
    hashes = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    chunks = [hashes[i : i + size] for i in range(0, n, size)]
    chunk_roots = [merkle.root(c) for c in chunks]
    assert merkle.root(chunk_roots) == merkle.root(hashes)
    index = data.draw(st.integers(min_value=0, max_value=n - 1))
    c, offset = divmod(index, size)
    joined = merkle.inclusion_path(offset, chunks[c]) + merkle.inclusion_path(c, chunk_roots)
    assert joined == merkle.inclusion_path(index, hashes)
    merkle.verify_inclusion(index, n, hashes[index], joined, merkle.root(hashes))


def test_the_audit_logs_pure_modules_do_no_io():
    """Like tests/test_architecture.py's rule for rules.py: the hashing, checkpoint and FHIR
    code of the audit log imports no Firestore, HTTP or Google client (signing.py loads
    `cryptography`, a pure library, only when it signs or verifies)."""
    root = Path(__file__).resolve().parents[1] / "shared" / "audit"
    forbidden = ("google", "firebase_admin", "requests", "functions_framework", "shared.platform")
    found = []
    for name in ("merkle.py", "checkpoints.py", "fhir.py", "rules.py", "signing.py"):
        tree = ast.parse((root / name).read_text())
        for node in ast.walk(tree):
            modules = []
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            found += [
                f"{name}: {m}"
                for m in modules
                if any(m == f or m.startswith(f + ".") for f in forbidden)
                and not (name == "signing.py" and m == "shared.platform")
            ]
    assert found == []
