"""The gateway as the token service of Jitsi Meet's own sign-in page (``static/sso.html``).

Jitsi's web client opens ``tokenAuthUrl`` with a PKCE challenge, its JSON ``state`` and a
nonce; the gateway signs the person in (session, IdP, policy as always) and sends the
browser to the registered ``sso.html`` with a single-use code. ``sso.html`` redeems it at
``/oidc/token`` with its verifier and gets the Jitsi JWT as ``access_token``, an ID token
signed by the gateway and a refresh token that keeps a person in a long meeting.
"""
