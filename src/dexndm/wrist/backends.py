"""The wrist node's logic per backend, without ROS: requests -> checked commands, measurements ->
the hand base orientation in the world frame, holds.

- :class:`SimWrist` streams intermediate orientations (bounded-speed slerp) that the hand driver
  applies to the simulated hand; it measures the orientation the driver reports.
- :class:`PoseWrist` streams flange poses (same slerp) for a cartesian controller / servo
  interface; it measures the arm's reported flange pose.
- :class:`JointTrajectoryWrist` sends one trajectory point per named pose (joint positions from
  the arm YAML) and measures the orientation by forward kinematics of the arm's joint states.

Every request is checked against the limits before anything is commanded; a refused request
raises :class:`~dexndm.wrist.poses.WristLimitError` (or ``ValueError``) naming the limit and
leaves the current motion unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dexndm.wrist.arm import ArmConfig
from dexndm.wrist.kinematics import quat_angle, quat_normalize
from dexndm.wrist.poses import OrientationLimit, SlerpMover, parse_orientation

REACHED_TOL = math.radians(1.0)  # orientation within this of the target counts as reached


@dataclass(frozen=True)
class QuatCommand:
    """sim: hand base orientation (world) for the driver to apply now."""
    quat: np.ndarray


@dataclass(frozen=True)
class PoseCommand:
    """pose: flange target in the arm base frame."""
    position: np.ndarray
    quat: np.ndarray


@dataclass(frozen=True)
class TrajectoryCommand:
    """joint_trajectory: one point, reached duration seconds after the controller receives it."""
    joint_names: tuple[str, ...]
    positions: np.ndarray
    duration: float


@dataclass(frozen=True)
class Accepted:
    label: str
    target: np.ndarray  # hand base orientation (world) the motion ends at
    command: object | None  # sent at once (joint_trajectory); None for streaming backends
    message: str


class WristBackend:
    kind = ""

    def __init__(self, named: Mapping[str, np.ndarray], limit: OrientationLimit, max_angular_speed: float):
        self.named = {k: quat_normalize(v) for k, v in named.items()}
        self.limit = limit
        self.max_angular_speed = float(max_angular_speed)
        self.target_label = ""
        self.target: np.ndarray | None = None

    @property
    def pose_names(self) -> tuple[str, ...]:
        return tuple(self.named)

    def orientation(self) -> np.ndarray | None:
        raise NotImplementedError

    def request(self, text: str) -> Accepted:
        raise NotImplementedError

    def tick(self, dt: float) -> object | None:
        return None

    def hold(self) -> object | None:
        raise NotImplementedError

    def cancel(self) -> None:
        self.target = None
        self.target_label = ""

    @property
    def moving(self) -> bool:
        return self.target is not None and not self.reached()

    def reached(self) -> bool:
        q = self.orientation()
        return self.target is not None and q is not None and quat_angle(q, self.target) < REACHED_TOL

    def _accept(self, label: str, target: np.ndarray, command, extra: str = "") -> Accepted:
        self.target, self.target_label = target, label
        return Accepted(label, target, command, f"moving to {label}{extra}")


class _StreamingWrist(WristBackend):
    """Slerp from the measured orientation to the target at max_angular_speed, one step per tick."""

    def __init__(self, named, limit, max_angular_speed):
        super().__init__(named, limit, max_angular_speed)
        self.mover = SlerpMover(max_angular_speed)
        self.measured: np.ndarray | None = None  # hand base orientation, world

    def orientation(self) -> np.ndarray | None:
        return self.measured

    def request(self, text: str) -> Accepted:
        label, q = parse_orientation(text, self.named)
        self.limit.check(q, label)
        if self.measured is None:
            raise ValueError("no measured wrist orientation yet: cannot plan a motion")
        start = self.mover.current if self.mover.moving else self.measured
        self.mover.start(start, q)
        ang = quat_angle(start, q)
        return self._accept(label, q, None, f": {math.degrees(ang):.1f} deg at {self.max_angular_speed:g} rad/s, "
                                            f"about {ang / self.max_angular_speed:.1f} s")

    def tick(self, dt: float):
        if not self.mover.moving:
            return None
        q = self.mover.step(dt)
        return None if q is None else self._command(q)

    def hold(self):
        self.mover.stop()
        self.cancel()
        return self._hold_command()

    def _command(self, hand_quat: np.ndarray):
        raise NotImplementedError

    def _hold_command(self):
        raise NotImplementedError


class SimWrist(_StreamingWrist):
    kind = "sim"

    def measure(self, quat: Sequence[float]) -> None:
        self.measured = quat_normalize(quat)

    def _command(self, hand_quat):
        return QuatCommand(hand_quat)

    def _hold_command(self):
        return None if self.measured is None else QuatCommand(self.measured.copy())


class PoseWrist(_StreamingWrist):
    """Flange pose targets in the arm base frame; the hand orientation via the arm's fixed rotations
    (identity when no arm is given: the measured pose is then the hand base itself, in the world frame)."""

    kind = "pose"

    def __init__(self, named, limit, max_angular_speed, arm: ArmConfig | None = None,
                 position: Sequence[float] | None = None):
        super().__init__(named, limit, max_angular_speed)
        self.R_world_base = np.eye(3) if arm is None else arm.R_world_base
        self.R_flange_hand = np.eye(3) if arm is None else arm.R_flange_hand
        self.fixed_position = None if position is None else np.asarray(position, dtype=float)
        self.measured_position: np.ndarray | None = None
        self.measured_flange: np.ndarray | None = None
        self._position: np.ndarray | None = None

    def flange_quat_for(self, hand_quat) -> np.ndarray:
        from dexndm.wrist.kinematics import mat_to_quat, quat_to_mat

        return mat_to_quat(self.R_world_base.T @ quat_to_mat(hand_quat) @ self.R_flange_hand.T)

    def measure(self, position: Sequence[float], flange_quat: Sequence[float]) -> None:
        from dexndm.wrist.kinematics import mat_to_quat, quat_to_mat

        self.measured_position = np.asarray(position, dtype=float)
        self.measured_flange = quat_normalize(flange_quat)
        self.measured = mat_to_quat(self.R_world_base @ quat_to_mat(self.measured_flange) @ self.R_flange_hand)

    def request(self, text: str) -> Accepted:
        was_moving = self.mover.moving
        acc = super().request(text)
        # Keep the position while the orientation changes: the configured one, else where the flange is
        # now (or the one of the motion this request replaces).
        if self.fixed_position is not None:
            self._position = self.fixed_position
        elif not was_moving or self._position is None:
            self._position = self.measured_position.copy()
        return acc

    def _command(self, hand_quat):
        return PoseCommand(self._position.copy(), self.flange_quat_for(hand_quat))

    def _hold_command(self):
        if self.measured_flange is None:
            return None
        return PoseCommand(self.measured_position.copy(), self.measured_flange.copy())


class JointTrajectoryWrist(WristBackend):
    """Named poses -> one-point joint trajectories; orientation by FK of the measured joints."""

    kind = "joint_trajectory"

    def __init__(self, arm: ArmConfig, limit: OrientationLimit, max_angular_speed: float, max_joint_speed: float,
                 min_duration: float = 0.5, hold_duration: float = 0.1):
        super().__init__({n: arm.hand_quat(q) for n, q in arm.poses.items()}, limit, max_angular_speed)
        if not arm.poses:
            raise ValueError(f"{arm.source}: no poses: the joint_trajectory backend moves between named poses")
        self.arm = arm
        self.max_joint_speed = np.minimum(float(max_joint_speed), arm.chain.velocity)
        self.min_duration = float(min_duration)
        self.hold_duration = float(hold_duration)
        self.q: np.ndarray | None = None
        self.q_target: np.ndarray | None = None
        self._orientation: np.ndarray | None = None

    def measure(self, names: Sequence[str], positions: Sequence[float]) -> bool:
        """Take the arm joints from a JointState (any order, other joints ignored); False if it has none."""
        idx = {n: i for i, n in enumerate(names)}
        if not all(n in idx for n in self.arm.joint_names):
            return False
        if len(positions) != len(names):
            return False
        q = np.array([float(positions[idx[n]]) for n in self.arm.joint_names])
        if not np.all(np.isfinite(q)):
            return False
        self.q = q
        self._orientation = None
        return True

    def orientation(self) -> np.ndarray | None:
        if self.q is None:
            return None
        if self._orientation is None:
            self._orientation = self.arm.hand_quat(self.q)
        return self._orientation

    def request(self, text: str) -> Accepted:
        text = str(text).strip()
        if text not in self.arm.poses:
            raise ValueError(f"the joint_trajectory backend moves between the named poses of {self.arm.source}: "
                             f"{sorted(self.arm.poses)}; '{text}' is not one of them")
        q_target = self.arm.poses[text]
        self.arm.check_limits(q_target, text)
        target = self.named[text]
        self.limit.check(target, text)
        if self.q is None:
            raise ValueError("no arm joint_states with the joints "
                             f"{list(self.arm.joint_names)} received yet: cannot plan a motion")
        dq = np.abs(q_target - self.q)
        ang = quat_angle(self.orientation(), target)
        duration = max(self.min_duration, float(np.max(dq / self.max_joint_speed)), ang / self.max_angular_speed)
        self.q_target = q_target
        cmd = TrajectoryCommand(self.arm.joint_names, q_target.copy(), duration)
        return self._accept(text, target, cmd, f": max joint move {np.max(dq):.2f} rad over {duration:.1f} s")

    def reached(self) -> bool:
        return (super().reached() and self.q_target is not None
                and float(np.max(np.abs(self.q - self.q_target))) < 0.01)

    def cancel(self) -> None:
        super().cancel()
        self.q_target = None

    def hold(self):
        self.cancel()
        if self.q is None:
            return None
        return TrajectoryCommand(self.arm.joint_names, self.q.copy(), self.hold_duration)
