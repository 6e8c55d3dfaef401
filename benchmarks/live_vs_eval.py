"""The shipped policy through the live ROS graph against `dexndm eval` in the same setting.

    .venv/bin/python benchmarks/live_vs_eval.py [--objects regular] [--axes z,-z] [--repeats 1]
        [--eval-episodes 20] [--json out.json]

For each (object, axis): `dexndm launch rotate --backend sim --object O --axis A --duration 30` (driver,
policy, adaptation and wrist nodes as processes, messages over DDS) and the Rot/TTF its driver reports from
the simulator's object state over the 20 s from the policy's first command, with the policy's actions as a subscriber receives them (how long it acted, at
what rate); then `dexndm eval --objects O --axis A --no-randomize` (the catalog object,
as the live sim backend uses it) on --eval-episodes episodes. Prints one row per setting and the ratio of the
means (live / eval). Run it on a quiet machine: the live graph runs in real time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 60))
sys.path.insert(0, str(REPO / "test"))
SUMMARY = re.compile(r"object rotation: Rot (-?[0-9.]+) rad about (\S+) in ([0-9.]+) s[^,]*, TTF ([0-9.]+) s")


def live(obj: str, axis: str, duration: float, policy: str) -> dict:
    """One live run; also the policy's action stream as a subscriber receives it: how many actions per
    second it really sent and for how long (the driver counts rotation from its own start)."""
    from rosgraph import Launched, Probe
    from sensor_msgs.msg import JointState

    args = ["launch", "rotate", "--backend", "sim", "--object", obj, f"--axis={axis}", "--duration", str(duration)]
    if policy:
        args += ["--policy", policy]
    t0 = time.monotonic()
    with Probe("bench_live") as probe, Launched(*args) as lc:
        probe.subscribe(JointState, "/dexndm/policy_action", qos=2000)
        rc = lc.wait(duration + 180)
        out = lc.output
        arrivals = np.array(probe.arrivals["/dexndm/policy_action"])
    found = SUMMARY.findall(out)
    if rc != 0 or not found:
        raise SystemExit(f"live run {obj} {axis} failed (rc {rc}, no rotation summary):\n{out[-1500:]}")
    rot, _about, elapsed, ttf = found[-1]
    gaps = np.diff(arrivals) if len(arrivals) > 1 else np.zeros(1)
    return {"rot_rad": float(rot), "ttf_s": float(ttf), "elapsed_s": float(elapsed),
            "actions": int(len(arrivals)), "acting_s": float(arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0,
            "action_rate_hz": float((len(arrivals) - 1) / (arrivals[-1] - arrivals[0])) if len(arrivals) > 2 else 0.0,
            "action_gap_p99_ms": float(np.percentile(gaps, 99) * 1e3),
            "wall_s": round(time.monotonic() - t0, 1)}


def offline(obj: str, axis: str, episodes: int, seed: int, policy: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eval.json"
        cmd = [sys.executable, "-m", "dexndm.cli", "eval", "--objects", obj, f"--axis={axis}", "--no-randomize",
               "--episodes", str(episodes), "--seed", str(seed), "--json", str(out)]
        if policy:
            cmd += ["--policy", policy]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=3600)
        if r.returncode != 0:
            raise SystemExit(f"dexndm eval {obj} {axis} failed:\n{(r.stdout + r.stderr)[-1500:]}")
        res = json.loads(out.read_text())
    rots = np.array([e["rot_rad"] for e in res["episodes"] if not e["unstable"]])
    return {"rot_rad": float(rots.mean()), "rot_se": float(rots.std(ddof=1) / np.sqrt(len(rots))) if len(rots) > 1
            else 0.0, "ttf_s": res["ttf_s"], "episodes": len(rots)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", default="regular", help="comma-separated objects, or 'regular'")
    ap.add_argument("--axes", default="z,-z")
    ap.add_argument("--repeats", type=int, default=1, help="live runs per (object, axis)")
    ap.add_argument("--duration", type=float, default=30.0,
                    help="launch duration (s): the nodes take a few seconds to come up, and the driver reports the "
                         "20 s from the policy's first command")
    ap.add_argument("--eval-episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--policy", default="", help="policy artifact ('' = shipped)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from dexndm.hand.sim.objects import resolve_objects

    objects = [o.name for o in resolve_objects(args.objects)]
    axes = args.axes.split(",")
    settings = [(o, a) for o in objects for a in axes]
    rows, t0 = [], time.monotonic()
    for k, (obj, axis) in enumerate(settings):
        lives = [live(obj, axis, args.duration, args.policy) for _ in range(args.repeats)]
        ev = offline(obj, axis, args.eval_episodes, args.seed, args.policy)
        row = {"object": obj, "axis": axis, "live": lives, "live_rot_rad": float(np.mean([x["rot_rad"] for x in lives])),
               "live_ttf_s": float(np.mean([x["ttf_s"] for x in lives])),
               "live_acting_s": float(np.mean([x["acting_s"] for x in lives])),
               "live_action_rate_hz": float(np.mean([x["action_rate_hz"] for x in lives])), "eval": ev}
        rows.append(row)
        el = time.monotonic() - t0
        print(f"[{k + 1}/{len(settings)}] {obj} {axis}: live {row['live_rot_rad']:.2f} rad, eval {ev['rot_rad']:.2f} rad; "
              f"ETA {el / (k + 1) * (len(settings) - k - 1) / 60:.1f} min", flush=True)
    live_mean = float(np.mean([r["live_rot_rad"] for r in rows]))
    acting = float(np.mean([r["live_acting_s"] for r in rows]))
    rate = float(np.mean([r["live_action_rate_hz"] for r in rows]))
    eval_mean = float(np.mean([r["eval"]["rot_rad"] for r in rows]))
    print()
    print(f"{'object':14s} {'axis':>4s} {'live Rot':>9s} {'live TTF':>9s} {'acting s':>9s} {'act Hz':>7s} "
          f"{'eval Rot':>14s} {'eval TTF':>9s}")
    for r in rows:
        e = r["eval"]
        print(f"{r['object']:14s} {r['axis']:>4s} {r['live_rot_rad']:9.2f} {r['live_ttf_s']:9.1f} "
              f"{r['live_acting_s']:9.1f} {r['live_action_rate_hz']:7.2f} "
              f"{e['rot_rad']:8.2f} +-{e['rot_se']:4.2f} {e['ttf_s']:9.1f}")
    print(f"{'mean':14s} {'':>4s} {live_mean:9.2f} {'':9s} {acting:9.1f} {rate:7.2f} {eval_mean:8.2f}")
    ratio = live_mean / eval_mean if eval_mean else float("nan")
    print(f"live / eval = {ratio:.2f} ({len(rows)} settings x {args.repeats} live run(s); eval {args.eval_episodes} "
          f"episodes each, catalog objects); {(time.monotonic() - t0) / 60:.1f} min")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "live_rot_rad": live_mean, "eval_rot_rad": eval_mean,
                                         "live_acting_s": acting, "live_action_rate_hz": rate,
                                         "ratio": ratio, "config": vars(args) | {"json": str(args.json)}}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
