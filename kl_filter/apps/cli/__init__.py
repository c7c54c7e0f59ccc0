"""The ``kl-filter`` command line.

Each subcommand lives in its own module of this package and exposes ``add_parser(subparsers)``, which
registers the command and sets ``func=run`` (``run(args) -> int``). Modules are listed in ``COMMANDS``;
heavy imports happen inside ``run`` so ``kl-filter --help`` stays instant.

Every :class:`~kl_filter.core.errors.KLFilterError` becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys

from kl_filter.core.errors import KLFilterError

# module name (in kl_filter.apps.cli) for each command group, in --help order
COMMANDS = [
    "demo",
    "synth_pool",
    "select",
    "run_recipe",
    "stats",
    "score",
    "check_uids",
    "weights",
    "list_filters",
    "reshard",
    "harness",
    "embed",
    "track",
    "inspect",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kl-filter",
        description="Score, filter and select DataComp-style image-text pools (KL-guided filters and DataComp baselines).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue  # command not built yet in this checkout
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "filter_params", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra  # a filter's own flags (select, run): parsed from its signature once its name is known
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KLFilterError as e:
        print(f"kl-filter: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `kl-filter list-filters -v | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("kl-filter: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """The ``kl-filter`` command: :func:`main`, then leave at once with its status.

    Every output is written (atomically) and every stream flushed before leaving; ``os._exit`` then skips the
    teardown of native libraries' static thread pools, which under load intermittently aborts a finished process
    with "terminate called without an active exception" and status -6 instead of 0 or 2 (Arrow's C++ pools:
    apache/arrow#34314, seen here too).
    """
    code = main()
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()  # a local cluster this command started
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe (the reader left) is not an error here
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
