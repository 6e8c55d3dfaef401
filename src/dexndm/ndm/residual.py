"""Residual adaptation policy trained through a frozen NDM (paper section 5).

pi_res(o_t, a_t) -> a_res_t (n,), bounded by ``bound`` (rad) with a tanh. Objective over the policy's
sim trajectories (a trajectory library): for every step t with a full window,

    L = || q_sim[t+1] - f_real({(q_sim[j], a[j] + pi_res(o_j, a_j)) : j = t-W+1 .. t}) ||^2

with f_real frozen, q_sim the simulator's joint positions and o_j the policy's observation at step j.
Minimising it finds target corrections that make the (modelled) real hand reach the state the
simulated hand reached. The correction applies to every target in the window (teacher forcing).

Observation vectors are in the policy's joint order (its artifact's joint_order); a, q and a_res
are in the canonical order.

Two residual architectures:

- ``joint`` (default, :class:`JointResidualNet`): joint i's correction from joint i's own window of W
  measured positions and base targets (the NDM's per-joint encoding), separate weights per joint, all
  joints batched. Trained by :func:`train_residual_rollout` on H-step rollouts through the frozen NDM
  (the residual acts at every step on the model's own predictions, and every predicted position is
  compared with the simulator's). On a real LEAP servo one 50 ms target barely moves the joint within
  the next step (d q_{t+1} / d a_t is 0.05-0.12 for the finetuned model), so the one-step objective is
  dominated by model error; a correction pays off over many steps, and the rollout objective sees that.
- ``obs`` (:class:`ResidualNet`, the paper's form): an MLP over the policy observation o_t and a_t,
  trained with the one-step, teacher-forced objective above (:func:`train_residual`). Kept for ablation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dexndm.artifacts import file_digest, load_artifact, save_artifact
from dexndm.best_epoch import BestEpoch
from dexndm.collect.trajectories import TrajectoryLibrary
from dexndm.hand.spec import HandSpec
from dexndm.ndm.models import STD_FLOOR, GroupMLP, encode_window
from dexndm.policy.history import canonical_wrist_quat, observation_size

FORMAT = "dexndm-residual/1"
REQUIRED = ("hand", "obs_joint_order", "joint_names", "history", "bound", "normalizer", "arch")
ARCHS = ("joint", "obs")


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


class JointResidualNet(nn.Module):
    """Joint-wise residual: (B, W, n) measured positions and (B, W, n) base targets (the newest is a_t) ->
    (B, n) correction in [-bound, bound] rad. Joint i sees only its own 2W scalars, encoded as the NDM does
    (:func:`dexndm.ndm.models.encode_window`) and standardised per joint; separate weights per joint."""

    def __init__(self, n: int, window: int = 10, hidden: tuple[int, ...] = (64, 64), bound: float = 0.1):
        super().__init__()
        self.n, self.window, self.bound = int(n), int(window), float(bound)
        self.hidden = tuple(int(h) for h in hidden)
        self.mlp = GroupMLP(self.n, 2 * self.window, self.hidden, 1, "elu")
        last = self.mlp.net[-1]
        nn.init.zeros_(last.weight)  # start from "no correction", as ResidualNet does
        nn.init.zeros_(last.bias)
        self.register_buffer("in_mean", torch.zeros(self.n, 2 * self.window))
        self.register_buffer("in_std", torch.ones(self.n, 2 * self.window))

    @torch.no_grad()
    def fit_normalizer(self, q_win: torch.Tensor, a_win: torch.Tensor) -> None:
        f = encode_window(q_win, a_win)
        self.in_mean.copy_(f.mean(0))
        self.in_std.copy_(f.std(0).clamp_min(STD_FLOOR))

    def forward(self, q_win: torch.Tensor, a_win: torch.Tensor) -> torch.Tensor:
        if q_win.dim() != 3 or tuple(q_win.shape[1:]) != (self.window, self.n) or q_win.shape != a_win.shape:
            raise ValueError(f"JointResidualNet: expected q_win and a_win of shape (B, {self.window}, {self.n}), "
                             f"got {tuple(q_win.shape)} and {tuple(a_win.shape)}")
        x = (encode_window(q_win, a_win) - self.in_mean) / self.in_std  # (B, n, 2W)
        return self.bound * torch.tanh(self.mlp(x.transpose(0, 1)).squeeze(-1).transpose(0, 1))


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
    wrist = np.array([canonical_wrist_quat(w) for w in lib.wrist_quat]).reshape(N, 4)
    extra = np.concatenate([wrist, lib.axis], axis=1)[:, None].repeat(T, axis=1)
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
    objective: str = "one-step"
    horizon: int = 1
    reg: float | None = None  # weight of the mean squared correction in the loss


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
    best = BestEpoch(net, epochs, evaluate(va), "train-residual", log)
    log(f"[train-residual] held-out one-step MSE through f_real: no correction {base:.3e}")
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
        best.end_epoch(ep, vl, f"train {tr_loss:.3e} val {vl:.3e} (no correction {base:.3e})")
    best.restore()
    with torch.no_grad():
        sel = va[: min(len(va), 4096)]
        corr = net(obs[sel[:, 0], sel[:, 1]], a[sel[:, 0], sel[:, 1]]).abs()
    report = ResidualReport(tr_loss, best.loss, float(base), float(corr.mean()), corr.mean(0).tolist(), epochs,
                            best.seconds, reg=float(reg))
    return net, report


def torque_cap(text: str, joint_names) -> np.ndarray:
    """Per-joint servo torque cap (N*m, canonical order) from a command-line value: a number (every joint) or a
    reality profile's name or YAML path (its per-joint caps, scatter included). ValueError saying what is valid."""
    from dexndm.hand.sim.profiles import ProfileError, load_profile

    try:
        cap = np.full(len(joint_names), float(text))
    except ValueError:
        if text in ("", "ideal"):
            raise ValueError(f"'{text}' has no servo cap; give a reality profile (e.g. leap_default) or N*m") from None
        try:
            cap = load_profile(text).per_joint(tuple(joint_names))["torque_limit"]
        except ProfileError as e:
            raise ValueError(str(e)) from None
    if not np.all(np.isfinite(cap)) or np.any(cap <= 0):
        raise ValueError(f"torque cap must be positive N*m per joint, got {cap.tolist()}")
    return cap


def torque_mask(lib: TrajectoryLibrary, cap: np.ndarray) -> np.ndarray:
    """Rollout weights (N, T+1, n) for :func:`train_residual_rollout`: 0 where the simulated joint reached its next
    position under more torque than ``cap`` (N*m, scalar or per joint, canonical order), 1 elsewhere. There the real
    servo, at its current cap, gives the same torque whatever the target, so matching the position only teaches
    the residual to push harder."""
    if lib.torque is None:
        raise ValueError("the trajectory library records no joint torques (written before they were recorded); "
                         "rebuild it with `dexndm collect --build-library`")
    cap = np.broadcast_to(np.asarray(cap, float), (lib.torque.shape[2],))
    if not np.all(np.isfinite(cap)) or np.any(cap <= 0):
        raise ValueError(f"torque cap must be positive N*m per joint, got {cap.tolist()}")
    w = np.ones_like(lib.q_true)
    w[:, 1:] = (lib.torque <= cap[None, None]).astype(float)  # q[t+1] was reached under step t's torque
    return w


def train_residual_rollout(lib: TrajectoryLibrary, ndm, spec: HandSpec, bound: float = 0.1,
                           hidden: tuple[int, ...] = (64, 64), horizon: int = 100, epochs: int = 12,
                           starts: int = 3000, batch: int = 128, lr: float = 1e-3, reg: float = 0.0, clip: float = 1.0,
                           seed: int = 0, log=print, weights: np.ndarray | None = None
                           ) -> tuple[JointResidualNet, ResidualReport]:
    """Fit a :class:`JointResidualNet` through the frozen ``ndm`` on ``horizon``-step rollouts.

    Each rollout starts from a window of the library (simulated positions q_sim, the policy's targets a)
    and runs the modelled real hand forward: at every step the residual sees the modelled positions and the
    base targets, the NDM gets the corrected targets as sent, and its prediction (clamped to the joint
    limits) is compared with q_sim at that step. The loss is the mean squared position error over the
    rollout. 10 % of the trajectories are held out; the best held-out epoch is kept. ``starts`` rollouts
    per epoch, from random (trajectory, step) pairs; Adam with a cosine learning-rate decay to lr/10 and the
    gradient norm clipped at ``clip``.

    ``weights`` (N, T+1, n), optional: per trajectory, step and joint, how much matching q_sim there counts
    (default 1 everywhere); e.g. 0 where the simulated joint used more torque than the real servo can give.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    W = int(ndm.window)
    a = torch.tensor(lib.actions, dtype=torch.float32)  # (N, T, n) canonical, the policy's base targets
    q = torch.tensor(lib.q_true, dtype=torch.float32)  # (N, T+1, n) simulated positions
    N, T, n = a.shape
    wts = torch.ones_like(q) if weights is None else torch.tensor(weights, dtype=torch.float32)
    if wts.shape != q.shape:
        raise ValueError(f"weights shape {tuple(wts.shape)} != the library's positions {tuple(q.shape)}")
    H = int(horizon)
    if H < 1:
        raise ValueError(f"rollout horizon must be >= 1 step, got {H}")
    if T - H < W:
        raise ValueError(f"rollout horizon {H} too long for {T}-step trajectories with a {W}-step window; "
                         f"use at most {T - W}")
    lo, hi = (torch.tensor(v, dtype=torch.float32) for v in (spec.lower, spec.upper))
    perm = rng.permutation(N)
    n_val = max(1, N // 10) if N > 1 else 0
    val_eps, tr_eps = (perm[:n_val], perm[n_val:]) if n_val else (perm, perm)
    offs = torch.arange(-W + 1, 1)
    net = JointResidualNet(n, W, hidden, bound)
    e0 = torch.from_numpy(rng.choice(tr_eps, 8192))
    j0 = torch.from_numpy(rng.integers(W - 1, T, 8192))[:, None] + offs[None]
    net.fit_normalizer(q[e0[:, None].expand_as(j0), j0], a[e0[:, None].expand_as(j0), j0])
    for p in ndm.parameters():
        p.requires_grad_(False)
    ndm.eval()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs), eta_min=0.1 * lr)

    def rollout(es: np.ndarray, ts: np.ndarray, correct: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        e, t0 = torch.from_numpy(es), torch.from_numpy(ts)
        j = t0[:, None] + offs[None]
        ee = e[:, None].expand_as(j)
        q_w, a_w = q[ee, j], a[ee, j]  # modelled positions, base targets
        sent = a_w[:, :-1]  # targets sent before the rollout: the library's own
        err, reg_sum = torch.zeros(()), torch.zeros(())
        for k in range(H):
            t = t0 + k
            c = net(q_w, a_w) if correct else torch.zeros_like(a_w[:, -1])
            s_w = torch.cat([sent, (a_w[:, -1] + c)[:, None]], dim=1)
            q_next = torch.maximum(torch.minimum(ndm(q_w, s_w), hi), lo)
            err = err + torch.mean(wts[e, t + 1] * (q_next - q[e, t + 1]) ** 2)
            reg_sum = reg_sum + torch.mean(c ** 2)
            q_w = torch.cat([q_w[:, 1:], q_next[:, None]], dim=1)
            a_w = torch.cat([a_w[:, 1:], a[e, torch.clamp(t + 1, max=T - 1)][:, None]], dim=1)
            sent = s_w[:, 1:]
        return err / H, reg_sum / H

    v_rng = np.random.default_rng(seed + 1)
    v_es = v_rng.choice(val_eps, min(512, 64 * len(val_eps)))
    v_ts = v_rng.integers(W - 1, T - H + 1, len(v_es))

    @torch.no_grad()
    def evaluate(correct: bool = True) -> float:
        return float(rollout(v_es, v_ts, correct)[0])

    base = evaluate(correct=False)
    best = BestEpoch(net, epochs, evaluate(), "train-residual", log)
    log(f"[train-residual] held-out {H}-step rollout MSE through the frozen NDM: no correction {base:.3e}")
    tr_loss = float("nan")
    for ep in range(epochs):
        es = rng.choice(tr_eps, starts)
        ts = rng.integers(W - 1, T - H + 1, starts)
        losses = []
        for k in range(0, starts, batch):
            err, rg = rollout(es[k:k + batch], ts[k:k + batch])
            loss = err + reg * rg
            opt.zero_grad()
            loss.backward()
            # Backpropagation through a long rollout: clip, or one unlucky batch undoes an epoch.
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            opt.step()
            losses.append(err.item())
        sched.step()
        tr_loss = float(np.mean(losses))
        vl = evaluate()
        best.end_epoch(ep, vl, f"train {tr_loss:.3e} val {vl:.3e} (no correction {base:.3e})")
    best.restore()
    with torch.no_grad():
        e = torch.from_numpy(v_es)
        j = torch.from_numpy(v_ts)[:, None] + offs[None]
        corr = net(q[e[:, None].expand_as(j), j], a[e[:, None].expand_as(j), j]).abs()
    report = ResidualReport(tr_loss, best.loss, float(base), float(corr.mean()), corr.mean(0).tolist(), epochs,
                            best.seconds, objective=f"{H}-step rollout", horizon=H, reg=float(reg))
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
    try:
        if arch.get("type") == "joint_wise":
            net = JointResidualNet(len(md["joint_names"]), int(arch["window"]), tuple(arch["hidden"]),
                                   float(md["bound"]))
        else:
            net = ResidualNet(int(arch["obs_size"]), len(md["joint_names"]), tuple(arch["hidden"]),
                              float(md["bound"]))
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise ResidualLoadError(f"{path}: metadata 'arch' is not a residual architecture ({e!r}): {arch}") from e
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ResidualLoadError(f"{path}: weights do not match arch {arch}: {e}") from e
    return ResidualArtifact(net.eval(), md, path)


def policy_mismatch(md: dict[str, Any], policy_path: str | Path) -> str:
    """'' when the residual (metadata ``md``) was trained on the policy at ``policy_path`` (same file
    digest) or does not record one; otherwise a warning that says both and how to refit.

    A residual corrects one policy's actions on one hand: behind another policy its corrections
    were fitted for different motions and can cost rotation instead of recovering it."""
    want = md.get("policy_sha256")
    if not want or not policy_path or not Path(policy_path).is_file():
        return ""
    have = file_digest(policy_path)
    if have == want:
        return ""
    return (f"residual was trained for policy {md.get('policy', '?')} (sha256 {want}); the policy in use, "
            f"{policy_path}, is sha256 {have}: its corrections may cost rotation. Refit it for this policy "
            "with `dexndm pipeline` or `dexndm train-residual`")
