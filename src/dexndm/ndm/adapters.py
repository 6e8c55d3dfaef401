"""Run-time sim-to-real adapters between the policy and the hand.

Each adapter sees, per policy tick, the joint_states sample the policy used (q, canonical order)
and the policy's base target a_t (canonical), and returns a correction (n,) rad, bounded by
``bound``. The node sends clamp(a_t + correction, limits).

- ``off``: no correction (A/B runs differ in one parameter).
- ``residual``: the trained residual. The joint-wise residual sees each joint's window of the
  measured positions the policy used and the policy's base targets; the observation residual
  pi_res(o_t, a_t) sees o_t rebuilt here from the same samples (pairs (q_k, a_{k-1}) with the
  policy's base targets), so it equals the policy's own observation.
- ``inversion``: per-joint online inversion with two joint-wise NDMs: find a' with
  f_real(h, a') = f_sim(h, a) for every joint (one scalar each: a batched grid over the bounded
  correction, refined by interpolation at the sign change), where h is the joint's recent window of
  measured positions and sent targets.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from dexndm.hand.safety import clamp_sent  # noqa: F401  (re-exported for the adaptation node and eval)
from dexndm.hand.spec import HandSpec
from dexndm.ndm import DEFAULT_BOUND
from dexndm.policy.history import ProprioHistory, observation

MODES = ("off", "residual", "inversion")


class OffAdapter:
    name = "off"

    def __init__(self, spec: HandSpec):
        self.n = spec.n

    def reset(self) -> None:
        pass

    def correct(self, q: np.ndarray, a_base: np.ndarray, wrist_quat: np.ndarray, axis: np.ndarray) -> np.ndarray:
        return np.zeros(self.n)

    def sent(self, a_sent: np.ndarray) -> None:
        pass


class ResidualAdapter:
    """Runs a residual artifact: the paper's observation MLP (``obs``) or the joint-wise residual (``joint``)."""

    name = "residual"

    def __init__(self, artifact, spec: HandSpec):
        from dexndm.ndm.residual import JointResidualNet

        md = artifact.metadata
        if md["hand"] != spec.name:
            raise ValueError(f"{artifact.path}: residual is for hand '{md['hand']}', not '{spec.name}'")
        if list(md["joint_names"]) != list(spec.joint_names):
            raise ValueError(f"{artifact.path}: residual joint_names differ from the hand's canonical order")
        self.net = artifact.net
        self.metadata = md
        self.bound = artifact.bound
        self.joint_wise = isinstance(self.net, JointResidualNet)
        self.order = spec.ordering_from_names(md["obs_joint_order"], "residual_obs")
        self.length = self.net.window if self.joint_wise else artifact.history
        self.n = spec.n
        self.reset()

    def reset(self) -> None:
        self.a_prev: np.ndarray | None = None
        self._fresh = False
        self.history = ProprioHistory(self.length, self.n)
        # joint-wise windows (canonical order): measured positions, and the base targets before a_t
        self.q_win: deque[np.ndarray] = deque(maxlen=self.length)
        self.a_win: deque[np.ndarray] = deque(maxlen=self.length - 1)

    def prime(self, q: np.ndarray, a_prev: np.ndarray) -> None:
        """Start from the policy's own starting window (q, a_prev), canonical order (evaluation)."""
        self.a_prev = self.order.from_canonical(a_prev)
        self.history.reset(self.order.from_canonical(q), self.a_prev)
        self._fill(q, a_prev)
        self._fresh = True

    def _fill(self, q: np.ndarray, a_prev: np.ndarray) -> None:
        self.q_win.extend([np.asarray(q, float).copy()] * self.length)
        self.a_win.extend([np.asarray(a_prev, float).copy()] * (self.length - 1))

    @torch.no_grad()
    def correct(self, q: np.ndarray, a_base: np.ndarray, wrist_quat: np.ndarray, axis: np.ndarray) -> np.ndarray:
        qp = self.order.from_canonical(q)
        if self.a_prev is None:
            self.a_prev = qp.copy()
            self.history.reset(qp, self.a_prev)
            self._fill(q, q)
        elif self._fresh:
            self._fresh = False
        else:
            self.history.push(qp, self.a_prev)
            self.q_win.append(np.asarray(q, float).copy())
        self.a_prev = self.order.from_canonical(a_base)
        if self.joint_wise:
            q_w = torch.tensor(np.array(self.q_win), dtype=torch.float32)[None]
            a_w = torch.tensor(np.array([*self.a_win, a_base]), dtype=torch.float32)[None]
            out = self.net(q_w, a_w)[0].numpy().astype(float)
            self.a_win.append(np.asarray(a_base, float).copy())
        else:
            obs = observation(self.history, wrist_quat, axis)
            out = self.net(torch.tensor(obs, dtype=torch.float32)[None],
                           torch.tensor(a_base, dtype=torch.float32)[None])[0].numpy().astype(float)
        return np.clip(out, -self.bound, self.bound)

    def sent(self, a_sent: np.ndarray) -> None:
        pass


class InversionAdapter:
    name = "inversion"

    def __init__(self, ndm_real, ndm_sim, spec: HandSpec, bound: float = DEFAULT_BOUND, grid: int = 21):
        for m, what in ((ndm_real, "real"), (ndm_sim, "sim")):
            names = m.metadata.get("joint_order")
            if names is not None and list(names) != list(spec.joint_names):
                raise ValueError(f"NDM ({what}) joint order differs from the hand's canonical order")
        if ndm_real.window != ndm_sim.window:
            raise ValueError(f"NDM windows differ: real {ndm_real.window}, sim {ndm_sim.window}")
        self.real, self.sim = ndm_real.eval(), ndm_sim.eval()
        self.W = ndm_real.window
        self.bound = float(bound)
        self.grid = int(grid)
        self.lower, self.upper = spec.lower, spec.upper
        self.reset()

    def reset(self) -> None:
        self.q_hist: deque[np.ndarray] = deque(maxlen=self.W)
        self.a_hist: deque[np.ndarray] = deque(maxlen=self.W - 1)

    def correct(self, q: np.ndarray, a_base: np.ndarray, wrist_quat: np.ndarray, axis: np.ndarray) -> np.ndarray:
        if not self.q_hist:
            for _ in range(self.W):
                self.q_hist.append(q.copy())
            for _ in range(self.W - 1):
                self.a_hist.append(q.copy())
        else:
            self.q_hist.append(q.copy())
        q_win = torch.tensor(np.array(self.q_hist), dtype=torch.float32)[None]
        a_past = torch.tensor(np.array(self.a_hist), dtype=torch.float32)[None]
        a = torch.tensor(a_base, dtype=torch.float32)[None]
        with torch.no_grad():
            y = self.sim(q_win, torch.cat([a_past, a[:, None]], dim=1))
        # Joint-wise model: joint i's prediction depends on joint i's inputs only, so one batch of K
        # candidate offsets (the same offset on every joint in a row) evaluates K candidates for every
        # joint at once. Pick the best per joint, then refine by interpolating between its neighbours.
        lo = np.maximum(a_base - self.bound, self.lower) - a_base
        hi = np.minimum(a_base + self.bound, self.upper) - a_base
        grid = np.linspace(-self.bound, self.bound, self.grid)
        cand = a_base[None] + np.clip(grid[:, None], lo[None], hi[None])  # (K, n)
        with torch.no_grad():
            x = torch.tensor(cand, dtype=torch.float32)[:, None]  # (K, 1, n)
            f = self.real(q_win.expand(len(grid), -1, -1), torch.cat([a_past.expand(len(grid), -1, -1), x], dim=1))
        r = (f - y).numpy()  # (K, n) residual per candidate and joint
        best = np.argmin(np.abs(r), axis=0)
        out = cand[best, np.arange(len(a_base))]
        # Linear interpolation toward the zero crossing with the neighbouring candidate.
        for k_off in (-1, 1):
            nb = np.clip(best + k_off, 0, len(grid) - 1)
            rb, rn = r[best, np.arange(len(a_base))], r[nb, np.arange(len(a_base))]
            cross = (np.sign(rb) != np.sign(rn)) & (nb != best)
            xb, xn = cand[best, np.arange(len(a_base))], cand[nb, np.arange(len(a_base))]
            t = np.where(cross, rb / np.where(cross, rb - rn, 1.0), 0.0)
            out = np.where(cross, xb + t * (xn - xb), out)
        return out - a_base

    def sent(self, a_sent: np.ndarray) -> None:
        self.a_hist.append(np.asarray(a_sent, float).copy())
