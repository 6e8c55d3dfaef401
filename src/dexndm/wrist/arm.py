"""Arm descriptions for the wrist node (``config/arms/<arm>.yaml``) and the hand orientation by FK.

An arm YAML names the kinematic URDF, the base and flange links, the fixed rotations that tie the
arm to the policy's gravity-aligned world frame (arm base -> world) and the hand to the flange
(hand base -> flange), the commanded joints with their limits, and named poses (joint positions)
whose forward kinematics give the named hand orientations. Regenerate the poses after changing the
URDF or the mounting rotation with ``python -m dexndm.wrist.arm ARM`` (prints a ``poses:`` block).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from dexndm.wrist.kinematics import UrdfChain, mat_to_quat, quat_angle, rpy_to_mat, solve_ik
from dexndm.wrist.poses import WRIST_POSE_NAMES, check_joint_limits, named_orientations

_KEYS = {"name", "hand", "urdf", "base_link", "flange_link", "base_to_world_rpy", "flange_to_hand_rpy", "joints",
         "limits", "poses", "ik"}


class ArmConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ArmConfig:
    name: str
    hand: str
    source: Path
    chain: UrdfChain
    joint_names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    R_world_base: np.ndarray  # arm base frame -> world (gravity-aligned, z up)
    R_flange_hand: np.ndarray  # hand base frame -> flange frame
    poses: dict[str, np.ndarray]  # name -> joint positions in joint_names order
    ik: dict

    def hand_rotation(self, q: np.ndarray) -> np.ndarray:
        """3x3 hand base -> world for arm joint positions q (joint_names order)."""
        return self.R_world_base @ self.chain.fk(q)[:3, :3] @ self.R_flange_hand

    def hand_quat(self, q: np.ndarray) -> np.ndarray:
        return mat_to_quat(self.hand_rotation(q))

    def flange_quat_for(self, hand_quat: np.ndarray) -> np.ndarray:
        """Flange orientation in the arm base frame that puts the hand base at hand_quat (world)."""
        from dexndm.wrist.kinematics import quat_to_mat

        return mat_to_quat(self.R_world_base.T @ quat_to_mat(hand_quat) @ self.R_flange_hand.T)

    def hand_quat_from_flange(self, flange_quat: np.ndarray) -> np.ndarray:
        from dexndm.wrist.kinematics import quat_to_mat

        return mat_to_quat(self.R_world_base @ quat_to_mat(flange_quat) @ self.R_flange_hand)

    def check_limits(self, q: np.ndarray, label: str = "") -> None:
        check_joint_limits(self.joint_names, q, self.lower, self.upper, label)


def _rpy(cfg: dict, key: str, src: Path) -> np.ndarray:
    v = cfg.get(key, [0.0, 0.0, 0.0])
    if not (isinstance(v, list) and len(v) == 3):
        raise ArmConfigError(f"{src}: {key} must be [roll, pitch, yaw] in rad")
    return rpy_to_mat([float(x) for x in v])


def arm_config_path(arm: str | Path) -> Path:
    from dexndm.paths import share_path

    p = Path(arm)
    if p.suffix in (".yaml", ".yml"):
        return share_path(p)
    return share_path("config", "arms", f"{arm}.yaml")


def load_arm_config(arm: str | Path) -> ArmConfig:
    """An arm by name (config/arms/<arm>.yaml) or YAML path."""
    from dexndm.paths import share_path

    src = arm_config_path(arm)
    if not src.is_file():
        known = sorted(x.stem for x in share_path("config", "arms").glob("*.yaml"))
        raise ArmConfigError(f"no arm description '{arm}' ({src}); known arms: {known}")
    cfg = yaml.safe_load(src.read_text()) or {}
    unknown = sorted(set(cfg) - _KEYS)
    if unknown:
        raise ArmConfigError(f"{src}: unknown key '{unknown[0]}'; valid keys: {sorted(_KEYS)}")
    for key in ("urdf", "base_link", "flange_link", "joints", "hand"):
        if key not in cfg:
            raise ArmConfigError(f"{src}: required key '{key}' missing")
    urdf = Path(cfg["urdf"])
    urdf = urdf if urdf.is_absolute() else (share_path(urdf) if share_path(urdf).is_file() else src.parent / urdf)
    chain = UrdfChain.from_urdf(urdf, cfg["base_link"], cfg["flange_link"])
    joints = tuple(str(j) for j in cfg["joints"])
    if joints != chain.joint_names:
        raise ArmConfigError(f"{src}: joints {list(joints)} differ from the URDF chain {cfg['base_link']} -> "
                             f"{cfg['flange_link']}: {list(chain.joint_names)}")
    lower, upper = chain.lower.copy(), chain.upper.copy()
    for name, lim in (cfg.get("limits") or {}).items():
        if name not in joints:
            raise ArmConfigError(f"{src}: limits.{name}: not one of the joints {list(joints)}")
        i = joints.index(name)
        lo, hi = float(lim[0]), float(lim[1])
        if not (chain.lower[i] <= lo < hi <= chain.upper[i]):
            raise ArmConfigError(f"{src}: limits.{name} [{lo}, {hi}] must be an interval inside the URDF limit "
                                 f"[{chain.lower[i]}, {chain.upper[i]}]")
        lower[i], upper[i] = lo, hi
    poses = {}
    for name, q in (cfg.get("poses") or {}).items():
        q = np.asarray(q, dtype=float)
        if q.shape != (len(joints),):
            raise ArmConfigError(f"{src}: poses.{name} needs {len(joints)} joint positions, got {q.shape}")
        poses[str(name)] = q
    return ArmConfig(name=str(cfg.get("name", src.stem)), hand=str(cfg["hand"]), source=src, chain=chain,
                     joint_names=joints, lower=lower, upper=upper, R_world_base=_rpy(cfg, "base_to_world_rpy", src),
                     R_flange_hand=_rpy(cfg, "flange_to_hand_rpy", src), poses=poses, ik=dict(cfg.get("ik") or {}))


def solve_named_poses(arm: ArmConfig, restarts: int = 30, seed: int = 0) -> dict[str, tuple[np.ndarray, float, float]]:
    """IK for each named hand orientation: {name: (q, orientation error rad, position error m)}.

    Orientation exact; the flange position pulled (``ik.position_weight``) toward ``ik.position``
    (arm base frame); the posture toward ``ik.rest``; joints kept ``ik.margin`` rad inside the limits.
    Of the restarts that reach the orientation, the one nearest the position and the rest posture wins."""
    from dexndm.wrist.kinematics import quat_to_mat

    targets = named_orientations(arm.hand)
    p = arm.ik.get("position")
    rest = np.asarray(arm.ik.get("rest", 0.5 * (arm.lower + arm.upper)), dtype=float)
    margin = float(arm.ik.get("margin", 0.1))
    kw = {"position_weight": float(arm.ik.get("position_weight", 0.05)),
          "rest_weight": float(arm.ik.get("rest_weight", 0.1))}
    lo, hi = arm.lower + margin, arm.upper - margin
    rng = np.random.default_rng(seed)
    out = {}
    for name in WRIST_POSE_NAMES:
        R_flange = arm.R_world_base.T @ quat_to_mat(targets[name]) @ arm.R_flange_hand.T
        best = None
        for k in range(restarts):
            q0 = rest if k == 0 else rng.uniform(lo, hi)
            res = solve_ik(arm.chain, R_flange, p, q0, lo, hi, q_rest=rest, **kw)
            cost = (res.orientation_error > math.radians(0.1), res.position_error + 0.05 * np.linalg.norm(res.q - rest))
            if best is None or cost < best[0]:
                best = (cost, res)
        res = best[1]
        out[name] = (res.q, quat_angle(arm.hand_quat(res.q), targets[name]), res.position_error)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dexndm.wrist.arm",
                                 description="solve and print the named wrist poses of an arm YAML")
    ap.add_argument("arm", help="arm name (config/arms/<arm>.yaml) or YAML path")
    ap.add_argument("--restarts", type=int, default=24)
    args = ap.parse_args(argv)
    arm = load_arm_config(args.arm)
    print("poses:  # joint positions (rad); hand-orientation error, flange distance from ik.position")
    for name, (q, err, perr) in solve_named_poses(arm, args.restarts).items():
        arm.check_limits(q, name)
        vals = ", ".join(f"{v:.4f}" for v in q)
        print(f"  {name}: [{vals}]  # {math.degrees(err):.3f} deg, {perr * 100:.1f} cm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
