"""Run-time sim-to-real adapters between the policy and the hand.

Each adapter sees, per policy tick, the joint_states sample the policy used (q, canonical order)
and the policy's base target a_t (canonical), and returns a correction (n,) rad, bounded by
``bound``. The node sends clamp(a_t + correction, limits).

- ``off``: no correction (A/B runs differ in one parameter).
- ``residual``: the trained residual policy pi_res(o_t, a_t); o_t is rebuilt here from the same
  samples the policy used (pairs (q_k, a_{k-1}) with the policy's base targets), so it equals the
  policy's own observation.
- ``inversion``: per-joint online inversion with two joint-wise NDMs: find a' with
  f_real(h, a') = f_sim(h, a) for every joint (one scalar each, vectorised Newton steps), where h is
  the joint's recent window of measured positions and sent targets.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from dexndm.hand.spec import HandSpec
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
    name = "residual"

    def __init__(self, artifact, spec: HandSpec):
        md = artifact.metadata
        if md["hand"] != spec.name:
            raise ValueError(f"{artifact.path}: residual is for hand '{md['hand']}', not '{spec.name}'")
        if list(md["joint_names"]) != list(spec.joint_names):
            raise ValueError(f"{artifact.path}: residual joint_names differ from the hand's canonical order")
        self.net = artifact.net
        self.bound = artifact.bound
        self.order = spec.ordering_from_names(md["obs_joint_order"], "residual_obs")
        self.history = ProprioHistory(artifact.history, spec.n)
        self.a_prev: np.ndarray | None = None
        self._fresh = False

    def reset(self) -> None:
        self.a_prev = None
        self._fresh = False
        self.history = ProprioHistory(self.history.length, self.history.n)

    def prime(self, q: np.ndarray, a_prev: np.ndarray) -> None:
        """Start from the policy's own starting window (q, a_prev), canonical order (evaluation)."""
        self.a_prev = self.order.from_canonical(a_prev)
        self.history.reset(self.order.from_canonical(q), self.a_prev)
        self._fresh = True

    @torch.no_grad()
    def correct(self, q: np.ndarray, a_base: np.ndarray, wrist_quat: np.ndarray, axis: np.ndarray) -> np.ndarray:
        qp = self.order.from_canonical(q)
        if self.a_prev is None:
            self.a_prev = qp.copy()
            self.history.reset(qp, self.a_prev)
        elif self._fresh:
            self._fresh = False
        else:
            self.history.push(qp, self.a_prev)
        self.a_prev = self.order.from_canonical(a_base)
        obs = observation(self.history, wrist_quat, axis)
        out = self.net(torch.tensor(obs, dtype=torch.float32)[None],
                       torch.tensor(a_base, dtype=torch.float32)[None])[0].numpy().astype(float)
        return np.clip(out, -self.bound, self.bound)

    def sent(self, a_sent: np.ndarray) -> None:
        pass


class InversionAdapter:
    name = "inversion"

    def __init__(self, ndm_real, ndm_sim, spec: HandSpec, bound: float = 0.1, iters: int = 5):
        for m, what in ((ndm_real, "real"), (ndm_sim, "sim")):
            names = m.metadata.get("joint_order")
            if names is not None and list(names) != list(spec.joint_names):
                raise ValueError(f"NDM ({what}) joint order differs from the hand's canonical order")
        if ndm_real.window != ndm_sim.window:
            raise ValueError(f"NDM windows differ: real {ndm_real.window}, sim {ndm_sim.window}")
        self.real, self.sim = ndm_real.eval(), ndm_sim.eval()
        self.W = ndm_real.window
        self.bound = float(bound)
        self.iters = int(iters)
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
        lo = torch.tensor(np.maximum(a_base - self.bound, self.lower), dtype=torch.float32)[None]
        hi = torch.tensor(np.minimum(a_base + self.bound, self.upper), dtype=torch.float32)[None]
        x = a.clone()
        for _ in range(self.iters):
            x = x.detach().requires_grad_(True)
            f = self.real(q_win, torch.cat([a_past, x[:, None]], dim=1))
            r = f - y
            # Joint-wise model: d f_i / d x_j = 0 for i != j, so the gradient of sum(f) is the diagonal.
            (g,) = torch.autograd.grad(f.sum(), x)
            g = torch.where(g.abs() < 1e-3, torch.full_like(g, 1e-3), g)
            x = torch.minimum(torch.maximum(x - r / g, lo), hi)
        return (x.detach()[0].numpy().astype(float) - a_base)

    def sent(self, a_sent: np.ndarray) -> None:
        self.a_hist.append(np.asarray(a_sent, float).copy())


def clamp_sent(spec: HandSpec, a_base: np.ndarray, corr: np.ndarray, bound: float) -> tuple[np.ndarray, np.ndarray]:
    """Bound the correction and keep the sum inside the joint limits. Returns (sent, applied correction)."""
    c = np.clip(np.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0), -bound, bound)
    sent = np.clip(a_base + c, spec.lower, spec.upper)
    return sent, sent - a_base
