"""`dexndm launch NAME`: start a launch's node table as supervised processes (no launch_ros needed)."""

from __future__ import annotations

import argparse
import os

COMMAND = "launch"
HELP = "start a node table (hand, rotate, ...) as supervised processes"
DESCRIPTION = (
    "Start the nodes of a launch as processes: log lines are prefixed with the node name, Ctrl-C "
    "shuts everything down cleanly (torque off), a required node that dies ends the launch with a "
    "non-zero status. The same node table backs `ros2 launch dexndm <name>.launch.py`."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from dexndm.ros.bringup import LAUNCH_ARGUMENTS, LAUNCHES

    p.add_argument("launch", choices=sorted(LAUNCHES), help="which node table to start")
    for name, (default, help_) in LAUNCH_ARGUMENTS.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=f"{help_} (default: {default!r})")
    p.add_argument("--duration", type=float, default=None, help="stop by itself after this many seconds (exit 0)")
    p.add_argument("--params", action="append", default=[], metavar="FILE",
                   help="ROS parameter YAML applied to the nodes after the launch's own (repeatable)")
    p.add_argument("--print", dest="print_only", action="store_true", help="print the node table and exit")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from dexndm.ros.bringup import LAUNCH_ARGUMENTS, Supervisor, node_table, resolve_args

    overrides = {k: getattr(args, k) for k in LAUNCH_ARGUMENTS}
    try:
        resolved = resolve_args(overrides)
        nodes = node_table(args.launch, overrides)
    except ValueError as e:
        print(f"dexndm launch: {e}")
        return 2
    if args.duration is not None and args.duration <= 0:
        print("dexndm launch: --duration must be > 0")
        return 2
    if args.print_only:
        for n in nodes:
            print(f"{n.name}: {n.module} params={n.parameters} remap={list(n.remappings)}")
        return 0
    try:
        sup = Supervisor(nodes, namespace=resolved["namespace"], params_files=args.params)
    except FileNotFoundError as e:
        print(f"dexndm launch: {e}")
        return 2
    sup.start()
    return sup.wait(args.duration)
