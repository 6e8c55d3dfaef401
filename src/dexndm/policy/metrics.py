"""Rotation metrics from the object's orientation: Rot, TTF and RotP (paper section 8.1)."""

from __future__ import annotations

import mujoco
import numpy as np


def parse_axis(text: str) -> np.ndarray:
    """'z', '-x', '+y' or three numbers 'x,y,z' -> unit vector (world frame)."""
    t = str(text).strip().lower()
    named = {"x": (1, 0, 0), "y": (0, 1, 0), "z": (0, 0, 1)}
    sign = 1.0
    if t[:1] in "+-" and t[1:] in named:
        sign = -1.0 if t[0] == "-" else 1.0
        t = t[1:]
    if t in named:
        return sign * np.array(named[t], dtype=float)
    try:
        v = np.array([float(x) for x in t.split(",")])
    except ValueError:
        v = np.zeros(0)
    if v.shape != (3,) or not np.all(np.isfinite(v)) or np.linalg.norm(v) < 1e-9:
        raise ValueError(f"axis '{text}': use x, y, z with an optional sign (e.g. -z) or three numbers 'x,y,z' "
                         "not all zero")
    return v / np.linalg.norm(v)


def axis_label(v: np.ndarray) -> str:
    for name, e in (("x", (1, 0, 0)), ("y", (0, 1, 0)), ("z", (0, 0, 1))):
        if np.allclose(v, e):
            return f"+{name}"
        if np.allclose(v, -np.array(e)):
            return f"-{name}"
    return ",".join(f"{x:.3f}" for x in v)


class RotationTracker:
    """Accumulates rotation about a world axis from successive object orientations."""

    def __init__(self, axis: np.ndarray, dt: float):
        self.axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
        self.dt = float(dt)
        self.rot = 0.0  # rad about the axis (signed: + is the commanded direction)
        self._off_axis = []
        self._prev: np.ndarray | None = None

    def update(self, quat: np.ndarray) -> float:
        """Add the step from the previous orientation; returns this step's rotation about the axis."""
        quat = np.asarray(quat, dtype=float)
        if self._prev is None:
            self._prev = quat.copy()
            return 0.0
        w = np.zeros(3)
        # Angular velocity (world frame) that takes prev to quat in dt.
        rel = np.zeros(4)
        inv = np.zeros(4)
        mujoco.mju_negQuat(inv, self._prev)
        mujoco.mju_mulQuat(rel, quat, inv)
        mujoco.mju_quat2Vel(w, rel, self.dt)
        self._prev = quat.copy()
        step = float(w @ self.axis) * self.dt
        self.rot += step
        self._off_axis.append(float(np.linalg.norm(np.cross(w, self.axis))))
        return step

    @property
    def rotp(self) -> float:
        """Mean off-axis angular speed ||w x k|| (rad/s), lower is better."""
        return float(np.mean(self._off_axis)) if self._off_axis else 0.0


class ObjectRotationReport:
    """Rot and TTF of the simulated object as the live driver sees it (sim backend only).

    Counting restarts at :meth:`start` (the driver calls it at the first joint_commands, so the seconds
    the policy node spends coming up are not counted) and stops after ``window_s`` seconds (0: never),
    so a live run measures what a ``window_s`` evaluation episode does."""

    def __init__(self, hand, axis: np.ndarray, dt: float, fall_distance: float = 0.1, window_s: float = 0.0):
        self.hand = hand
        self.dt = dt
        self.fall_distance = fall_distance
        self.window_s = float(window_s)
        self.tracker = RotationTracker(axis, dt)
        self.steps = 0
        self.ttf: float | None = None
        self.started = False

    def start(self) -> None:
        """Count from here (what happened before, the hand holding its pose, is dropped)."""
        self.tracker = RotationTracker(self.tracker.axis, self.dt)
        self.steps = 0
        self.ttf = None
        self.started = True

    def set_axis(self, axis: np.ndarray) -> None:
        self.tracker.axis = np.asarray(axis, float) / np.linalg.norm(axis)

    def update(self) -> None:
        if self.window_s > 0 and self.steps * self.dt >= self.window_s - 1e-9:
            return  # the window is full
        self.steps += 1
        if self.ttf is not None:
            return  # dropped: what the object does on the floor is not rotation in hand
        _, quat = self.hand.object_pose()
        if not self.hand.object_in_hand(self.fall_distance):  # as the training env counts a drop
            self.ttf = self.steps * self.dt
            return
        self.tracker.update(quat)

    @property
    def elapsed(self) -> float:
        return self.steps * self.dt

    def values(self) -> list[tuple[str, str]]:
        return [("object_rot_rad", f"{self.tracker.rot:.3f}"),
                ("object_ttf_s", f"{self.ttf if self.ttf is not None else self.elapsed:.2f}"),
                ("object_dropped", str(self.ttf is not None)),
                ("object_counting_since", "first joint_commands" if self.started else "driver start")]

    def summary(self) -> str:
        ttf = self.ttf if self.ttf is not None else self.elapsed
        since = "since the first joint_commands" if self.started else "(no joint_commands)"
        return (f"object rotation: Rot {self.tracker.rot:.2f} rad about {axis_label(self.tracker.axis)} in "
                f"{self.elapsed:.1f} s {since}, TTF {ttf:.1f} s{' (dropped)' if self.ttf is not None else ''}")
