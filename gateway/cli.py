"""Command line: ``serve``, ``check-config``, ``doctor``, ``adapters``, ``demo`` (and ``audit``,
``policy``, ``sessions`` from their own modules).

Configuration problems end the process with exit code 2 and one ``path: problem`` line each,
never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from tornado.ioloop import PeriodicCallback
from tornado.netutil import bind_sockets
from tornado.process import fork_processes

from gateway import audit_cli, policy_cli, sessions_cli
from gateway.config import (
    DEFAULT_SETTINGS,
    ENV_PREFIX,
    ConfigError,
    Settings,
    load_settings_file,
    settings_file,
)

log = logging.getLogger("gateway")


def _load_required(args: argparse.Namespace) -> Settings:
    """Settings for ``serve``/``check-config``: a file, or at least ``JOG_`` variables."""
    path = settings_file(args.config)
    if path is None and not any(k.startswith(ENV_PREFIX) for k in os.environ):
        where = Path(DEFAULT_SETTINGS).absolute()
        raise ConfigError(
            [
                f"no settings file found at {where}: give one with -c FILE "
                f"(or set {ENV_PREFIX}* environment variables)"
            ]
        )
    return load_settings_file(path)


def cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.idps import open_adapters
    from gateway.plugins import discover

    settings = _load_required(args)
    registry = discover()
    for problem in registry.problems:
        print(f"warning: {problem}", file=sys.stderr)
    open_adapters(settings, registry)
    for warning in settings.policy.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"configuration OK: {len(settings.idps)} IdP(s): "
        + ", ".join(f"{i.id} ({i.adapter})" for i in settings.idps)
    )
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Exit 1 when the Jitsi side disagrees with the settings, 2 on unreadable input."""
    from gateway.doctor import diagnose

    files = {
        kind: Path(path)
        for kind, path in (
            ("prosody", args.prosody),
            ("env", args.env),
            ("config_js", args.config_js),
        )
        if path
    }
    if not files:
        print("error: give at least one of --prosody, --env, --config-js", file=sys.stderr)
        return 2
    for path in files.values():
        if not path.is_file():
            print(f"error: {path}: no such file", file=sys.stderr)
            return 2
    settings = _load_required(args)
    findings = diagnose(settings, files)
    for finding in findings:
        print(finding.render())
    checked = ", ".join(str(p) for p in files.values())
    if findings:
        print(f"{len(findings)} mismatch(es) between Jitsi ({checked}) and the gateway's settings")
        return 1
    print(f"Jitsi side OK: {checked} match the gateway's settings")
    return 0


def cmd_adapters(args: argparse.Namespace) -> int:
    from gateway.plugins import discover

    registry = discover()
    rows = [("NAME", "PACKAGE", "VERSION", "TARGET", "DESCRIPTION")]
    for info in sorted(registry.adapters.values(), key=lambda i: i.name):
        desc = info.cls.description or info.cls.__doc__ or ""
        first = desc.strip().splitlines()[0] if desc.strip() else ""
        rows.append((info.name, info.distribution, info.version, info.target, first))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[4]]).rstrip())
    for problem in registry.problems:
        print(f"BROKEN  {problem}")
    return 1 if registry.problems else 0


async def run_server(
    settings: Settings, stop: asyncio.Event, sockets: list[socket.socket] | None = None
) -> None:
    """Serve until ``stop`` is set; starts the embedded store when no URI is configured."""
    from gateway.app import build_gateway, make_app, warm_up
    from gateway.context import Gateway
    from gateway.devtools.embedded import EmbeddedMongo
    from gateway.serving import FileLimitTooLow, ensure_file_limit, make_server
    from gateway.store import Store

    embedded = None
    uri = settings.mongodb.uri
    if uri is None:
        path = Path(settings.mongodb.embedded_path)
        await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
        try:
            embedded = await asyncio.to_thread(EmbeddedMongo(path).start)
        except RuntimeError as exc:
            raise ConfigError(
                [
                    f"mongodb.uri: empty, and the embedded store cannot start ({exc}); set a "
                    "MongoDB URI, or pip install secantusdb==0.7.0b3 for local use"
                ]
            ) from None
        uri = embedded.uri
        log.warning(
            "mongodb.uri is empty: using the embedded SecantusDB at %s (not for production)", path
        )
    mongo = settings.mongodb
    store = Store.connect(uri, mongo.database, mongo.timeout_seconds, mongo.durable_writes)
    gateway: Gateway | None = None
    try:
        gateway = build_gateway(settings, store)
        if not settings.cookies.secure:
            log.warning("cookies.secure is false: cookies travel over plain HTTP (local use only)")
        await warm_up(gateway)
        if sockets is None:
            sockets = bind_sockets(settings.listen.port, settings.listen.host)
        try:
            ensure_file_limit(settings.listen.max_connections)
        except FileLimitTooLow as exc:
            raise ConfigError([str(exc)]) from None
        server = make_server(make_app(gateway), settings.listen)
        server.add_sockets(sockets)
        log.info(
            "listening on %s:%s, public URL %s (event loop: %s)",
            settings.listen.host,
            settings.listen.port,
            settings.public_url,
            settings.listen.event_loop,
        )
        await stop.wait()
        # Graceful: stop accepting, let what is in flight finish (a callback in progress
        # must not lose its single-use state), then close what is left.
        server.stop_accepting()  # connections already queued by the kernel are served too
        drain = settings.listen.drain_seconds
        # Connections just taken from the queue have not been read yet: give their requests
        # a moment to start before waiting for what is in flight.
        await asyncio.sleep(min(0.5, drain))
        busy = gateway.inflight.count
        if busy:
            log.info("stopping: %d request(s) in flight, waiting up to %.0f s", busy, drain)
        if not await gateway.inflight.wait_idle(drain):
            log.warning(
                "stopping: %d request(s) still in flight after %.0f s, closing them",
                gateway.inflight.count,
                drain,
            )
        await server.close_all_connections()
        log.info("stopped accepting; flushing the audit log")
    finally:
        if gateway is not None:
            await gateway.http.aclose()
        await store.close()  # flushes the audit log: queued events to MongoDB or the spool
        if embedded is not None:
            embedded.stop()


def fork_workers(settings: Settings, processes: int) -> list[socket.socket]:
    """Bind the port, then fork; returns in each worker. The parent supervises them.

    The parent restarts a worker that crashes, forwards SIGTERM/SIGINT to the workers and
    exits once they have all stopped. Workers share nothing but the listening socket:
    flows and sessions live in MongoDB, secrets come from the same settings.
    """
    sockets = bind_sockets(settings.listen.port, settings.listen.host)
    parent = os.getpid()

    def forward(signum: int, _frame: object) -> None:
        for sock in sockets:  # the parent's copy: the kernel must stop queueing connections
            sock.close()
        for pid in _children(parent):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    fork_processes(processes)
    for sig, handler in previous.items():  # in the worker: back to the usual handlers
        signal.signal(sig, handler)
    if any(sock.fileno() == -1 for sock in sockets):
        # Forked after the parent began to stop: a worker the forwarded SIGTERM caught while
        # starting counts as crashed and is restarted, with the parent's sockets closed.
        # Exiting normally ends that; failing would be restarted again, up to 100 times.
        sys.exit(0)
    return sockets


def _children(parent: int) -> list[int]:
    """Process ids whose parent is ``parent`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields and int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def watch_parent(stop: asyncio.Event) -> None:
    """A worker stops when its supervising parent is gone (killed without forwarding)."""
    parent = os.getppid()

    def check() -> None:
        if os.getppid() != parent:
            stop.set()

    PeriodicCallback(check, 1000).start()


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.logging_setup import configure_logging

    settings = _load_required(args)
    configure_logging(settings.log_level, settings.log_format)
    processes = getattr(args, "processes", 1)
    sockets = None
    if processes != 1:
        if settings.mongodb.uri is None:
            raise ConfigError(
                ["mongodb.uri: --processes needs a shared MongoDB (the embedded store is one)"]
            )
        sockets = fork_workers(settings, processes)

    async def main() -> None:
        stop = _stop_event()
        if sockets is not None:
            watch_parent(stop)
        await run_server(settings, stop, sockets)
        # Stopped cleanly: a second SIGTERM (the supervisor forwards what the process
        # group already got) must not kill the process on its way out, or the supervisor
        # would take it for a crash and start another worker.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)

    from gateway.serving import run

    run(main(), settings.listen.event_loop)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.devtools.demo import DemoError, run_demo
    from gateway.logging_setup import configure_logging

    configure_logging("INFO", "text")  # redacted, and no query strings in the access log
    try:
        asyncio.run(run_demo(args.port, args.jitsi_port))
    except DemoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jitsi-oidc-gateway", description="OpenID Connect sign-in for Jitsi Meet"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, help_text in (
        ("serve", cmd_serve, "run the gateway"),
        ("check-config", cmd_check_config, "validate settings and adapters, then exit"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-c", "--config", help="settings file (default: ./settings.yaml)")
        p.set_defaults(func=func)
        if name == "serve":
            p.add_argument(
                "--processes",
                type=int,
                default=1,
                help="worker processes sharing the port (0: one per CPU; needs mongodb.uri)",
            )
    p = sub.add_parser(
        "doctor", help="check Jitsi's Prosody, docker-jitsi-meet .env and config.js against us"
    )
    p.add_argument("-c", "--config", help="settings file (default: ./settings.yaml)")
    p.add_argument("--prosody", help="Prosody site file (/etc/prosody/conf.avail/<domain>.cfg.lua)")
    p.add_argument("--env", help="docker-jitsi-meet's .env")
    p.add_argument("--config-js", help="Jitsi Meet's config.js (or custom-config.js)")
    p.set_defaults(func=cmd_doctor)
    audit_cli.add_parser(sub)
    policy_cli.add_parser(sub)
    sessions_cli.add_parser(sub)
    p = sub.add_parser("adapters", help="list discovered IdP adapters and broken plugins")
    p.set_defaults(func=cmd_adapters)
    p = sub.add_parser("demo", help="gateway + embedded store + local test OP + Jitsi stand-in")
    p.add_argument("--port", type=int, default=8000, help="gateway port (default 8000)")
    p.add_argument("--jitsi-port", type=int, default=8001, help="Jitsi stand-in port")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print("configuration error:", file=sys.stderr)
        for line in exc.problems:
            print(f"  {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
