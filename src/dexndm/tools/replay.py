"""``dexndm replay``: run a recorded session's joint states through the policy (and adaptation) offline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dexndm.ndm import DEFAULT_BOUND

COMMAND = "replay"
HELP = "Replay a bag through the policy (and adaptation) offline; compare with the recorded actions."
DESCRIPTION = (
    "Feed the joint_states of a bag to the same core code the policy and adaptation nodes run, without a ROS "
    "graph, and write the actions they would have sent next to the recorded ones: OUT/actions.json, "
    "OUT/actions.csv and one PNG per finger. With recorded dexndm/policy_action messages the replay ticks "
    "on their stamps (each names the joint_states sample the live policy used) and takes the wrist "
    "orientation and rotation axis from the recorded topics, so a replay of a live session reproduces it "
    "bit for bit; otherwise it ticks at 20 Hz on the joint_states stamps. Exit status: 0, 1 with --check "
    "when replayed and recorded actions differ, 2 for bad input."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dexndm.policy.replay import DEFAULT_AXIS, DEFAULT_STALE_TIMEOUT, DEFAULT_START_POSE, DEFAULT_WRIST

    parser.add_argument("bag", type=Path, metavar="DIR", help="rosbag2 bag directory")
    parser.add_argument("--through", default="policy", metavar="STAGES",
                        help="stages to replay, comma-separated: policy, policy,adaptation or adaptation "
                             "(adapts the recorded policy actions) (default: policy)")
    parser.add_argument("--policy", default="", help="policy artifact (.pt); '' = the shipped models/policy-leap-*.pt")
    parser.add_argument("--adapter", choices=("off", "residual", "inversion"), default="off",
                        help="adaptation mode (default off)")
    parser.add_argument("--residual", default="", help="residual artifact ('' = shipped models/residual-leap-*.pt)")
    parser.add_argument("--ndm-real", default="", help="finetuned NDM ('' = shipped models/ndm-leap-real*.pt)")
    parser.add_argument("--ndm-sim", default="", help="sim-pretrained NDM ('' = shipped models/ndm-leap-sim*.pt)")
    parser.add_argument("--bound", type=float, default=DEFAULT_BOUND,
                        help=f"max |correction| per joint, rad (default {DEFAULT_BOUND})")
    parser.add_argument("--hand", default="", help="hand for --through adaptation without --policy (default leap)")
    parser.add_argument("--axis", default=DEFAULT_AXIS,
                        help=f"rotation axis until a recorded dexndm/rotation_axis says otherwise "
                             f"(default {DEFAULT_AXIS!r})")
    parser.add_argument("--wrist", default=DEFAULT_WRIST,
                        help="wrist orientation until a recorded dexndm/wrist_orientation says otherwise: a named "
                             f"pose, 'w,x,y,z', or '' (the policy waits for the topic) (default {DEFAULT_WRIST!r})")
    parser.add_argument("--start-pose", default=DEFAULT_START_POSE,
                        help=f"policy start pose, as the node's start_pose parameter (default {DEFAULT_START_POSE!r})")
    parser.add_argument("--stale-timeout", type=float, default=DEFAULT_STALE_TIMEOUT,
                        help=f"as the node's stale_timeout, s (default {DEFAULT_STALE_TIMEOUT})")
    parser.add_argument("--timing", choices=("auto", "recorded", "rate"), default="auto",
                        help="tick on the recorded policy actions or at the policy rate (default auto: recorded "
                             "if the bag has them)")
    parser.add_argument("--namespace", default="", help="namespace of the recorded topics (e.g. left)")
    parser.add_argument("--joint-states", default="", metavar="TOPIC",
                        help="joint states topic (default: <namespace>/joint_states)")
    parser.add_argument("--out", type=Path, default=None, metavar="OUTDIR",
                        help="output directory (default: <DIR>_replay next to the bag)")
    parser.add_argument("--no-plots", action="store_true", help="skip the per-finger PNGs")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 unless every compared action is identical to the recorded one")


def _shipped(given: str, pattern: str) -> str:
    if given:
        return given
    from dexndm.paths import shipped_model

    return shipped_model(pattern)


def _error(msg: str) -> int:
    print(f"dexndm replay: error: {' '.join(str(msg).split())}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    stages = tuple(s.strip() for s in args.through.split(",") if s.strip())
    valid = ("policy", "adaptation")
    if not stages or any(s not in valid for s in stages):
        return _error(f"--through '{args.through}': use policy, policy,adaptation or adaptation")
    if args.stale_timeout < 0 or args.bound < 0:
        return _error("--stale-timeout and --bound must be >= 0")

    from dexndm.hand.spec import load_hand_spec
    from dexndm.ndm.adaptation import build_adapter
    from dexndm.policy import replay as rp

    try:
        rec = rp.load_recording(args.bag, args.namespace, args.joint_states)
        policy = None
        if "policy" in stages or args.policy:
            from dexndm.policy.exported import load_policy, shipped_policy

            path = str(Path(args.policy).resolve()) if args.policy else shipped_policy()
            if not path:
                return _error("no --policy given and no shipped models/policy-leap-*.pt found")
            policy = load_policy(path)
        hand = args.hand or (policy.hand if policy is not None else "leap")
        if policy is not None and policy.hand != hand:
            return _error(f"policy {policy.path} is for hand '{policy.hand}', --hand is '{hand}'")
        spec = load_hand_spec(hand)
        adapter = None
        if "adaptation" in stages:
            adapter = build_adapter(args.adapter, spec,
                                    _shipped(args.residual, "residual-leap-*.pt") if args.adapter == "residual" else "",
                                    _shipped(args.ndm_real, "ndm-leap-real*.pt") if args.adapter == "inversion" else "",
                                    _shipped(args.ndm_sim, "ndm-leap-sim*.pt") if args.adapter == "inversion" else "",
                                    args.bound)
        result = rp.replay(rec, spec, policy, adapter, through=stages, wrist=args.wrist, axis=args.axis,
                           adaptation_wrist=args.wrist or rp.DEFAULT_WRIST, stale_timeout=args.stale_timeout,
                           start_pose=args.start_pose, bound=args.bound, timing=args.timing)
    except (rp.ReplayError, ValueError, KeyError, OSError) as exc:
        return _error(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
    bag = args.bag.resolve()
    out = args.out or bag.with_name(bag.name + "_replay")
    try:
        written = rp.write_outputs(result, out, plots=not args.no_plots)
    except OSError as exc:
        return _error(f"{out}: cannot write outputs: {exc.strerror or exc}")
    print(rp.format_summary(result))
    print(f"  wrote {', '.join(p.name for p in written)} to {out}")
    if args.check:
        s = result.summary()
        problems = []
        for name in stages:
            st = s[name]
            if st["compared"] == 0:
                problems.append(f"{name}: nothing recorded to compare with")
            elif st["max_abs_diff"] != 0 or st["recorded_not_replayed"]:
                problems.append(f"{name}: {st['compared'] - st['identical']} of {st['compared']} ticks differ, "
                                f"{st['recorded_not_replayed']} recorded actions not replayed")
        if problems:
            print(f"dexndm replay: check failed: {'; '.join(problems)}", file=sys.stderr)
            return 1
    return 0
