"""Policy inference time per tick and training throughput, next to the raw MuJoCo step rate.

    .venv/bin/python benchmarks/policy_timing.py [--policy PATH] [--seconds 10] [--json out.json]

Figures (one process, one thread each part):
- inference: PolicyRunner.tick (observation + network + integration) p50/p99 in ms, and the bare network;
- env: RotationEnv control steps/s (what training and evaluation get), and physics steps/s through it;
- raw: mj_step of the same scene with nothing else, steps/s; the ratio env/raw shows the Python overhead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import mujoco
import numpy as np
import torch

from dexndm.hand.spec import load_hand_spec
from dexndm.policy.env import EnvConfig, RotationEnv
from dexndm.policy.exported import load_policy
from dexndm.policy.runner import PolicyRunner


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default=None)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = args.policy or str(sorted(Path("models").glob("policy-leap-*.pt"))[0])
    pol = load_policy(path)
    spec = load_hand_spec(pol.hand)

    runner = PolicyRunner(pol, spec, stale_after=1.0)
    q = spec.pose("grasp")
    wq, ax = np.array([1.0, 0, 0, 0]), np.array([0, 0, 1.0])
    ticks, nets = [], []
    obs = np.zeros(pol.obs_size)
    for k in range(2000):
        runner.update_joint_state(spec.joint_names, q + 0.01 * np.sin(k), k * 50_000_000)
        t0 = time.perf_counter()
        runner.tick(k * 50_000_000, wq, ax)
        ticks.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pol.act(obs)
        nets.append(time.perf_counter() - t0)
    ticks, nets = np.array(ticks[100:]) * 1e3, np.array(nets[100:]) * 1e3

    env = RotationEnv(EnvConfig(episode_steps=10_000, joint_order=tuple(pol.joint_order)), seed=0)
    env.reset()
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        env.step(np.zeros(spec.n))
        n += 1
    env_rate = n / (time.perf_counter() - t0)
    phys_per_ctrl = env.hand._steps_per_control
    m, d = env.hand.model, env.hand.data
    k = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        mujoco.mj_step(m, d, nstep=100)
        k += 100
    raw = k / (time.perf_counter() - t0)
    res = {
        "policy": path,
        "tick_p50_ms": float(np.percentile(ticks, 50)), "tick_p99_ms": float(np.percentile(ticks, 99)),
        "network_p50_ms": float(np.percentile(nets, 50)), "network_p99_ms": float(np.percentile(nets, 99)),
        "env_control_steps_per_s": env_rate, "env_physics_steps_per_s": env_rate * phys_per_ctrl,
        "raw_mujoco_steps_per_s": raw, "env_over_raw": env_rate * phys_per_ctrl / raw,
        "env_real_time_factor": env_rate * 0.05,
    }
    print(f"policy {path}")
    print(f"  PolicyRunner.tick      p50 {res['tick_p50_ms']:.3f} ms   p99 {res['tick_p99_ms']:.3f} ms  (50 ms budget)")
    print(f"  network alone          p50 {res['network_p50_ms']:.3f} ms   p99 {res['network_p99_ms']:.3f} ms")
    print(f"  RotationEnv            {env_rate:8.0f} control steps/s = {res['env_physics_steps_per_s']:8.0f} physics "
          f"steps/s (real-time factor {res['env_real_time_factor']:.1f})")
    print(f"  raw mj_step, same scene{raw:8.0f} physics steps/s;  env / raw = {res['env_over_raw']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
