"""Relative action integration: a_t = clip(a_{t-1} + scale * clip(da_t, -1, 1), lower, upper)."""

from __future__ import annotations

import numpy as np


def integrate(a_prev: np.ndarray, delta: np.ndarray, scale: float, lower: np.ndarray,
              upper: np.ndarray) -> np.ndarray:
    """Absolute target from the previous target and a relative action (all in one joint order).

    delta is clipped to [-1, 1] (the policy's action range) and non-finite entries count as 0,
    so one bad output can move a joint at most ``scale`` rad and never past its limits.
    """
    d = np.nan_to_num(np.asarray(delta, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(a_prev + scale * np.clip(d, -1.0, 1.0), lower, upper)


def delta_for(a_prev: np.ndarray, a_target: np.ndarray, scale: float) -> np.ndarray:
    """The relative action that moves a_prev toward a_target as far as one step allows."""
    return np.clip((np.asarray(a_target) - np.asarray(a_prev)) / scale, -1.0, 1.0)
