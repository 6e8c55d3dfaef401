"""Residual adaptation policy trained through a frozen NDM (paper section 5).

pi_res(o_t, a_t) -> a_res_t (n,), bounded by ``bound`` (rad) with a tanh. Objective over the policy's
sim trajectories (a trajectory library): for every step t with a full window,

    L = || q_sim[t+1] - f_real({(q_sim[j], a[j] + pi_res(o_j, a_j)) : j = t-W+1 .. t}) ||^2

with f_real frozen, q_sim the simulator's joint positions and o_j the policy's observation at step j.
Minimising it finds target corrections that make the (modelled) real hand reach the state the
simulated hand reached. The correction applies to every target in the window (teacher forcing).

Observation vectors are in the policy's joint order (its artifact's joint_order); a, q and a_res
are in the canonical order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dexndm.artifacts import load_artifact, save_artifact
from dexndm.collect.trajectories import TrajectoryLibrary
from dexndm.hand.spec import HandSpec
from dexndm.policy.history import observation_size

FORMAT = "dexndm-residual/1"
REQUIRED = ("hand", "obs_joint_order", "joint_names", "history", "bound", "normalizer", "arch")


class ResidualLoadError(ValueError):
    pass


class ResidualNet(nn.Module):
    """(B, obs) policy observation + (B, n) base target -> (B, n) correction in [-bound, bound] rad."""

    def __init__(self, obs_size: int, n: int, hidden: tuple[int, ...] = (256, 256), bound: float = 0.1):
        super().__init__()
        self.bound = float(bound)
        self.hidden = tuple(hidden)
        layers: list[nn.Module] = []
        d = obs_size + n
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ELU()]
            d = h
        last = nn.Linear(d, n)
        # Start from "no correction": direct transfer is the baseline the residual must beat.
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.mlp = nn.Sequential(*layers, last)
        self.register_buffer("in_mean", torch.zeros(obs_size + n))
        self.register_buffer("in_std", torch.ones(obs_size + n))

    def forward(self, obs: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        x = (torch.cat([obs, a], dim=-1) - self.in_mean) / self.in_std
        return self.bound * torch.tanh(self.mlp(x))


def library_observations(lib: TrajectoryLibrary, spec: HandSpec, obs_joint_order: list[str],
                         history: int) -> np.ndarray:
    """Rebuild the policy's observations o_t (N, T, obs) from a library: the last ``history`` pairs
    (q_k, a_{k-1}) in the policy's order (the episode start repeats (q_0, a0)), wrist, axis."""
    order = spec.ordering_from_names(obs_joint_order)
    q = order.from_canonical(lib.q)  # (N, T+1, n)
    a = order.from_canonical(lib.actions)  # (N, T, n)
    a0 = order.from_canonical(lib.a0)  # (N, n)
    N, T, n = a.shape
    a_prev = np.concatenate([a0[:, None], a[:, :-1]], axis=1)  # a_{t-1} for t = 0..T-1
    pairs = np.concatenate([q[:, :T], a_prev], axis=2)  # (N, T, 2n): the pair pushed at step t
    pad = np.repeat(np.concatenate([q[:, :1], a0[:, None]], axis=2), history - 1, axis=1)
    padded = np.concatenate([pad, pairs], axis=1)  # (N, T + history - 1, 2n)
    idx = np.arange(T)[:, None] + np.arange(history)[None]  # window for step t
    hist = padded[:, idx].reshape(N, T, history * 2 * n)
    extra = np.concatenate([lib.wrist_quat, lib.axis], axis=1)[:, None].repeat(T, axis=1)
    out = np.concatenate([hist, extra], axis=2)
    assert out.shape[2] == observation_size(history, n)
    return out


@dataclass
class ResidualReport:
    train_loss: float
    val_loss: float
    val_loss_no_correction: float
    mean_abs_correction: float
    per_joint_abs_correction: list[float]
    epochs: int
    seconds: float


def train_residual(lib: TrajectoryLibrary, ndm, spec: HandSpec, obs_joint_order: list[str], history: int,
                   bound: float = 0.1, hidden: tuple[int, ...] = (256, 256), epochs: int = 8, batch: int = 256,
                   lr: float = 1e-3, reg: float = 1e-3, seed: int = 0, log=print) -> tuple[ResidualNet, ResidualReport]:
    """Fit the residual through the frozen ``ndm`` (an NDM module, eval mode). 10 % of the trajectories
    are held out; the best held-out epoch is kept."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    W = int(ndm.window)
    obs = torch.tensor(library_observations(lib, spec, obs_joint_order, history), dtype=torch.float32)
    a = torch.tensor(lib.actions, dtype=torch.float32)  # (N, T, n) canonical
    q = torch.tensor(lib.q_true, dtype=torch.float32)  # (N, T+1, n)
    N, T, n = a.shape
    perm = rng.permutation(N)
    n_val = max(1, N // 10) if N > 1 else 0
    val_eps, tr_eps = perm[:n_val], perm[n_val:] if N > 1 else perm
    ts = np.arange(W - 1, T)

    def samples(eps):
        return np.array([(e, t) for e in eps for t in ts], dtype=np.int64)

    tr, va = samples(tr_eps), samples(val_eps if n_val else tr_eps[:1])
    net = ResidualNet(obs.shape[2], n, hidden, bound)
    flat = torch.cat([obs.reshape(-1, obs.shape[2]), a.reshape(-1, n)], dim=1)
    net.in_mean.copy_(flat.mean(0))
    net.in_std.copy_(flat.std(0) + 1e-3)
    for p in ndm.parameters():
        p.requires_grad_(False)
    ndm.eval()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    offs = torch.arange(-W + 1, 1)

    def loss_on(idx: np.ndarray, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        e = torch.from_numpy(idx[:, 0])
        t = torch.from_numpy(idx[:, 1])
        j = t[:, None] + offs[None]  # (B, W)
        ee = e[:, None].expand_as(j)
        o_w, a_w, q_w = obs[ee, j], a[ee, j], q[ee, j]  # (B, W, .)
        corr = net(o_w.reshape(-1, o_w.shape[-1]), a_w.reshape(-1, n)).reshape(a_w.shape)
        pred = ndm(q_w, a_w + corr)
        target = q[e, t + 1]
        loss = torch.mean((pred - target) ** 2)
        return loss + (reg * torch.mean(corr ** 2) if train else 0.0), corr

    @torch.no_grad()
    def evaluate(idx: np.ndarray, zero: bool = False) -> float:
        tot, cnt = 0.0, 0
        for k in range(0, len(idx), 2048):
            b = idx[k:k + 2048]
            if zero:
                e = torch.from_numpy(b[:, 0])
                t = torch.from_numpy(b[:, 1])
                j = t[:, None] + offs[None]
                ee = e[:, None].expand_as(j)
                pred = ndm(q[ee, j], a[ee, j])
                tot += torch.sum((pred - q[e, t + 1]) ** 2).item()
            else:
                lo, _ = loss_on(b, False)
                tot += lo.item() * len(b) * n
            cnt += len(b) * n
        return tot / cnt

    base = evaluate(va, zero=True)
    best = (evaluate(va), {k: v.clone() for k, v in net.state_dict().items()})
    log(f"[train-residual] held-out one-step MSE through f_real: no correction {base:.3e}")
    t0 = time.monotonic()
    tr_loss = float("nan")
    for ep in range(epochs):
        net.train()
        order = rng.permutation(len(tr))
        losses = []
        for k in range(0, len(order), batch):
            lo, _ = loss_on(tr[order[k:k + batch]], True)
            opt.zero_grad()
            lo.backward()
            opt.step()
            losses.append(lo.item())
        net.eval()
        tr_loss = float(np.mean(losses))
        vl = evaluate(va)
        if vl < best[0]:
            best = (vl, {k: v.clone() for k, v in net.state_dict().items()})
        el = time.monotonic() - t0
        log(f"[train-residual] epoch {ep + 1}/{epochs} train {tr_loss:.3e} val {vl:.3e} (no correction {base:.3e}) "
            f"ETA {el / (ep + 1) * (epochs - ep - 1) / 60:.1f} min")
    net.load_state_dict(best[1])
    net.eval()
    with torch.no_grad():
        sel = va[: min(len(va), 4096)]
        corr = net(obs[sel[:, 0], sel[:, 1]], a[sel[:, 0], sel[:, 1]]).abs()
    report = ResidualReport(tr_loss, float(best[0]), float(base), float(corr.mean()),
                            corr.mean(0).tolist(), epochs, time.monotonic() - t0)
    return net, report


def save_residual(path: str | Path, net: ResidualNet, metadata: dict[str, Any]) -> Path:
    missing = [k for k in REQUIRED if k not in metadata]
    if missing:
        raise ValueError(f"residual metadata misses {missing}")
    return save_artifact(path, FORMAT, metadata, net.state_dict())


@dataclass
class ResidualArtifact:
    net: ResidualNet
    metadata: dict[str, Any]
    path: Path

    @property
    def bound(self) -> float:
        return float(self.metadata["bound"])

    @property
    def history(self) -> int:
        return int(self.metadata["history"])


def load_residual(path: str | Path) -> ResidualArtifact:
    path = Path(path)
    md, state = load_artifact(path, FORMAT, REQUIRED, ResidualLoadError, "residual")
    arch = md["arch"]
    net = ResidualNet(int(arch["obs_size"]), len(md["joint_names"]), tuple(arch["hidden"]), float(md["bound"]))
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ResidualLoadError(f"{path}: weights do not match arch {arch}: {e}") from e
    return ResidualArtifact(net.eval(), md, path)
