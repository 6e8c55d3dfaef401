"""Control-cycle cost of the Dynamixel driver against the emulator.

One cycle = one sync write of 16 goal positions + one (fast) sync read of present current,
velocity and position (what the LEAP driver does per control tick). For each variant the table
shows the achieved cycle rate, the driver thread's CPU time per cycle (``time.thread_time``, so
the emulator's work is excluded), bytes per cycle on the wire, and the time those bytes take on a
4 Mbps bus (10 bits per byte, return delay 0, no turnaround gaps): the theoretical cycle limit.
``cpu/bus`` is the driver's CPU time as a fraction of that bus time (> 1: the host, not the
wire, limits the rate).

By default the emulator runs in a child process so it does not compete for the driver's GIL;
the rate therefore also includes pty and emulator latency, which a real U2D2 does not have (and
the U2D2's USB latency, which the emulator does not have).

    python benchmarks/dynamixel_cycle.py [--cycles 2000] [--json out.json] [--in-process]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import sys
import time

import numpy as np

from dexndm.hand.dynamixel.bus import DynamixelBus
from dexndm.hand.dynamixel.emulator import DynamixelEmulator

N_SERVOS = 16
BAUD = 4_000_000
BITS_PER_BYTE = 10


def _serve(conn, stop) -> None:
    with DynamixelEmulator(range(N_SERVOS), time_constant_s=0.02) as emu:
        conn.send(emu.port)
        stop.wait()


def _bus_cycles(port: str, mode: str, cycles: int) -> dict:
    bus = DynamixelBus(port, range(N_SERVOS), baudrate=BAUD, read_mode=mode, latency_timer_ms=5.0)
    bus.open()
    try:
        for i in range(N_SERVOS):  # as the driver configures it: reply without the 500 us factory delay
            bus.write(i, "return_delay_time", 0)
        goals = np.full(N_SERVOS, 2048, dtype=np.int64)
        for _ in range(50):  # warm up
            bus.write_goal_positions(goals)
            bus.read_state()
        tx0, rx0 = bus.bytes_on_wire
        stale = 0
        w0, c0 = time.perf_counter(), time.thread_time()
        for k in range(cycles):
            goals[:] = 2048 + (k % 100)
            bus.write_goal_positions(goals)
            stale += not bus.read_state().fresh
        w1, c1 = time.perf_counter(), time.thread_time()
        tx1, rx1 = bus.bytes_on_wire
    finally:
        bus.close()
    return _row(f"bus {mode} sync read", cycles, w1 - w0, c1 - c0, (tx1 - tx0) + (rx1 - rx0), stale)


def _hand_cycles(port: str, cycles: int) -> dict:
    """Through DynamixelHand (clamping, calibration, canonical order) with a LEAP-like spec."""
    from dexndm.hand.dynamixel.leap import from_options
    from dexndm.hand.spec import load_hand_spec

    try:
        spec = load_hand_spec("leap")
    except Exception as e:  # noqa: BLE001 - the hand YAML is optional for this benchmark
        print(f"(skipping the DynamixelHand row: cannot load hand 'leap': {e})", file=sys.stderr)
        return {}

    hand = from_options(spec, {"port": port, "latency_timer_ms": 5.0})
    hand.connect()
    try:
        q = np.clip(np.zeros(spec.n), spec.lower, spec.upper)
        for _ in range(50):
            hand.write_targets(q)
            hand.read_state()
        tx0, rx0 = hand._bus.bytes_on_wire
        stale = 0
        w0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(cycles):
            hand.write_targets(q)
            stale += hand.read_state().stale
        w1, c1 = time.perf_counter(), time.thread_time()
        tx1, rx1 = hand._bus.bytes_on_wire
    finally:
        hand.disconnect()
    return _row("DynamixelHand (fast)", cycles, w1 - w0, c1 - c0, (tx1 - tx0) + (rx1 - rx0), stale)


def _row(name: str, cycles: int, wall: float, cpu: float, nbytes: int, stale: int) -> dict:
    per_bytes = nbytes / cycles
    bus_s = per_bytes * BITS_PER_BYTE / BAUD
    return {
        "variant": name,
        "cycles": cycles,
        "rate_hz": cycles / wall,
        "wall_us_per_cycle": 1e6 * wall / cycles,
        "cpu_us_per_cycle": 1e6 * cpu / cycles,
        "bytes_per_cycle": per_bytes,
        "bus_us_per_cycle_4mbps": 1e6 * bus_s,
        "bus_limit_hz_4mbps": 1.0 / bus_s,
        "cpu_over_bus": (cpu / cycles) / bus_s,
        "stale_cycles": stale,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=2000)
    ap.add_argument("--json", type=str, default=None, help="also write the results here")
    ap.add_argument("--in-process", action="store_true", help="run the emulator in a thread of this process")
    args = ap.parse_args(argv)

    emu = proc = stop = None
    if args.in_process:
        emu = DynamixelEmulator(range(N_SERVOS), time_constant_s=0.02)
        port = emu.start()
    else:
        ctx = mp.get_context("fork")
        parent, child = ctx.Pipe()
        stop = ctx.Event()
        proc = ctx.Process(target=_serve, args=(child, stop), daemon=True)
        proc.start()
        port = parent.recv()
    try:
        rows = [_bus_cycles(port, "fast", args.cycles), _bus_cycles(port, "sync", args.cycles)]
        hand_row = _hand_cycles(port, args.cycles)
        if hand_row:
            rows.append(hand_row)
    finally:
        if emu is not None:
            emu.stop()
        if proc is not None:
            stop.set()
            proc.join(timeout=5)

    cols = [("variant", "{:<24}"), ("rate_hz", "{:>9.0f}"), ("cpu_us_per_cycle", "{:>10.0f}"),
            ("bytes_per_cycle", "{:>7.0f}"), ("bus_us_per_cycle_4mbps", "{:>9.0f}"),
            ("bus_limit_hz_4mbps", "{:>10.0f}"), ("cpu_over_bus", "{:>8.2f}"), ("stale_cycles", "{:>6}")]
    heads = ["variant", "rate Hz", "CPU us/cyc", "B/cyc", "bus us", "bus lim Hz", "cpu/bus", "stale"]
    widths = [24, 9, 10, 7, 9, 10, 8, 6]
    print(f"{N_SERVOS} servos, {args.cycles} cycles, emulator {'in-process' if args.in_process else 'in a child'}"
          f" ({platform.python_version()}, {platform.machine()})")
    print(" ".join(h.rjust(w) if k else h.ljust(w) for k, (h, w) in enumerate(zip(heads, widths, strict=True))))
    for r in rows:
        print(" ".join(fmt.format(r[c]) for c, fmt in cols))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"servos": N_SERVOS, "baudrate": BAUD, "in_process": args.in_process, "rows": rows}, f,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
