"""``jitsi-oidc-gateway audit ...``: the audit log from a shell.

The same filters as ``/admin/audit`` (validated by the same code), read straight from MongoDB
with the URI in the settings file (``-c``) or ``--mongodb-uri``. ``tail --follow`` polls by
``(time, _id)`` with a short look-back window, because a change stream is not available on
every MongoDB-compatible server and events replayed from a spool arrive late; the events
already in that window when it starts count as seen, so only new ones are printed.

Every query, stats, export and tail run is audited like an API request (``admin_query``,
``admin`` = ``cli:<login name>``, ``path`` = ``cli audit <command>``), so reading the log from
a shell leaves the same trail as reading it over HTTP. A closed pipe (``| head``) ends the
command quietly.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import hashlib
import json
import os
import secrets
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import pymongo
from pymongo.errors import PyMongoError

from gateway.config import ConfigError, Mongo, load_settings_file, settings_file
from gateway.errors import GatewayError
from gateway.store import Store
from gateway.store import audit_query as aq
from gateway.trust import IdpTrust

TABLE = (
    ("time", 24),
    ("event", 16),
    ("outcome", 7),
    ("idp", 10),
    ("user", 24),
    ("room", 16),
    ("client_ip", 15),
    ("reason", 20),
)
# more columns on demand (--columns), with their widths in the table
EXTRA_COLUMNS = {
    "name": 24,
    "email": 28,
    "email_trust": 11,
    "rule": 20,
    "detail": 40,
    "subject": 24,
    "username": 16,
    "tenant": 12,
    "session_hash": 32,
    "flow_hash": 32,
    "request_id": 32,
    "user_agent": 30,
    "admin": 12,
    "jti": 24,
}
WIDTHS = dict(TABLE) | EXTRA_COLUMNS


def add_parser(sub: Any) -> None:
    """Register ``audit`` and its sub-commands on the main parser."""
    audit = sub.add_parser("audit", help="query, export and follow the audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)

    def common(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> Any:
        p = audit_sub.add_parser(name, help=help_text)
        p.add_argument("-c", "--config", help="settings file (default: ./settings.yaml)")
        p.add_argument("--mongodb-uri", help="overrides mongodb.uri from the settings")
        p.add_argument("--database", help="overrides mongodb.database from the settings")
        p.add_argument(
            "--timeout", type=float, default=600, help="seconds the command (a tail poll) may take"
        )
        p.add_argument(
            "--since", help="ISO 8601 time, today, yesterday or a duration back (24h, 7d)"
        )
        p.add_argument("--until", help="ISO 8601 time, today, yesterday or a duration")
        p.add_argument(
            "--tz", help="time zone for naive input times, today/yesterday and output (UTC)"
        )
        p.add_argument("--exclude-event", dest="exclude_event", help="event types to leave out")
        p.add_argument(
            "--all-idps",
            dest="all_idps",
            action="store_const",
            const="true",
            help="--email/--username match every IdP's events, not only those of IdPs that "
            "may speak for them",
        )
        for name_ in aq.LIST_FIELDS:
            p.add_argument(f"--{name_}", help="one value or several, comma-separated")
        for name_ in aq.EXACT_FIELDS:
            p.add_argument(f"--{name_.replace('_', '-')}", dest=name_)
        p.set_defaults(func=func)
        return p

    p = common("query", "one page of events, newest first", cmd_query)
    p.add_argument("--limit", default="50")
    p.add_argument("--order", choices=("asc", "desc"), default="desc")
    p.add_argument("--cursor", help="next_cursor of the previous page")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument(
        "--linked",
        action="store_true",
        help="also events of the same browser flows/sessions (failures before the ID token)",
    )
    table_options(p)
    p = common("people", "distinct persons for the filters, first and last seen", cmd_people)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p = common("stats", "counts per day/hour, IdP, outcome; top reasons and rooms", cmd_stats)
    p.add_argument("--bucket", choices=tuple(aq.BUCKETS), default="day")
    p.add_argument("--top", type=int, default=10)
    p.add_argument(
        "--by", help="a two-way count: two of idp, event, outcome, reason, room, day, hour"
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p = common("export", "every matching event, oldest first (constant memory)", cmd_export)
    p.add_argument("--order", choices=("asc", "desc"), default="asc")
    p.add_argument("--format", choices=("ndjson", "csv"), default="ndjson")
    p.add_argument("-o", "--output", help="file to write (default: standard output)")
    p = common("tail", "the latest events; --follow prints new ones as they come", cmd_tail)
    p.add_argument("-n", "--lines", type=int, default=20)
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--interval", type=float, default=1.0, help="poll interval in seconds")
    p.add_argument("--format", choices=("table", "json"), default="table")
    table_options(p)
    p = audit_sub.add_parser("new-token", help="a random admin token and its SHA-256 for settings")
    p.add_argument("--name", default="ops", help="the token's name in admin.tokens")
    p.set_defaults(func=cmd_new_token)


def table_options(p: Any) -> None:
    p.add_argument(
        "--columns",
        help=f"columns of the table, comma-separated; +name,email adds to the default ones"
        f" (any of {', '.join(WIDTHS)})",
    )
    p.add_argument("--wide", action="store_true", help="never cut a value short")


# ---- plumbing ------------------------------------------------------------------------------


def _server_names(uri: str) -> str:
    """``host:port[,host:port]`` of a MongoDB URI, without user, password or options."""
    rest = uri.split("://", 1)[-1]
    return rest.rsplit("@", 1)[-1].split("/", 1)[0].split("?", 1)[0] or uri.split("://")[0]


class StoreCommand:
    """The store, the configured IdP ids and what this command asked, for its audit event."""

    def __init__(
        self,
        store: Store,
        idps: tuple[str, ...] | None,
        command: str,
        where: str,
        connect_timeout: float,
    ) -> None:
        self.store = store
        self.idps = idps
        self.command = command
        self.where = where  # host[:port] list, never credentials
        self.connect_timeout = connect_timeout
        self.query: dict[str, str] = {}
        self.count: int | None = None

    async def idps_for(self, params: dict[str, str | None]) -> set[str] | None:
        """IdPs an ``idp`` filter may name (configured or in the log); None: no settings."""
        if self.idps is None:
            return None
        return await self.store.audit.reader.known_idps(self.idps, params.get("idp"))

    async def audit(self, outcome: str, **fields: Any) -> str:
        """Write this command's ``admin_query`` event; returns its id."""
        event_id = self.store.audit.new_id(utc_now())
        try:
            user = getpass.getuser()
        except (OSError, KeyError):
            user = str(os.getuid())
        await self.store.audit.write(
            {
                "_id": event_id,
                "event": "admin_query",
                "outcome": outcome,
                "admin": f"cli:{user}"[:64],
                "path": f"cli audit {self.command}",
                "query": {k[:64]: str(v)[:256] for k, v in self.query.items()},
                "count": self.count,
                **fields,
            }
        )
        return event_id


def _connect(args: argparse.Namespace) -> StoreCommand:
    path = settings_file(args.config)
    settings = load_settings_file(path) if path else None
    mongo = settings.mongodb if settings else Mongo()
    uri = args.mongodb_uri or mongo.uri
    if not uri:
        raise ConfigError(["mongodb.uri: empty; the CLI needs the running store's URI"])
    store = Store.connect(uri, args.database or mongo.database, mongo.timeout_seconds)
    idps = tuple(i.id for i in settings.idps) if settings else None
    if settings:  # without settings nobody's trust is known: searches are not narrowed
        store.use_trust(IdpTrust.of(settings.idps))
    command = getattr(args, "audit_command", None) or args.command
    return StoreCommand(store, idps, command, _server_names(uri), mongo.timeout_seconds)


def _filters(args: argparse.Namespace) -> dict[str, str | None]:
    names = aq.FILTER_PARAMS
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def run_store_command(
    args: argparse.Namespace,
    body: Callable[[StoreCommand], Any],
    *,
    bounded: bool = True,
    audited: bool = True,
) -> int:
    """Run ``body`` against the store; ``audited``: write this command's ``admin_query``
    event (commands that audit themselves pass False)."""
    where = "MongoDB"

    async def main() -> int:
        nonlocal where
        session = _connect(args)
        where = f"MongoDB at {session.where}"
        session.query = {k: v for k, v in vars(args).items() if k in aq.FILTER_PARAMS and v}
        try:
            # First a ping bounded by mongodb.timeout_seconds: an unreachable server is
            # reported in seconds, not after the whole command's --timeout.
            with pymongo.timeout(min(session.connect_timeout, args.timeout)):
                try:
                    await session.store.db.command("ping")
                except PyMongoError as exc:
                    bound = min(session.connect_timeout, args.timeout)
                    raise _Unreachable(
                        f"{where} did not answer within {bound:g} s ({type(exc).__name__}); "
                        "check mongodb.uri or --mongodb-uri"
                    ) from None
            # one deadline for the whole command, not mongodb.timeout_seconds per socket read
            with pymongo.timeout(args.timeout if bounded else None):
                await body(session)
            if audited:
                await session.audit("success")
        except aq.FilterError as exc:
            if audited:
                await session.audit("failure", reason="bad_request", detail=str(exc))
            raise
        except BrokenPipeError:
            if audited:
                await session.audit("success", detail="output closed early")
            raise
        finally:
            await session.store.close()
        return 0

    try:
        return asyncio.run(main())
    except aq.FilterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except _Unreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except GatewayError as exc:  # a store call that turned a driver error into a reason
        print(f"error: {where}: {exc.detail}", file=sys.stderr)
        return 1
    except PyMongoError as exc:
        print(
            f"error: {where}: {type(exc).__name__} (--timeout {args.timeout:g} s)", file=sys.stderr
        )
        return 1


class _Unreachable(Exception):
    pass


def _quiet_stdout() -> None:
    """The reader went away (``| head``): drop what is buffered instead of a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Table:
    """The CLI's event table: default columns, ``--columns`` and ``--wide``."""

    def __init__(self, args: argparse.Namespace) -> None:
        spec = getattr(args, "columns", None) or ""
        names = [c.strip() for c in spec.lstrip("+").split(",") if c.strip()]
        for name in names:
            if name not in WIDTHS:
                raise aq.FilterError("columns", f"{name!r} is not one of {', '.join(WIDTHS)}")
        if not spec or spec.startswith("+"):
            names = [n for n, _ in TABLE] + [n for n in names if n not in dict(TABLE)]
        self.wide = bool(getattr(args, "wide", False))
        self.tz = aq.parse_tz(getattr(args, "tz", None))
        widths = WIDTHS | ({"time": 29} if self.tz is not UTC else {})  # room for +01:00
        self.columns = [(n, widths[n]) for n in names]

    def header(self, out: TextIO) -> None:
        out.write("  ".join(n.upper().ljust(w) for n, w in self.columns).rstrip() + "\n")

    def row(self, doc: dict[str, Any], out: TextIO) -> None:
        plain = aq.to_json(doc, self.tz)
        plain["user"] = plain.get("username") or plain.get("subject") or plain.get("admin") or ""
        cells = []
        for name, width in self.columns:
            value = plain.get(name)
            text = " ".join(map(str, value)) if isinstance(value, list) else str(value or "")
            if len(text) > width and not self.wide:
                text = text[: width - 1] + "~"
            cells.append(text.ljust(width))
        out.write("  ".join(cells).rstrip() + "\n")


# ---- commands ------------------------------------------------------------------------------


def cmd_query(args: argparse.Namespace) -> int:
    params = _filters(args) | {"limit": args.limit, "order": args.order, "cursor": args.cursor}

    async def body(session: StoreCommand) -> None:
        idps = await session.idps_for(params)
        q = aq.parse_query(params, now=utc_now(), max_limit=10000, idps=idps)
        if args.linked:
            q = await session.store.audit.reader.link(q)
        docs, cursor = await session.store.audit.reader.page(q)
        session.count = len(docs)
        out = sys.stdout
        if args.format == "json":
            body = {"events": [aq.to_json(d, q.tz) for d in docs], "next_cursor": cursor}
            out.write(json.dumps(body, indent=2) + "\n")
        elif args.format == "csv":
            out.write(aq.csv_header() + aq.csv_rows(docs, q.tz))
        else:
            table = Table(args)
            table.header(out)
            for doc in docs:
                table.row(doc, out)
        out.flush()
        if cursor:  # on stderr: the output itself stays one clean table, CSV or JSON
            print(f"-- more: --cursor {cursor}", file=sys.stderr)

    return run_store_command(args, body)


def cmd_stats(args: argparse.Namespace) -> int:
    async def body(session: StoreCommand) -> None:
        if not 1 <= args.top <= 100:
            raise aq.FilterError("top", "must be between 1 and 100")
        params = _filters(args)
        by = aq.parse_by(args.by)
        q = aq.parse_query(params, now=utc_now(), idps=await session.idps_for(params))
        result = await session.store.audit.reader.stats(q, args.bucket, args.top, by)
        if args.format == "json":
            print(json.dumps(result, indent=2))
            return
        if by:
            first, second = (by * 2)[:2]
            rows = sorted({_label(r[first]) for r in result["grid"]})
            cols = (
                sorted({_label(r[second]) for r in result["grid"]}) if len(by) == 2 else ["count"]
            )
            cells = {
                (_label(r[first]), _label(r[second]) if len(by) == 2 else "count"): r["count"]
                for r in result["grid"]
            }
            width = max([len(first), *map(len, rows)]) + 2
            print(first.ljust(width) + "".join(c.rjust(max(len(c), 6) + 2) for c in cols))
            for row in rows:
                line = "".join(str(cells.get((row, c), 0)).rjust(max(len(c), 6) + 2) for c in cols)
                print(row.ljust(width) + line)
            return
        print(f"events: {result['total']}   distinct users: {result['distinct_users']}")
        for title, key in (("outcome", "per_outcome"), ("idp", "per_idp"), ("event", "per_event")):
            print(f"\nper {title}:")
            for name, count in sorted(result[key].items(), key=lambda kv: -kv[1]):
                print(f"  {_label(name):<28} {count:>10}")
        print("\ntop failure reasons:")
        for row in result["top_failure_reasons"]:
            print(f"  {row['reason']:<28} {row['count']:>10}")
        print("\ntop rooms:")
        for row in result["top_rooms"]:
            print(f"  {row['room']:<28} {row['count']:>10}")
        print(f"\nper {args.bucket}:")
        for row in result["per_bucket"]:
            print(f"  {row['time']:<28} {row['count']:>10}")

    return run_store_command(args, body)


def _label(value: Any) -> str:
    """A table heading or row name; events without the field (no IdP before the IdP is
    known, no room) are ``(none)``, never Python's ``None``."""
    return "(none)" if value is None else str(value)


def cmd_export(args: argparse.Namespace) -> int:
    def run_to(out: TextIO) -> int:
        async def body(session: StoreCommand) -> None:
            params = _filters(args) | {"order": args.order}
            q = aq.parse_query(params, now=utc_now(), idps=await session.idps_for(params))
            if args.format == "csv":
                out.write(aq.csv_header())
            session.count = 0
            async for chunk in session.store.audit.reader.stream(q):
                ndjson = args.format == "ndjson"
                out.write(aq.ndjson_lines(chunk, q.tz) if ndjson else aq.csv_rows(chunk, q.tz))
                session.count += len(chunk)
            out.flush()

        return run_store_command(args, body)

    if not args.output:
        return run_to(sys.stdout)
    with open(args.output, "w", encoding="utf-8") as out:
        return run_to(out)


def cmd_people(args: argparse.Namespace) -> int:
    async def body(session: StoreCommand) -> None:
        params = _filters(args)
        q = aq.parse_query(params, now=utc_now(), idps=await session.idps_for(params))
        result = await session.store.audit.reader.people(q)
        session.count = result["count"]
        if args.format == "json":
            print(json.dumps(result, indent=2))
            return
        cols = ("name", "email", "idp", "email_trust", "first_seen", "last_seen", "events")
        rows = [[str(p.get(c) or "") for c in cols] for p in result["people"]]
        widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(cols)]
        print("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
        for r in rows:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
        print(f"{result['count']} people" + (" (first 1000 only)" if result["truncated"] else ""))

    return run_store_command(args, body)


def cmd_tail(args: argparse.Namespace) -> int:
    lookback = timedelta(seconds=max(5.0, args.interval * 5))

    table: Table | None = None

    def show(doc: dict[str, Any]) -> None:
        if table is None:
            sys.stdout.write(json.dumps(aq.to_json(doc), separators=(",", ":")) + "\n")
        else:
            table.row(doc, sys.stdout)
        sys.stdout.flush()

    async def window(
        session: StoreCommand, filters: dict[str, str | None], since: datetime, until: datetime
    ) -> Any:
        bounds = {"since": aq.iso(since), "until": aq.iso(until), "order": "asc"}
        poll = aq.parse_query(filters | bounds, now=utc_now())
        with pymongo.timeout(args.timeout):
            async for chunk in session.store.audit.reader.stream(poll, 500):
                for doc in chunk:
                    yield doc

    async def body(session: StoreCommand) -> None:
        nonlocal table
        filters = _filters(args)
        params = filters | {"limit": str(args.lines)}
        idps = await session.idps_for(params)
        q = aq.parse_query(params, now=utc_now(), max_limit=10000, idps=idps)
        with pymongo.timeout(args.timeout):
            docs, _ = await session.store.audit.reader.page(q)
        session.count = len(docs)
        if args.format == "table":
            table = Table(args)
            table.header(sys.stdout)
        for doc in reversed(docs):
            show(doc)
        if not args.follow:
            return
        newest = docs[0]["time"] if docs else utc_now()
        # the look-back window up to the last line shown is history, not news: never printed
        upto = newest + timedelta(milliseconds=1)
        history = window(session, filters, newest - lookback, upto)
        seen = {d["_id"]: d["time"] async for d in history}
        seen |= {d["_id"]: d["time"] for d in docs}
        # a follow runs until stopped: audited now, and its own event is not news
        seen[await session.audit("success")] = utc_now()
        while args.follow:
            await asyncio.sleep(args.interval)
            far = utc_now() + timedelta(days=1)  # events stamped by a clock slightly ahead
            async for doc in window(session, filters, newest - lookback, far):
                if doc["_id"] in seen:
                    continue
                seen[doc["_id"]] = doc["time"]
                newest = max(newest, doc["time"])
                show(doc)
            horizon = newest - lookback
            seen = {k: t for k, t in seen.items() if t >= horizon}

    try:
        return run_store_command(args, body, bounded=not args.follow)
    except KeyboardInterrupt:
        return 0


def cmd_new_token(args: argparse.Namespace) -> int:
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    print(f"token (give to the operator, store nowhere else): {token}")
    print("settings.yaml:")
    print(f"admin:\n  tokens:\n    - name: {args.name}\n      sha256: {digest}")
    return 0
