"""Proprioceptive history shared by the environment, the policy node and offline replay.

The deployable observation is the last ``length`` pairs (q_k, a_{k-1}) -- the measured joint
positions and the target that was in force when they were measured -- plus the wrist orientation
quaternion [w, x, y, z] and the unit rotation axis, both in the gravity-aligned world frame.
Vectors are in the policy's joint order (HandSpec ordering named in the artifact).

Layout of :meth:`ProprioHistory.vector`: oldest first, per step [q (n), a_prev (n)], i.e. shape
(length * 2n,), followed in :func:`observation` by wrist (4) and axis (3).

A quaternion and its negative are the same orientation, so the observation fixes the sign
(:func:`canonical_wrist_quat`): otherwise the same wrist pose reached by two routes (the training
simulator, a wrist node's forward kinematics, a slerp) could reach the network as two inputs.
"""

from __future__ import annotations

import numpy as np


class ProprioHistory:
    def __init__(self, length: int, n: int):
        if length < 1 or n < 1:
            raise ValueError(f"history length and joint count must be >= 1, got {length}, {n}")
        self.length = int(length)
        self.n = int(n)
        self._buf = np.zeros((self.length, 2 * self.n))
        self._filled = False

    def reset(self, q: np.ndarray, a_prev: np.ndarray) -> None:
        """Fill the whole window with one pair (start of an episode / of a run)."""
        self._buf[:] = np.concatenate([q, a_prev])
        self._filled = True

    def push(self, q: np.ndarray, a_prev: np.ndarray) -> None:
        if not self._filled:
            self.reset(q, a_prev)
            return
        self._buf = np.roll(self._buf, -1, axis=0)
        self._buf[-1, : self.n] = q
        self._buf[-1, self.n :] = a_prev

    @property
    def ready(self) -> bool:
        return self._filled

    def vector(self) -> np.ndarray:
        return self._buf.reshape(-1).copy()

    def last_q(self) -> np.ndarray:
        return self._buf[-1, : self.n].copy()


# The sign of the observed wrist quaternion is the one with a positive dot product with this reference.
# It is the unit quaternion farthest from the sign boundary for all six named wrist poses of both hands
# (|q . r| >= 0.3 for each: the sign is stable within about 35 degrees of every named pose), and it keeps
# the palm-up LEAP quaternion [0, 1, 0, 0] as the simulator reports it.
WRIST_QUAT_REFERENCE = np.array([-0.44, 0.88, 0.0, -0.18]) / np.linalg.norm([-0.44, 0.88, 0.0, -0.18])


def unit_quat(q) -> np.ndarray:
    """The wrist orientation [w, x, y, z] normalised; ValueError for a wrong size, NaN/inf or a zero one."""
    q = np.asarray(q, dtype=float)
    norm = np.linalg.norm(q) if q.shape == (4,) else 0.0
    if q.shape != (4,) or not np.all(np.isfinite(q)) or norm < 1e-6:
        raise ValueError(f"wrist orientation must be a finite non-zero quaternion w,x,y,z, got {q.tolist()}")
    return q / norm


def canonical_wrist_quat(q) -> np.ndarray:
    """Unit quaternion [w, x, y, z] with the sign the policy observes (see WRIST_QUAT_REFERENCE)."""
    q = unit_quat(q)
    return q if float(q @ WRIST_QUAT_REFERENCE) >= 0.0 else -q


def observation(history: ProprioHistory, wrist_quat: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """(length*2n + 7,) deployable observation."""
    return np.concatenate([history.vector(), canonical_wrist_quat(wrist_quat), np.asarray(axis, float)])


def observation_size(length: int, n: int) -> int:
    return length * 2 * n + 7
