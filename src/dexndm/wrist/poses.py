"""Named wrist orientations, orientation limits, bounded-speed slerp and source freshness.

The six named orientations (palm_up, palm_down, base_up, base_down, thumb_up, thumb_down) are the
hand-base orientations of the training simulator, taken from :func:`dexndm.hand.sim.scene.wrist_rotation`
(one source of truth: the simulator, the policy and the wrist node agree by construction).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dexndm.wrist.kinematics import quat_angle, quat_normalize, slerp

WRIST_POSE_NAMES = ("palm_up", "palm_down", "base_up", "base_down", "thumb_up", "thumb_down")


class WristLimitError(ValueError):
    """A requested wrist pose lies outside a configured joint or orientation limit."""


def named_orientations(hand: str) -> dict[str, np.ndarray]:
    """{name: unit quaternion [w, x, y, z]} of the hand base in the world frame for each named pose."""
    from dexndm.hand.sim.scene import wrist_rotation
    from dexndm.hand.spec import load_hand_spec
    from dexndm.wrist.kinematics import mat_to_quat

    spec = load_hand_spec(hand)
    return {name: mat_to_quat(wrist_rotation(spec, name)) for name in WRIST_POSE_NAMES}


def parse_orientation(text: str, named: Mapping[str, np.ndarray]) -> tuple[str, np.ndarray]:
    """A named pose or 'w,x,y,z' -> (label, unit quaternion)."""
    text = str(text).strip()
    if text in named:
        return text, quat_normalize(named[text])
    try:
        q = [float(v) for v in text.split(",")]
    except ValueError:
        q = []
    if len(q) != 4:
        raise ValueError(f"wrist pose '{text}' is neither a named pose {sorted(named)} nor a quaternion 'w,x,y,z'")
    q = quat_normalize(q)
    return ",".join(f"{v:.4f}" for v in q), q


@dataclass(frozen=True)
class OrientationLimit:
    """Commanded orientations must lie within max_angle (rad) of a reference orientation.
    max_angle >= pi disables the limit."""

    reference: np.ndarray
    max_angle: float = math.pi
    reference_label: str = ""

    def check(self, q: Sequence[float], label: str = "") -> None:
        if self.max_angle >= math.pi:
            return
        ang = quat_angle(self.reference, q)
        if ang > self.max_angle + 1e-9:
            raise WristLimitError(
                f"orientation limit: {label or 'target'} is {math.degrees(ang):.1f} deg from the reference "
                f"'{self.reference_label}', beyond max_angle_deg {math.degrees(self.max_angle):.1f}")


def check_joint_limits(names: Sequence[str], q: Sequence[float], lower: Sequence[float],
                       upper: Sequence[float], label: str = "") -> None:
    """Raise naming the first joint outside [lower, upper]."""
    q = np.asarray(q, dtype=float)
    for n, v, lo, hi in zip(names, q, lower, upper, strict=True):
        if not np.isfinite(v):
            raise WristLimitError(f"joint limit: {label or 'target'} has a non-finite value for {n}")
        if v < lo - 1e-9 or v > hi + 1e-9:
            raise WristLimitError(f"joint limit: {label or 'target'} puts {n} at {v:.4f} rad, outside its limit "
                                  f"[{lo:.4f}, {hi:.4f}]")


class SlerpMover:
    """Streams orientations from a start to a target along the shortest arc, at most ``speed``
    rad/s: each :meth:`step` (dt seconds) advances at most speed * dt."""

    def __init__(self, speed: float):
        if not speed > 0:
            raise ValueError(f"angular speed must be > 0 rad/s, got {speed}")
        self.speed = float(speed)
        self.current: np.ndarray | None = None
        self.target: np.ndarray | None = None

    def start(self, current: Sequence[float], target: Sequence[float]) -> None:
        self.current = quat_normalize(current)
        self.target = quat_normalize(target)

    def stop(self) -> None:
        self.target = None

    @property
    def moving(self) -> bool:
        return self.target is not None

    def remaining(self) -> float:
        if self.current is None or self.target is None:
            return 0.0
        return quat_angle(self.current, self.target)

    def step(self, dt: float) -> np.ndarray | None:
        """The next orientation to command (None when not moving). The last step lands on the target."""
        if self.target is None or self.current is None:
            return None
        ang = quat_angle(self.current, self.target)
        max_step = self.speed * max(float(dt), 0.0)
        if ang <= max_step or ang < 1e-9:
            self.current = self.target
            self.target = None
        else:
            self.current = slerp(self.current, self.target, max_step / ang)
        return self.current.copy()


class Freshness:
    """Tracks when a message source was last heard; reports the fresh -> stale edge once."""

    def __init__(self, label: str, timeout: float):
        self.label = label
        self.timeout = float(timeout)
        self.last: float | None = None
        self._stale_reported = False

    @property
    def enabled(self) -> bool:
        return self.timeout > 0

    def seen(self, now: float) -> None:
        self.last = now
        self._stale_reported = False

    def age(self, now: float) -> float:
        return math.inf if self.last is None else now - self.last

    def fresh(self, now: float) -> bool:
        return not self.enabled or self.age(now) <= self.timeout

    def went_stale(self, now: float) -> bool:
        """True exactly once after a source that had been heard stops for longer than the timeout."""
        if not self.enabled or self.last is None or self._stale_reported or self.fresh(now):
            return False
        self._stale_reported = True
        return True

    def describe(self, now: float) -> str:
        if self.last is None:
            return f"{self.label}: nothing received yet"
        return f"{self.label}: last message {self.age(now):.2f} s ago (timeout {self.timeout:g} s)"
