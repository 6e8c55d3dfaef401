"""``dexndm calibrate``: measure the Dynamixel zero offsets (and check directions) of a hand.

Procedure (the servos stay limp; torque is turned off first):

1. Power the hand, connect the U2D2 and run ``dexndm calibrate --hand leap --port /dev/serial/by-id/...``.
2. Hold the hand in the reference pose (``--pose``; default ``zero``: every joint at 0 rad, which
   for LEAP is the flat hand with the fingers straight and side-by-side, thumb per the URDF) and
   press Enter. The servos' positions are averaged over ``--samples`` reads and
   ``offset = ticks * 2*pi/4096 - direction * pose`` per joint (``real = direction * sim + offset``).
3. With ``--closed``, curl every finger (close the hand) and press Enter: each joint that moved
   more than 0.2 rad has its direction sign measured (closing must increase the joint angle, or
   follow the hand's ``closed`` pose when it has one); joints that hardly moved keep the direction
   from the hand YAML and are reported as unchecked.
4. The ``calibration`` block is printed as YAML. ``--out PATH`` writes it: to a new file as a
   ``hardware.dynamixel.calibration`` fragment, or, for an existing hand YAML, only with
   ``--write``, replacing its calibration block in place (the old file is kept as ``PATH.bak``).
"""

from __future__ import annotations

import argparse
import datetime
import math
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

COMMAND = "calibrate"
HELP = "measure Dynamixel zero offsets/directions with the hand held flat; write the calibration block"
DESCRIPTION = __doc__
MIN_MOVE_RAD = 0.2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--hand", default="leap", help="hand name or YAML (needs hardware.dynamixel)")
    parser.add_argument("--port", required=True, help="serial device (/dev/serial/by-id/...) or emulator pty")
    parser.add_argument("--baudrate", type=int, default=4_000_000)
    parser.add_argument("--pose", default="zero", help="reference pose held in step 2: 'zero' or a pose of the hand")
    parser.add_argument("--closed", action="store_true", help="also check direction signs with a closed hand")
    parser.add_argument("--closed-pose", default="closed", help="hand pose giving the expected closing direction")
    parser.add_argument("--samples", type=int, default=20, help="reads averaged per pose")
    parser.add_argument("--yes", action="store_true", help="do not wait for Enter (scripted use)")
    parser.add_argument("--out", type=Path, default=None, help="write the calibration here (default: print only)")
    parser.add_argument("--write", action="store_true", help="allow replacing the block in an existing --out file")
    parser.add_argument("--latency-timer-ms", type=float, default=1.0, help="USB latency assumed in reply timeouts")


def wait_for_user(message: str, step: str) -> None:
    """Show an instruction and wait for Enter. ``step`` is 'reference' or 'closed' (tests replace this)."""
    input(f"{message} Press Enter when ready... ")


def _no_wait(message: str, step: str) -> None:
    return None


def _median_ticks(bus, samples: int) -> np.ndarray:
    rows = []
    for _ in range(max(1, samples) * 3):
        r = bus.read_state()
        if r.fresh:
            rows.append(r.position)
        if len(rows) >= samples:
            break
    if not rows:
        raise RuntimeError(f"{bus.port_name}: no valid position reads; check power and cabling")
    return np.median(np.array(rows), axis=0)


def measure(
    spec, bus, *, pose: str, closed: bool, closed_pose: str, samples: int, wait: Callable[[str, str], None]
) -> tuple[dict, list]:
    """Run the procedure on an open bus; returns ({joint: (offset_rad, direction)}, notes).

    wait(message, step): called before each measurement (step 'reference' or 'closed').
    """
    from dexndm.hand.dynamixel.control_table import RAD_PER_TICK

    order = spec.ordering("hardware")
    names = order.names
    cal_in = (spec.hardware.get("dynamixel") or {}).get("calibration") or {}
    direction = np.array([int((cal_in.get(n) or {}).get("direction", 1)) for n in names], dtype=float)
    q_ref = order.from_canonical(np.zeros(spec.n) if pose == "zero" else spec.pose(pose))
    notes: list[str] = []
    bus.set_torque(False)
    wait(f"Hold the hand in pose '{pose}' (joints {np.round(q_ref, 2).tolist()} rad, hardware order).", "reference")
    ref = _median_ticks(bus, samples)
    if closed:
        expected = np.ones(len(names))
        if closed_pose in spec.poses:
            expected = np.sign(order.from_canonical(spec.pose(closed_pose)) - q_ref)
            expected[expected == 0] = 1
        wait("Now close the hand (curl every finger and the thumb).", "closed")
        moved = (_median_ticks(bus, samples) - ref) * RAD_PER_TICK
        for k, n in enumerate(names):
            if abs(moved[k]) < MIN_MOVE_RAD:
                notes.append(f"{n}: moved {moved[k]:+.2f} rad only; direction {int(direction[k]):+d} kept (unchecked)")
                continue
            measured = float(np.sign(moved[k]) * expected[k])
            if measured != direction[k]:
                notes.append(f"{n}: direction changed {int(direction[k]):+d} -> {int(measured):+d}")
            direction[k] = measured
    offset = ref * RAD_PER_TICK - direction * q_ref
    return {n: (float(offset[k]), int(direction[k])) for k, n in enumerate(names)}, notes


def format_block(cal: dict, indent: int = 0, header: str = "") -> str:
    pad = " " * indent
    lines = [f"{pad}# {header}"] if header else []
    lines.append(f"{pad}calibration:")
    for n, (offset, direction) in cal.items():
        lines.append(f"{pad}  {n}: {{offset: {offset:.6f}, direction: {direction}}}")
    return "\n".join(lines) + "\n"


_BLOCK = re.compile(r"^(?P<indent>[ \t]*)calibration:[ \t]*(\{.*\})?[ \t]*(#.*)?$")


def replace_block(text: str, cal: dict, header: str) -> str:
    """Replace the single ``calibration:`` block of a YAML text (keeping everything else verbatim)."""
    lines = text.splitlines(keepends=True)
    hits = [k for k, line in enumerate(lines) if _BLOCK.match(line.rstrip("\n"))]
    if len(hits) != 1:
        raise ValueError(f"expected exactly one 'calibration:' block, found {len(hits)}")
    start = hits[0]
    indent = len(_BLOCK.match(lines[start].rstrip("\n")).group("indent"))
    end = start + 1
    while end < len(lines):
        stripped = lines[end].strip()
        if stripped and (len(lines[end]) - len(lines[end].lstrip())) <= indent:
            break
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    if start > 0 and lines[start - 1].strip().startswith("# calibration measured"):
        start -= 1
    return "".join(lines[:start]) + format_block(cal, indent, header) + "".join(lines[end:])


def run(args: argparse.Namespace) -> int:
    from dexndm.hand.dynamixel.bus import DynamixelBus, DynamixelBusError
    from dexndm.hand.dynamixel.control_table import control_table
    from dexndm.hand.spec import load_hand_spec

    spec = load_hand_spec(args.hand)
    dx = spec.hardware.get("dynamixel") or {}
    names = spec.ordering("hardware").names
    ids = dx.get("ids") or {n: k for k, n in enumerate(names)}
    if args.pose != "zero" and args.pose not in spec.poses:
        print(f"error: hand '{spec.name}' has no pose '{args.pose}'; known: ['zero'] + {sorted(spec.poses)}",
              file=sys.stderr)
        return 2
    if args.out is not None and args.out.exists() and not args.write:
        print(f"error: {args.out} exists; pass --write to replace its calibration block (a .bak copy is kept)",
              file=sys.stderr)
        return 2
    bus = DynamixelBus(args.port, [int(ids[n]) for n in names], baudrate=args.baudrate,
                       table=control_table(dx.get("model", "XC330-M288-T")), latency_timer_ms=args.latency_timer_ms)
    try:
        bus.open()
        bus.ping_all()
        cal, notes = measure(spec, bus, pose=args.pose, closed=args.closed, closed_pose=args.closed_pose,
                             samples=args.samples, wait=_no_wait if args.yes else wait_for_user)
    except (DynamixelBusError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        bus.close()
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    header = f"calibration measured by `dexndm calibrate` on {stamp}, pose '{args.pose}', port {args.port}"
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    far = [n for n, (off, _d) in cal.items() if abs(off - math.pi) > 0.5]
    if far:
        print(f"note: offsets of {far} are > 0.5 rad from pi; check the horn mounting of those servos", file=sys.stderr)
    block = format_block(cal, 0, header)
    if args.out is None:
        print(block, end="")
        return 0
    out: Path = args.out
    if out.exists():
        text = out.read_text()
        try:
            new = replace_block(text, cal, header)
        except ValueError as e:
            print(f"error: {out}: {e}; add a 'calibration:' entry under hardware.dynamixel or write to a new file",
                  file=sys.stderr)
            return 2
        shutil.copy2(out, out.with_name(out.name + ".bak"))
        out.write_text(new)
        print(f"replaced the calibration block of {out} (previous version: {out.name}.bak)")
    else:
        out.write_text("hardware:\n  dynamixel:\n" + format_block(cal, 4, header))
        print(f"wrote {out}; merge it into the hand YAML's hardware.dynamixel block")
    return 0
