"""The ``dexndm`` command: subcommands are discovered from :mod:`dexndm.tools`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import dexndm.tools
from dexndm import __version__


def _tool_modules():
    for info in sorted(pkgutil.iter_modules(dexndm.tools.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"dexndm.tools.{info.name}")
        if hasattr(mod, "COMMAND") and hasattr(mod, "run"):
            yield mod


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dexndm",
        description="DexNDM in-hand rotation stack: launch, collect, train, evaluate, record and replay.",
    )
    parser.add_argument("--version", action="version", version=f"dexndm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _tool_modules():
        p = sub.add_parser(mod.COMMAND, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def command_line(args) -> str:
    """The command that ran, as a card or artifact records it ("dexndm train-ndm --data ..."): the argv given to
    :func:`main` (tests, scripts), else the process's own."""
    import shlex

    argv = getattr(args, "_argv", None)
    return "dexndm " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args._argv = None if argv is None else list(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
