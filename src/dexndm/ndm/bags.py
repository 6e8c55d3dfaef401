"""Episodes for NDM training from rosbag2 bags (collection bags, or any recorded hand session).

Each ``joint_commands`` message (targets a_k) is paired with the ``joint_states`` sample the command
was based on: the latest sample whose header stamp is at or before the command's header stamp
(collection bags stamp both alike; in the live stack a command's stamp names the sample the policy
used). Consecutive pairs give (q_k, a_k) -> q_{k+1}. Joints are taken by name in HandSpec order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from dexndm.bag.io import BagError, joint_states_arrays, load_metadata
from dexndm.hand.spec import HandSpec
from dexndm.ndm.data import Episode


def is_bag(path: Path) -> bool:
    return path.is_dir() and (path / "metadata.yaml").is_file()


def find_bags(paths: Iterable[str | Path]) -> list[Path]:
    """Bag directories among the given paths (a bag, or a folder of bags, e.g. a collection run)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if is_bag(p):
            out.append(p)
        elif p.is_dir():
            out.extend(sorted(c for c in p.iterdir() if is_bag(c)))
        else:
            raise FileNotFoundError(f"{p}: neither a bag directory nor a folder of bags")
    return out


def episode_from_bag(path: str | Path, spec: HandSpec, states_topic: str = "/joint_states",
                     commands_topic: str = "/joint_commands") -> Episode:
    path = Path(path)
    names = list(spec.joint_names)
    st = joint_states_arrays(path, states_topic, names)
    cmd = joint_states_arrays(path, commands_topic, names)
    if len(cmd.stamp) < 2 or len(st.stamp) < 2:
        raise BagError(path, f"needs >= 2 messages on {states_topic} and {commands_topic}, found "
                             f"{len(st.stamp)} and {len(cmd.stamp)}")
    for what, arr in (("joint_states", st.position), ("joint_commands", cmd.position)):
        bad = [names[j] for j in np.flatnonzero(np.isnan(arr).all(axis=0))]
        if bad:
            raise BagError(path, f"{what} never carries joints {bad}")
    idx = np.searchsorted(st.stamp, cmd.stamp + 1e-9, side="right") - 1
    keep = idx >= 0
    q = st.position[idx[keep]]
    a = cmd.position[keep]
    ok = np.all(np.isfinite(q), axis=1) & np.all(np.isfinite(a), axis=1)
    meta = {"source": str(path)}
    custom = load_metadata(path).get("custom_data") or {}
    if "dexndm" in custom:
        try:
            meta.update(json.loads(custom["dexndm"]))
        except json.JSONDecodeError:
            pass
    meta.pop("noise_mask", None)
    # The sample after the last command closes the final transition.
    last = np.searchsorted(st.stamp, cmd.stamp[keep][-1] + 1e-9, side="right")
    if last < len(st.stamp) and np.all(np.isfinite(st.position[last])):
        q = np.concatenate([q, st.position[last:last + 1]])
        a = np.concatenate([a, a[-1:]])  # unused: the window never reads the final target
        ok = np.concatenate([ok, [True]])
    if not ok.all():
        first_bad = int(np.argmin(ok))
        q, a = q[:first_bad], a[:first_bad]
    return Episode(q, a, tuple(names), meta)


def episodes_from_bags(paths: Sequence[str | Path], spec: HandSpec, log=print) -> list[Episode]:
    bags = find_bags(paths)
    if not bags:
        raise FileNotFoundError(f"no bags found in {[str(p) for p in paths]}")
    eps = []
    for b in bags:
        eps.append(episode_from_bag(b, spec))
    log(f"[ndm] {len(eps)} episode(s), {sum(e.T for e in eps)} samples from {len(bags)} bag(s)")
    return eps
