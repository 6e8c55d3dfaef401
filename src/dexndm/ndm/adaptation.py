"""AdaptationRunner: the adaptation node's logic without ROS (also used by evaluation and replay).

Feed it joint_states samples as they arrive and each policy action as it arrives; it finds the sample
the policy used (the action's stamp names it), asks the adapter for a correction and returns the
targets to send: clamp(a + clip(correction, +-bound), limits). Without the right sample (stale or
missing history) it forwards the base action unchanged and says why.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dexndm.hand.spec import HandSpec
from dexndm.ndm import DEFAULT_BOUND
from dexndm.ndm.adapters import MODES, InversionAdapter, OffAdapter, ResidualAdapter, clamp_sent


@dataclass(frozen=True)
class Adapted:
    sent: np.ndarray  # (n,) canonical targets to send
    correction: np.ndarray  # (n,) applied correction (rad)
    fallback: str = ""  # why no correction was applied ('' when the adapter ran)


def build_adapter(mode: str, spec: HandSpec, residual: str = "", ndm_real: str = "", ndm_sim: str = "",
                  bound: float = DEFAULT_BOUND):
    """Adapter for a mode; raises ValueError naming the missing/bad file."""
    if mode not in MODES:
        raise ValueError(f"mode '{mode}' unknown; valid: {', '.join(MODES)}")
    if mode == "off":
        return OffAdapter(spec)
    if mode == "residual":
        from dexndm.ndm.residual import load_residual

        if not residual:
            raise ValueError("mode 'residual' needs a residual artifact (parameter 'residual')")
        return ResidualAdapter(load_residual(residual), spec)
    from dexndm.ndm.models import load_ndm

    if not ndm_real or not ndm_sim:
        raise ValueError("mode 'inversion' needs both NDMs (parameters 'ndm_real' and 'ndm_sim')")
    return InversionAdapter(load_ndm(ndm_real), load_ndm(ndm_sim), spec, bound=bound)


class AdaptationRunner:
    def __init__(self, spec: HandSpec, adapter, bound: float = DEFAULT_BOUND, buffer: int = 400):
        self.spec = spec
        self.adapter = adapter
        self.bound = float(bound)
        self._samples: OrderedDict[int, np.ndarray] = OrderedDict()
        self._buffer = int(buffer)
        self.n_fallback = 0
        self.abs_correction = np.zeros(spec.n)  # running mean |correction| per joint
        self._n = 0

    def on_joint_state(self, names: Sequence[str], position: Sequence[float], stamp_ns: int) -> None:
        self._samples[int(stamp_ns)] = self.spec.vector_from_named(names, position, "joint_states")
        while len(self._samples) > self._buffer:
            self._samples.popitem(last=False)

    def has_sample(self, stamp_ns: int) -> bool:
        """Whether the joint_states sample with this stamp has arrived (an action may overtake it: the two
        topics are not ordered with respect to each other)."""
        return int(stamp_ns) in self._samples

    def on_action(self, names: Sequence[str], position: Sequence[float], stamp_ns: int, wrist_quat: np.ndarray,
                  axis: np.ndarray) -> Adapted:
        a = self.spec.clamp(self.spec.vector_from_named(names, position, "policy_action"))
        q = self._samples.get(int(stamp_ns))
        if q is None:
            self.n_fallback += 1
            self.adapter.sent(a)
            return Adapted(a, np.zeros(self.spec.n), "no joint_states sample with the action's stamp (history stale)")
        return self.adapt(q, a, wrist_quat, axis)

    def adapt(self, q: np.ndarray, a: np.ndarray, wrist_quat: np.ndarray, axis: np.ndarray) -> Adapted:
        corr = self.adapter.correct(q, a, wrist_quat, axis)
        sent, applied = clamp_sent(self.spec, a, corr, self.bound)
        self.adapter.sent(sent)
        self._n += 1
        self.abs_correction += (np.abs(applied) - self.abs_correction) / min(self._n, 200)
        return Adapted(sent, applied)
