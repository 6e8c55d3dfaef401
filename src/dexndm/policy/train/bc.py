"""Behaviour cloning of gait specialists into one proprioceptive generalist.

Data: specialists rolled out in the randomised environment. Half of the episodes execute noisy
actions (DART-style) while the label stays the specialist's clean action from the state actually
reached, so the generalist learns to return to the gait. Only episodes that keep the object for
the whole episode are kept (as in the paper). Labels are relative actions da in [-1, 1].
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from dexndm.best_epoch import BestEpoch
from dexndm.policy.env import EnvConfig, RotationEnv
from dexndm.policy.network import ResidualMLP
from dexndm.policy.train.gait import Gait, GaitFamily, GaitPolicy


@dataclass
class Dataset:
    obs: np.ndarray  # (N, obs_size)
    act: np.ndarray  # (N, n) relative action labels
    episodes: int
    kept: int
    rot_mean: float


class PolicyTeacher:
    """A trained policy (an earlier generalist) as the teacher of the (wrist, axis) slots it was trained on:
    the label is its own action at the state actually reached, so its closed-loop corrections are learned too."""

    def __init__(self, policy, env: RotationEnv):
        self.policy = policy
        want = {"joint_order": list(env.order.names), "history": env.cfg.history,
                "action_scale": float(env.cfg.action_scale)}
        have = {"joint_order": policy.joint_order, "history": policy.history, "action_scale": policy.action_scale}
        for k, v in want.items():
            if (abs(have[k] - v) > 1e-9) if k == "action_scale" else have[k] != v:
                raise ValueError(f"teacher policy {policy.path}: its {k} {have[k]} differs from the environment's "
                                 f"{v}; a teacher must observe and act like the generalist it teaches")

    def reset(self) -> None:
        self.policy.reset()

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.clip(self.policy.act(obs), -1.0, 1.0)


def collect(cfg: EnvConfig, specialists: dict[tuple[str, str, str], object], episodes: int, seed: int,
            noise: float = 0.3, log=print) -> Dataset:
    """Roll out every specialist (keyed by wrist, axis, object group; a Gait, a GaitFamily or a loaded policy
    artifact, see PolicyTeacher) ``episodes`` times on its own objects; keep the successful episodes."""
    from dataclasses import replace

    from dexndm.policy.metrics import parse_axis

    envs = {}
    rng = np.random.default_rng(seed)
    obs_all, act_all, rots = [], [], []
    total = len(specialists) * episodes
    done_eps = 0
    t0 = time.monotonic()
    for (wrist, axis, group), gait in specialists.items():
        if group not in envs:
            envs[group] = RotationEnv(replace(cfg, objects=group), seed=seed + len(envs))
        env = envs[group]
        teacher = not isinstance(gait, (Gait, GaitFamily))
        pol = PolicyTeacher(gait, env) if teacher else GaitPolicy(gait, env)
        for _ in range(episodes):
            o = env.reset(wrist=wrist, axis=parse_axis(axis))
            pol.reset()
            noisy = rng.random() < 0.5
            ep_obs, ep_act = [], []
            done = False
            while not done:
                label = pol.act(o) if teacher else pol.act()
                ep_obs.append(o)
                ep_act.append(label)
                a = label + (rng.normal(0, noise, label.shape) if noisy else 0.0)
                o, _, done, info = env.step(np.clip(a, -1, 1))
            done_eps += 1
            if not (info.fell or info.unstable):  # an unstable episode ended where MuJoCo reset it
                obs_all.append(np.array(ep_obs))
                act_all.append(np.array(ep_act))
                rots.append(info.rot)
            if done_eps % 20 == 0 or done_eps == total:
                el = time.monotonic() - t0
                log(f"[bc collect] {done_eps}/{total} episodes, kept {len(rots)}, "
                    f"ETA {el / done_eps * (total - done_eps) / 60:.1f} min")
    if not obs_all:
        raise RuntimeError("no successful specialist episode to learn from")
    return Dataset(np.concatenate(obs_all), np.concatenate(act_all), total, len(rots), float(np.mean(rots)))


def train(data: Dataset, width: int, blocks: int, epochs: int, lr: float = 1e-3, batch: int = 512, seed: int = 0,
          log=print) -> tuple[torch.nn.Module, dict, dict]:
    """Fit the residual MLP. Returns (net, normalizer, curves). 10 % of samples held out."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = len(data.obs)
    idx = rng.permutation(n)
    n_val = max(1, n // 10)
    val, tr = idx[:n_val], idx[n_val:]
    mean = data.obs[tr].mean(0)
    std = data.obs[tr].std(0) + 1e-3
    x = torch.tensor((data.obs - mean) / std, dtype=torch.float32)
    y = torch.tensor(data.act, dtype=torch.float32)
    net = ResidualMLP(x.shape[1], y.shape[1], width, blocks)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    curves = {"epoch": [], "train": [], "val": []}
    best = BestEpoch(net, epochs, tag="bc train", log=log)
    for ep in range(epochs):
        net.train()
        perm = torch.from_numpy(rng.permutation(tr))
        losses = []
        for k in range(0, len(perm), batch):
            b = perm[k:k + batch]
            loss = torch.mean((net(x[b]) - y[b]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        sched.step()
        net.eval()
        with torch.no_grad():
            vl = torch.mean((net(x[val]) - y[val]) ** 2).item()
        curves["epoch"].append(ep)
        curves["train"].append(float(np.mean(losses)))
        curves["val"].append(vl)
        best.end_epoch(ep, vl, f"train {np.mean(losses):.4f} val {vl:.4f}")
    return best.restore(), {"mean": mean.tolist(), "std": std.tolist()}, curves
