"""``jitsi-oidc-gateway policy explain``: evaluate the policy offline, print the rule trail.

The identity comes either from a claims file run through the IdP's own adapter (exactly what
a login would produce) or from ``--groups/--roles/--email`` given by hand; names given by hand
without an ``<idp>:`` prefix get the IdP's prefix, as the adapters emit them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from adapters.base import AdapterError, Identity
from gateway.config import ConfigError, Settings, load_settings_file, settings_file
from gateway.policy import Decision, Policy
from gateway.rooms import valid_room
from gateway.store.identity_doc import identity_to_document


def add_parser(sub: Any) -> None:
    policy = sub.add_parser("policy", help="test the authorization policy offline")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    p = policy_sub.add_parser("explain", help="decide sign-in and a room for one identity")
    p.add_argument("-c", "--config", help="settings file (default: ./settings.yaml)")
    p.add_argument("--idp", required=True, help="IdP id from the settings")
    p.add_argument("--room", required=True)
    p.add_argument("--claims", help="JSON file of ID-token claims, mapped by the IdP's adapter")
    p.add_argument("--groups", default="", help="comma-separated group names")
    p.add_argument("--roles", default="", help="comma-separated role names")
    p.add_argument("--email")
    p.add_argument("--email-verified", action="store_true")
    p.add_argument("--tenant", help="the identity's tenant (hd, tid, realm)")
    p.add_argument("--url-tenant", help="the tenant in the room URL (/<tenant>/<room>)")
    p.add_argument("--groups-unknown", action="store_true", help="as after an Entra overage")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_explain)


def _names(idp: str, raw: str) -> tuple[str, ...]:
    names = [n.strip() for n in raw.split(",") if n.strip()]
    return tuple(n if n.startswith(f"{idp}:") else f"{idp}:{n}" for n in names)


def build_identity(settings: Settings, args: argparse.Namespace) -> Identity:
    from gateway.idps import open_adapters
    from gateway.plugins import discover

    idp = settings.idp(args.idp)
    if idp is None:
        known = ", ".join(i.id for i in settings.idps)
        raise ConfigError([f"--idp: unknown IdP id {args.idp!r} (configured: {known})"])
    if args.claims:
        try:
            claims = json.loads(Path(args.claims).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError([f"--claims: cannot read {args.claims}: {exc}"]) from None
        if not isinstance(claims, dict):
            raise ConfigError(["--claims: the file must hold a JSON object"])
        claims.setdefault("iss", idp.issuer)
        adapter = open_adapters(settings, discover())[idp.id]
        try:
            return adapter.identity(claims, None)
        except AdapterError as exc:
            raise ConfigError([f"--claims: the {idp.adapter} adapter refuses: {exc}"]) from None
    return Identity(
        idp=idp.id,
        issuer=idp.issuer,
        subject="(explain)",
        username="(explain)",
        name="(explain)",
        email=args.email,
        email_verified=args.email_verified,
        groups=() if args.groups_unknown else _names(idp.id, args.groups),
        roles=_names(idp.id, args.roles),
        groups_complete=not args.groups_unknown,
        tenant=args.tenant,
    )


def _describe(title: str, decision: Decision) -> list[str]:
    lines = [f"{title}: {'ALLOWED' if decision.allowed else 'REFUSED'} by {decision.rule}"]
    lines.append(f"  why: {decision.reason}")
    lines += [f"  {step}" for step in decision.trail]
    return lines


def cmd_explain(args: argparse.Namespace) -> int:

    settings = load_settings_file(settings_file(args.config))
    if not valid_room(args.room):
        raise ConfigError([f"--room: {args.room!r} is not a room name the gateway accepts"])
    identity = build_identity(settings, args)
    policy = Policy(settings.policy, settings.email_trust())
    sign_in = policy.sign_in(identity)
    room = policy.room(identity, args.room, args.url_tenant)
    if args.json:
        print(
            json.dumps(
                {
                    "identity": identity_to_document(identity),
                    "sign_in": _as_dict(sign_in),
                    "room": {"name": args.room.lower(), **_as_dict(room)},
                },
                indent=2,
            )
        )
    else:
        print(
            f"identity: {identity.idp} groups={list(identity.groups)} roles={list(identity.roles)}"
            f" email={identity.email} verified={identity.email_verified}"
            f" tenant={identity.tenant}"
        )
        print(_email_line(identity, settings.email_trust().get(identity.idp, ())))
        for line in _describe("sign-in", sign_in) + _describe(f"room {args.room.lower()}", room):
            print(line)
        if room.allowed:
            print(
                f"token: affiliation={room.affiliation} moderator={room.moderator} "
                f"features={room.features} room={'*' if room.wildcard_room else args.room.lower()}"
                f" lifetime={room.token_lifetime_seconds or settings.jitsi.token_lifetime_seconds}s"
            )
            print(f"token scope: {room.scope}")
    return 0 if sign_in.allowed and room.allowed else 1


def _email_line(identity: Identity, trusted: tuple[str, ...]) -> str:
    """Whether the e-mail's domain can count for ``email_domains`` rules, and why."""
    if not identity.email:
        return "e-mail domain: none (email_domains rules cannot hold)"
    domain = identity.email.rpartition("@")[2].lower()
    if not identity.email_verified:
        return f"e-mail domain {domain}: does not count (not verified by the IdP)"
    if domain not in trusted:
        return (
            f"e-mail domain {domain}: does not count (IdP {identity.idp} is not trusted for it;"
            f" its email_domains: {list(trusted)})"
        )
    return f"e-mail domain {domain}: counts (verified, IdP {identity.idp} is trusted for it)"


def _as_dict(decision: Decision) -> dict[str, Any]:
    return {
        "allowed": decision.allowed,
        "rule": decision.rule,
        "reason": decision.reason,
        "trail": list(decision.trail),
        "affiliation": decision.affiliation,
        "moderator": decision.moderator,
        "features": decision.features,
        "wildcard_room": decision.wildcard_room,
        "scope": decision.scope,
        "token_lifetime_seconds": decision.token_lifetime_seconds,
    }
