"""``jitsi-oidc-gateway sessions list|end``: a person's live sessions from a shell.

Reads and writes MongoDB directly (``-c`` settings or ``--mongodb-uri``), like ``audit``.
``end`` is audited as ``admin_session_ended`` with ``admin`` = ``cli:<login name>`` (or
``--admin``); ``list`` as ``admin_query``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from gateway import audit_cli
from gateway import session_admin as sa
from gateway.store import audit_query as aq

TABLE = (
    ("session", 32),
    ("idp", 10),
    ("subject", 24),
    ("username", 16),
    ("email", 28),
    ("email_trust", 11),
    ("created_at", 20),
    ("expires_at", 20),
)


def add_parser(sub: Any) -> None:
    sessions = sub.add_parser("sessions", help="list and end a person's live sessions")
    sessions_sub = sessions.add_subparsers(dest="sessions_command", required=True)
    for name, func, help_text in (
        ("list", cmd_list, "a person's live sessions"),
        ("end", cmd_end, "end a person's live sessions (the next room request signs in again)"),
    ):
        p = sessions_sub.add_parser(name, help=help_text)
        p.add_argument("-c", "--config", help="settings file (default: ./settings.yaml)")
        p.add_argument("--mongodb-uri", help="overrides mongodb.uri from the settings")
        p.add_argument("--database", help="overrides mongodb.database from the settings")
        p.add_argument("--timeout", type=float, default=30, help="seconds the command may take")
        p.add_argument("--idp", help="IdP id (required with --subject)")
        p.add_argument("--subject", help="the IdP's subject (sub)")
        p.add_argument("--username", help="username as the adapter normalised it")
        p.add_argument("--email", help="e-mail address (case-insensitive)")
        p.add_argument(
            "--all-idps",
            dest="all_idps",
            action="store_const",
            const="true",
            help="--username/--email match every IdP's sessions, not only those of IdPs that "
            "may speak for them",
        )
        p.add_argument("--format", choices=("table", "json"), default="table")
        if name == "end":
            p.add_argument("--session", help="only this session (its 32-hex reference)")
            p.add_argument("--admin", help="who ends them, for the audit log (default: cli:USER)")
        p.set_defaults(func=func)


def _selector(args: argparse.Namespace) -> sa.Selector:
    names = (*sa.SELECTOR_PARAMS, "session")
    values = {n: getattr(args, n, None) for n in (*names, "all_idps")}
    try:
        return sa.Selector.parse(values)
    except sa.SelectorError as exc:
        raise aq.FilterError(f"--{exc.parameter}", exc.message) from None


def _print(rows: list[dict[str, Any]], fmt: str, key: str, empty: str) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps({key: rows, "count": len(rows)}, indent=2) + "\n")
        return
    if not rows:
        print(empty)
        return
    print("  ".join(n.upper().ljust(w) for n, w in TABLE).rstrip())
    for row in rows:
        cells = []
        for n, w in TABLE:
            text = str(row.get(n) or "")
            cells.append(text[: w - 1] + "~" if len(text) > w else text.ljust(w))
        print("  ".join(cells).rstrip())


def _cli_admin(args: argparse.Namespace) -> str:
    explicit = getattr(args, "admin", None)
    return explicit if explicit else f"cli:{getpass.getuser()}"


def _parsed(args: argparse.Namespace) -> sa.Selector | None:
    """The selector, or None after printing why (before any connection is made)."""
    try:
        return _selector(args)
    except aq.FilterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def cmd_list(args: argparse.Namespace) -> int:
    selector = _parsed(args)
    if selector is None:
        return 2

    async def body(session: audit_cli.StoreCommand) -> None:
        store = session.store
        now = audit_cli.utc_now()
        docs = await sa.live_sessions(store, selector, now)
        await store.audit.write(
            {
                "time": now,
                "event": "admin_query",
                "outcome": "success",
                "admin": _cli_admin(args),
                "path": "cli:sessions list",
                "query": selector.describe(),
                "count": len(docs),
            }
        )
        rows = [sa.summary(d, sa.trust_of(store)) for d in docs]
        _print(rows, args.format, "sessions", "no live sessions match")

    return audit_cli.run_store_command(args, body, audited=False)


def cmd_end(args: argparse.Namespace) -> int:
    selector = _parsed(args)
    if selector is None:
        return 2

    async def body(session: audit_cli.StoreCommand) -> None:
        ended = await sa.end_sessions(
            session.store, selector, audit_cli.utc_now(), admin=_cli_admin(args), via="cli"
        )
        _print(ended, args.format, "ended", "no live sessions match: nothing ended")
        if ended and args.format == "table":
            print(f"ended {len(ended)} session(s); their next room request signs in again")

    return audit_cli.run_store_command(args, body, audited=False)
