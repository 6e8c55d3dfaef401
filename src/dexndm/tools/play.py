"""``dexndm play``: publish a bag's messages with their recorded timing."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

COMMAND = "play"
HELP = "Play a rosbag2 bag (mcap or sqlite3) with its original timing."
DESCRIPTION = (
    "Publish the recorded serialized messages of BAG with their original timing (scaled by --rate), "
    "with the recorded QoS; --clock publishes /clock so nodes with use_sim_time follow the bag."
)
DEFAULT_CLOCK_HZ = 40.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, help="bag directory (holding metadata.yaml)")
    parser.add_argument("-r", "--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    parser.add_argument("-l", "--loop", action="store_true", help="start over at the end, until Ctrl-C")
    parser.add_argument("--topics", nargs="+", default=[], metavar="TOPIC", help="play only these topics")
    parser.add_argument("--start-offset", type=float, default=0.0, metavar="S", help="skip the first S seconds")
    parser.add_argument("--clock", nargs="?", type=float, const=DEFAULT_CLOCK_HZ, default=0.0, metavar="HZ",
                        help=f"publish /clock at HZ (default {DEFAULT_CLOCK_HZ:g} when given without a value)")
    parser.add_argument("-d", "--delay", type=float, default=0.0, metavar="S", help="wait S seconds before playing")
    parser.add_argument("--wait-for-subscribers", type=float, nargs="?", const=10.0, default=0.0, metavar="S",
                        help="before playing, wait up to S s (default 10) until every topic has a subscriber")
    parser.add_argument("--no-realtime", dest="realtime", action="store_false",
                        help="do not pace from a SCHED_FIFO thread (used when permitted, for sub-ms timing under load)")


def run(args: argparse.Namespace) -> int:
    if not args.rate > 0 or args.start_offset < 0 or args.clock < 0 or args.delay < 0:
        print("dexndm play: error: --rate must be > 0; offsets, delays and --clock must be >= 0", file=sys.stderr)
        return 2
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from dexndm.bag.io import BagError
    from dexndm.ros.play import PlayOptions, run_player

    opts = PlayOptions(
        bag=args.bag,
        rate=args.rate,
        loop=args.loop,
        topics=tuple(args.topics),
        start_offset=args.start_offset,
        clock_hz=args.clock,
        delay=args.delay,
        wait_for_subscribers=args.wait_for_subscribers,
        realtime=args.realtime,
    )
    try:
        return run_player(opts)
    except BagError as exc:
        print(f"dexndm play: error: {exc}", file=sys.stderr)
        return 1
