"""A Jitsi token for a person and a room, as the policy decides it (or a refusal).

Shared by ``/oidc/tokenize`` and the token service, so both mint exactly what the policy
allows for that room.
"""

from __future__ import annotations

import logging

from adapters.base import Identity
from gateway.errors import GatewayError
from gateway.jitsi import JitsiTokens, MintedToken
from gateway.policy import Decision, Policy

log = logging.getLogger(__name__)


def room_token(
    policy: Policy, tokens: JitsiTokens, identity: Identity, room: str, tenant: str | None
) -> tuple[MintedToken, Decision]:
    decision = policy.room(identity, room, tenant)
    log.debug(
        "room %s for %s: %s (%s)",
        room,
        identity.user_id,
        "allowed" if decision.allowed else "refused",
        " | ".join(decision.trail),
    )
    if not decision.allowed:
        raise GatewayError("policy_denied", decision.reason, rule=decision.rule)
    minted = tokens.mint(
        identity,
        room,
        tenant,
        user_extra=decision.user_claims(),
        features=decision.features,
        lifetime=decision.token_lifetime_seconds,
        wildcard_room=decision.wildcard_room,
    )
    return minted, decision
