"""Keep the best held-out epoch of a torch training loop, and the per-epoch progress line with an ETA."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from torch import nn


class BestEpoch:
    """``end_epoch`` after each epoch records the weights when the held-out loss improved and logs progress;
    ``restore`` loads the best weights back. ``initial`` is the held-out loss of the starting weights
    (inf: the first epoch always counts)."""

    def __init__(self, net: nn.Module, epochs: int, initial: float = np.inf, tag: str = "train",
                 log: Callable[[str], None] = print):
        self.net, self.epochs, self.tag, self.log = net, int(epochs), tag, log
        self.loss = float(initial)
        self.state = self._copy() if np.isfinite(self.loss) else None
        self.t0 = time.monotonic()

    def _copy(self) -> dict:
        return {k: v.clone() for k, v in self.net.state_dict().items()}

    def end_epoch(self, ep: int, val_loss: float, detail: str) -> None:
        """``ep`` counts from 0; ``detail`` is the loss part of the progress line."""
        if val_loss < self.loss:
            self.loss, self.state = float(val_loss), self._copy()
        el = time.monotonic() - self.t0
        self.log(f"[{self.tag}] epoch {ep + 1}/{self.epochs} {detail} "
                 f"ETA {el / (ep + 1) * (self.epochs - ep - 1) / 60:.1f} min")

    def restore(self) -> nn.Module:
        if self.state is not None:
            self.net.load_state_dict(self.state)
        return self.net.eval()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.t0
