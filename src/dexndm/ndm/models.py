"""Neural dynamics models (NDM): a window of W (q, a) pairs -> the next joint positions.

All tensors are canonical joint order (HandSpec), radians. With ``t`` the latest measured step:

- ``q_win (B, W, n)``: measured positions q_{t-W+1} .. q_t, oldest first;
- ``a_win (B, W, n)``: targets a_{t-W+1} .. a_t, where a_j was commanded right after q_j was measured
  and held for one 50 ms control period;
- ``forward(q_win, a_win) -> q_next (B, n)``: the predicted q_{t+1}.

Three architectures share this interface:

- :class:`JointWiseNDM` (the DexNDM model): joint i's next position from joint i's own 2W scalars only,
  with separate parameters per joint, all joints computed at once by batched matrix multiplies;
- :class:`FingerWiseNDM`: each finger's joints from that finger's joints' windows (per-finger parameters);
- :class:`WholeHandNDM`: one MLP from all n windows to all n next positions.

Every model encodes a joint's window as ``[q_t, q_j - q_t (j < t), a_j - q_t (all j)]`` (2W scalars, an
invertible linear map of the raw pairs, so the joint-wise model still sees only its own history), standardises
each feature per joint, and predicts the standardised residual ``q_{t+1} - q_t``. The normaliser statistics
(fit from training data) travel in the artifact's metadata; see :func:`save_ndm`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dexndm.artifacts import load_artifact, save_artifact

FORMAT = "dexndm-ndm/1"
REQUIRED = ("hand", "joint_order", "window", "arch", "normalizer")
ENCODING = "per joint: [q_t, q_j - q_t for j = t-W+1..t-1, a_j - q_t for j = t-W+1..t] (rad), standardised"
STD_FLOOR = 1e-4  # rad; a joint that never moved in the data must not blow its inputs up
DEFAULT_HIDDEN = {"joint": (128, 128), "finger": (256, 256), "whole": (512, 512)}
_ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}


class NDMLoadError(ValueError):
    """An NDM artifact cannot be used; the message names the file."""


def _activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"activation '{name}' unknown; choose one of {sorted(_ACTIVATIONS)}") from None


def encode_window(q_win: torch.Tensor, a_win: torch.Tensor) -> torch.Tensor:
    """(B, W, n) positions and targets (rad) -> (B, n, 2W) per-joint features (rad, not standardised)."""
    q_t = q_win[:, -1:, :]
    feats = torch.cat([q_t, q_win[:, :-1, :] - q_t, a_win - q_t], dim=1)  # (B, 2W, n)
    return feats.transpose(1, 2)


class NDM(nn.Module):
    """Base class: window checks, feature encoding, normaliser and the residual output.

    Subclasses implement ``core(x (B, n, 2W) standardised) -> (B, n) standardised delta``.
    """

    arch: str = ""

    def __init__(self, n_joints: int, window: int, hidden: Sequence[int], activation: str = "elu"):
        super().__init__()
        if n_joints < 1 or window < 1:
            raise ValueError(f"n_joints and window must be >= 1, got {n_joints}, {window}")
        self.n_joints = int(n_joints)
        self.window = int(window)
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        _activation(activation)
        self.metadata: dict[str, Any] = {}
        f = 2 * self.window
        # Not in the state_dict: the normaliser is stored (readably) in the artifact's metadata.
        self.register_buffer("in_mean", torch.zeros(self.n_joints, f), persistent=False)
        self.register_buffer("in_std", torch.ones(self.n_joints, f), persistent=False)
        self.register_buffer("out_mean", torch.zeros(self.n_joints), persistent=False)
        self.register_buffer("out_std", torch.ones(self.n_joints), persistent=False)

    # ---- interface -------------------------------------------------------------------------
    def forward(self, q_win: torch.Tensor, a_win: torch.Tensor) -> torch.Tensor:
        """q_win, a_win (B, W, n) rad -> predicted q_{t+1} (B, n) rad."""
        z = self.predict_standardized(q_win, a_win)
        return q_win[:, -1, :] + z * self.out_std + self.out_mean

    def predict_standardized(self, q_win: torch.Tensor, a_win: torch.Tensor) -> torch.Tensor:
        """(B, W, n) windows -> standardised residual (B, n): (q_{t+1} - q_t - out_mean) / out_std."""
        self._check(q_win, a_win)
        x = (encode_window(q_win, a_win) - self.in_mean) / self.in_std
        return self.core(x)

    def standardize_target(self, q_win: torch.Tensor, q_next: torch.Tensor) -> torch.Tensor:
        """True next positions (B, n) rad -> the standardised residual the model is trained to output."""
        return (q_next - q_win[:, -1, :] - self.out_mean) / self.out_std

    def core(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Architecture and hyper-parameters (the artifact's ``arch``); ``build_ndm(**config)`` rebuilds it."""
        return {"type": self.arch, "n_joints": self.n_joints, "window": self.window, "hidden": list(self.hidden),
                "activation": self.activation}

    def _check(self, q_win: torch.Tensor, a_win: torch.Tensor) -> None:
        want = (self.window, self.n_joints)
        if q_win.dim() != 3 or tuple(q_win.shape[1:]) != want or q_win.shape != a_win.shape:
            raise ValueError(f"{type(self).__name__}: expected q_win and a_win of shape (B, {want[0]}, {want[1]}), "
                             f"got {tuple(q_win.shape)} and {tuple(a_win.shape)}")

    # ---- normaliser ------------------------------------------------------------------------
    @torch.no_grad()
    def fit_normalizer(self, q_win: torch.Tensor | np.ndarray, a_win: torch.Tensor | np.ndarray,
                       q_next: torch.Tensor | np.ndarray, chunk: int = 65536) -> None:
        """Per-joint feature and residual mean/std from training windows (N, W, n), (N, W, n), (N, n) rad."""
        q_win, a_win, q_next = (torch.as_tensor(np.asarray(v), dtype=torch.float64) for v in (q_win, a_win, q_next))
        self._check(q_win, a_win)
        n_total = q_win.shape[0]
        if n_total < 2:
            raise ValueError(f"need at least 2 windows to fit the normaliser, got {n_total}")
        s1 = torch.zeros(self.n_joints, 2 * self.window, dtype=torch.float64)
        s2 = torch.zeros_like(s1)
        for k in range(0, n_total, chunk):
            f = encode_window(q_win[k:k + chunk], a_win[k:k + chunk])
            s1 += f.sum(0)
            s2 += (f * f).sum(0)
        mean = s1 / n_total
        std = (s2 / n_total - mean * mean).clamp_min(0).sqrt()
        delta = q_next - q_win[:, -1, :]
        self.set_normalizer({"in_mean": mean, "in_std": std, "out_mean": delta.mean(0), "out_std": delta.std(0)})

    def set_normalizer(self, norm: Mapping[str, Any]) -> None:
        """Set the four statistics from tensors or nested lists; std entries are floored at STD_FLOOR rad."""
        shapes = {"in_mean": self.in_mean.shape, "in_std": self.in_std.shape, "out_mean": self.out_mean.shape,
                  "out_std": self.out_std.shape}
        for key, shape in shapes.items():
            if key not in norm:
                raise ValueError(f"normalizer misses '{key}'")
            v = torch.as_tensor(np.asarray(norm[key], dtype=np.float32))
            if tuple(v.shape) != tuple(shape):
                raise ValueError(f"normalizer '{key}' has shape {tuple(v.shape)}, expected {tuple(shape)}")
            if not torch.all(torch.isfinite(v)):
                raise ValueError(f"normalizer '{key}' has non-finite entries")
            if key.endswith("std"):
                v = v.clamp_min(STD_FLOOR)
            getattr(self, key).copy_(v)

    def normalizer(self) -> dict[str, Any]:
        """The statistics as nested lists (JSON-friendly), plus the encoding description."""
        return {"in_mean": self.in_mean.tolist(), "in_std": self.in_std.tolist(), "out_mean": self.out_mean.tolist(),
                "out_std": self.out_std.tolist(), "encoding": ENCODING,
                "output": "standardised q_{t+1} - q_t, per joint"}


class GroupLinear(nn.Module):
    """G independent affine maps applied at once: x (G, B, in) -> (G, B, out) via one batched matmul."""

    def __init__(self, groups: int, n_in: int, n_out: int):
        super().__init__()
        bound = 1.0 / math.sqrt(n_in)  # the nn.Linear default range, per group
        self.weight = nn.Parameter(torch.empty(groups, n_in, n_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups, 1, n_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.shape[2] == 1:
            # A single output per group: CPU bmm with one output column is slow, a multiply-sum is not.
            return (x * self.weight.transpose(1, 2)).sum(-1, keepdim=True) + self.bias
        return torch.baddbmm(self.bias, x, self.weight)


class GroupMLP(nn.Module):
    """G independent MLPs n_in -> hidden... -> n_out; x (G, B, n_in) -> (G, B, n_out)."""

    def __init__(self, groups: int, n_in: int, hidden: Sequence[int], n_out: int, activation: str):
        super().__init__()
        dims = [n_in, *hidden, n_out]
        layers: list[nn.Module] = []
        for k in range(len(dims) - 1):
            layers.append(GroupLinear(groups, dims[k], dims[k + 1]))
            if k < len(dims) - 2:
                layers.append(_activation(activation))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _mlp(n_in: int, hidden: Sequence[int], n_out: int, activation: str) -> nn.Sequential:
    dims = [n_in, *hidden, n_out]
    layers: list[nn.Module] = []
    for k in range(len(dims) - 1):
        layers.append(nn.Linear(dims[k], dims[k + 1]))
        if k < len(dims) - 2:
            layers.append(_activation(activation))
    return nn.Sequential(*layers)


class JointWiseNDM(NDM):
    """q^i_{t+1} = q^i_t + f_i(joint i's own W (q, a) pairs): 2W inputs -> 1 output, separate weights per joint.

    Parameters of layer k are shaped (n, in_k, out_k); all joints run in one ``baddbmm`` per layer.
    """

    arch = "joint"

    def __init__(self, n_joints: int, window: int = 10, hidden: Sequence[int] = DEFAULT_HIDDEN["joint"],
                 activation: str = "elu"):
        super().__init__(n_joints, window, hidden, activation)
        self.mlp = GroupMLP(self.n_joints, 2 * self.window, self.hidden, 1, activation)

    def core(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, n, 2W) -> (B, n)."""
        return self.mlp(x.transpose(0, 1)).squeeze(-1).transpose(0, 1)


class JointWiseNDMLoop(NDM):
    """Reference joint-wise model: n separate ``nn.Sequential`` MLPs evaluated in a Python loop over joints.

    Numerically the same function as :class:`JointWiseNDM` (see :meth:`from_batched`); used by the training
    benchmark and the equivalence test only.
    """

    arch = "joint_loop"

    def __init__(self, n_joints: int, window: int = 10, hidden: Sequence[int] = DEFAULT_HIDDEN["joint"],
                 activation: str = "elu"):
        super().__init__(n_joints, window, hidden, activation)
        self.mlps = nn.ModuleList(_mlp(2 * self.window, self.hidden, 1, activation) for _ in range(self.n_joints))

    def core(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([mlp(x[:, i, :]) for i, mlp in enumerate(self.mlps)], dim=1)

    @classmethod
    @torch.no_grad()
    def from_batched(cls, model: JointWiseNDM) -> JointWiseNDMLoop:
        """A loop model computing exactly what ``model`` computes (weights and normaliser copied)."""
        ref = cls(model.n_joints, model.window, model.hidden, model.activation)
        ref.set_normalizer(model.normalizer())
        group_layers = [m for m in model.mlp.net if isinstance(m, GroupLinear)]
        for i, mlp in enumerate(ref.mlps):
            lin = [m for m in mlp if isinstance(m, nn.Linear)]
            for g, lyr in zip(group_layers, lin, strict=True):
                lyr.weight.copy_(g.weight[i].T)
                lyr.bias.copy_(g.bias[i, 0])
        return ref


class FingerWiseNDM(NDM):
    """Each finger's next positions from that finger's joints' windows; separate weights per finger, batched.

    ``fingers``: finger name -> canonical joint indices (``HandSpec.fingers``); every joint exactly once.
    Fingers with fewer joints than the largest are padded with zero inputs whose outputs are discarded.
    """

    arch = "finger"

    def __init__(self, n_joints: int, fingers: Mapping[str, Sequence[int]], window: int = 10,
                 hidden: Sequence[int] = DEFAULT_HIDDEN["finger"], activation: str = "elu"):
        super().__init__(n_joints, window, hidden, activation)
        self.fingers = {str(k): tuple(int(i) for i in v) for k, v in fingers.items()}
        flat = sorted(i for v in self.fingers.values() for i in v)
        if flat != list(range(self.n_joints)):
            raise ValueError(f"fingers must cover joints 0..{self.n_joints - 1} exactly once, got {self.fingers}")
        kmax = max(len(v) for v in self.fingers.values())
        self.kmax = kmax
        gather = torch.full((len(self.fingers), kmax), self.n_joints, dtype=torch.long)  # n = the zero pad row
        slot = torch.empty(self.n_joints, dtype=torch.long)
        for f, idx in enumerate(self.fingers.values()):
            for k, i in enumerate(idx):
                gather[f, k] = i
                slot[i] = f * kmax + k
        self.register_buffer("gather", gather, persistent=False)
        self.register_buffer("slot", slot, persistent=False)
        self.mlp = GroupMLP(len(self.fingers), kmax * 2 * self.window, self.hidden, kmax, activation)

    def core(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        xp = torch.cat([x, x.new_zeros(b, 1, x.shape[2])], dim=1)
        g = xp[:, self.gather].reshape(b, len(self.fingers), -1)  # (B, F, kmax*2W)
        y = self.mlp(g.transpose(0, 1))  # (F, B, kmax)
        return y.transpose(0, 1).reshape(b, -1)[:, self.slot]

    def config(self) -> dict[str, Any]:
        return {**super().config(), "fingers": {k: list(v) for k, v in self.fingers.items()}}


class WholeHandNDM(NDM):
    """One MLP: all n joints' windows (2W*n inputs) -> all n next positions."""

    arch = "whole"

    def __init__(self, n_joints: int, window: int = 10, hidden: Sequence[int] = DEFAULT_HIDDEN["whole"],
                 activation: str = "elu"):
        super().__init__(n_joints, window, hidden, activation)
        self.mlp = _mlp(2 * self.window * self.n_joints, self.hidden, self.n_joints, activation)

    def core(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x.reshape(x.shape[0], -1))


ARCHS: dict[str, type[NDM]] = {"joint": JointWiseNDM, "finger": FingerWiseNDM, "whole": WholeHandNDM}


def build_ndm(type: str, n_joints: int, window: int = 10, hidden: Sequence[int] | None = None,
              activation: str = "elu", fingers: Mapping[str, Sequence[int]] | None = None) -> NDM:
    """Construct a model from its ``config()`` (type 'joint' | 'finger' | 'whole'); hidden None: the default."""
    if type not in ARCHS:
        raise ValueError(f"NDM arch '{type}' unknown; choose one of {sorted(ARCHS)}")
    hidden = tuple(hidden) if hidden is not None else DEFAULT_HIDDEN[type]
    if type == "finger":
        if fingers is None:
            raise ValueError("the finger-wise NDM needs 'fingers' (finger name -> joint indices)")
        return FingerWiseNDM(n_joints, fingers, window, hidden, activation)
    return ARCHS[type](n_joints, window, hidden, activation)


# ---- artifacts -------------------------------------------------------------------------------


def save_ndm(path: str | Path, model: NDM, metadata: Mapping[str, Any]) -> Path:
    """Write ``{"format": "dexndm-ndm/1", "metadata", "state_dict"}`` with torch.save (atomically).

    ``metadata`` must give ``hand`` and ``joint_order`` (n names, the model's vector order) and may give
    ``data`` (description), ``command``, ``seed``, ``metrics`` and anything else JSON-like. ``arch``,
    ``window`` and ``normalizer`` are taken from the model.
    """
    md = dict(metadata)
    missing = [k for k in ("hand", "joint_order") if k not in md]
    if missing:
        raise ValueError(f"NDM metadata misses {missing}")
    if len(md["joint_order"]) != model.n_joints:
        raise ValueError(f"joint_order names {len(md['joint_order'])} joints, the model has {model.n_joints}")
    if model.arch not in ARCHS:
        raise ValueError(f"{type(model).__name__} is a reference implementation and is not saved as an artifact")
    md.update(arch=model.config(), window=model.window, normalizer=model.normalizer(), format=FORMAT)
    md["joint_order"] = [str(n) for n in md["joint_order"]]
    return save_artifact(path, FORMAT, md, model.state_dict())


def load_ndm(path: str | Path) -> NDM:
    """Load an NDM artifact; returns the model in eval mode with ``model.metadata`` set."""
    path = Path(path)
    md, state = load_artifact(path, FORMAT, REQUIRED, NDMLoadError, "NDM")
    try:
        model = build_ndm(**md["arch"])
        model.set_normalizer(md["normalizer"])
    except (TypeError, ValueError) as e:
        raise NDMLoadError(f"{path}: cannot build the model from arch {md['arch']}: {e}") from e
    if len(md["joint_order"]) != model.n_joints or int(md["window"]) != model.window:
        raise NDMLoadError(f"{path}: joint_order ({len(md['joint_order'])}) / window ({md['window']}) disagree "
                           f"with arch {md['arch']}")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise NDMLoadError(f"{path}: weights do not match arch {md['arch']}: {e}") from e
    model.metadata = md
    model.source_path = path
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
