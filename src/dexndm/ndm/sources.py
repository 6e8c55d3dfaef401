"""Episodes from any data source the NDM tools accept: rosbag2 bags (a bag or a folder of bags, e.g.
a collection run), trajectory libraries (policy rollouts in the simulator: q_true and the actions),
and ``.npz`` episode files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dexndm.hand.spec import HandSpec
from dexndm.ndm.data import Episode, load_episodes


def library_episodes(lib, spec: HandSpec) -> list[Episode]:
    """A trajectory library as episodes: q_true[0..T-1] with the actions sent after each, plus the last
    position (its action is unused by any window)."""
    if list(lib.joint_names) != list(spec.joint_names):
        raise ValueError(f"library joints {lib.joint_names} differ from hand '{spec.name}'")
    eps = []
    for i in range(len(lib)):
        q = lib.q_true[i]
        a = np.concatenate([lib.actions[i], lib.actions[i][-1:]])
        eps.append(Episode(q, a, tuple(spec.joint_names), {"source": "library", "index": i, **lib.meta[i]}))
    return eps


def _is_library(path: Path) -> bool:
    if path.suffix != ".npz" or not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            return "header" in z.files and json.loads(str(z["header"])).get("format", "").startswith(
                "dexndm-trajectories")
    except Exception:  # noqa: BLE001 - not ours: let the episode loader report it
        return False


def load_sources(paths: Sequence[str | Path], spec: HandSpec, log=print) -> list[Episode]:
    from dexndm.collect.trajectories import TrajectoryLibrary
    from dexndm.ndm.bags import episodes_from_bags, is_bag

    eps: list[Episode] = []
    for p in map(Path, paths):
        if is_bag(p) or (p.is_dir() and any(is_bag(c) for c in p.iterdir())):
            eps += episodes_from_bags([p], spec, log=log)
        elif _is_library(p):
            eps += library_episodes(TrajectoryLibrary.load(p), spec)
        elif p.is_dir():
            for f in sorted(p.glob("*.npz")):
                eps += [e.reorder(spec.joint_names) for e in load_episodes(f)]
        elif p.is_file():
            eps += [e.reorder(spec.joint_names) for e in load_episodes(p)]
        else:
            raise FileNotFoundError(f"{p}: no such bag, library or episode file")
    if not eps:
        raise FileNotFoundError(f"no episodes in {[str(p) for p in paths]}")
    return eps
