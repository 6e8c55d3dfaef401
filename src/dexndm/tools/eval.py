"""`dexndm eval`: run a policy in the simulator (no ROS) and print a Rot/TTF table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dexndm.ndm import DEFAULT_BOUND

COMMAND = "eval"
HELP = "evaluate a rotation policy in the simulator (ideal or a reality profile)"
ADAPTERS = ("none", "residual", "inversion")


def default_policy() -> Path | None:
    """The shipped palm-up generalist (models/policy-leap-palmup.pt)."""
    from dexndm.policy.exported import shipped_policy

    found = shipped_policy()
    return Path(found) if found else None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", default=None, help="policy artifact (.pt); default: the shipped models/policy-leap-*.pt")
    p.add_argument("--world", default="ideal", help="'ideal' (training simulator) or a reality profile name/YAML")
    p.add_argument("--adapter", default="none", help=f"sim-to-real adapter: {', '.join(ADAPTERS)}")
    p.add_argument("--residual", default="", help="residual artifact for --adapter residual")
    p.add_argument("--ndm-real", default="", help="finetuned NDM for --adapter inversion")
    p.add_argument("--ndm-sim", default="", help="sim-pretrained NDM for --adapter inversion")
    p.add_argument("--bound", type=float, default=DEFAULT_BOUND, help="max |correction| per joint (rad)")
    p.add_argument("--axis", default="z", help="comma-separated axes: x, -y, +z or 'x,y,z' numbers in brackets "
                                               "e.g. '[1,1,0]' (use --axis=-z for a leading minus)")
    p.add_argument("--wrist", default="palm_up", help="comma-separated wrist orientations")
    p.add_argument("--objects", default="regular", help="object set or comma-separated objects")
    p.add_argument("--episodes", type=int, default=20, help="episodes per (wrist, axis)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="parallel simulator processes")
    p.add_argument("--no-randomize", action="store_true", help="catalog object mass/friction, no randomisation")
    p.add_argument("--json", type=Path, default=None, help="write results here")


def split_axes(text: str) -> list[str]:
    """'x,-y,[1,1,0]' -> ['x', '-y', '1,1,0']."""
    out, buf, depth = [], "", 0
    for ch in text:
        if ch == "[":
            depth += 1
            continue
        if ch == "]":
            depth -= 1
            continue
        if ch == "," and depth == 0:
            out.append(buf.strip())
            buf = ""
        else:
            buf += ch
    if buf.strip():
        out.append(buf.strip())
    return out


def run(args: argparse.Namespace) -> int:
    from dexndm.hand.sim.scene import WRIST_POSES
    from dexndm.policy.evaluate import ArtifactFactory, EvalConfig, evaluate, format_table
    from dexndm.policy.exported import PolicyLoadError, load_policy
    from dexndm.policy.metrics import parse_axis

    policy = Path(args.policy) if args.policy else default_policy()
    if policy is None:
        print("dexndm eval: no --policy given and no shipped models/policy-leap-*.pt found")
        return 2
    try:
        art = load_policy(policy)
    except PolicyLoadError as e:
        print(f"dexndm eval: {e}")
        return 2
    from dexndm.artifacts import version_mismatch

    warning = version_mismatch(art.metadata, f"policy {policy.name}")
    if warning:
        print(f"dexndm eval: warning: {warning}", file=sys.stderr)
    if args.adapter not in ADAPTERS:
        print(f"dexndm eval: --adapter '{args.adapter}' unknown; valid: {', '.join(ADAPTERS)}")
        return 2
    axes = split_axes(args.axis)
    wrists = [w.strip() for w in args.wrist.split(",") if w.strip()]
    try:
        for a in axes:
            parse_axis(a)
    except ValueError as e:
        print(f"dexndm eval: --axis: {e}")
        return 2
    bad = [w for w in wrists if w not in WRIST_POSES]
    if bad:
        print(f"dexndm eval: --wrist {bad} unknown; valid: {', '.join(WRIST_POSES)}")
        return 2
    if args.episodes < 1:
        print("dexndm eval: --episodes must be >= 1")
        return 2
    world = None if args.world in ("", "ideal") else args.world
    cfg = EvalConfig(wrists=tuple(wrists), axes=tuple(axes), objects=args.objects, episodes=args.episodes,
                     seed=args.seed, world=world, hand=art.hand, randomize=not args.no_randomize,
                     workers=args.workers, extra={"policy": str(policy), "adapter": args.adapter,
                                                  "world": args.world})
    try:
        from dexndm.hand.sim.objects import resolve_objects
        from dexndm.hand.sim.profiles import ProfileError, load_profile

        resolve_objects(args.objects)
        load_profile(world)
    except (KeyError, ProfileError) as e:
        print(f"dexndm eval: {e.args[0] if isinstance(e, KeyError) else e}")
        return 2
    if args.adapter == "none":
        factory = ArtifactFactory(str(policy))
    else:
        from dexndm.paths import shipped_model
        from dexndm.policy.evaluate import AdaptedFactory

        # Like `dexndm launch rotate --adapter ...`: without a path, the shipped model for this hand.
        args.residual = shipped_model(f"residual-{art.hand}-*.pt", args.residual)
        args.ndm_real = shipped_model(f"ndm-{art.hand}-real*.pt", args.ndm_real)
        args.ndm_sim = shipped_model(f"ndm-{art.hand}-sim*.pt", args.ndm_sim)
        try:
            AdaptedFactory(str(policy), args.adapter, residual=args.residual, ndm_real=args.ndm_real,
                           ndm_sim=args.ndm_sim, bound=args.bound)(None)
        except (ValueError, FileNotFoundError) as e:
            print(f"dexndm eval: --adapter {args.adapter}: {e}")
            return 2
        factory = AdaptedFactory(str(policy), args.adapter, residual=args.residual, ndm_real=args.ndm_real,
                                 ndm_sim=args.ndm_sim, bound=args.bound)
        if args.adapter == "residual":
            from dexndm.ndm.residual import load_residual, policy_mismatch

            warning = policy_mismatch(load_residual(args.residual).metadata, policy)
            if warning:
                print(f"dexndm eval: warning: {warning}", file=sys.stderr)
            cfg.extra["residual"] = str(args.residual)
            cfg.extra["residual_policy_mismatch"] = warning
    result = evaluate(factory, cfg, joint_order=tuple(art.joint_order))
    print(format_table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return 0
