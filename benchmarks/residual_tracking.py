"""Do the adapters make the modelled real hand follow the ideal hand's joints, and does that turn the object?

    .venv/bin/python benchmarks/residual_tracking.py [--world leap_default] [--axis z] [--episodes 20]
        [--policy models/policy-leap-palmup.pt] [--residual models/residual-leap-leap_default.pt]
        [--ndm-real models/ndm-leap-real-leap_default.pt] [--ndm-sim models/ndm-leap-sim-joint.pt]
        [--seed 11] [--json out.json]

For each episode seed: the policy runs closed loop in the ideal simulator (the reference: its targets a_t and
joint positions q_sim). Then, with the same seed (same object, randomisation and disturbances) in the reality
profile, the recorded targets are replayed open loop, once as they are (`none`), once through each adapter
(`residual`, `inversion`; the adapter sees the modelled real hand's measured joints, as it would on hardware).
A closed-loop run of the policy in the reality profile (`closed`, no adapter) is the direct-transfer reference.

Prints, per method: joint tracking RMSE against q_sim (rad, over the steps both runs held the object, all
joints and per finger), the object rotation (rad) and drops, and the mean |correction| (rad). This separates
the two things the residual objective assumes: that the correction brings the joints onto the ideal hand's
trajectory (tracking), and that the ideal joint trajectory turns the object on the real hand (Rot).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from dexndm.hand.spec import load_hand_spec  # noqa: E402
from dexndm.ndm.adaptation import AdaptationRunner, build_adapter  # noqa: E402
from dexndm.policy.actions import integrate  # noqa: E402
from dexndm.policy.env import EnvConfig, RotationEnv  # noqa: E402
from dexndm.policy.exported import load_policy  # noqa: E402
from dexndm.policy.metrics import parse_axis  # noqa: E402

METHODS = ("none", "residual", "inversion")


def one_step_sq(ndm, q: np.ndarray, a: np.ndarray, order) -> tuple[float, int]:
    """Sum of squared one-step prediction errors (rad^2) of an NDM over an episode's windows, and their count.
    q (T+1, n) canonical, a (T, n) policy order (the targets sent)."""
    import torch

    W = ndm.window
    a = np.array([order.to_canonical(x) for x in a])
    T = len(a)
    if T < W:
        return 0.0, 0
    idx = np.arange(W - 1, T)[:, None] + np.arange(-W + 1, 1)[None]
    with torch.no_grad():
        pred = ndm(torch.tensor(q[idx], dtype=torch.float32), torch.tensor(a[idx], dtype=torch.float32)).numpy()
    return float(np.sum((pred - q[idx[:, -1] + 1]) ** 2)), pred.size


def q_true(env: RotationEnv) -> np.ndarray:
    return env.hand.data.qpos[env.hand.scene.qpos_adr].copy()


def run_closed(env: RotationEnv, pol, seed: int, wrist: str, axis: np.ndarray) -> dict:
    env.rng = np.random.default_rng(seed)
    obs = env.reset(wrist=wrist, axis=axis)
    pol.reset()
    qs, acts, effort = [q_true(env)], [], []
    done = False
    while not done:
        a = integrate(env.a_prev, pol.act(obs), env.cfg.action_scale, env.lower, env.upper)
        acts.append(a)
        obs, _, done, info = env.step_targets(a, a)
        qs.append(q_true(env))
        # the actuators' torque now (not read_state(): on a reality profile it draws sensor noise, which would
        # shift the run)
        effort.append(np.abs(env.hand.data.ctrl[env.hand.scene.act_ids]))
    return {"a": np.array(acts), "q": np.array(qs), "rot": info.rot, "fell": info.fell, "object": info.object,
            "effort": np.array(effort)}


def run_open(env: RotationEnv, ref: dict, seed: int, wrist: str, axis: np.ndarray, runner) -> dict:
    env.rng = np.random.default_rng(seed)
    env.reset(wrist=wrist, axis=axis)
    o = env.order
    if runner is not None:
        runner.adapter.reset()
        if hasattr(runner.adapter, "prime"):
            runner.adapter.prime(o.to_canonical(env.history.last_q()), o.to_canonical(env.a_prev))
    qs, corr, sent_all = [q_true(env)], [], []
    done = False
    info = env.info
    for a in ref["a"]:
        if done:
            break
        sent = a
        if runner is not None:
            out = runner.adapt(o.to_canonical(env.history.last_q()), o.to_canonical(a), env.wrist_quat,
                               env.tracker.axis)
            sent = o.from_canonical(out.sent)
            corr.append(np.abs(out.correction))
        _, _, done, info = env.step_targets(sent, a)
        sent_all.append(np.clip(sent, env.lower, env.upper))
        qs.append(q_true(env))
    return {"q": np.array(qs), "a": np.array(sent_all), "rot": info.rot, "fell": info.fell,
            "corr": float(np.mean(corr)) if corr else 0.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policy", default=str(REPO / "models/policy-leap-palmup.pt"))
    ap.add_argument("--world", default="leap_default")
    ap.add_argument("--residual", default=str(REPO / "models/residual-leap-leap_default.pt"))
    ap.add_argument("--ndm-real", default=str(REPO / "models/ndm-leap-real-leap_default.pt"))
    ap.add_argument("--ndm-sim", default=str(REPO / "models/ndm-leap-sim-joint.pt"))
    ap.add_argument("--axis", default="z")
    ap.add_argument("--wrist", default="palm_up")
    ap.add_argument("--objects", default="regular")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    pol = load_policy(args.policy)
    spec = load_hand_spec(pol.hand)
    axis = parse_axis(args.axis)

    def env_for(world):
        return RotationEnv(EnvConfig(hand=pol.hand, wrists=(args.wrist,), axes=(args.axis,), objects=args.objects,
                                     reality=world, joint_order=tuple(pol.joint_order)))

    ideal, real = env_for(None), env_for(args.world)
    runners = {"none": None,
               "residual": AdaptationRunner(spec, build_adapter("residual", spec, residual=args.residual)),
               "inversion": AdaptationRunner(spec, build_adapter("inversion", spec, ndm_real=args.ndm_real,
                                                                 ndm_sim=args.ndm_sim))}
    fingers = {}
    for i, name in enumerate(spec.joint_names):
        fingers.setdefault(name.split("_")[0], []).append(i)
    rng = np.random.default_rng(args.seed)
    seeds = [int(rng.integers(1 << 30)) for _ in range(args.episodes)]
    per = {m: {"sq": [], "sq_f": {f: [] for f in fingers}, "rot": [], "fell": [], "corr": []}
           for m in (*METHODS, "closed")}
    t0 = time.monotonic()
    from dexndm.ndm.models import load_ndm

    ndms = {"real": load_ndm(args.ndm_real).eval(), "sim": load_ndm(args.ndm_sim).eval()}
    # one-step NDM error on what each hand really did: (model, data) -> [sum of squares, count]
    nerr = {(m, d): [0.0, 0] for m in ndms for d in ("ideal", "real")}
    for k, s in enumerate(seeds):
        ref = run_closed(ideal, pol, s, args.wrist, axis)
        closed = run_closed(real, pol, s, args.wrist, axis)
        runs = {"closed": {**closed, "corr": 0.0}}
        for m in METHODS:
            runs[m] = run_open(real, ref, s, args.wrist, axis, runners[m])
        for m, d in nerr.items():
            r = ref if m[1] == "ideal" else runs["none"]
            sq, cnt = one_step_sq(ndms[m[0]], r["q"], r["a"], ideal.order)
            d[0] += sq
            d[1] += cnt
        for m, r in runs.items():
            n = min(len(r["q"]), len(ref["q"]))
            d = r["q"][:n] - ref["q"][:n]
            per[m]["sq"].append(np.mean(d ** 2))
            for f, idx in fingers.items():
                per[m]["sq_f"][f].append(np.mean(d[:, idx] ** 2))
            per[m]["rot"].append(r["rot"])
            per[m]["fell"].append(r["fell"])
            per[m]["corr"].append(r["corr"])
        per.setdefault("ideal", {"rot": [], "fell": [], "effort": []})
        per["ideal"]["effort"].append(ref["effort"])
        per["ideal"]["rot"].append(ref["rot"])
        per["ideal"]["fell"].append(ref["fell"])
        el = time.monotonic() - t0
        print(f"[tracking] {k + 1}/{len(seeds)} episodes, ETA {el / (k + 1) * (len(seeds) - k - 1) / 60:.1f} min",
              flush=True)

    rows = {"ideal": {"rot_rad": float(np.mean(per["ideal"]["rot"])), "drop_rate": float(np.mean(per["ideal"]["fell"]))}}
    for m in ("closed", *METHODS):
        p = per[m]
        rows[m] = {"rmse_rad": float(np.sqrt(np.mean(p["sq"]))),
                   "rmse_finger_rad": {f: float(np.sqrt(np.mean(v))) for f, v in p["sq_f"].items()},
                   "rot_rad": float(np.mean(p["rot"])), "drop_rate": float(np.mean(p["fell"])),
                   "mean_abs_correction_rad": float(np.mean(p["corr"]))}
    # Torque authority: how much of the ideal hand's joint torque the profile's servos cannot produce at all
    # (the current cap bounds the whole P+D output; no target correction gets past it).
    eff = np.concatenate(per["ideal"]["effort"])
    cap = real.profile.per_joint(tuple(spec.joint_names))["torque_limit"]
    p95 = np.percentile(eff, 95, axis=0)
    torque = {"profile_cap_nm": cap.tolist(), "ideal_p95_nm": p95.tolist(),
              "ideal_steps_over_cap": float(np.mean(eff > cap[None])),
              "ideal_torque_over_cap_share": float(np.sum(np.maximum(eff - cap[None], 0)) / max(np.sum(eff), 1e-12)),
              "joints_p95_over_cap": [j for j, p, c in zip(spec.joint_names, p95, cap, strict=True) if p > c]}
    fs = list(fingers)
    print(f"\n{args.world}, {args.wrist} {args.axis}, {args.objects} objects, {args.episodes} episodes "
          f"(seed {args.seed}); RMSE against the ideal hand's joints (rad)")
    print(f"{'method':22} {'RMSE':>7} " + " ".join(f"{f:>6}" for f in fs) + f" {'Rot':>6} {'drops':>6} {'|corr|':>7}")
    print(f"{'ideal (reference)':22} {'':>7} " + " ".join(f"{'':>6}" for _ in fs)
          + f" {rows['ideal']['rot_rad']:6.2f} {100 * rows['ideal']['drop_rate']:5.0f}%")
    labels = {"closed": "policy closed loop", "none": "replay, no correction", "residual": "replay + residual",
              "inversion": "replay + inversion"}
    for m in ("closed", *METHODS):
        r = rows[m]
        print(f"{labels[m]:22} {r['rmse_rad']:7.4f} " + " ".join(f"{r['rmse_finger_rad'][f]:6.3f}" for f in fs)
              + f" {r['rot_rad']:6.2f} {100 * r['drop_rate']:5.0f}% {r['mean_abs_correction_rad']:7.4f}")
    print(f"\ntorque: the ideal hand's |torque| exceeds the profile's servo cap ({cap.min():.2f}-{cap.max():.2f} N*m) "
          f"in {100 * torque['ideal_steps_over_cap']:.0f} % of joint-steps ({100 * torque['ideal_torque_over_cap_share']:.0f} % "
          f"of its torque is above the cap); 95th percentile over the cap: {', '.join(torque['joints_p95_over_cap']) or 'none'}")
    ndm_rmse = {f"{m}_on_{d}": float(np.sqrt(v[0] / max(v[1], 1))) for (m, d), v in nerr.items()}
    print("\none-step NDM RMSE (rad) on the episodes above, with the object in hand: "
          + ", ".join(f"f_{k.replace('_on_', ' on ')} {v:.4f}" for k, v in ndm_rmse.items())
          + "  (real = the profile's hand replaying the ideal targets; the NDMs' held-out errors on their own "
            "data are in their model cards)")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": vars(args), "seeds": seeds, "methods": rows,
                                               "ndm_one_step_rmse_rad": ndm_rmse,
                                               "torque": torque}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
