"""``dexndm bag info|reindex``: inspect a rosbag2 bag, or repair one left behind by a crash."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMAND = "bag"
HELP = "Inspect (info) or repair (reindex) a rosbag2 bag directory."
DESCRIPTION = (
    "info: storage, files, size, start/end, and per topic the type, message count and rate. "
    "reindex: recover every complete message of a bag whose metadata.yaml or MCAP summary/index is "
    "missing (e.g. after a crash) and rewrite its metadata."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bag_command", metavar="SUBCOMMAND", required=True)
    info = sub.add_parser("info", help="Summarize a bag.")
    info.add_argument("bag", type=Path, help="bag directory (holding metadata.yaml)")
    reindex = sub.add_parser("reindex", help="Rebuild metadata.yaml and MCAP indexes from the storage files.")
    reindex.add_argument("bag", type=Path, help="bag directory (may lack metadata.yaml)")
    reindex.add_argument(
        "--finalize",
        action="store_true",
        help="also rename DIR.partial (left by an interrupted writer) to DIR",
    )


def run(args: argparse.Namespace) -> int:
    from dexndm.bag.io import BagError

    try:
        if args.bag_command == "info":
            from dexndm.bag.info import bag_info, format_info

            print(format_info(bag_info(args.bag)))
        else:
            from dexndm.bag.reindex import describe, reindex

            print(describe(reindex(args.bag, finalize=args.finalize)))
    except BagError as exc:
        print(f"dexndm bag {args.bag_command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"dexndm bag {args.bag_command}: error: {exc.filename or args.bag}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
