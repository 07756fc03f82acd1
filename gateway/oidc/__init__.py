"""OpenID Connect relying-party pieces: discovery, key sets, code exchange, ID-token checks."""
