"""Policy artifacts: network weights together with everything needed to run them.

File format (torch.save of a dict): ``{"format": "dexndm-policy/1", "metadata": {...},
"state_dict": {...}}``. Metadata keys: hand, joint_order (names, the policy's vector order),
history (W), action_scale, observation (layout description), normalizer (obs mean/std),
arch ({"type": "residual_mlp", "width", "blocks", "n_in", "n_out"}), trained_on (wrists, axes,
objects), command, seed, metrics. Loading code reads these; nothing is re-typed elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dexndm.artifacts import load_artifact, save_artifact
from dexndm.policy.history import observation_size
from dexndm.policy.network import ResidualMLP

FORMAT = "dexndm-policy/1"
REQUIRED = ("hand", "joint_order", "history", "action_scale", "normalizer", "arch")


class PolicyLoadError(ValueError):
    pass


class PolicyArtifact:
    """A loaded policy. ``act(obs)`` -> relative action (n,) in [-1, 1], policy joint order."""

    def __init__(self, metadata: dict[str, Any], net: torch.nn.Module, path: Path | None = None):
        self.metadata = metadata
        self.net = net.eval()
        self.path = path
        norm = metadata["normalizer"]
        self._mean = np.asarray(norm["mean"], dtype=np.float32)
        self._std = np.asarray(norm["std"], dtype=np.float32)
        self.obs_size = observation_size(self.history, len(self.joint_order))
        if self._mean.shape != (self.obs_size,):
            raise PolicyLoadError(f"{path}: normalizer has {self._mean.shape[0]} entries, observation has "
                                  f"{self.obs_size}")

    @property
    def hand(self) -> str:
        return self.metadata["hand"]

    @property
    def joint_order(self) -> list[str]:
        return list(self.metadata["joint_order"])

    @property
    def history(self) -> int:
        return int(self.metadata["history"])

    @property
    def action_scale(self) -> float:
        return float(self.metadata["action_scale"])

    def reset(self) -> None:
        """Stateless: the observation carries the history."""

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        x = (np.asarray(obs, dtype=np.float32) - self._mean) / self._std
        return self.net(torch.from_numpy(x)[None])[0].numpy().astype(float)

    @torch.no_grad()
    def act_batch(self, obs: np.ndarray) -> np.ndarray:
        x = (np.asarray(obs, dtype=np.float32) - self._mean) / self._std
        return self.net(torch.from_numpy(x)).numpy().astype(float)


def build_net(arch: dict) -> torch.nn.Module:
    if arch.get("type") != "residual_mlp":
        raise PolicyLoadError(f"arch.type '{arch.get('type')}' unknown; this version loads 'residual_mlp'")
    return ResidualMLP(int(arch["n_in"]), int(arch["n_out"]), int(arch["width"]), int(arch["blocks"]))


def save_policy(path: str | Path, net: torch.nn.Module, metadata: dict[str, Any]) -> Path:
    missing = [k for k in REQUIRED if k not in metadata]
    if missing:
        raise ValueError(f"policy metadata misses {missing}")
    return save_artifact(path, FORMAT, metadata, net.state_dict())


def load_policy(path: str | Path) -> PolicyArtifact:
    md, state = load_artifact(path, FORMAT, REQUIRED, PolicyLoadError, "policy")
    net = build_net(md["arch"])
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise PolicyLoadError(f"{path}: weights do not match arch {md['arch']}: {e}") from e
    return PolicyArtifact(md, net, Path(path))


GENERALIST = "policy-{hand}-palmup.pt"  # the shipped generalist; other shipped policies cover other wrists


def shipped_policy(hand: str = "leap", wrist: str | None = None, axis: str | None = None) -> str:
    """The shipped ``models/policy-<hand>-*.pt`` for a wrist orientation (name) and axis: the palm-up generalist
    where it was trained for both, else the first other (sorted) that was, else the generalist, else the first
    one ('' when none ships). Without wrist and axis: the generalist. (The shipped residual is trained for the
    generalist, so it is kept wherever it covers the pair.)"""
    from dexndm.paths import share_path
    from dexndm.policy.metrics import axis_label, parse_axis

    found = sorted(share_path("models").glob(f"policy-{hand}-*.pt"))
    if not found:
        return ""
    general = share_path("models") / GENERALIST.format(hand=hand)
    if wrist or axis:
        want_axis = axis_label(parse_axis(axis)) if axis else None
        for p in sorted(found, key=lambda p: p != general):
            try:
                on = load_policy(p).metadata.get("trained_on", {})
            except PolicyLoadError:
                continue
            pairs = on.get("slots") or [(w, a) for w in on.get("wrists", ()) for a in on.get("axes", ())]
            if any((wrist is None or w == wrist) and (want_axis is None or a == want_axis) for w, a in pairs):
                return str(p)
    return str(general if general in found else found[0])
