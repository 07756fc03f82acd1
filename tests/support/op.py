"""The test OpenID Provider's Python handle lives with the demo tooling (the demo runs it
too); the tests import it from here."""

from gateway.devtools.op import NODE, OP_DIR, TestOP

__all__ = ["NODE", "OP_DIR", "TestOP"]
