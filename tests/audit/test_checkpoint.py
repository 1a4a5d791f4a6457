"""C2SP signed checkpoints: round trip, key handling, and every kind of forgery."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.audit.checkpoint import (
    CheckpointError,
    Signer,
    Verifier,
    load_or_create_key,
    open_checkpoint,
    sign_checkpoint,
)

ROOT = hashlib.sha256(b"root").digest()
SIGNER = Signer("interlock.test/audit", Ed25519PrivateKey.generate())


def test_round_trip_and_exact_format() -> None:
    note = sign_checkpoint(SIGNER, "interlock.test/audit", 42, ROOT)
    lines = note.split("\n")
    assert lines[:4] == ["interlock.test/audit", "42", base64.b64encode(ROOT).decode(), ""]
    assert lines[4].startswith("\u2014 interlock.test/audit ")
    assert len(base64.b64decode(lines[4].split(" ")[-1])) == 4 + 64
    assert note.endswith("\n")
    cp = open_checkpoint(note, SIGNER.verifier)
    assert (cp.origin, cp.size, cp.root) == ("interlock.test/audit", 42, ROOT)


def test_key_id_follows_the_c2sp_recommendation() -> None:
    v = SIGNER.verifier
    expected = hashlib.sha256(v.name.encode() + b"\n\x01" + v.public).digest()[:4]
    assert v.id == expected


def test_verifier_key_round_trips() -> None:
    text = SIGNER.verifier.encode()
    assert Verifier.parse(text) == SIGNER.verifier
    name, hexid, _ = text.split("+", 2)
    assert name == "interlock.test/audit"
    assert len(hexid) == 8


@pytest.mark.parametrize(
    "text",
    [
        "nope",
        "a+b+c",
        "n+00000000+AAAA",
        "n+" + "0" * 8 + "+" + base64.b64encode(b"\x01" + b"\0" * 32).decode(),
    ],
)
def test_malformed_or_mismatched_verifier_keys_are_refused(text: str) -> None:
    with pytest.raises(CheckpointError):
        Verifier.parse(text)


def test_another_key_is_rejected() -> None:
    other = Signer("interlock.test/audit", Ed25519PrivateKey.generate())
    note = sign_checkpoint(other, "interlock.test/audit", 42, ROOT)
    with pytest.raises(CheckpointError, match="no signature by the trusted key"):
        open_checkpoint(note, SIGNER.verifier)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda n: n.replace("\n42\n", "\n43\n"),
        lambda n: n.replace("interlock.test/audit\n", "interlock.evil/audit\n", 1),
        lambda n: n[:-10] + ("A" if n[-10] != "A" else "B") + n[-9:],
    ],
    ids=["size", "origin", "signature"],
)
def test_tampered_notes_are_rejected(mutate: object) -> None:
    note = sign_checkpoint(SIGNER, "interlock.test/audit", 42, ROOT)
    assert callable(mutate)
    with pytest.raises(CheckpointError):
        open_checkpoint(mutate(note), SIGNER.verifier)


@pytest.mark.parametrize(
    "note",
    ["", "just text\n", "a\n1\nroot\n\nnot a sig\n", "a\n1\n\x01\n\n\u2014 x AAAA\n", "x" * 70_000],
)
def test_garbage_is_rejected(note: str) -> None:
    with pytest.raises(CheckpointError):
        open_checkpoint(note, SIGNER.verifier)


def test_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "audit.key"
    first = load_or_create_key(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again = load_or_create_key(path)
    assert Signer("n", first).verifier == Signer("n", again).verifier


def test_a_non_ed25519_key_file_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = tmp_path / "audit.key"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(path, 0o600)
    with pytest.raises(CheckpointError, match="not an Ed25519"):
        load_or_create_key(path)


def _noncanonical(root: bytes) -> str:
    """The root in base64 with the unused low bits of its last character set: it decodes
    to the same bytes."""
    text = base64.b64encode(root).decode()
    return text[:-2] + chr(ord(text[-2]) + 1) + "="


@pytest.mark.parametrize(
    ("size", "root"),
    [
        ("\u00b2", base64.b64encode(ROOT).decode()),  # isdigit, but int() raised ValueError
        ("\u0661\u0662", base64.b64encode(ROOT).decode()),  # read as 12; Go's tlog refuses
        (str(2**63), base64.b64encode(ROOT).decode()),  # past int64
        ("5", _noncanonical(ROOT)),  # a second spelling of the same checkpoint
    ],
    ids=["superscript", "arabic-indic", "past-int64", "non-canonical-root"],
)
def test_a_signed_note_every_verifier_would_not_read_alike_is_refused(size: str, root: str) -> None:
    """Signed by the log's own key (a host that holds it, talking to a witness), these
    parsed (or raised a bare ValueError, a 500 from the witness) instead of refusing."""
    assert base64.b64decode(_noncanonical(ROOT)) == ROOT
    note = SIGNER.sign(f"interlock.test/audit\n{size}\n{root}\n")
    with pytest.raises(CheckpointError):
        open_checkpoint(note, SIGNER.verifier)
