"""The ``state`` Jitsi's login button appends to ``tokenAuthUrl``, and what survives of it.

Jitsi Meet (``config.tokenAuthUrl = 'https://meet.example.com/oidc/auth?state={state}'``)
fills ``{state}`` with URL-encoded JSON (``_getTokenAuthState`` in
``react/features/authentication/functions.any.ts``): ``room``, ``roomSafe``, ``tenant``,
``refreshToken`` when it has one, the person's pre-join choices as ``config.*`` keys, every
``config.*`` / ``interfaceConfig.*`` / ``iceServers.*`` override from the room URL's hash
(any JSON value, as Jitsi's ``parseURLParams`` parsed it), and ``ios`` / ``android`` (the
mobile apps) or ``electron`` (the desktop app) set to true.

What the gateway keeps: the room and the tenant (same strict name rules as the ``room``
parameter), the overrides on the allow-list below (handed back in the room URL's hash), and
which app asked. Everything else is dropped. The state is bounded in size and nesting and is
never a redirect target: the browser only ever goes back to the configured Jitsi base URL or
a configured app scheme.

Which overrides: a link through the IdP's login page must be no better for an attacker than
a plain room link, and the gateway should not vouch for more than the person chose. Jitsi
applies its own whitelist to hash overrides, but that list lets through keys that point the
client at other servers or scripts (``analytics.*`` such as ``watchRTCEnabled`` and its
parameters) and grows with every release. So the gateway carries only ``config.*`` keys whose
first segment is in ``CONFIG_KEYS`` (the pre-join choices Jitsi's login button writes, and
presentation and media choices: nothing that names a host, URL, script, service, TURN/STUN
server or analytics) and ``interfaceConfig.*`` keys in ``INTERFACE_CONFIG_KEYS`` (display
flags; no link or logo URLs, no product names). ``iceServers.*`` (TURN servers) is never
carried. Anything else a state holds (``config.hosts.*``, ``config.bosh``,
``config.websocket``, ``config.analytics.*``, ``iceServers.replace``, ...) is dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway import jsonlimits
from gateway.errors import GatewayError
from gateway.rooms import valid_room, valid_tenant

MAX_STATE = 8192
MAX_KEYS = 128
MAX_DEPTH = 8
OVERRIDE_PREFIXES = ("config.", "interfaceConfig.", "iceServers.")
# Jitsi's parseURLParams takes the key up to '=' verbatim and ignores these path segments.
OVERRIDE_KEY = re.compile(r"(?:config|interfaceConfig|iceServers)(?:\.[A-Za-z0-9_-]{1,64}){1,6}")
IGNORED_SEGMENTS = frozenset({"__proto__", "constructor", "prototype"})
APPS = ("ios", "android", "electron")
# config.<first segment> carried on; everything else is dropped (see the module docstring).
CONFIG_KEYS = frozenset(
    {
        # what Jitsi's login button itself writes (_getTokenAuthState)
        "startWithAudioMuted",
        "startWithVideoMuted",
        "startLowBandwidthMode",
        "prejoinConfig",
        # media and presentation choices
        "startAudioOnly",
        "startAudioMuted",
        "startVideoMuted",
        "startSilent",
        "startScreenSharing",
        "prejoinPageEnabled",
        "subject",
        "localSubject",
        "defaultLanguage",
        "disableDeepLinking",
        "toolbarButtons",
        "toolbarConfig",
        "breakoutRooms",
        "filmstrip",
        "tileView",
        "disableTileView",
        "disableSelfView",
        "disableSelfViewSettings",
        "disableReactions",
        "disableReactionsModeration",
        "disablePolls",
        "disableChat",
        "disableProfile",
        "disableInviteFunctions",
        "disableRemoteMute",
        "disableAudioLevels",
        "disableInitialGUM",
        "enableNoAudioDetection",
        "enableNoisyMicDetection",
        "hideConferenceSubject",
        "hideConferenceTimer",
        "hideDisplayName",
        "hideParticipantsStats",
        "hideLobbyButton",
        "readOnlyName",
        "requireDisplayName",
        "resolution",
        "constraints",
        "videoQuality",
        "disableSimulcast",
        "channelLastN",
        "notifications",
        "disabledNotifications",
        "participantsPane",
        "securityUi",
        "lobby",
        "remoteVideoMenu",
        "disableShortcuts",
        "disableFilmstripAutohiding",
        "followMeEnabled",
        "defaultLocalDisplayName",
        "defaultRemoteDisplayName",
    }
)
INTERFACE_CONFIG_KEYS = frozenset(
    {
        "SHOW_JITSI_WATERMARK",
        "SHOW_WATERMARK_FOR_GUESTS",
        "SHOW_BRAND_WATERMARK",
        "SHOW_CHROME_EXTENSION_BANNER",
        "TOOLBAR_BUTTONS",
        "TOOLBAR_TIMEOUT",
        "INITIAL_TOOLBAR_TIMEOUT",
        "TOOLBAR_ALWAYS_VISIBLE",
        "FILM_STRIP_MAX_HEIGHT",
        "TILE_VIEW_MAX_COLUMNS",
        "VERTICAL_FILMSTRIP",
        "VIDEO_LAYOUT_FIT",
        "LANG_DETECTION",
        "DISABLE_VIDEO_BACKGROUND",
        "DISABLE_DOMINANT_SPEAKER_INDICATOR",
        "DISABLE_FOCUS_INDICATOR",
        "DISABLE_JOIN_LEAVE_NOTIFICATIONS",
        "DISABLE_PRESENCE_STATUS",
        "DISABLE_TRANSCRIPTION_SUBTITLES",
        "DISABLE_RINGING",
        "HIDE_INVITE_MORE_HEADER",
        "MOBILE_APP_PROMO",
        "ENFORCE_NOTIFICATION_AUTO_DISMISS_TIMEOUT",
    }
)


def carried(key: str) -> bool:
    """Whether an override key of the state is handed back to Jitsi (see above)."""
    if not OVERRIDE_KEY.fullmatch(key) or IGNORED_SEGMENTS.intersection(key.split(".")):
        return False
    prefix, first = key.split(".")[:2]
    if prefix == "config":
        return first in CONFIG_KEYS
    if prefix == "interfaceConfig":
        return first in INTERFACE_CONFIG_KEYS
    return False  # iceServers.*: TURN servers of someone else's choosing


App = Literal["ios", "android", "electron"]


@dataclass(frozen=True)
class JitsiState:
    room: str
    tenant: str | None
    overrides: dict[str, Any] = field(default_factory=dict)
    app: App | None = None

    def compact(self) -> str:
        """The kept part, as the same JSON shape (handed from step to step of the flow)."""
        doc: dict[str, Any] = {"room": self.room}
        if self.tenant:
            doc["tenant"] = self.tenant
        doc |= self.overrides
        if self.app:
            doc[self.app] = True
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def state_param(state: JitsiState | str | None) -> dict[str, str]:
    """``{"state": ...}`` for a gateway link that carries the kept state on, or nothing."""
    if state is None:
        return {}
    return {"state": state if isinstance(state, str) else state.compact()}


def parse_state(state: str, room_param: str | None, tenant_param: str | None = None) -> JitsiState:
    """Jitsi's state, checked; ``room_param`` / ``tenant_param`` must agree when given."""
    if len(state) > MAX_STATE:
        raise GatewayError("bad_request", f"state longer than {MAX_STATE} characters")
    try:  # the nesting is counted before parsing: nothing here recurses per level
        doc: Any = jsonlimits.loads(state, MAX_DEPTH)
    except jsonlimits.TooDeep:
        raise GatewayError(
            "bad_request", f"state is nested deeper than {MAX_DEPTH} levels"
        ) from None
    except ValueError:
        raise GatewayError("bad_request", "state is not JSON") from None
    if not isinstance(doc, dict) or len(doc) > MAX_KEYS:
        raise GatewayError("bad_request", f"state is not a JSON object of {MAX_KEYS} keys or fewer")
    room, tenant = doc.get("room"), doc.get("tenant")
    if not isinstance(room, str) or not valid_room(room):
        raise GatewayError("bad_request", "state names no valid room")
    if tenant in (None, ""):
        tenant = None
    elif not isinstance(tenant, str) or not valid_tenant(tenant):
        raise GatewayError("bad_request", "state names a malformed tenant")
    if room_param is not None and room_param != room:
        raise GatewayError("bad_request", "room parameter and state disagree")
    if tenant_param is not None and tenant_param != tenant:
        raise GatewayError("bad_request", "tenant parameter and state disagree")
    overrides = {
        key: value
        for key, value in doc.items()
        if key.startswith(OVERRIDE_PREFIXES) and carried(key)
    }
    apps = [name for name in APPS if doc.get(name) is True]
    return JitsiState(room, tenant, overrides, apps[0] if apps else None)
