"""Pure functions that keep commands inside the hand's limits.

Everything a message says passes through :func:`command_from_named` before it reaches a
backend: names are resolved through the HandSpec, non-finite values and malformed messages
are rejected with a reason, and every target is clamped to the joint limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dexndm.hand.spec import HandSpec


class CommandRejected(ValueError):
    """A command could not be applied; the message says which field and why."""


@dataclass(frozen=True)
class Clamped:
    targets: np.ndarray  # (n,) canonical order, what will actually be sent
    n_clamped: int  # how many joints were outside the limits


def clamp_targets(spec: HandSpec, targets: np.ndarray) -> Clamped:
    """Clamp canonical-order targets to the joint limits. Non-finite values are an error."""
    t = np.asarray(targets, dtype=float)
    if t.shape != (spec.n,):
        raise CommandRejected(f"targets: expected shape ({spec.n},), got {t.shape}")
    if not np.all(np.isfinite(t)):
        bad = [spec.joint_names[i] for i in np.flatnonzero(~np.isfinite(t))]
        raise CommandRejected(f"position: non-finite value for {bad}")
    out = np.clip(t, spec.lower, spec.upper)
    return Clamped(out, int(np.count_nonzero(out != t)))


def command_from_named(
    spec: HandSpec,
    names: Sequence[str],
    positions: Sequence[float],
    current: np.ndarray,
) -> Clamped:
    """Apply a by-name position command on top of the current targets.

    names/positions: the message's arrays (a subset of joints is allowed, any order).
    current: (n,) the targets in force now; joints not named keep them.
    Raises CommandRejected (nothing applied) for length mismatch, duplicate or unknown names,
    or non-finite values.
    """
    names = list(names)
    pos = np.asarray(positions, dtype=float).reshape(-1)
    if len(names) == 0:
        raise CommandRejected("name: empty; a command must name the joints it sets")
    if len(names) != pos.size:
        raise CommandRejected(f"position: {pos.size} values for {len(names)} names; they must match one to one")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise CommandRejected(f"name: duplicated joint(s) {dup}")
    try:
        idx = spec.index_of(names)
    except KeyError as e:
        raise CommandRejected(f"name: {e.args[0]}") from None
    if not np.all(np.isfinite(pos)):
        bad = [names[i] for i in np.flatnonzero(~np.isfinite(pos))]
        raise CommandRejected(f"position: non-finite value for {bad}")
    t = np.array(current, dtype=float, copy=True)
    t[idx] = pos
    return clamp_targets(spec, t)


def clamp_sent(spec: HandSpec, a_base: np.ndarray, corr: np.ndarray, bound: float) -> tuple[np.ndarray, np.ndarray]:
    """Bound a correction and keep base + correction inside the joint limits. Returns (sent, applied)."""
    c = np.clip(np.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0), -bound, bound)
    sent = np.clip(a_base + c, spec.lower, spec.upper)
    return sent, sent - a_base
