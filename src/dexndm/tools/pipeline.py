"""`dexndm pipeline`: collect -> train-ndm -> train-residual -> eval for one hand; writes report.json."""

from __future__ import annotations

import argparse

from dexndm.ndm import DEFAULT_BOUND, DEFAULT_JOINT_REG

COMMAND = "pipeline"
HELP = "DexNDM end to end on a hand: Chaos Box collection, NDM finetuning, residual training, evaluation"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reality", default="", help="reality profile (sim backend) standing in for the real hand")
    p.add_argument("--backend", default="sim", choices=["sim", "dynamixel"],
                   help="sim: the simulated hand under --reality; dynamixel: a LEAP hand on --port (its methods are "
                        "then evaluated live, see report.md)")
    p.add_argument("--port", default="", help="Dynamixel port (backend dynamixel)")
    p.add_argument("--episodes", type=int, default=400, help="Chaos Box episodes to collect")
    p.add_argument("--steps", type=int, default=400,
                   help="control steps per collected episode (20 Hz; shorter only for a quick check of a hand)")
    p.add_argument("--out", required=True, help="run directory (re-running resumes)")
    p.add_argument("--policy", default="", help="policy artifact (default: shipped)")
    p.add_argument("--wrist", default="palm_up")
    p.add_argument("--axis", default="z", help="evaluation axis")
    p.add_argument("--objects", default="regular", help="evaluation / library objects")
    p.add_argument("--library-episodes", type=int, default=60, help="policy rollouts for the trajectory library")
    p.add_argument("--eval-episodes", type=int, default=100)
    p.add_argument("--ndm-epochs", type=int, default=12)
    p.add_argument("--ff-gain", type=float, default=0.0,
                   help="feed-forward gain exploration: in --ff-fraction of the episodes every target gets "
                        "k_p (a - q) + k_d dq/dt with per-joint gains drawn per episode (k_p ~ U(0, FF_GAIN)), "
                        "bounded by 0.15 rad, so the NDM sees how the hand answers an adapter's corrections")
    p.add_argument("--ff-fraction", type=float, default=1.0 / 3.0, help="share of episodes with --ff-gain")
    p.add_argument("--offset-std", type=float, default=0.0,
                   help="collection: max std (rad) of slow per-joint target offsets added to the replayed "
                        "trajectories (default 0: the paper's white noise only)")
    p.add_argument("--residual-epochs", type=int, default=12)
    p.add_argument("--residual-horizon", type=int, default=100,
                   help="rollout steps of the joint-wise residual's objective through the frozen NDM")
    p.add_argument("--residual-arch", default="joint", choices=["joint", "obs"],
                   help="joint: joint-wise residual, rollout objective (default); obs: the paper's observation MLP, "
                        "one-step objective")
    p.add_argument("--torque-cap", default="auto",
                   help="train the residuals with every step left out where the simulated joint used more torque "
                        "than the hand's servos can give: a reality profile or N*m (see train-residual); "
                        "'reality' = the --reality profile; 'auto' (default) = the --reality profile's caps in the "
                        "simulator and none on a real hand (give N*m there: Goal Current x 0.517 N*m/A on a LEAP's "
                        "XC330); 'none' = every step counts")
    p.add_argument("--residual-reg", type=float, default=None,
                   help=f"residual correction penalty (train-residual --reg; default {DEFAULT_JOINT_REG} for the joint "
                        "residual, the trainer's default for obs)")
    p.add_argument("--rounds", type=int, default=0,
                   help="adapter-in-the-loop rounds after the first fit: collect with the current joint-wise residual "
                        "correcting every target, refit the NDMs on all data, retrain the residual")
    p.add_argument("--round-episodes", type=int, default=0, help="episodes per round (default: half of --episodes)")
    p.add_argument("--bound", type=float, default=DEFAULT_BOUND, help="max |correction| per joint (rad)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)


def resolve_torque_cap(value: str, reality: str, residual_arch: str, out: str) -> tuple[str, str]:
    """The residual objective's torque cap for ``--torque-cap value``: (a profile name/path or N*m as text, or ''
    for none; a note for the log). Raises ValueError naming the problem for a cap that cannot be used."""
    from pathlib import Path

    from dexndm.collect.trajectories import TrajectoryLibrary
    from dexndm.hand.spec import load_hand_spec
    from dexndm.ndm.pipeline import PipelineConfig
    from dexndm.ndm.residual import torque_cap

    auto = value == "auto"
    if value in ("none", ""):
        return "", ""
    if auto:
        if not reality:
            return "", ("no torque cap in the residual objective (a real hand: give --torque-cap N*m, Goal Current "
                        "x 0.517 N*m/A on a LEAP's XC330)")
        if residual_arch != "joint":
            return "", "no torque cap in the residual objective (it weighs the joint residual only)"
    elif value == "reality" and not reality:
        raise ValueError("--torque-cap reality takes the caps of the --reality profile; on a real hand give them in "
                         "N*m (Goal Current x 0.517 N*m/A on a LEAP's XC330)")
    cap = reality if value in ("reality", "auto") else value
    if residual_arch != "joint":
        raise ValueError("--torque-cap weighs the joint residual's rollout objective; use --residual-arch joint")
    try:
        torque_cap(cap, load_hand_spec(PipelineConfig.hand).joint_names)
    except ValueError as e:
        raise ValueError(f"--torque-cap {value}: {e}") from None
    old = Path(out) / "library.npz"  # a resumed run reuses its library
    if old.is_file() and TrajectoryLibrary.load(old).torque is None:
        if auto:
            return "", (f"no torque cap in the residual objective: {old} (from an earlier run, reused on resume) "
                        "records no simulated torques; remove it to rebuild it with them")
        raise ValueError(f"--torque-cap needs the simulated joint torques, and {old} (from an earlier run, reused on "
                         "resume) records none; remove it to rebuild it, or run with --torque-cap none")
    return cap, f"residual objective: steps with simulated torque above the caps of {cap} left out" if auto else ""


def run(args: argparse.Namespace) -> int:
    import math

    from dexndm.cli import command_line
    from dexndm.ndm.pipeline import PipelineConfig, run_pipeline

    if args.backend == "sim" and not args.reality:
        print("dexndm pipeline: --reality is required with the sim backend (the profile standing in for the real "
              "hand), e.g. --reality leap_default")
        return 2
    if args.backend == "dynamixel" and (args.reality or not args.port):
        print("dexndm pipeline: --backend dynamixel collects on the hand at --port (e.g. /dev/ttyUSB0) and takes no "
              "--reality (a profile is the simulated stand-in for a hand); "
              f"got --port {args.port!r}, --reality {args.reality!r}")
        return 2
    if not 12 <= args.steps <= 400:
        print(f"dexndm pipeline: --steps must be in [12, 400] (got {args.steps}): the NDM window is 10 steps and "
              "the library's trajectories are 400")
        return 2
    if args.episodes < 2 or args.eval_episodes < 1:
        print("dexndm pipeline: --episodes must be >= 2 and --eval-episodes >= 1")
        return 2
    if not 0 <= args.rounds <= 5 or args.round_episodes < 0:
        print(f"dexndm pipeline: --rounds must be in [0, 5] (got {args.rounds}) and --round-episodes >= 0 "
              f"(got {args.round_episodes})")
        return 2
    if args.rounds and args.residual_arch != "joint":
        print("dexndm pipeline: --rounds runs the joint-wise residual in the loop; use --residual-arch joint")
        return 2
    from dexndm.collect.chaos_box import exploration_error

    err = exploration_error(args.offset_std, args.ff_gain, args.ff_fraction)
    if err:
        print(f"dexndm pipeline: {err}")
        return 2
    if not 1 <= args.residual_horizon <= 380:
        print("dexndm pipeline: --residual-horizon must be in [1, 380] steps (400-step trajectories, 10-step window)")
        return 2
    from dexndm.hand.sim.profiles import ProfileError, load_profile

    try:
        load_profile(args.reality)
    except ProfileError as e:
        print(f"dexndm pipeline: {e}")
        return 2
    try:
        cap, note = resolve_torque_cap(args.torque_cap, args.reality, args.residual_arch, args.out)
    except ValueError as e:
        print(f"dexndm pipeline: {e}")
        return 2
    if note:
        print(f"[pipeline] {note}")
    if args.residual_reg is not None and not (args.residual_reg >= 0 and math.isfinite(args.residual_reg)):
        print(f"dexndm pipeline: --residual-reg must be a finite number >= 0, got {args.residual_reg}")
        return 2
    cfg = PipelineConfig(reality=args.reality, out=args.out, episodes=args.episodes, steps=args.steps,
                         backend=args.backend,
                         port=args.port, policy=args.policy, wrist=args.wrist, axis=args.axis, objects=args.objects,
                         library_episodes=args.library_episodes, eval_episodes=args.eval_episodes,
                         ndm_epochs=args.ndm_epochs, residual_epochs=args.residual_epochs, bound=args.bound,
                         residual_horizon=args.residual_horizon, residual_arch=args.residual_arch,
                         offset_std=args.offset_std, ff_gain=args.ff_gain, ff_fraction=args.ff_fraction,
                         rounds=args.rounds, round_episodes=args.round_episodes,
                         torque_cap=cap,
                         residual_reg=DEFAULT_JOINT_REG if args.residual_reg is None and args.residual_arch == "joint"
                         else args.residual_reg,
                         seed=args.seed, workers=args.workers,
                         command=command_line(args))
    run_pipeline(cfg)
    return 0
