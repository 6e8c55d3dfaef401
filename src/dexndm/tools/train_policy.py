"""`dexndm train-policy`: gait specialists -> generalist by behaviour cloning -> models/policy-*.pt."""

from __future__ import annotations

import argparse

COMMAND = "train-policy"
HELP = "train the rotation policy (specialists by gait search, generalist by behaviour cloning)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from dexndm.policy.train.config import TrainConfig

    d = TrainConfig()
    p.add_argument("--wrists", default=",".join(d.wrists), help="comma-separated wrist orientations")
    p.add_argument("--axes", default=",".join(d.axes), help="comma-separated axes (use --axes=-z,z)")
    p.add_argument("--objects", default=d.objects)
    p.add_argument("--specialist-objects", default="", help="comma-separated objects or sets, one specialist each "
                                                              "(default: one per object of --objects)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--nominal-generations", type=int, default=d.nominal_generations,
                   help="CMA-ES generations of a specialist's first stage (one nominal object, no randomisation; "
                        "0 skips it)")
    p.add_argument("--nominal-jitter", type=float, default=d.nominal_jitter,
                   help="relative spread of the first stage's object: mass and friction x(1 +- J), size x(1 +- J/5), "
                        "several episodes per candidate (0: the catalog object only, one episode)")
    p.add_argument("--shape-generations", type=int, default=d.shape_generations,
                   help="CMA-ES generations of an optional middle stage: the group's objects with size "
                        "randomisation only (0 skips it)")
    p.add_argument("--gait-family", default="",
                   help="comma-separated privileged object features (size, friction): after the nominal stage each "
                        "specialist is a family of gaits, linear in the episode object's features (default: one gait)")
    p.add_argument("--generations", type=int, default=d.generations,
                   help="CMA-ES generations of a specialist's randomised stage")
    p.add_argument("--popsize", type=int, default=d.popsize)
    p.add_argument("--candidates", default="", metavar="DIR[,DIR]",
                   help="work directories of earlier runs: per (wrist, axis, object group), their cached specialist "
                        "competes with this run's on --select-episodes held-out episodes and the better one is kept")
    p.add_argument("--select-episodes", type=int, default=d.select_episodes)
    p.add_argument("--teacher", default="", metavar="POLICY[,POLICY]",
                   help="trained policy artifacts that teach the generalist the (wrist, axis) slots they were "
                        "trained on (on --objects), next to this run's specialists for --wrists x --axes")
    p.add_argument("--bc-episodes", type=int, default=d.bc_episodes, help="specialist episodes per (wrist, axis)")
    p.add_argument("--bc-epochs", type=int, default=d.bc_epochs)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--blocks", type=int, default=d.blocks)
    p.add_argument("--eval-episodes", type=int, default=d.eval_episodes)
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--out", default=d.out, help="artifact path (.pt); card (.md), plot (.png), eval (.eval.json) "
                                                "are written next to it")
    p.add_argument("--work-dir", default=d.work_dir, help="specialists are cached here (re-runs reuse them)")
    p.add_argument("--smoke", action="store_true", help="tiny settings for a quick end-to-end check")


def run(args: argparse.Namespace) -> int:
    from dexndm.cli import command_line
    from dexndm.policy.train.config import TrainConfig
    from dexndm.policy.train.pipeline import TrainInputError, train_policy
    from dexndm.tools.eval import split_axes

    for flag, value, least in (("--nominal-generations", args.nominal_generations, 0),
                               ("--shape-generations", args.shape_generations, 0),
                               ("--generations", args.generations, 1), ("--popsize", args.popsize, 2),
                               ("--select-episodes", args.select_episodes, 1)):
        if value < least:
            print(f"dexndm train-policy: {flag} must be >= {least}, got {value}")
            return 2
    from pathlib import Path

    candidates = tuple(c.strip() for c in args.candidates.split(",") if c.strip())
    missing = [c for c in candidates if not (Path(c) / "gait").is_dir()]
    if missing:
        print(f"dexndm train-policy: --candidates {', '.join(missing)}: not a train-policy work directory (no gait/ "
              "folder of cached specialists)")
        return 2
    if not 0.0 <= args.nominal_jitter < 1.0:
        print(f"dexndm train-policy: --nominal-jitter must be in [0, 1), got {args.nominal_jitter}")
        return 2
    from dexndm.policy.train.gait import FAMILY_FEATURES

    family = tuple(f.strip() for f in args.gait_family.split(",") if f.strip())
    bad = [f for f in family if f not in FAMILY_FEATURES]
    if bad or len(set(family)) != len(family):
        print(f"dexndm train-policy: --gait-family {args.gait_family!r}: give distinct features from "
              f"{', '.join(FAMILY_FEATURES)}")
        return 2
    cfg = TrainConfig(wrists=tuple(w.strip() for w in args.wrists.split(",") if w.strip()),
                      axes=tuple(split_axes(args.axes)), objects=args.objects, seed=args.seed,
                      specialist_objects=tuple(o.strip() for o in args.specialist_objects.split(",") if o.strip()),
                      nominal_generations=args.nominal_generations, nominal_jitter=args.nominal_jitter,
                      shape_generations=args.shape_generations,
                      generations=args.generations, family_features=family, candidate_dirs=candidates,
                      select_episodes=args.select_episodes,
                      teachers=tuple(t.strip() for t in args.teacher.split(",") if t.strip()),
                      popsize=args.popsize, bc_episodes=args.bc_episodes,
                      bc_epochs=args.bc_epochs, width=args.width, blocks=args.blocks,
                      eval_episodes=args.eval_episodes, workers=args.workers, out=args.out, work_dir=args.work_dir)
    if args.smoke:
        from dataclasses import replace

        cfg = replace(cfg, nominal_generations=1, generations=2, popsize=4, gait_episodes=1, bc_episodes=2,
                      bc_epochs=2, width=32, blocks=1, eval_episodes=2, episode_steps=40,
                      select_episodes=2)
    try:
        train_policy(cfg, command=command_line(args))
    except TrainInputError as e:  # a damaged candidate specialist, an unusable teacher
        print(f"dexndm train-policy: {e}")
        return 2
    return 0
