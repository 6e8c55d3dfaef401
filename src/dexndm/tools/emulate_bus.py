"""``dexndm emulate-bus``: emulate a hand's Dynamixel servos on a pseudo-terminal.

Prints the pty path to pass as ``--port`` (or the ROS parameter ``port``) and answers Protocol 2.0
packets until Ctrl-C, optionally injecting faults. Example::

    dexndm emulate-bus --hand leap --drop 0.05 --link /tmp/leap_bus
    dexndm calibrate --hand leap --port /tmp/leap_bus

With ``--control PATH`` the running emulator also listens on a local UNIX socket for JSON requests
(fault injection, moving a joint by hand, reading registers; see
:class:`dexndm.hand.dynamixel.emulator.ControlServer`); from Python::

    from dexndm.hand.dynamixel.emulator import EmulatorControl
    ctl = EmulatorControl("/tmp/leap_bus.ctl")
    ctl.set_faults(drop=0.1); ctl.unplug(duration_s=2.0); ctl.snapshot()
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

COMMAND = "emulate-bus"
HELP = "emulate a hand's Dynamixel servos on a pty (for the driver, tools and tests without hardware)"


def _ids(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def _overheat(text: str) -> tuple[int, float]:
    dxl_id, _, temp = text.partition(":")
    return int(dxl_id), float(temp or 80.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hand", default="leap", help="hand name or YAML whose hardware.dynamixel.ids to emulate")
    parser.add_argument("--ids", type=_ids, help="IDs to emulate instead, e.g. '0-15' or '0,1,2'")
    parser.add_argument("--model-number", type=int, default=None, help="model number the servos report (default: "
                        "the hand's model)")
    parser.add_argument("--time-constant", type=float, default=0.05, help="joint response time constant (s)")
    parser.add_argument("--drop", type=float, default=0.0, help="probability that a status packet is dropped")
    parser.add_argument("--corrupt", type=float, default=0.0, help="probability that a status packet has a bad CRC")
    parser.add_argument("--wrong-id", type=float, default=0.0, help="probability that a reply carries a wrong ID")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="delay added to replies (ms)")
    parser.add_argument("--delay", type=float, default=None, help="probability that a reply is delayed (default 1 "
                        "when --delay-ms is set)")
    parser.add_argument("--overheat", type=_overheat, action="append", default=[], metavar="ID[:DEGC]",
                        help="pin a motor's temperature (default 80 degC); repeatable")
    parser.add_argument("--unplug-at", type=float, default=None, help="unplug the bus this many seconds after start")
    parser.add_argument("--unplug-for", type=float, default=2.0, help="how long the bus stays unplugged (s)")
    parser.add_argument("--link", type=Path, default=None, help="also make this symlink to the pty (stable path)")
    parser.add_argument("--control", type=Path, default=None, metavar="PATH",
                        help="listen on this UNIX socket for JSON control requests (faults, registers, state)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault dice")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: until Ctrl-C)")
    parser.add_argument("--stats-every", type=float, default=0.0, help="print traffic counters every N s (0: never)")


def _hand_ids(hand: str) -> tuple[list[int], int | None, str]:
    from dexndm.hand.dynamixel.control_table import control_table
    from dexndm.hand.spec import load_hand_spec

    spec = load_hand_spec(hand)
    dx = spec.hardware.get("dynamixel") or {}
    names = spec.ordering("hardware").names
    ids = dx.get("ids") or {n: k for k, n in enumerate(names)}
    model = dx.get("model")
    number = control_table(model).model_number if model else None
    return sorted(int(ids[n]) for n in names), number, f"{spec.name} ({model or 'unknown model'})"


def run(args: argparse.Namespace) -> int:
    from dexndm.hand.dynamixel.emulator import ControlServer, DynamixelEmulator

    model_number = args.model_number
    if args.ids:
        ids, label = args.ids, "servos"
    else:
        try:
            ids, number, label = _hand_ids(args.hand)
        except (OSError, KeyError, ValueError) as e:
            print(f"error: cannot read the servo IDs of hand '{args.hand}': {e}; pass --ids 0-15", file=sys.stderr)
            return 2
        model_number = model_number if model_number is not None else number
    emu = DynamixelEmulator(ids, model_number=model_number, time_constant_s=args.time_constant, seed=args.seed)
    emu.set_faults(drop=args.drop, corrupt=args.corrupt, wrong_id=args.wrong_id, delay=args.delay,
                   delay_s=args.delay_ms / 1000.0)
    link: Path | None = args.link
    control = ControlServer(emu, args.control) if args.control is not None else None
    with emu:
        for dxl_id, temp in args.overheat:
            emu.overheat(dxl_id, temp)
        if link is not None:
            if link.exists() and not link.is_symlink():
                print(f"error: --link {link} exists and is not a symlink; choose another path", file=sys.stderr)
                return 2
            if link.is_symlink():
                link.unlink()
            os.symlink(emu.port, link)
        try:
            if control is not None:
                try:
                    control.start()
                except OSError as e:
                    print(f"error: --control {args.control}: {e}", file=sys.stderr)
                    return 2
            port = str(link) if link is not None else emu.port
            print(f"Emulating {len(ids)} {label} servos, IDs {ids}, on {emu.port}", flush=True)
            print(f"Use it as:  --port {port}    (ROS parameter: port:={port})", flush=True)
            if control is not None:
                print(f"Control socket: {args.control}", flush=True)
            print("Ctrl-C to stop.", flush=True)
            start = time.monotonic()
            end = start + args.duration if args.duration > 0 else math.inf
            unplug_at = start + args.unplug_at if args.unplug_at is not None else math.inf
            next_stats = start + args.stats_every if args.stats_every > 0 else math.inf
            while True:
                now = time.monotonic()
                if now >= end:
                    break
                if now >= unplug_at:
                    emu.unplug(args.unplug_for)
                    print(f"unplugged for {args.unplug_for:g} s", flush=True)
                    unplug_at = math.inf
                if now >= next_stats:
                    print(f"stats: {emu.stats()}", flush=True)
                    next_stats = now + args.stats_every
                time.sleep(min(0.1, max(0.0, min(end, unplug_at, next_stats) - now)))
        except KeyboardInterrupt:
            pass
        finally:
            if control is not None:
                control.stop()
            if link is not None and link.is_symlink():
                link.unlink()
    print(f"stopped; traffic: {emu.stats()}", flush=True)
    return 0
