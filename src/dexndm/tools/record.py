"""``dexndm record``: record ROS 2 topics into a rosbag2 bag (byte-faithful, crash-tolerant)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

COMMAND = "record"
HELP = "Record topics into a rosbag2 bag (mcap or sqlite3)."
DESCRIPTION = (
    "Subscribe to TOPICS (or --all, picking up new topics as they appear) and store the exact wire bytes "
    "with their receive times in a rosbag2 bag that ROS 2 and rosbags read. Ctrl-C or SIGTERM closes "
    "the bag cleanly; data is flushed every --flush-interval seconds, so after a crash `dexndm bag "
    "reindex DIR` recovers everything up to the last flush."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topics", nargs="*", metavar="TOPIC", help="topics to record")
    parser.add_argument("-a", "--all", dest="all_topics", action="store_true", help="record every (non-hidden) topic")
    parser.add_argument("-o", "--output", type=Path, help="bag directory to create (default: rosbag2_<date-time>)")
    parser.add_argument("-s", "--storage", choices=("mcap", "sqlite3"), default="mcap", help="storage (default mcap)")
    parser.add_argument("--compression", choices=("none", "zstd", "lz4"), default="none",
                        help="MCAP chunk compression (default none)")
    parser.add_argument("--max-bag-size", type=int, default=0, metavar="BYTES",
                        help="split into a new storage file at this size (0: never)")
    parser.add_argument("--max-bag-duration", type=float, default=0.0, metavar="S",
                        help="split into a new storage file after this many seconds of data (0: never)")
    parser.add_argument("--duration", type=float, default=0.0, metavar="S", help="stop after S seconds (0: until Ctrl-C)")
    parser.add_argument("--flush-interval", type=float, default=0.25, metavar="S",
                        help="make data crash-safe at least this often (default 0.25 s)")


def run(args: argparse.Namespace) -> int:
    if bool(args.topics) == bool(args.all_topics):
        print("dexndm record: error: give TOPIC names or --all (not both)", file=sys.stderr)
        return 2
    if args.max_bag_size < 0 or args.max_bag_duration < 0 or args.duration < 0 or args.flush_interval <= 0:
        print("dexndm record: error: sizes and durations must be >= 0, --flush-interval > 0", file=sys.stderr)
        return 2
    if args.storage == "sqlite3" and args.compression != "none":
        print("dexndm record: error: --compression applies to mcap storage only", file=sys.stderr)
        return 2
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from dexndm.bag.io import BagError
    from dexndm.ros.record import RecordOptions, run_recorder

    output = args.output or Path(f"rosbag2_{dt.datetime.now():%Y_%m_%d-%H_%M_%S}")
    opts = RecordOptions(
        output=output,
        topics=tuple(args.topics),
        all_topics=args.all_topics,
        storage=args.storage,
        compression=args.compression,
        max_bag_size=args.max_bag_size,
        max_bag_duration=args.max_bag_duration,
        duration=args.duration,
        flush_interval=args.flush_interval,
    )
    try:
        return run_recorder(opts)
    except BagError as exc:
        print(f"dexndm record: error: {exc}", file=sys.stderr)
        return 1
