"""Residual trained with and without the steps the real servo cannot reproduce, on the same library and seed.

    .venv/bin/python benchmarks/torque_masked_residual.py [--world leap_default] [--library-episodes 60]
        [--episodes 100] [--seed 11] [--reg 0] [--ndm models/ndm-leap-real-leap_default.pt] [--out runs/torque-mask]

The residual objective asks the modelled real hand to reach the ideal hand's next joint positions. Where the
ideal hand pushed with more torque than the real servo's current cap allows, no target does that, and the
objective only teaches the residual to push harder. This script rolls the shipped policy out in the ideal
simulator (a trajectory library, recording each joint's torque), then trains two joint-wise residuals through
the frozen real NDM with the same seed: one on the plain objective, one with every (step, joint) whose ideal
torque exceeds the profile's per-joint cap weighted 0. Both, and direct transfer, are evaluated in the reality
profile about +z and -z on the same episode seeds. Prints a table and writes OUT/report.json.
About 20 minutes on a 2-core machine with the defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from dexndm.collect.trajectories import build_library  # noqa: E402
from dexndm.hand.spec import load_hand_spec  # noqa: E402
from dexndm.ndm.models import load_ndm  # noqa: E402
from dexndm.ndm.pipeline import residual_metadata  # noqa: E402
from dexndm.ndm.residual import save_residual, torque_cap, torque_mask, train_residual_rollout  # noqa: E402
from dexndm.policy.evaluate import AdaptedFactory, ArtifactFactory, EvalConfig, evaluate  # noqa: E402
from dexndm.policy.exported import load_policy  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policy", default=str(REPO / "models/policy-leap-palmup.pt"))
    ap.add_argument("--world", default="leap_default")
    ap.add_argument("--ndm", default=str(REPO / "models/ndm-leap-real-leap_default.pt"))
    ap.add_argument("--library-episodes", type=int, default=60, help="ideal rollouts per axis")
    ap.add_argument("--episodes", type=int, default=100, help="evaluation episodes per axis and method")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--bound", type=float, default=0.15)
    ap.add_argument("--reg", type=float, default=0.0, help="correction penalty for both residuals (train-residual --reg)")
    ap.add_argument("--seed", type=int, default=11, help="evaluation seed (the library and training use 0)")
    ap.add_argument("--out", default=str(REPO / "runs/torque-mask"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    axes = ["z", "-z"]
    pol = load_policy(args.policy)
    spec = load_hand_spec(pol.hand)
    t0 = time.monotonic()
    lib = build_library(args.policy, ["palm_up"], axes, "regular", args.library_episodes, 0, log=lambda *_: None)
    print(f"[torque-mask] library: {len(lib)} of {len(axes) * args.library_episodes} rollouts held the object "
          f"({(time.monotonic() - t0) / 60:.1f} min)", flush=True)
    mask = torque_mask(lib, torque_cap(args.world, spec.joint_names))
    print(f"[torque-mask] {100 * (1 - mask[:, 1:].mean()):.1f} % of (step, joint) pairs weighted 0 "
          f"(ideal torque above the {args.world} cap)", flush=True)
    ndm = load_ndm(args.ndm)
    paths = {}
    for name, w in (("plain", None), ("masked", mask)):
        net, rep = train_residual_rollout(lib, ndm, spec, bound=args.bound, horizon=100, epochs=args.epochs, seed=0,
                                          weights=w, reg=args.reg)
        md = residual_metadata(spec, pol, ndm, args.bound, rep, f"benchmarks/torque_masked_residual.py ({name})",
                               ndm.config()["type"], net)
        paths[name] = str(save_residual(out / f"residual-{name}.pt", net, md))
        print(f"[torque-mask] {name}: mean |a_res| {rep.mean_abs_correction:.4f} rad", flush=True)
    rows = {}
    for ax in axes:
        cfg = EvalConfig(axes=(ax,), episodes=args.episodes, seed=args.seed, world=args.world, hand=pol.hand)
        jo = tuple(pol.joint_order)
        rows[ax] = {"direct": evaluate(ArtifactFactory(args.policy), cfg, jo, log=lambda *_: None)}
        for name, p in paths.items():
            rows[ax][name] = evaluate(AdaptedFactory(args.policy, "residual", residual=p, bound=args.bound), cfg, jo,
                                      log=lambda *_: None)
    print(f"\n{args.world}, palm up, regular objects, {args.episodes} episodes per cell (seed {args.seed})")
    print(f"{'method':24} " + " ".join(f"{ax + ' Rot':>8} {ax + ' TTF':>8}" for ax in axes))
    for m in ("direct", "plain", "masked"):
        label = {"direct": "direct transfer", "plain": "residual", "masked": "residual, torque-masked"}[m]
        print(f"{label:24} " + " ".join(f"{rows[ax][m]['rot_rad']:8.2f} {rows[ax][m]['ttf_s']:8.2f}" for ax in axes))
    report = {ax: {m: {k: r[k] for k in ("rot_rad", "ttf_s", "drop_rate")} for m, r in v.items()}
              for ax, v in rows.items()}
    (out / "report.json").write_text(json.dumps({"config": vars(args), "masked_share": float(1 - mask[:, 1:].mean()),
                                                 "results": report}, indent=1))
    print(f"wrote {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
