"""The stored form of an Identity (gateway.store.identity_doc): the exact field order and
values that live session documents already have, and documents written before newer
fields existed still load."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import bson

from adapters.base import Identity
from gateway.auditing import Auditor, Caller
from gateway.store.identity_doc import identity_from_document, identity_to_document

FULL = Identity(
    idp="kc",
    issuer="https://kc.example/realms/staff",
    subject="u-1",
    username="ada",
    name="Ada Lovelace",
    email="ada@example.org",
    email_verified=True,
    groups=("kc:/staff", "kc:staff"),
    roles=("kc:admin",),
    groups_complete=False,
    tenant="staff",
    picture="https://kc.example/ada.png",
    extra={"department": "R&D"},
)

# The format as sessions.py wrote it while it was Identity.to_document (key order included:
# BSON keeps it, so the stored bytes stay the same).
STORED = [
    ("idp", "kc"),
    ("issuer", "https://kc.example/realms/staff"),
    ("subject", "u-1"),
    ("username", "ada"),
    ("name", "Ada Lovelace"),
    ("email", "ada@example.org"),
    ("email_verified", True),
    ("groups", ["kc:/staff", "kc:staff"]),
    ("roles", ["kc:admin"]),
    ("groups_complete", False),
    ("tenant", "staff"),
    ("picture", "https://kc.example/ada.png"),
    ("extra", {"department": "R&D"}),
]


def test_stored_form_is_unchanged() -> None:
    doc = identity_to_document(FULL)
    assert list(doc.items()) == STORED
    assert bson.encode(doc) == bson.encode(dict(STORED))


def test_round_trip_through_bson() -> None:
    assert identity_from_document(bson.decode(bson.encode(identity_to_document(FULL)))) == FULL


def test_older_document_without_newer_fields_loads() -> None:
    old = {"idp": "g", "issuer": "https://accounts.google.com", "subject": "1"}
    old |= {"username": "u", "name": "U", "email": None, "groups": ["g:x"]}
    identity = identity_from_document(old)
    assert identity.groups == ("g:x",) and identity.roles == ()
    assert identity.groups_complete is True and identity.email_verified is False
    assert (identity.tenant, identity.picture, dict(identity.extra)) == (None, None, {})


def test_contract_no_longer_carries_the_storage_format() -> None:
    assert not hasattr(Identity, "to_document")
    assert not hasattr(Identity, "from_document")


def test_claims_beyond_64_bits_are_stored_as_text() -> None:
    """A JSON claim may carry any integer; BSON stops at 64 bits. An allow-listed claim of
    2**64 made the session insert (and the audit event) fail, so the sign-in ended in a 500.
    Such integers are kept as their decimal text, nested ones too; the rest is unchanged."""
    extra = {
        "big": 2**64,
        "low": -(2**63) - 1,
        "edge": 2**63 - 1,
        "flag": True,
        "nested": {"ids": [1, 10**30, ("x", 2**70)]},
    }
    huge = replace(FULL, extra=extra)
    doc = bson.decode(bson.encode(identity_to_document(huge)))
    assert doc["extra"] == {
        "big": str(2**64),
        "low": str(-(2**63) - 1),
        "edge": 2**63 - 1,
        "flag": True,
        "nested": {"ids": [1, str(10**30), ["x", str(2**70)]]},
    }
    caller = Caller(client_ip="192.0.2.1", user_agent="ua", request_id="r", session_id=None,
                    flow_binding=None)  # fmt: skip
    auditor = Auditor(log=None, now=lambda: datetime.now(UTC))  # type: ignore[arg-type]
    event = auditor.document(caller, "login_succeeded", "success", identity=huge)
    assert bson.decode(bson.encode(event))["extra"]["big"] == str(2**64)
