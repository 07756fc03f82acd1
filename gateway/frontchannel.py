"""OpenID Connect Front-Channel Logout 1.0: the IdP's logout page frames
``/oidc/frontchannel-logout/<idp id>?iss=...&sid=...`` and the gateway ends that IdP session's
gateway sessions (and their token-service refresh tokens).

Entra ID, for one, sends no back-channel logout; this is how its sign-outs reach us. The
request is a GET any page could make, so it ends only what names a secret the IdP and the
gateway share: ``iss`` must be the IdP's and ``sid`` the IdP session id it put into the ID
token (``frontchannel_logout_session_required``). Without a session cookie (a browser that
keeps third-party cookies from frames) the sessions are found by ``sid`` in the store; with
one, the cookie's session ends only if it is that IdP session.

LemonLDAP::NG 2.16 puts no ``sid`` into its ID tokens and sends the subject (``sub``) as
``sid``. A subject is no secret, so it never finds sessions in the store: it ends only the
session of the request's own cookie, and only one whose ID token carried no ``sid`` and
whose ``sub`` it is (the portal's logout page frames us in that person's browser), and
not for a link followed at the top level (``Sec-Fetch-Dest: document``): that request
carries the ``SameSite=Lax`` cookie from any site.

Only the IdP's own origin may frame the page (``frame-ancestors``), and a request whose
``Referer`` names another origin is refused (``cross_site_request``): a page elsewhere
framing it ends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gateway.auditing import Caller
from gateway.errors import GatewayError
from gateway.hashing import sha256_hex
from gateway.idps import ConfiguredIdP

if TYPE_CHECKING:
    from gateway.context import Gateway

MAX_SID = 256


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


async def idp_origins(idp: ConfiguredIdP) -> list[str]:
    """Origins whose pages may frame this IdP's logout URI: the issuer's and, where it
    differs, the end-session endpoint's."""
    origins = [origin_of(idp.config.issuer)]
    try:
        meta = await idp.rp.metadata()
    except GatewayError:
        return origins
    for url in (meta.issuer, meta.end_session_endpoint):
        if url and origin_of(url) not in origins:
            origins.append(origin_of(url))
    return origins


async def _names_own_session(
    gateway: Gateway, session_id: str, idp: ConfiguredIdP, sid: str
) -> bool:
    """The cookie's session, from an ID token without ``sid``, of the subject ``sid``
    names (LemonLDAP::NG 2.16's front-channel logout)."""
    record = await gateway.store.sessions.record(session_id, gateway.now())
    return (
        record is not None
        and record.identity.idp == idp.id
        and record.idp_sid is None
        and record.idp_sub == sid
    )


@dataclass(frozen=True)
class FrontchannelDone:
    ended: int


async def frontchannel_logout(
    gateway: Gateway,
    caller: Caller,
    idp: ConfiguredIdP,
    *,
    iss: str | None,
    sid: str | None,
    referer: str | None,
    fetch_dest: str | None = None,
) -> FrontchannelDone:
    """Check and end; raises GatewayError (audited by the caller) on a refusal."""
    if referer is not None and origin_of(referer) not in await idp_origins(idp):
        raise GatewayError("cross_site_request", "front-channel logout framed by another origin")
    if not iss or not sid or len(sid) > MAX_SID or len(iss) > 2048:
        raise GatewayError("frontchannel_logout_invalid", "iss and sid are both required")
    meta = await idp.rp.metadata()
    if not idp.rp.accepts_issuer(meta.issuer, iss):
        raise GatewayError("frontchannel_logout_invalid", "iss is not this IdP's issuer")
    sessions = gateway.store.sessions
    keys = set(await sessions.keys_at_idp(idp.id, sid))
    if caller.session_id:
        own = sha256_hex(caller.session_id)
        framed = fetch_dest is None or fetch_dest == "iframe"
        if (
            own not in keys
            and framed
            and await _names_own_session(gateway, caller.session_id, idp, sid)
        ):
            keys.add(own)
        if own in keys:
            caller.end_session()
    ended = await sessions.delete_hashed(sorted(keys))
    for key in keys:
        await gateway.store.grants.revoke_session(key)
    await gateway.audit(
        caller,
        "frontchannel_logout",
        "success",
        idp=idp.id,
        idp_sid_hash=sha256_hex(sid)[:32],
        sessions_ended=ended,
    )
    return FrontchannelDone(ended)
