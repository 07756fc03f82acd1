"""Run the command line in this process: ``gateway.cli.main(argv)`` with its output captured.

For what does not need a process of its own (parsing, queries, messages, exit codes as
``main`` returns them): starting Python for each command made these tests slow. Signals, a
closed pipe and ``python -m gateway`` itself keep their subprocess tests. ``main`` runs its
own event loop (``asyncio.run``), so an async test calls ``await asyncio.to_thread(run_cli,
...)``. An exception ``main`` lets through (what would be a traceback) fails the test.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway import cli


@dataclass
class Ran:
    """What a subprocess.CompletedProcess would say."""

    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _environment(cwd: Path | None, env: dict[str, str] | None) -> Iterator[None]:
    """Working directory ``cwd`` and, when ``env`` is given, no ``JOG_`` variables but its."""
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    try:
        if env is not None:
            for name in [n for n in os.environ if n.startswith("JOG_")]:
                del os.environ[name]
            os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def run_cli(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Ran:
    """``jitsi-oidc-gateway ARGV``; ``cwd`` and ``env`` (``JOG_`` variables replaced) only
    for the command's duration."""
    out, err = io.StringIO(), io.StringIO()
    with (
        _environment(cwd, env),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return Ran(code, out.getvalue(), err.getvalue())
