"""A small real policy artifact with random weights, for tests that need one quickly."""

from __future__ import annotations

from pathlib import Path

import torch

from dexndm.hand.spec import load_hand_spec
from dexndm.policy.exported import save_policy
from dexndm.policy.history import observation_size
from dexndm.policy.network import ResidualMLP


def random_policy(path: Path, hand: str = "leap", width: int = 32, seed: int = 0, initial_pose: str = "grasp",
                  wrists=("palm_up",), axes=("+z",)) -> Path:
    torch.manual_seed(seed)
    spec = load_hand_spec(hand)
    n_in = observation_size(10, spec.n)
    net = ResidualMLP(n_in, spec.n, width, 1)
    md = {
        "hand": hand,
        "joint_order": list(spec.ordering("policy").names),
        "history": 10,
        "action_scale": 1 / 24,
        "normalizer": {"mean": [0.0] * n_in, "std": [1.0] * n_in},
        "arch": {"type": "residual_mlp", "width": width, "blocks": 1, "n_in": n_in, "n_out": spec.n},
        "trained_on": {"wrists": list(wrists), "axes": list(axes), "objects": "regular", "initial_pose": initial_pose},
        "command": "test fixture (random weights)",
        "seed": seed,
    }
    return save_policy(path, net, md)


def random_residual(path: Path, policy_path: Path, bound: float = 0.05, seed: int = 0) -> Path:
    """A residual artifact with random (non-zero) weights for the given policy (its digest recorded)."""
    from dexndm.artifacts import file_digest
    from dexndm.ndm.residual import ResidualNet, save_residual
    from dexndm.policy.exported import load_policy

    torch.manual_seed(seed)
    pol = load_policy(policy_path)
    spec = load_hand_spec(pol.hand)
    net = ResidualNet(pol.obs_size, spec.n, (16,), bound)
    torch.nn.init.normal_(net.mlp[-1].weight, std=0.5)
    md = {"hand": pol.hand, "obs_joint_order": pol.joint_order, "joint_names": list(spec.joint_names),
          "history": pol.history, "bound": bound, "normalizer": {}, "arch": {"obs_size": pol.obs_size, "hidden": [16]},
          "command": "test fixture (random weights)", "policy": str(policy_path),
          "policy_sha256": file_digest(policy_path)}
    return save_residual(path, net, md)
