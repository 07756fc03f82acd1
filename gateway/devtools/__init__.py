"""Demo and development tooling: the local OpenID Provider launcher, the Jitsi stand-in, the
embedded MongoDB-wire store and the ``demo`` command. The gateway's runtime (``app``,
``handlers``, ``signin``, ``oidc``, ``store``...) never imports this package; only the
command line does, for ``demo`` and for ``serve`` without a ``mongodb.uri``.
"""
