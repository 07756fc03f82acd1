"""How an ``Identity`` is stored: the session document's ``identity`` field.

The storage format belongs to the store, not to the adapter contract: adapters return an
``Identity`` and never see how it is kept. The field names and order are the format that
live sessions already have in MongoDB (and that session administration, the indexes on
``identity.idp`` / ``identity.subject`` / ``identity.username`` and ``policy explain
--json`` read), so they must not change without a migration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.base import Identity


def identity_to_document(identity: Identity) -> dict[str, Any]:
    """The stored form: tuples as lists, ``extra`` as a plain dict (BSON has no tuples)."""
    return {
        "idp": identity.idp,
        "issuer": identity.issuer,
        "subject": identity.subject,
        "username": identity.username,
        "name": identity.name,
        "email": identity.email,
        "email_verified": identity.email_verified,
        "groups": list(identity.groups),
        "roles": list(identity.roles),
        "groups_complete": identity.groups_complete,
        "tenant": identity.tenant,
        "picture": identity.picture,
        "extra": storable(identity.extra),
    }


INT64 = range(-(2**63), 2**63)


def storable(value: Any) -> Any:
    """``value`` (claims an adapter passed on) as BSON can hold it: integers beyond 64 bits
    become their decimal text, tuples lists. A JSON claim may carry any integer; BSON
    stops at 64 bits, and the session or audit insert would fail on it."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if value in INT64 else str(value)
    if isinstance(value, Mapping):
        return {key: storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    return value


def identity_from_document(doc: Mapping[str, Any]) -> Identity:
    """Back from the stored form; fields added later default as in older documents."""
    return Identity(
        idp=doc["idp"],
        issuer=doc["issuer"],
        subject=doc["subject"],
        username=doc["username"],
        name=doc["name"],
        email=doc.get("email"),
        email_verified=bool(doc.get("email_verified", False)),
        groups=tuple(doc.get("groups", ())),
        roles=tuple(doc.get("roles", ())),
        groups_complete=bool(doc.get("groups_complete", True)),
        tenant=doc.get("tenant"),
        picture=doc.get("picture"),
        extra=dict(doc.get("extra", {})),
    )
