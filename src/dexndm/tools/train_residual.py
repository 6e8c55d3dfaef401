"""`dexndm train-residual`: residual adaptation policy through a frozen (real) NDM."""

from __future__ import annotations

import argparse

from dexndm.ndm import DEFAULT_BOUND, DEFAULT_JOINT_REG

COMMAND = "train-residual"
HELP = "train the residual adapter on the policy's sim trajectories through a frozen NDM"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--library", required=True, help="trajectory library (dexndm collect --build-library)")
    p.add_argument("--ndm", required=True, help="NDM finetuned on the real hand's data (frozen)")
    p.add_argument("--policy", default="", help="the base policy (default: shipped; its observation layout is used)")
    p.add_argument("--bound", type=float, default=DEFAULT_BOUND, help="max |correction| per joint (rad)")
    p.add_argument("--arch", default="joint", choices=["joint", "obs"],
                   help="joint: joint-wise residual trained on rollouts through the NDM (default); obs: the paper's "
                        "MLP over the policy observation, one-step objective")
    p.add_argument("--horizon", type=int, default=100, help="rollout steps (arch joint)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--reg", type=float, default=None,
                   help=f"weight of the mean squared correction in the loss (default: {DEFAULT_JOINT_REG} for joint, "
                        "1e-3 for obs); larger keeps the corrections small")
    p.add_argument("--torque-cap", default="",
                   help="leave out of the objective every step where the simulated joint used more torque than the "
                        "real servo can give: a reality profile (name or YAML, its per-joint caps) or N*m for all "
                        "joints (a real LEAP: Goal Current x 0.517 N*m/A). Needs a library with torques")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="residual artifact (.pt)")


def run(args: argparse.Namespace) -> int:
    import math

    from dexndm.collect.trajectories import TrajectoryLibrary
    from dexndm.hand.spec import load_hand_spec
    from dexndm.ndm.models import NDMLoadError, load_ndm
    from dexndm.ndm.pipeline import fit_residual, residual_metadata, write_residual_card
    from dexndm.ndm.residual import save_residual
    from dexndm.policy.exported import PolicyLoadError, load_policy
    from dexndm.tools.eval import default_policy

    if args.reg is not None and not (args.reg >= 0 and math.isfinite(args.reg)):
        print(f"dexndm train-residual: --reg must be a finite number >= 0, got {args.reg}")
        return 2
    try:
        lib = TrajectoryLibrary.load(args.library)
        ndm = load_ndm(args.ndm)
        policy = load_policy(args.policy or default_policy())
    except (FileNotFoundError, ValueError, NDMLoadError, PolicyLoadError, TypeError) as e:
        print(f"dexndm train-residual: {e}")
        return 2
    if not 0 < args.bound <= 0.5:
        print("dexndm train-residual: --bound must be in (0, 0.5] rad")
        return 2
    if args.epochs < 1:
        print("dexndm train-residual: --epochs must be >= 1")
        return 2
    spec = load_hand_spec(policy.hand)
    weights = None
    if args.torque_cap:
        from dexndm.ndm.residual import torque_cap, torque_mask

        try:
            weights = torque_mask(lib, torque_cap(args.torque_cap, spec.joint_names))
        except ValueError as e:
            print(f"dexndm train-residual: --torque-cap {args.torque_cap}: {e}")
            return 2
        print(f"[train-residual] --torque-cap: {100 * (1 - weights[:, 1:].mean()):.1f} % of (step, joint) pairs "
              "left out (simulated torque above the cap)")
    try:
        reg = DEFAULT_JOINT_REG if args.reg is None and args.arch == "joint" else args.reg
        net, rep = fit_residual(args.arch, lib, ndm, spec, policy, args.bound, args.epochs, args.horizon, args.seed,
                                reg=reg, weights=weights)
    except ValueError as e:
        print(f"dexndm train-residual: {e}")
        return 2
    if weights is not None:
        rep.objective += f", steps with simulated torque above {args.torque_cap} left out"
    from dexndm.cli import command_line

    cmd = command_line(args)
    md = residual_metadata(spec, policy, ndm, args.bound, rep, cmd, ndm.config()["type"], net)
    md["ndm"]["path"] = str(args.ndm)
    out = save_residual(args.out, net, md)
    write_residual_card(out, md, args.seed, {"Trajectory library": f"{args.library} ({len(lib)} trajectories)",
                                             "Frozen NDM": str(args.ndm)})
    print(f"wrote {out}: held-out {rep.objective} MSE {rep.val_loss:.3e} (no correction {rep.val_loss_no_correction:.3e}), "
          f"mean |a_res| {rep.mean_abs_correction:.4f} rad")
    return 0
