"""Witnesses (c2sp.org/tlog-witness, tlog-cosignature): the protocol, sans-IO, and a real
`interlock witness` process cosigning a real log, refusing a rewritten one, and a
verifier that requires its cosignature rejecting the rewritten checkpoint."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.audit import merkle
from interlock.audit.checkpoint import (
    CheckpointError,
    Signer,
    load_or_create_key,
    sign_checkpoint,
    signatures,
)
from interlock.audit.cosignature import Cosigner, Quorum, WitnessKey, cosigned_at
from interlock.audit.factory import log_for
from interlock.audit.witness import SIZE_TYPE, WitnessState
from interlock.config import load_config
from interlock.testing import FakeClock
from interlock.testing.services import free_port, wait_port
from tests.audit.conftest import audit_cli
from tests.audit.test_log import sample_records
from tests.audit.test_merkle import mth

ORIGIN = "interlock.test/audit"
LOG = Signer(ORIGIN, Ed25519PrivateKey.generate())


def leaves(tag: bytes, n: int) -> list[bytes]:
    """`n` leaf entries (records), distinct per tag."""
    return [tag + b"%d" % i for i in range(n)]


def proof(tree: list[bytes], old: int) -> list[bytes]:
    """RFC 9162 PROOF(old, tree), from the leaf hashes."""
    hashes = {i: merkle.leaf_hash(d) for i, d in enumerate(tree)}
    nodes = merkle.from_leaves(merkle.plan(merkle.consistency_ranges(old, len(tree))), hashes)
    return [merkle.range_hash(s, e, nodes) for s, e in merkle.consistency_ranges(old, len(tree))]


def request(tree: list[bytes], old: int, signer: Signer = LOG) -> bytes:
    note = sign_checkpoint(signer, signer.name, len(tree), mth(tree))
    lines = "".join(base64.b64encode(p).decode() + "\n" for p in proof(tree, old))
    return f"old {old}\n{lines}\n{note}".encode()


@pytest.fixture
def witness(tmp_path: Path) -> WitnessState:
    cosigner = Cosigner("witness.test/w1", Ed25519PrivateKey.generate())
    return WitnessState(cosigner, {ORIGIN: LOG.verifier}, tmp_path / "w.json", FakeClock())


def test_a_first_checkpoint_is_cosigned_and_the_cosignature_verifies(
    witness: WitnessState,
) -> None:
    tree = leaves(b"a", 5)
    answer = witness.add_checkpoint(request(tree, 0))
    assert answer.status == 200, answer.body
    note = sign_checkpoint(LOG, ORIGIN, 5, mth(tree))
    key = witness.cosigner.key
    assert base64.b64decode(key.encode().split("+", 2)[2])[:1] == b"\x04", "cosignature/v1 type"
    assert cosigned_at(note + answer.body, key) == int(witness.clock())
    # Its cosignature is over the checkpoint text only: another root does not carry it.
    other = sign_checkpoint(LOG, ORIGIN, 5, mth(leaves(b"b", 5)))
    with pytest.raises(ValueError, match="does not verify"):
        cosigned_at(other + answer.body, key)


def test_the_witness_refuses_what_the_protocol_says_to_refuse(
    witness: WitnessState, tmp_path: Path
) -> None:
    tree = leaves(b"a", 8)
    assert witness.add_checkpoint(request(tree[:5], 0)).status == 200
    stale = witness.add_checkpoint(request(tree, 0))
    assert (stale.status, stale.body, stale.content_type) == (409, "5\n", SIZE_TYPE)
    fork = leaves(b"a", 4) + leaves(b"b", 4)
    assert witness.add_checkpoint(request(fork, 5)).status == 422
    same_size = witness.add_checkpoint(request(leaves(b"c", 5), 5))
    assert (same_size.status, same_size.body) == (409, "5\n")
    stranger = Signer("other.test/log", Ed25519PrivateKey.generate())
    assert witness.add_checkpoint(request(tree, 0, stranger)).status == 404
    impostor = Signer(ORIGIN, Ed25519PrivateKey.generate())
    assert witness.add_checkpoint(request(tree, 5, impostor)).status == 403
    assert (
        witness.add_checkpoint(b"old 9\n\n" + request(tree, 0).split(b"\n\n", 1)[1]).status == 400
    )
    assert witness.add_checkpoint(b"nonsense").status == 400
    assert witness.add_checkpoint(request(tree, 5)).status == 200
    # Its record survives a restart: the fork is refused by the witness started again.
    again = WitnessState(witness.cosigner, {ORIGIN: LOG.verifier}, tmp_path / "w.json")
    assert again.seen(ORIGIN) == witness.seen(ORIGIN)
    assert again.add_checkpoint(request(fork + leaves(b"d", 2), 8)).status == 422


@settings(max_examples=60, deadline=None)
@given(
    old=st.integers(1, 40),
    shared=st.integers(0, 40),
    new=st.integers(1, 60),
)
def test_the_witness_cosigns_exactly_the_trees_that_extend_what_it_saw(
    tmp_path_factory: pytest.TempPathFactory, old: int, shared: int, new: int
) -> None:
    """A second tree shares its first `shared` leaves with the first: the witness that
    cosigned size `old` of the first cosigns it iff it extends that (RFC 9162)."""
    if new < old:
        return
    path = tmp_path_factory.mktemp("w") / "w.json"
    w = WitnessState(
        Cosigner("w.test/w", Ed25519PrivateKey.generate()), {ORIGIN: LOG.verifier}, path
    )
    first = leaves(b"a", old)
    second = leaves(b"a", min(shared, new)) + leaves(b"b", new - min(shared, new))
    assert w.add_checkpoint(request(first, 0)).status == 200
    extends = second[:old] == first
    status = w.add_checkpoint(request(second, old)).status
    assert (status == 200) == extends, (status, extends)


def witness_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "interlock.cli", "witness", *args]


def log_key(tmp_path: Path) -> str:
    """The verifier key of the log every config here signs with."""
    return Signer(ORIGIN, load_or_create_key(tmp_path / "log" / "audit.key")).verifier.encode()


@contextlib.contextmanager
def witness_process(tmp_path: Path, witness: str) -> Iterator[tuple[str, str]]:
    """A real `interlock witness serve` process following the log's key: (url, its key)."""
    wdir = tmp_path / witness.replace("/", "_")
    name = ["--name", witness, "--dir", str(wdir)]
    wkey = subprocess.run(witness_cli("key", *name), capture_output=True, text=True, check=True)
    port = free_port()
    proc = subprocess.Popen(
        witness_cli("serve", *name, "--log", log_key(tmp_path), "--listen", f"127.0.0.1:{port}"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_port(port, proc, "interlock witness")
        yield f"http://127.0.0.1:{port}", wkey.stdout.strip()
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with witness_process(tmp_path, "witness.test/w1") as w:
        yield w


def config(tmp_path: Path, name: str, *witnesses: str) -> Path:
    """A log config asking the witnesses given as url, key, url, key, ..."""
    cfg = tmp_path / f"{name}.toml"
    pairs = zip(witnesses[::2], witnesses[1::2], strict=True)
    listed = ", ".join(f'{{ url = "{u}", key = "{k}" }}' for u, k in pairs)
    cfg.write_text(
        f'data_dir = "{tmp_path / name}"\n[audit]\norigin = "{ORIGIN}"\n'
        f'key = "{tmp_path / "log" / "audit.key"}"\ncheckpoint_interval = 0\n'
        f"witnesses = [{listed}]\n"
    )
    return cfg


async def write(cfg: Path, n: int, op_clock: FakeClock | None = None) -> None:
    log = log_for(load_config(cfg))
    await log.start()
    for rec in await sample_records(n, clock=op_clock):
        await log.append(rec)
    await log.close()


def verify(cfg: Path, *wkeys: str, quorum: int = 0) -> subprocess.CompletedProcess[str]:
    key = log_key(cfg.parent)
    trusted = [a for w in wkeys for a in ("--witness", w)]
    k = ["--quorum", str(quorum)] if quorum else []
    out = audit_cli(
        "verify", "-c", str(cfg), "--key", key, *trusted, *k, "--max-unsigned-age", "1e9"
    )
    assert "Traceback" not in out.stderr, out.stderr
    return out


@pytest.mark.integration
def test_a_real_witness_refuses_a_rewritten_log_and_the_verifier_rejects_it(
    tmp_path: Path, served: tuple[str, str]
) -> None:
    url, wkey = served
    honest = config(tmp_path, "honest", url, wkey)
    asyncio.run(write(honest, 10))
    out = verify(honest, wkey)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "witnessed: checkpoint at size 10 cosigned by witness.test/w1" in out.stdout

    # The host rewrites history with the log's own key: a different log of 12 records,
    # re-signed; `audit checkpoint` (another process) asks the witness, which refuses.
    rewritten = config(tmp_path, "rewritten", url, wkey)
    asyncio.run(write(rewritten, 12, FakeClock(start=1_000_000.0)))
    done = audit_cli("checkpoint", "-c", str(rewritten))
    assert done.returncode == 0, done.stderr
    assert "witness witness.test/w1 refused size 12: 422" in done.stderr
    out = verify(rewritten, wkey)
    assert out.returncode == 1, out.stdout
    assert "not witnessed: the latest checkpoint (size 12) is cosigned by 0 of the 1" in out.stdout
    # The same split view at the very size the witness saw: 409, still not cosigned.
    same = config(tmp_path, "same", url, wkey)
    asyncio.run(write(same, 10, FakeClock(start=2_000_000.0)))
    assert verify(same, wkey).returncode == 1

    # The honest log goes on: its next checkpoint is cosigned, from a consistency proof.
    asyncio.run(write(honest, 5))
    out = verify(honest, wkey)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "witnessed: checkpoint at size 15" in out.stdout
    exported = audit_cli("export", "-c", str(honest), str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stderr
    notes = sorted((tmp_path / "export" / "checkpoints").glob("*.note"))
    text, _ = signatures(notes[-1].read_text("utf-8"))
    assert text.split("\n")[1] == "15"
    assert cosigned_at(notes[-1].read_text("utf-8"), WitnessKey.parse(wkey)) is not None
    key = log_key(tmp_path)
    bundle = audit_cli(
        "verify",
        "--bundle",
        str(tmp_path / "export"),
        "--key",
        key,
        "--witness",
        wkey,
        "--max-unsigned-age",
        "1e9",
    )
    assert bundle.returncode == 0, bundle.stdout


@pytest.mark.integration
def test_a_quorum_of_two_witness_processes_and_one_going_away(tmp_path: Path) -> None:
    with (
        witness_process(tmp_path, "witness.test/a") as (url_a, key_a),
        witness_process(tmp_path, "witness.test/b") as (url_b, key_b),
    ):
        cfg = config(tmp_path, "log", url_a, key_a, url_b, key_b)
        asyncio.run(write(cfg, 5))
        out = verify(cfg, key_a, key_b)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "cosigned by witness.test/a, witness.test/b" in out.stdout
    # Both stopped; a new checkpoint gets no cosignature: 2 of 2 and 1 of 2 both fail.
    asyncio.run(write(cfg, 3))
    failed = verify(cfg, key_a, key_b, quorum=1)
    assert failed.returncode == 1
    assert "(size 8) is cosigned by 0 of the 2 witnesses you trust, 1 required" in failed.stdout
    with witness_process(tmp_path, "witness.test/a") as (url_a, _):
        # One back (its state kept): it cosigns from size 5, 1 of 2 suffices, 2 of 2 not.
        cfg = config(tmp_path, "log", url_a, key_a, url_b, key_b)
        assert audit_cli("checkpoint", "-c", str(cfg)).returncode == 0
        asyncio.run(write(cfg, 1))
        assert verify(cfg, key_a, key_b, quorum=1).returncode == 0
        short = verify(cfg, key_a, key_b)
        assert "cosigned by 1 of the 2 witnesses you trust, 2 required" in short.stdout


def test_a_size_zero_checkpoint_has_one_root(witness: WitnessState) -> None:
    """Two size-0 checkpoints with different roots were both cosigned: the witness vouched
    for two histories of one size."""
    for tag in (b"x", b"y"):
        note = sign_checkpoint(LOG, ORIGIN, 0, hashlib.sha256(tag).digest())
        assert witness.add_checkpoint(f"old 0\n\n{note}".encode()).status == 400
    empty = sign_checkpoint(LOG, ORIGIN, 0, merkle.EMPTY_ROOT)
    assert witness.add_checkpoint(f"old 0\n\n{empty}".encode()).status == 200


def test_one_witness_key_given_twice_is_refused_as_a_quorum() -> None:
    # (review: the same key twice, or under two names, counted one cosignature twice)
    private = Ed25519PrivateKey.generate()
    one = Cosigner("witness.test/a", private).key
    same = Cosigner("witness.test/b", private).key
    other = Cosigner("witness.test/c", Ed25519PrivateKey.generate()).key
    for keys in ((one, one), (one, same)):
        with pytest.raises(CheckpointError, match="more than once"):
            Quorum(keys, 2)
    assert Quorum((one, other), 2).k == 2
