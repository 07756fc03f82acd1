"""jitsi-oidc-gateway: OpenID Connect sign-in in front of Jitsi Meet."""
