"""The adapter contract: what an IdP adapter receives and what it returns.

An adapter is constructed once per configured IdP at start-up (``Adapter(idp_id, options)``,
options validated by the adapter's own ``Options`` model) and then called for every login
with claims the gateway has already validated (signature, issuer, audience, times, nonce).
It must not do I/O in ``identity``; optional capabilities are separate protocols, detected
with ``isinstance``, in the spirit of Dex's connector interface.

Adapters raise :class:`AdapterError` with a machine-readable ``reason`` for claims they
cannot accept; the gateway turns that into a refusal page and an audit event.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

Claims = Mapping[str, Any]


class AdapterError(Exception):
    """Claims an adapter cannot use (audited as ``claims_invalid``).

    ``reason`` is a short code of the adapter's own; the message is for operators (it goes
    to the audit log, never to the person) and must not contain tokens or secrets.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AccessDenied(AdapterError):
    """Valid claims of a person this IdP configuration does not admit (audited as
    ``policy_denied``): a Workspace domain, tenant or group outside the allowed ones."""


@dataclass(frozen=True)
class Identity:
    """A signed-in person, normalised across IdPs.

    The stable key is ``(idp, issuer, subject)``. ``email_verified`` is what the IdP asserted,
    never defaulted to true. Groups and roles are namespaced ``"<idp>:<name>"`` so two IdPs'
    groups of the same name never mix. ``groups_complete`` is false when the IdP signalled
    that the list was cut (for example Entra's overage marker). ``picture`` becomes the Jitsi
    avatar only where the IdP entry sets ``picture_avatar``; ``extra`` (allow-listed claims)
    is kept in the session and audit events, never read by the policy.
    """

    idp: str
    issuer: str
    subject: str
    username: str
    name: str
    email: str | None = None
    email_verified: bool = False
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    groups_complete: bool = True
    tenant: str | None = None
    picture: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def user_id(self) -> str:
        """The id Jitsi sees: unique across IdPs."""
        return f"{self.idp}:{self.subject}"


class AdapterOptions(BaseModel):
    """Base for an adapter's ``Options``: unknown keys are refused, values frozen.

    The gateway refuses unknown option keys for *any* options model, so a plain
    ``pydantic.BaseModel`` is strict too (a mistyped ``allowed_org:`` never silently turns a
    check off). Only a model that says ``model_config = ConfigDict(extra="allow")`` accepts
    keys it does not declare. Nested models are checked by pydantic alone: derive them
    from this class too.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoOptions(AdapterOptions):
    pass


@dataclass(frozen=True)
class ConfigProblem:
    """A start-up problem about any key of the IdP entry, not only its options.

    ``field`` is relative to the entry (``issuer``, ``scopes``, ``options.tenant``); the
    gateway reports it as ``idps[N].<field>: <message>``. ``check_config`` may also return
    plain strings, which are relative to ``options`` (``allowed_tenants: required ...``).
    """

    field: str
    message: str


class Adapter(ABC):
    """Base class for IdP adapters. Subclasses set ``Options`` and implement ``identity``."""

    Options: ClassVar[type[BaseModel]] = NoOptions
    #: One line shown by ``jitsi-oidc-gateway adapters``.
    description: ClassVar[str] = ""

    def __init__(self, idp_id: str, options: BaseModel) -> None:
        self.idp_id = idp_id
        self.options = options

    def check_config(self, issuer: str) -> list[str | ConfigProblem]:
        """Problems with this IdP entry, checked once at start-up (and by ``check-config``).

        A string is about an option (``"allowed_tenants: required ..."``, reported under
        ``idps[N].options.``); a :class:`ConfigProblem` names any key of the entry.
        """
        return []

    @abstractmethod
    def identity(self, claims: Claims, userinfo: Claims | None) -> Identity:
        """Map validated ID-token claims (and userinfo, when configured) to an Identity."""

    def namespaced(self, names: Sequence[str]) -> tuple[str, ...]:
        """Prefix group/role names with this IdP's id, dropping empties and duplicates."""
        seen: dict[str, None] = {}
        for name in names:
            if name:
                seen.setdefault(f"{self.idp_id}:{name}", None)
        return tuple(seen)


@runtime_checkable
class AuthorizationParams(Protocol):
    """Optional: extra query parameters for the authorization request."""

    def authorization_params(self, login_hint: str | None) -> Mapping[str, str]: ...


@runtime_checkable
class IssuerResolver(Protocol):
    """Optional: issuers other than the configured one (templated issuers such as Entra's
    ``{tenantid}``). Both rules live with the adapter; the gateway has none of its own.

    ``resolve_issuer``: the issuer an ID token with these claims must carry.
    ``accepts_issuer``: whether an RFC 9207 ``iss`` response parameter (or a back-channel
    logout token's unverified ``iss``, to find its IdP) may belong to this IdP; it is read
    before any token is verified, so it must be as narrow as the template allows.
    """

    def resolve_issuer(self, configured: str, claims: Claims) -> str: ...

    def accepts_issuer(self, configured: str, value: str) -> bool: ...


class JsonHttp(Protocol):
    """The outbound HTTP client the gateway hands to enrichers (timeouts, quiet logs)."""

    async def get_json(
        self, url: str, headers: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> Any: ...


@runtime_checkable
class IdentityEnricher(Protocol):
    """Optional: complete an Identity after login (e.g. fetch groups); may do async I/O.

    Raise AdapterError to refuse the login; the gateway's HTTP errors (``UpstreamError``)
    are reported as ``claims_invalid`` too.
    """

    async def enrich(
        self, identity: Identity, access_token: str | None, http: JsonHttp
    ) -> Identity: ...


#: OpenID Connect Core 2 caps ``sub`` at 255 ASCII characters; the gateway holds every
#: adapter's subject to the same bound (it keys sessions, audit events and Jitsi's user id).
MAX_SUBJECT_LENGTH = 255
#: C0 and C1 control characters (and DEL): never part of an identifier a person can read.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def subject_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a subject, or None: a string, not blank after trimming (a
    blank subject would make everyone the IdP gives it one person), no control characters,
    at most :data:`MAX_SUBJECT_LENGTH` characters. Adapters may call it to refuse early;
    the gateway checks every adapter's output with :func:`identity_problems` regardless."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not value.strip():
        return "is blank"
    if len(value) > MAX_SUBJECT_LENGTH:
        return f"is {len(value)} characters long, at most {MAX_SUBJECT_LENGTH} allowed"
    if _CONTROL.search(value):
        return "contains control characters"
    return None


def identity_problems(identity: Any, idp_id: str) -> list[str]:
    """What in ``identity`` breaks the contract (empty when nothing does).

    The gateway refuses (``claims_invalid``) any adapter's Identity with a problem here,
    after ``identity()`` and after enrichment, so a plugin cannot sign in a blank subject or
    pass ``"false"`` as a verified e-mail; the conformance kit reports the same list. These
    are what the rest of the gateway relies on without checking again: the stable key,
    namespaced groups and booleans that are booleans.
    """
    if not isinstance(identity, Identity):
        return [f"identity() returned {type(identity).__name__}, not adapters.base.Identity"]
    problems: list[str] = []
    if identity.idp != idp_id:
        problems.append(f"idp is {_short(identity.idp)}, not the adapter's idp_id {idp_id!r}")
    if not isinstance(identity.issuer, str) or not identity.issuer:
        problems.append(f"issuer must be a non-empty string, got {_short(identity.issuer)}")
    problem = subject_problem(identity.subject)
    if problem:
        problems.append(f"subject {problem}: {_short(identity.subject)}")
    for name in ("username", "name"):  # shown to people and operators
        value = getattr(identity, name)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{name} must be a non-blank string, got {_short(value)}")
    for name in ("email", "tenant", "picture"):
        value = getattr(identity, name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            problems.append(f"{name} must be None or a non-empty string, got {_short(value)}")
    for name in ("email_verified", "groups_complete"):
        value = getattr(identity, name)
        if not isinstance(value, bool):  # "false" is a truthy string: never verified
            problems.append(f"{name} must be a bool, got {_short(value)}")
    prefix = f"{idp_id}:"
    for name in ("groups", "roles"):
        value = getattr(identity, name)
        if not isinstance(value, tuple):
            problems.append(f"{name} must be a tuple, got {type(value).__name__}")
            continue
        for item in value:
            if not isinstance(item, str) or not item.startswith(prefix) or item == prefix:
                problems.append(
                    f"{name} entries must be strings namespaced {prefix!r} "
                    f"(use self.namespaced()), got {_short(item)}"
                )
                break
        if len(set(value)) != len(value):
            problems.append(f"{name} has duplicates: {_short(value)}")
    if not isinstance(identity.extra, Mapping):
        problems.append(f"extra must be a mapping, got {type(identity.extra).__name__}")
    return problems


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def claim_path(claims: Claims, path: str) -> Any:
    """Read a dotted path (``realm_access.roles``) from nested claims; None when absent."""
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def string_list(value: Any) -> list[str]:
    """A claim that should be a list of strings: a list, a single string, or nothing."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str)]
    return []
