"""IdP adapters: turn validated ID-token claims into a gateway ``Identity``.

The contract lives in :mod:`adapters.base`; built-in adapters register through the
``jitsi_oidc_gateway.adapters`` entry-point group exactly as third-party packages do.
"""
