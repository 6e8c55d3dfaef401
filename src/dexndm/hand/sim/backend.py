"""Factory for the `sim` backend from flat options (ROS parameters or CLI flags)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dexndm.hand.sim.mujoco_hand import MujocoHand, StartTurned
from dexndm.hand.sim.objects import get_object
from dexndm.hand.sim.profiles import load_profile
from dexndm.hand.sim.scene import WRIST_POSES, SceneConfig, is_palm_up
from dexndm.hand.spec import HandSpec

# (name, default, description) -- the ROS node declares these as `sim.<name>`.
PARAMETERS: list[tuple[str, Any, str]] = [
    ("wrist", "palm_up", f"wrist orientation: one of {', '.join(WRIST_POSES)}, or 'w,x,y,z'"),
    ("reality", "", "actuator profile: '' or 'ideal' for the training simulator, else a reality profile "
                    "name (config/reality/NAME.yaml) or a YAML path"),
    ("object", "cylinder_55", "built-in object name (config/objects.yaml), or 'none'"),
    ("object_mass", 0.0, "object mass override (kg); 0 keeps the catalog value"),
    ("object_friction", 0.0, "object friction override; 0 keeps the catalog value"),
    ("load", "none", "finger load for data collection: none | chaos_box (soft balls in an open box) | "
                     "fingertip_ball (a soft ball bound to three fingertips, palm up); built at the start wrist"),
    ("initial_pose", "home", "named pose from the hand config to start in (a grasp_turn start places the object "
                             "on the palm-up hand in its 'grasp' pose instead, as training episodes do)"),
    ("start", "grasp_turn", "with an object at a wrist where the palm does not face up: 'grasp_turn' (place it "
                            "on the palm-up hand, close the fingers to hold_pose, turn to the wrist) or 'placed' "
                            "(spawn it at the palm of the turned hand: it falls)"),
    ("hold_pose", "hold", "named pose the fingers close to for a grasp_turn start"),
    ("seed", 0, "seed for sensor noise"),
]


def parse_wrist(value: str) -> str | tuple[float, ...]:
    value = str(value).strip()
    if value in WRIST_POSES:
        return value
    try:
        q = tuple(float(x) for x in value.split(","))
    except ValueError:
        q = ()
    if len(q) != 4:
        raise ValueError(f"wrist: '{value}' is neither a named pose {list(WRIST_POSES)} nor a quaternion 'w,x,y,z'")
    return q


def from_options(spec: HandSpec, options: Mapping[str, Any]) -> MujocoHand:
    valid = {p[0] for p in PARAMETERS}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"sim backend: unknown option(s) {unknown}; valid: {sorted(valid)}")
    opt = {p[0]: p[1] for p in PARAMETERS}
    opt.update(options)
    obj = None
    if str(opt["object"]).lower() not in ("", "none"):
        obj = get_object(
            str(opt["object"]),
            mass=float(opt["object_mass"]) or None,
            friction=float(opt["object_friction"]) or None,
        )
    wrist = parse_wrist(opt["wrist"])
    start = str(opt["start"])
    if start not in ("grasp_turn", "placed"):
        raise ValueError(f"sim backend: start '{start}' unknown; valid: grasp_turn, placed")
    turned = None
    if obj is not None and start == "grasp_turn" and not is_palm_up(spec, wrist):
        hold = str(opt["hold_pose"])
        if hold not in spec.poses:
            raise ValueError(f"sim backend: hold_pose '{hold}' is not a pose of hand '{spec.name}'; "
                             f"valid: {sorted(spec.poses)}")
        turned = StartTurned(wrist=wrist, hold_pose=hold)
        wrist = "palm_up"
        # The hand-over starts as a training episode does: the object resting on the palm-up hand with the
        # fingers in the grasp pose (from e.g. 'home' the fingers do not close around it).
        if "grasp" in spec.poses:
            opt["initial_pose"] = "grasp"
    scene = SceneConfig(wrist=wrist, object=obj, load=str(opt["load"]), load_seed=int(opt["seed"]))
    return MujocoHand(
        spec,
        scene=scene,
        profile=load_profile(opt["reality"] or None),
        initial_pose=str(opt["initial_pose"]) or None,
        seed=int(opt["seed"]),
        start_turned=turned,
    )
