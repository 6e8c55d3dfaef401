"""Sim backend real-time factor and the live driver's joint_states rate and jitter.

    .venv/bin/python benchmarks/sim_driver.py [--seconds 8] [--json out.json]

Part 1 steps MujocoHand as fast as possible (what training and evaluation get).
Part 2 starts `dexndm launch hand --backend sim` and measures what a subscriber receives.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))

import numpy as np  # noqa: E402

from dexndm.hand.sim.mujoco_hand import MujocoHand  # noqa: E402
from dexndm.hand.sim.objects import get_object  # noqa: E402
from dexndm.hand.sim.profiles import load_profile  # noqa: E402
from dexndm.hand.sim.scene import SceneConfig  # noqa: E402
from dexndm.hand.spec import load_hand_spec  # noqa: E402


def sim_rtf(hand: str, profile: str, obj: str | None, seconds: float = 10.0) -> dict:
    spec = load_hand_spec(hand)
    h = MujocoHand(spec, SceneConfig(object=get_object(obj) if obj else None), profile=load_profile(profile))
    h.connect()
    h.set_torque(True)
    steps = int(seconds / h.control_dt)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        h.step_control(spec.clamp(h.targets + rng.normal(0, 0.02, spec.n)))
    wall = time.perf_counter() - t0
    physics = steps * h._steps_per_control
    return {"hand": hand, "profile": profile, "object": obj or "none", "rtf": seconds / wall,
            "control_steps_per_s": steps / wall, "physics_steps_per_s": physics / wall}


def live_rate(seconds: float) -> dict:
    from rosgraph import Launched, Probe
    from sensor_msgs.msg import JointState

    with Probe("bench_probe") as probe, Launched("launch", "hand", "--duration", str(seconds + 6)) as launch:
        probe.subscribe(JointState, "/joint_states", qos=1000)
        probe.wait_for("/joint_states", 50, timeout=30)
        probe.clear()
        time.sleep(seconds)
        msgs = probe.msgs["/joint_states"][:]
        arr = np.array(probe.arrivals["/joint_states"][: len(msgs)])
        launch.interrupt()
    stamps = np.array([m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for m in msgs])
    ds, da = np.diff(stamps), np.diff(arr)
    return {
        "messages": len(msgs),
        "rate_hz_stamps": (len(stamps) - 1) / (stamps[-1] - stamps[0]),
        "rate_hz_arrivals": (len(arr) - 1) / (arr[-1] - arr[0]),
        "stamp_period_p50_ms": float(np.median(ds) * 1e3),
        "stamp_jitter_p99_ms": float(np.percentile(np.abs(ds - 0.01), 99) * 1e3),
        "arrival_jitter_p99_ms": float(np.percentile(np.abs(da - 0.01), 99) * 1e3),
        "max_gap_ms": float(da.max() * 1e3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="live measurement window (s)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    rows = [sim_rtf(h, p, o) for h, p, o in [("leap", "ideal", None), ("leap", "ideal", "cylinder_55"),
                                             ("leap", "leap_default", "cylinder_55"),
                                             ("allegro", "ideal", "cylinder_55")]]
    print("sim backend, stepped as fast as possible (one thread):")
    print(f"{'hand':8} {'profile':13} {'object':12} {'RTF':>7} {'ctrl steps/s':>13} {'physics steps/s':>16}")
    for r in rows:
        print(f"{r['hand']:8} {r['profile']:13} {r['object']:12} {r['rtf']:7.1f} {r['control_steps_per_s']:13.0f} "
              f"{r['physics_steps_per_s']:16.0f}")
    live = live_rate(args.seconds)
    print(f"\nlive `dexndm launch hand` (100 Hz nominal, real time), {args.seconds:g} s window:")
    for k, v in live.items():
        print(f"  {k:24} {v:10.3f}" if isinstance(v, float) else f"  {k:24} {v:10d}")
    print(f"  rate / nominal           {live['rate_hz_stamps'] / 100.0:10.3f}")
    if args.json:
        args.json.write_text(json.dumps({"sim": rows, "live": live}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
