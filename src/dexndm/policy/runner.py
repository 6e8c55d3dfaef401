"""PolicyRunner: the policy node's logic without ROS, also used by offline replay.

Feed it joint states (by name) as they arrive and call :meth:`tick` at 20 Hz; it builds the
observation history exactly as the training environment does and returns absolute targets.
Live and offline runs that see the same samples produce the same actions, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dexndm.hand.sim.scene import is_palm_up
from dexndm.hand.spec import HandSpec
from dexndm.policy.actions import integrate
from dexndm.policy.exported import PolicyArtifact
from dexndm.policy.history import ProprioHistory, observation, unit_quat


@dataclass(frozen=True)
class Tick:
    targets: np.ndarray | None  # (n,) canonical order, rad; None when the runner refused to act
    stamp_ns: int | None  # stamp of the joint_states sample used
    phase: str  # "wait" | "approach" | "settle" | "run"
    reason: str = ""  # why no targets (stale, no state, ...)


def validate_axis(v: Sequence[float]) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise ValueError(f"rotation axis must be 3 finite numbers, got {list(a)}")
    nrm = np.linalg.norm(a)
    if nrm < 1e-6:
        raise ValueError("rotation axis is zero; it must have a direction")
    return a / nrm


def validate_quat(v: Sequence[float]) -> np.ndarray:
    """A wrist orientation from a message, normalised (the sign is canonicalised where it is observed)."""
    return unit_quat(v)


class PolicyRunner:
    def __init__(self, policy: PolicyArtifact, spec: HandSpec, stale_after: float = 0.1,
                 start_pose: np.ndarray | None = None, settle_ticks: int | None = None,
                 turned_start_pose: np.ndarray | None = None):
        """start_pose (canonical, rad): move there first, at most action_scale per tick per joint, then hold
        it for settle_ticks (default: the history length, so the window is full of settled samples as at
        the start of a training episode) before the policy acts. None: start at once from the measured
        pose. turned_start_pose: used instead when the wrist is not palm up at the first tick (training
        episodes there start from the grip that held the object through the turn)."""
        if policy.hand != spec.name:
            raise ValueError(f"policy was trained for hand '{policy.hand}', the hand here is '{spec.name}'")
        self.policy = policy
        self.spec = spec
        self.order = spec.ordering_from_names(policy.joint_order, "policy_artifact")
        self.lower = self.order.from_canonical(spec.lower)
        self.upper = self.order.from_canonical(spec.upper)
        self.history = ProprioHistory(policy.history, spec.n)
        self.stale_after = float(stale_after)
        self.settle_ticks = policy.history if settle_ticks is None else int(settle_ticks)
        self._start_up = None if start_pose is None else self.order.from_canonical(np.asarray(start_pose, float))
        self._start_turned = (self._start_up if turned_start_pose is None
                              else self.order.from_canonical(np.asarray(turned_start_pose, float)))
        self.start_pose = self._start_up
        self.reset()

    def reset(self) -> None:
        self._q: np.ndarray | None = None  # latest measured, policy order
        self._stamp_ns: int | None = None
        self.a_prev: np.ndarray | None = None
        self._settle_left = self.settle_ticks if self.start_pose is not None else 0
        self._approaching = self.start_pose is not None
        self.ticks = 0

    def update_joint_state(self, names: Sequence[str], position: Sequence[float], stamp_ns: int) -> None:
        """A joint_states sample (any joint order; extra joints ignored; all hand joints required)."""
        q = self.spec.vector_from_named(names, position, "joint_states")
        self._q = self.order.from_canonical(q)
        self._stamp_ns = int(stamp_ns)

    def tick(self, now_ns: int, wrist_quat: np.ndarray, axis: np.ndarray) -> Tick:
        if self._q is None:
            return Tick(None, None, "wait", "no joint_states received yet")
        age = (now_ns - self._stamp_ns) * 1e-9
        if age > self.stale_after:
            return Tick(None, self._stamp_ns, "wait", f"joint_states stale ({age * 1e3:.0f} ms old)")
        q = self._q
        if self.a_prev is None:
            # Start by holding the measured pose; the start pose depends on the wrist at this first tick.
            self.start_pose = self._start_up if is_palm_up(self.spec, wrist_quat) else self._start_turned
            self._approaching = self.start_pose is not None
            self._settle_left = self.settle_ticks if self.start_pose is not None else 0
            self.a_prev = q.copy()
            self.history.reset(q, self.a_prev)
        else:
            self.history.push(q, self.a_prev)
        self.ticks += 1
        scale = self.policy.action_scale
        if self._approaching and np.max(np.abs(self.start_pose - self.a_prev)) > 1e-9:
            a = np.clip(self.a_prev + np.clip(self.start_pose - self.a_prev, -scale, scale), self.lower, self.upper)
            phase = "approach"
        elif self._settle_left > 0:
            self._approaching = False
            a = self.a_prev.copy()
            self._settle_left -= 1
            phase = "settle"
        else:
            obs = observation(self.history, wrist_quat, axis)
            delta = self.policy.act(obs)
            a = integrate(self.a_prev, delta, self.policy.action_scale, self.lower, self.upper)
            phase = "run"
        self.a_prev = a
        return Tick(self.order.to_canonical(a), self._stamp_ns, phase)

    def hold(self) -> Tick:
        """The last targets again, without acting (the policy is paused, e.g. by a dead-man switch)."""
        if self.a_prev is None:
            return Tick(None, self._stamp_ns, "paused", "paused before the first tick")
        return Tick(self.order.to_canonical(self.a_prev), self._stamp_ns, "paused")
