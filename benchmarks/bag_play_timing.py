"""How faithfully does `dexndm play` reproduce recorded message timing?

Writes a JointState bag at --hz for --seconds (or uses --bag), plays it with `dexndm play` in a
subprocess, captures the messages with a raw subscriber here (arrival = rmw reception timestamp) and
prints p50/p99/max of |arrival interval - recorded interval| and the end-to-end drift.

    .venv/bin/python benchmarks/bag_play_timing.py                 # 100 Hz, 5 s, both pacing modes
    .venv/bin/python benchmarks/bag_play_timing.py --bag DIR --topic /joint_states --runs 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from dexndm.bag.io import BagWriter, read_messages  # noqa: E402


def make_bag(path: Path, hz: float, seconds: float) -> None:
    t0 = time.time_ns()
    period = round(1e9 / hz)
    with BagWriter(path) as bag:
        bag.add_topic("/joint_states", "sensor_msgs/msg/JointState", qos={"reliability": "reliable"})
        for i in range(int(hz * seconds)):
            n = 16 + i % 8
            t = t0 + i * period
            bag.write_msg(
                "/joint_states",
                t,
                {"header": {"stamp": t}, "name": [f"j{k}" for k in range(n)], "position": np.arange(n) * 0.01 * i},
            )


def play_once(bag: Path, topic: str, realtime: bool) -> dict:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from dexndm.ros.record import import_message_type

    recorded = list(read_messages(bag, [topic]))
    msg_cls = import_message_type(recorded[0].msgtype)
    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("play_timing_probe", context=ctx)
    arrivals: list[int] = []
    node.create_subscription(msg_cls, topic, lambda raw, info: arrivals.append(info["received_timestamp"]),
                             len(recorded) + 10, raw=True)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    thread = threading.Thread(target=spin)
    thread.start()
    try:
        cmd = [sys.executable, "-m", "dexndm.cli", "play", str(bag), "--topics", topic, "--wait-for-subscribers"]
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        proc = subprocess.run(cmd + ([] if realtime else ["--no-realtime"]), env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"dexndm play failed: {proc.stderr.strip()}")
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    if len(arrivals) != len(recorded):
        raise SystemExit(f"received {len(arrivals)} of {len(recorded)} messages")
    arr = np.asarray(arrivals, np.int64)
    rec = np.asarray([m.t_ns for m in recorded], np.int64)
    err = np.abs(np.diff(arr) - np.diff(rec)) * 1e-6
    return {
        "p50": float(np.percentile(err, 50)),
        "p99": float(np.percentile(err, 99)),
        "max": float(err.max()),
        "drift": float(((arr[-1] - arr[0]) - (rec[-1] - rec[0])) * 1e-6),
        "player": proc.stdout.strip().splitlines()[-1],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bag", type=Path, help="play this bag instead of a generated one")
    ap.add_argument("--topic", default="/joint_states")
    ap.add_argument("--hz", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--mode", choices=("both", "realtime", "normal"), default="both")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bag = args.bag
        if bag is None:
            bag = Path(tmp) / "timing"
            make_bag(bag, args.hz, args.seconds)
        modes = {"both": (True, False), "realtime": (True,), "normal": (False,)}[args.mode]
        print(f"bag {bag}, topic {args.topic}; error = |arrival interval - recorded interval|, load {os.getloadavg()}")
        for realtime in modes:
            for run in range(args.runs):
                r = play_once(bag, args.topic, realtime)
                label = "SCHED_FIFO pacing" if realtime else "normal pacing    "
                print(
                    f"{label} run {run + 1}: p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms  max {r['max']:.3f} ms  "
                    f"drift {r['drift']:+.3f} ms | {r['player']}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
