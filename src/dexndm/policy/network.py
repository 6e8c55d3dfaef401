"""The generalist's network: the paper's residual MLP (width and depth configurable)."""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """y = ReLU(L1(x) + L3(ReLU(L2(x))))."""

    def __init__(self, width: int):
        super().__init__()
        self.l1 = nn.Linear(width, width)
        self.l2 = nn.Linear(width, width)
        self.l3 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.l1(x) + self.l3(torch.relu(self.l2(x))))


class ResidualMLP(nn.Module):
    """(B, in) normalised observation -> (B, out) relative action in [-1, 1] (tanh)."""

    def __init__(self, n_in: int, n_out: int, width: int = 256, blocks: int = 3):
        super().__init__()
        self.inp = nn.Linear(n_in, width)
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(blocks)])
        self.out = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.out(self.blocks(torch.relu(self.inp(x)))))
