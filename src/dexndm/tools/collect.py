"""`dexndm collect`: build a trajectory library from policy rollouts, or run Chaos Box collection."""

from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = "collect"
HELP = "Chaos Box data collection (or --build-library from policy rollouts)"
DESCRIPTION = (
    "Two steps. (1) `dexndm collect --build-library --policy P --out lib.npz` rolls the policy out in the "
    "ideal simulator and keeps the action sequences of successful episodes. (2) `dexndm collect --library "
    "lib.npz --out DIR` replays them open loop (20 Hz, 400-step episodes, noise on half the actions) on a "
    "hand -- the simulated one under a reality profile, or a real one -- with the fingers loaded (Chaos Box), "
    "writing one rosbag2 bag per episode."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--build-library", action="store_true", help="roll out --policy and write a trajectory library")
    p.add_argument("--policy", default=None, help="policy artifact for --build-library (default: shipped)")
    p.add_argument("--axis", default="z,-z", help="axes for --build-library (comma-separated; --axis=-z,z)")
    p.add_argument("--objects", default="regular", help="objects for --build-library")
    p.add_argument("--library", default=None, help="trajectory library to replay (mode replay)")
    p.add_argument("--mode", default="replay", choices=["replay", "base_waves"], help="what to replay")
    p.add_argument("--hand", default="leap")
    p.add_argument("--backend", default="sim", choices=["sim", "dynamixel", "ros"],
                   help="sim: the simulated hand in this process; dynamixel: a LEAP hand on --port; ros: through a "
                        "running hand driver (any backend) and wrist node, e.g. `dexndm launch collect`")
    p.add_argument("--namespace", default="", help="backend ros: namespace of the hand driver and wrist node")
    p.add_argument("--ros-timeout", type=float, default=20.0,
                   help="backend ros: seconds to wait for the hand driver's joint_states and the wrist node")
    p.add_argument("--driver", default="hand_driver",
                   help="backend ros: the hand driver node's name (its enable_torque service is used for the thermal "
                        "pause)")
    p.add_argument("--port", default="", help="Dynamixel port (backend dynamixel)")
    p.add_argument("--max-temperature", type=float, default=60.0,
                   help="hardware (dynamixel, ros): before an episode, if a motor is at or above this (degC), torque "
                        "goes off and collection pauses ...")
    p.add_argument("--resume-temperature", type=float, default=50.0,
                   help="... until every motor has cooled to this (degC)")
    p.add_argument("--wrist", default="palm_up", help="wrist orientation (sim: set here; hardware: set by the arm)")
    p.add_argument("--wrists", default="",
                   help="collect --episodes at each of these wrist orientations in turn (comma-separated; sim: the "
                        "simulated hand is turned; ros: the wrist node moves the arm, dexndm/set_wrist_pose/<name>)")
    p.add_argument("--library-wrist", default="", help="replay trajectories recorded at this wrist orientation "
                                                       "(default: --wrist); for out-of-distribution data sets")
    p.add_argument("--reality", default="", help="sim backend: reality profile name/YAML ('' = ideal)")
    p.add_argument("--load", default="auto", choices=["auto", "chaos_box", "fingertip_ball", "none"],
                   help="finger load in the sim: auto = fingertip_ball palm up, chaos_box otherwise")
    p.add_argument("--ff-gain", type=float, default=0.0,
                   help="feed-forward gain exploration: in --ff-fraction of the episodes every target gets "
                        "k_p (a - q) + k_d dq/dt with per-joint gains drawn per episode (k_p ~ U(0, FF_GAIN)), "
                        "bounded by 0.15 rad, so the NDM sees how the hand answers an adapter's corrections")
    p.add_argument("--ff-fraction", type=float, default=1.0 / 3.0, help="share of episodes with --ff-gain")
    p.add_argument("--offset-std", type=float, default=0.0,
                   help="max std (rad) of slow per-joint target offsets on top of the noise (drawn per episode): "
                        "held target changes like an adapter's corrections; default 0 (the paper's noise only)")
    p.add_argument("--residual", default="",
                   help="residual artifact to run in the loop (mode replay): every replayed target is corrected from "
                        "the measured state before it is sent, so the data shows how this hand answers the "
                        "adapter's own corrections (an adapter-in-the-loop round; `dexndm pipeline --rounds`)")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory (bags) or library file (--build-library)")
    p.add_argument("--resume", action="store_true", help="skip episodes already in --out")


def load_for(wrist: str, load: str) -> str:
    if load != "auto":
        return load
    return "fingertip_ball" if wrist == "palm_up" else "chaos_box"


def run(args: argparse.Namespace) -> int:
    from dexndm.hand.spec import load_hand_spec

    if args.episodes < 1:
        print("dexndm collect: --episodes must be >= 1")
        return 2
    from dexndm.collect.chaos_box import exploration_error

    err = exploration_error(args.offset_std, args.ff_gain, args.ff_fraction)
    if err:
        print(f"dexndm collect: {err}")
        return 2
    if args.build_library:
        from dexndm.collect.trajectories import build_library
        from dexndm.tools.eval import default_policy, split_axes

        policy = args.policy or default_policy()
        if policy is None:
            print("dexndm collect: no --policy and no shipped policy")
            return 2
        lib = build_library(str(policy), [args.wrist], split_axes(args.axis), args.objects, args.episodes, args.seed)
        out = lib.save(args.out)
        print(f"wrote {out}: {len(lib)} trajectories of {lib.actions.shape[1]} steps")
        return 0

    from dexndm.collect.chaos_box import CollectConfig, RealTimeStepper, SimStepper, collect
    from dexndm.collect.trajectories import TrajectoryLibrary, base_wave

    spec = load_hand_spec(args.hand)
    wrists = [w.strip() for w in (args.wrists or args.wrist).split(",") if w.strip()]
    if args.wrists and args.backend == "dynamixel":
        print("dexndm collect: --wrists needs an arm to turn the hand: use --backend ros with the wrist node "
              "(dexndm launch collect ...), or run one collection per wrist with --wrist")
        return 2
    from dexndm.hand.sim.scene import WRIST_POSES

    bad = [w for w in wrists if w not in WRIST_POSES]
    if bad or not wrists:
        print(f"dexndm collect: wrist(s) {bad} unknown; valid: {', '.join(WRIST_POSES)}")
        return 2
    pools = {}
    if args.mode == "replay":
        if not args.library:
            print("dexndm collect: --library is required for --mode replay (or use --build-library first)")
            return 2
        try:
            lib = TrajectoryLibrary.load(args.library)
            pools = {w: lib.select(args.library_wrist or w) for w in wrists}
        except (FileNotFoundError, ValueError) as e:
            print(f"dexndm collect: {e}")
            return 2
        if lib.joint_names != list(spec.joint_names):
            print(f"dexndm collect: library joints {lib.joint_names} do not match hand '{spec.name}'")
            return 2

    def trajectory_for(wrist):
        if args.mode == "replay":
            pool = pools[wrist]

            def trajectory(k, rng):
                i = int(pool[rng.integers(len(pool))])
                return lib.actions[i], {"source": "library", "index": i, **lib.meta[i]}
        else:
            def trajectory(k, rng):
                a, info = base_wave(spec, rng, args.steps, 0.05, spec.pose("grasp"))
                return a, {"source": "base_waves", **info}
        return trajectory

    adapter = None
    if args.residual:
        from dexndm.ndm.adapters import ResidualAdapter
        from dexndm.ndm.residual import load_residual

        if args.mode != "replay":
            print("dexndm collect: --residual needs --mode replay (it corrects the policy's replayed targets)")
            return 2
        try:
            adapter = ResidualAdapter(load_residual(args.residual), spec)
        except (FileNotFoundError, KeyError, ValueError, RuntimeError) as e:
            print(f"dexndm collect: --residual {args.residual}: {e}")
            return 2
    profile = None
    if args.backend == "ros" and not args.driver.strip("/"):
        print("dexndm collect: --driver must name the hand driver node (default hand_driver), got ''")
        return 2
    if not 0 < args.resume_temperature < args.max_temperature <= 100:
        print(f"dexndm collect: need 0 < --resume-temperature ({args.resume_temperature:g}) < --max-temperature "
              f"({args.max_temperature:g}) <= 100 degC")
        return 2
    if args.backend == "sim":
        from dexndm.hand.sim.profiles import ProfileError, load_profile

        try:
            profile = load_profile(args.reality or None)
        except ProfileError as e:
            print(f"dexndm collect: {e}")
            return 2
    elif args.backend == "dynamixel" and not args.port:
        print("dexndm collect: --port is required for the dynamixel backend")
        return 2
    total = args.episodes * len(wrists)
    written = skipped = 0
    minutes = 0.0
    out = Path(args.out)
    hand = None
    try:
        if args.backend == "dynamixel":
            from dexndm.hand.dynamixel.leap import from_options

            hand = from_options(spec, {"port": args.port})
            hand.connect()
        elif args.backend == "ros":
            from dexndm.hand.interface import HandError
            from dexndm.ros.ros_hand import RosHand

            hand = RosHand(spec, namespace=args.namespace, wait_s=args.ros_timeout, driver=args.driver)
            try:
                hand.connect()
            except HandError as e:
                print(f"dexndm collect: {e}")
                return 2
        for wi, wrist in enumerate(wrists):
            load = load_for(wrist, args.load)
            meta = {"backend": args.backend, "hand": spec.name, "load": load if args.backend == "sim" else "real",
                    "reality": args.reality or ("ideal" if args.backend == "sim" else "hardware")}
            if args.backend == "sim":
                from dexndm.hand.sim.mujoco_hand import MujocoHand
                from dexndm.hand.sim.scene import SceneConfig

                if hand is not None:
                    hand.disconnect()
                hand = MujocoHand(spec, SceneConfig(wrist=wrist, object=None, load=load, load_seed=args.seed),
                                  profile=profile, initial_pose="grasp", seed=args.seed)
                hand.connect()
                stepper = SimStepper(hand)
            else:
                stepper = RealTimeStepper(hand)
            if args.backend == "ros" and args.wrists:
                print(f"[collect] wrist -> {wrist} (wrist node)")
                hand.move_wrist(wrist, hold=hand.read_state().position)
            if args.backend == "ros" and hand.wrist_quat() is not None:
                meta["wrist_quat"] = hand.wrist_quat().tolist()  # measured by the wrist node
            cfg = CollectConfig(episodes=total, steps=args.steps, mode=args.mode, seed=args.seed, wrist=wrist,
                                offset_std=args.offset_std, ff_gain=args.ff_gain, ff_fraction=args.ff_fraction,
                                max_temperature_c=args.max_temperature,
                                resume_temperature_c=args.resume_temperature, meta=meta)
            ids = list(range(wi * args.episodes, (wi + 1) * args.episodes))
            summary = collect(hand, stepper, spec, cfg, out, trajectory_for(wrist), resume=args.resume or wi > 0,
                              episode_ids=ids, adapter=adapter,
                              adapter_info={"residual": args.residual} if adapter else None)
            written += summary["written"]
            skipped += summary["skipped"]
            minutes += summary["minutes"]
    except FileExistsError as e:
        print(f"dexndm collect: {e}")
        return 2
    finally:
        if hand is not None:
            hand.disconnect()
    print(f"collected {written} episode(s) into {out} in {minutes:.1f} min ({skipped} already there)")
    return 0
