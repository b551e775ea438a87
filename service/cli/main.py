"""The `parry` command: server-side commands, client commands, and the engine's commands.

`parry evaluate` runs an evaluation locally, without a server, so it lives with the engine in
`workers`: the package declares it as a `parry.commands` entry point, and this module finds it
there. `service` never imports `workers`. Building the parser imports only what the client install
(`pip install parry`) has: the server-side commands import their modules when they run, after
`service.cli.installs` has checked that their install is there, and otherwise say what to install.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from service.cli.check import add_check_command
from service.cli.commands import add_client_commands
from service.cli.common import EXIT_ERROR, USER_ERRORS, CommandError, Commands, server_options
from service.cli.hard_sets import add_hard_set_command
from service.cli.installs import install_command, require_install
from service.cli.listings import add_listing_commands

# Commands the engine provides through the `parry.commands` entry point group, with their help line.
ENGINE_COMMANDS = {
    "evaluate": "run attacks on a model locally (no server)",
    "demo": "train a small demo model in seconds and write it as demo.keras",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        code: int = args.run(args)
    except USER_ERRORS as exc:
        print(f"parry: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("parry: interrupted", file=sys.stderr)
        return 130
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parry", description="Adversarial-robustness evaluation for TensorFlow models."
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_engine_commands(commands)
    _add_server_commands(commands)
    server = server_options()
    add_client_commands(commands, server)
    add_hard_set_command(commands, server)
    add_listing_commands(commands, server)
    add_check_command(commands, server)
    _add_keys_commands(commands)
    return parser


def _add_engine_commands(commands: Commands) -> None:
    found = {ep.name: ep for ep in entry_points(group="parry.commands")}
    for name, help_text in ENGINE_COMMANDS.items():
        if name in found:
            found[name].load()(commands)
            continue
        # Without the engine the command still parses, so that it can say what to install.
        cmd = commands.add_parser(
            name, help=f"{help_text} [needs {install_command('worker')}]", add_help=False
        )
        cmd.add_argument("rest", nargs=argparse.REMAINDER)
        cmd.set_defaults(run=_needs_worker_install, command_name=name)


def _needs_worker_install(args: argparse.Namespace) -> int:
    raise CommandError(
        f"parry {args.command_name} runs TensorFlow on this machine and needs the worker install: "
        f"{install_command('worker')}"
    )


# ---- server-side commands: serve, api, worker (service/cli/server.py) and keys (service/cli/keys.py) ---


def _add_server_commands(commands: Commands) -> None:
    serve = commands.add_parser("serve", help="run the service: Redis (bundled if needed), a worker, the API")
    api = commands.add_parser("api", help="run only the HTTP API (needs PARRY_REDIS_URL)")
    for cmd in (serve, api):
        cmd.add_argument("--host", default=None, help="address to bind (default PARRY_HOST, 127.0.0.1)")
        cmd.add_argument("--port", type=int, default=None, help="port (default PARRY_PORT, 8000)")
    serve.set_defaults(run=_run_server_command, command_name="serve")
    api.set_defaults(run=_run_server_command, command_name="api")
    worker = commands.add_parser("worker", help="run one Celery worker (needs PARRY_REDIS_URL)")
    worker.add_argument("--loglevel", default="info", help="worker log level (default info)")
    worker.add_argument(
        "--gpu",
        default=None,
        help="pin the worker to this GPU index (sets CUDA_VISIBLE_DEVICES); default: as is",
    )
    worker.set_defaults(run=_run_server_command, command_name="worker")


def _run_server_command(args: argparse.Namespace) -> int:
    require_install(args.command_name)
    from service.cli import server  # only now: it needs the server install

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command_name == "serve":
            return server.serve(args.host, args.port)
        if args.command_name == "api":
            return server.api(args.host, args.port)
        return server.worker(loglevel=args.loglevel, gpu=args.gpu)
    except server.ServeError as exc:
        raise CommandError(str(exc)) from exc


def _add_keys_commands(commands: Commands) -> None:
    keys = commands.add_parser(
        "keys",
        help="create, list or revoke API keys (in the server's database)",
        description="Manage API keys. Each key owns what it creates; another key sees none of it.",
    )
    actions = keys.add_subparsers(title="actions", metavar="ACTION")
    create = actions.add_parser("create", help="make a new key and print it (once)")
    create.add_argument("--name", default="", help="a label to tell keys apart (default: the key's id)")
    create.set_defaults(run=_run_keys_command, keys_action="create")
    listing = actions.add_parser("list", help="list keys: id, name, created, revoked (never the keys)")
    listing.set_defaults(run=_run_keys_command, keys_action="list")
    revoke = actions.add_parser("revoke", help="revoke a key by its id; requests with it get 401 at once")
    revoke.add_argument("key_id", metavar="ID")
    revoke.set_defaults(run=_run_keys_command, keys_action="revoke")
    keys.set_defaults(run=lambda _args: _usage(keys))


def _run_keys_command(args: argparse.Namespace) -> int:
    require_install("keys")
    from service.cli import keys  # only now: it needs the server install

    if args.keys_action == "create":
        return keys.create(name=args.name)
    if args.keys_action == "list":
        return keys.list_keys()
    return keys.revoke(args.key_id)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_ERROR
