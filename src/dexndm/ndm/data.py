"""Episodes and windowed datasets for the neural dynamics model; a small simulated data source.

An :class:`Episode` is what the hand did, as arrays (no ROS): ``q[t]`` is the measured joint position at
control step t and ``a[t]`` the target commanded right after ``q[t]`` was measured, held until ``q[t+1]`` is
measured one control period (50 ms) later. Both are (T, n), radians, in the order ``joint_names``.

:func:`windows` cuts episodes into training samples ``(q_win (N, W, n), a_win (N, W, n), q_next (N, n))``;
:func:`split_episodes` splits 9:1 by episode, so no episode is on both sides; :func:`load_windowed` does both
for a list of source files and caches the result in an ``.npz`` keyed by the files' names, sizes and mtimes.
Episode files (``.npz``, format ``dexndm-episodes/1``) are written by :func:`save_episodes`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

EPISODES_FORMAT = "dexndm-episodes/1"
WINDOWS_FORMAT = "dexndm-ndm-windows/1"
ACTION_SCALE = 1.0 / 24.0  # rad per control step: the policy's bound on target change


class EpisodeFileError(ValueError):
    """An episode or dataset file cannot be used; the message names the file."""


@dataclass(frozen=True)
class Episode:
    """q, a: (T, n) float, rad; a[t] is commanded right after q[t] is measured. meta: JSON-like provenance."""

    q: np.ndarray
    a: np.ndarray
    joint_names: tuple[str, ...]
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        q = np.asarray(self.q, dtype=np.float64)
        a = np.asarray(self.a, dtype=np.float64)
        names = tuple(str(n) for n in self.joint_names)
        if q.ndim != 2 or q.shape != a.shape or q.shape[1] != len(names):
            raise ValueError(f"Episode: q {q.shape} and a {a.shape} must both be (T, {len(names)}) for joints {names}")
        if len(set(names)) != len(names):
            raise ValueError(f"Episode: duplicated joint names in {names}")
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(a))):
            raise ValueError("Episode: q and a must be finite")
        object.__setattr__(self, "q", q)
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "joint_names", names)
        object.__setattr__(self, "meta", dict(self.meta))

    @property
    def T(self) -> int:
        return self.q.shape[0]

    @property
    def n(self) -> int:
        return self.q.shape[1]

    def reorder(self, joint_names: Sequence[str]) -> Episode:
        """The same episode with columns in ``joint_names`` order (a permutation of this one's)."""
        names = [str(n) for n in joint_names]
        if sorted(names) != sorted(self.joint_names):
            raise ValueError(f"cannot reorder joints {list(self.joint_names)} to {names}: not a permutation")
        idx = [self.joint_names.index(n) for n in names]
        return Episode(self.q[:, idx], self.a[:, idx], tuple(names), self.meta)


@dataclass
class WindowDataset:
    """Windowed samples. q_win, a_win (N, W, n) and q_next (N, n) float32 rad; episode (N,) int: which source
    episode (index into ``episode_meta``) each window came from, windows of one episode in time order."""

    q_win: np.ndarray
    a_win: np.ndarray
    q_next: np.ndarray
    episode: np.ndarray
    joint_names: tuple[str, ...]
    episode_meta: list[dict]

    @property
    def window(self) -> int:
        return self.q_win.shape[1]

    @property
    def n(self) -> int:
        return self.q_win.shape[2]

    def __len__(self) -> int:
        return self.q_win.shape[0]

    @property
    def hand(self) -> str | None:
        """The ``hand`` all episodes' meta agree on, or None."""
        hands = {m.get("hand") for m in self.episode_meta}
        return hands.pop() if len(hands) == 1 else None

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for artifacts and model cards."""
        keys = ("source", "profile", "object", "wrist", "action_source", "file")
        summary: dict[str, list] = {}
        for m in self.episode_meta:
            for k in keys:
                if k in m and m[k] not in summary.setdefault(k, []):
                    summary[k].append(m[k])
        return {"windows": len(self), "episodes": len(self.episode_meta), "window": self.window,
                "joint_names": list(self.joint_names), **{k: v[:20] for k, v in summary.items()}}


def windows(episodes: Sequence[Episode], W: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Episodes -> (q_win (N, W, n), a_win (N, W, n), q_next (N, n)) float32, rad.

    Sample t of an episode (t = W-1 .. T-2) is q[t-W+1..t], a[t-W+1..t] -> q[t+1], so an episode of T steps gives
    T - W windows (none if T <= W). All episodes must share one joint order.
    """
    ds = make_dataset(episodes, W)
    return ds.q_win, ds.a_win, ds.q_next


def make_dataset(episodes: Sequence[Episode], W: int, joint_names: Sequence[str] | None = None) -> WindowDataset:
    """Episodes -> :class:`WindowDataset`; ``joint_names`` (default: the first episode's) sets the column order."""
    if W < 1:
        raise ValueError(f"window W must be >= 1, got {W}")
    if not episodes and joint_names is None:
        raise ValueError("no episodes to window")
    names = tuple(joint_names) if joint_names is not None else episodes[0].joint_names
    n = len(names)
    qs, as_, qn, ep = [], [], [], []
    for k, e in enumerate(episodes):
        if e.joint_names != names:
            e = e.reorder(names)
        if e.T <= W:
            continue
        qv = np.lib.stride_tricks.sliding_window_view(e.q[:-1], W, axis=0)  # (T-W, n, W)
        av = np.lib.stride_tricks.sliding_window_view(e.a[:-1], W, axis=0)
        qs.append(qv.transpose(0, 2, 1).astype(np.float32))
        as_.append(av.transpose(0, 2, 1).astype(np.float32))
        qn.append(e.q[W:].astype(np.float32))
        ep.append(np.full(e.T - W, k, dtype=np.int64))
    if qs:
        out = (np.concatenate(qs), np.concatenate(as_), np.concatenate(qn), np.concatenate(ep))
    else:
        out = (np.zeros((0, W, n), np.float32), np.zeros((0, W, n), np.float32), np.zeros((0, n), np.float32),
               np.zeros(0, np.int64))
    return WindowDataset(*out, joint_names=names, episode_meta=[dict(e.meta) for e in episodes])


def split_episodes(episodes: Sequence[Episode], val_fraction: float = 0.1,
                   seed: int = 0) -> tuple[list[Episode], list[Episode]]:
    """Seeded split BY EPISODE: (train, val). At least one episode on each side when there are two or more."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n = len(episodes)
    if n < 2:
        raise ValueError(f"need at least 2 episodes to split into train and held-out sets, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, int(round(n * val_fraction))))
    val_idx = set(perm[:n_val].tolist())
    return ([e for k, e in enumerate(episodes) if k not in val_idx],
            [e for k, e in enumerate(episodes) if k in val_idx])


# ---- episode files -----------------------------------------------------------------------------


def save_episodes(path: str | Path, episodes: Sequence[Episode]) -> Path:
    """Write episodes (one joint order) to an ``.npz``: q, a concatenated (M, n), lengths (E,), meta as JSON."""
    if not episodes:
        raise ValueError("no episodes to save")
    names = episodes[0].joint_names
    eps = [e if e.joint_names == names else e.reorder(names) for e in episodes]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(
        tmp, format=np.array(EPISODES_FORMAT), joint_names=np.array(names),
        q=np.concatenate([e.q for e in eps]), a=np.concatenate([e.a for e in eps]),
        lengths=np.array([e.T for e in eps], dtype=np.int64), meta=np.array(json.dumps([e.meta for e in eps])))
    tmp.replace(path)
    return path


def load_episodes(path: str | Path) -> list[Episode]:
    """Read an episode file written by :func:`save_episodes`; errors name the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise EpisodeFileError(f"episode file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            blob = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise EpisodeFileError(f"{path}: not a readable .npz episode file ({e.__class__.__name__}: {e})") from e
    fmt = str(blob["format"]) if "format" in blob else None
    if fmt != EPISODES_FORMAT:
        raise EpisodeFileError(f"{path}: format is {fmt!r}, expected {EPISODES_FORMAT!r} "
                               "(write episode files with dexndm.ndm.data.save_episodes)")
    missing = [k for k in ("joint_names", "q", "a", "lengths", "meta") if k not in blob]
    if missing:
        raise EpisodeFileError(f"{path}: missing arrays {missing}")
    q, a, lengths = blob["q"], blob["a"], blob["lengths"].astype(np.int64)
    names = tuple(str(n) for n in blob["joint_names"])
    if q.shape != a.shape or q.ndim != 2 or q.shape[1] != len(names) or lengths.sum() != q.shape[0] or \
            np.any(lengths < 0):
        raise EpisodeFileError(f"{path}: inconsistent shapes: q {q.shape}, a {a.shape}, {len(names)} joint names, "
                               f"lengths summing to {int(lengths.sum())}")
    try:
        metas = json.loads(str(blob["meta"]))
    except json.JSONDecodeError as e:
        raise EpisodeFileError(f"{path}: episode metadata is not valid JSON: {e}") from e
    if not isinstance(metas, list) or len(metas) != len(lengths):
        raise EpisodeFileError(f"{path}: metadata lists {len(metas) if isinstance(metas, list) else '?'} episodes, "
                               f"lengths list {len(lengths)}")
    out, start = [], 0
    for k, (t, m) in enumerate(zip(lengths, metas, strict=True)):
        try:
            out.append(Episode(q[start:start + t], a[start:start + t], names, {**m, "file": path.name}))
        except ValueError as e:
            raise EpisodeFileError(f"{path}: episode {k}: {e}") from e
        start += t
    return out


def find_sources(paths: Iterable[str | Path], suffixes: Sequence[str] = (".npz",)) -> list[Path]:
    """Expand files and directories (their files with ``suffixes``, sorted) into a list of source files."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(x for x in p.iterdir() if x.is_file() and x.suffix in suffixes)
            if not found:
                raise EpisodeFileError(f"{p}: directory holds no {'/'.join(suffixes)} episode files")
            out += found
        elif p.is_file():
            if p.suffix not in suffixes:
                raise EpisodeFileError(f"{p}: unsupported data source; expected {'/'.join(suffixes)} episode files "
                                       "or a directory of them")
            out.append(p)
        else:
            raise EpisodeFileError(f"data source {p} does not exist")
    return out


def _fingerprint(paths: Sequence[Path]) -> list[tuple[str, int, int]]:
    """(name, size, mtime_ns) of every source file (a directory: of every file below it)."""
    rows = []
    for p in paths:
        files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
        for f in files:
            st = f.stat()
            rows.append((str(f.resolve()), st.st_size, st.st_mtime_ns))
    return rows


def load_windowed(sources: Sequence[str | Path], W: int, cache_dir: str | Path | None = None,
                  loader: Callable[[Path], list[Episode]] = load_episodes, val_fraction: float = 0.1, seed: int = 0,
                  joint_names: Sequence[str] | None = None,
                  log: Callable[[str], None] = print) -> tuple[WindowDataset, WindowDataset]:
    """Source files -> (train, val) windowed datasets, split 9:1 by episode (seeded).

    With ``cache_dir`` the result is cached in ``cache_dir/ndm-windows-<key>.npz``; the key covers the sources'
    names, sizes and mtimes, W, the split and the joint order, so changing any of them rebuilds the cache.
    """
    srcs = [Path(s) for s in sources]
    if not srcs:
        raise EpisodeFileError("no data sources given")
    cache = None
    if cache_dir is not None:
        key = json.dumps({"fmt": WINDOWS_FORMAT, "files": _fingerprint(srcs), "W": W, "val": val_fraction,
                          "seed": seed, "joints": list(joint_names) if joint_names else None, "loader":
                          getattr(loader, "__qualname__", str(loader))})
        cache = Path(cache_dir) / f"ndm-windows-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"
        if cache.is_file():
            try:
                train, val = _read_cache(cache)
                log(f"[ndm data] cached windows {cache} ({len(train)} train / {len(val)} held-out)")
                return train, val
            except EpisodeFileError as e:
                log(f"[ndm data] ignoring unreadable cache: {e}")
    t0 = time.monotonic()
    episodes: list[Episode] = []
    for s in srcs:
        episodes += loader(s)
    names = tuple(joint_names) if joint_names else episodes[0].joint_names
    tr_eps, val_eps = split_episodes(episodes, val_fraction, seed)
    train, val = make_dataset(tr_eps, W, names), make_dataset(val_eps, W, names)
    log(f"[ndm data] {len(episodes)} episodes from {len(srcs)} file(s) -> {len(train)} train / {len(val)} held-out "
        f"windows in {time.monotonic() - t0:.1f} s")
    if cache is not None:
        _write_cache(cache, train, val)
    return train, val


def _write_cache(path: Path, train: WindowDataset, val: WindowDataset) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {"format": np.array(WINDOWS_FORMAT), "joint_names": np.array(train.joint_names)}
    for tag, ds in (("train", train), ("val", val)):
        for k in ("q_win", "a_win", "q_next", "episode"):
            arrays[f"{tag}_{k}"] = getattr(ds, k)
        arrays[f"{tag}_meta"] = np.array(json.dumps(ds.episode_meta))
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _read_cache(path: Path) -> tuple[WindowDataset, WindowDataset]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != WINDOWS_FORMAT:
                raise EpisodeFileError(f"{path}: format {str(z['format'])!r}, expected {WINDOWS_FORMAT!r}")
            names = tuple(str(n) for n in z["joint_names"])
            out = []
            for tag in ("train", "val"):
                out.append(WindowDataset(z[f"{tag}_q_win"], z[f"{tag}_a_win"], z[f"{tag}_q_next"],
                                         z[f"{tag}_episode"], names, json.loads(str(z[f"{tag}_meta"]))))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise EpisodeFileError(f"{path}: unreadable window cache ({e.__class__.__name__}: {e})") from e
    return out[0], out[1]


# ---- simulated episodes ------------------------------------------------------------------------


def random_targets(rng: np.random.Generator, center: np.ndarray, lower: np.ndarray, upper: np.ndarray, T: int,
                   kind: str = "sines", amplitude: float = 0.25, dt: float = 0.05) -> np.ndarray:
    """A smooth random target trajectory (T, n) around ``center`` (rad), inside [lower, upper] and moving at
    most ACTION_SCALE rad per step.

    kind 'sines': per joint a sum of 3 sinusoids (0.1-1.5 Hz, random phase); 'noise': low-pass filtered
    Gaussian noise (a random walk pulled back to the centre); 'hold': piecewise-constant set points (0.5-2 s).
    ``amplitude`` (rad) is the typical excursion from the centre.
    """
    n = center.shape[0]
    t = np.arange(T)[:, None] * dt
    if kind == "sines":
        f = rng.uniform(0.1, 1.5, size=(3, n))
        ph = rng.uniform(0, 2 * np.pi, size=(3, n))
        w = rng.dirichlet(np.ones(3), size=n).T  # component weights per joint, sum 1
        raw = sum(w[k] * np.sin(2 * np.pi * f[k] * t + ph[k]) for k in range(3))
        desired = center + amplitude * 1.5 * raw
    elif kind == "noise":
        alpha = rng.uniform(0.05, 0.3, size=n)  # low-pass coefficient per joint
        x, y = np.zeros(n), np.zeros((T, n))
        for k in range(T):
            x = (1 - alpha) * x + alpha * rng.normal(0.0, amplitude * 3.0, size=n)
            y[k] = x
        desired = center + y
    elif kind == "hold":
        desired = np.empty((T, n))
        k = 0
        while k < T:
            span = int(rng.integers(10, 41))
            desired[k:k + span] = center + rng.uniform(-amplitude, amplitude, size=n) * 1.5
            k += span
    else:
        raise ValueError(f"target kind '{kind}' unknown; choose sines, noise or hold")
    desired = np.clip(desired, lower, upper)
    out = np.empty_like(desired)
    prev = np.clip(center, lower, upper)
    for k in range(T):
        prev = np.clip(prev + np.clip(desired[k] - prev, -ACTION_SCALE, ACTION_SCALE), lower, upper)
        out[k] = prev
    return out


def simulate_episodes(spec_name: str = "leap", profile: Any = "ideal", n_episodes: int = 8, T: int = 200,
                      seed: int = 0, action_source: str | Callable[..., np.ndarray] = "mixed",
                      obj: str | None = None, wrist: str = "palm_up", center_pose: str = "grasp",
                      amplitude: float = 0.25, log: Callable[[str], None] | None = None) -> list[Episode]:
    """Roll the MuJoCo hand under smooth random targets and record (q, a) at 20 Hz; canonical order, rad.

    profile: 'ideal', a reality profile name (``leap_default``) or a loaded profile. action_source: 'sines',
    'noise', 'hold', 'mixed' (one of the three per episode) or a callable ``(rng, center, lower, upper, T) ->
    (T, n) targets`` (clamped to the limits before use). obj: optional object name on the palm.
    Each episode starts from the centre pose plus a small random offset, with the targets equal to it.
    """
    from dexndm.hand.sim.mujoco_hand import MujocoHand
    from dexndm.hand.sim.objects import get_object
    from dexndm.hand.sim.profiles import load_profile
    from dexndm.hand.sim.scene import SceneConfig
    from dexndm.hand.spec import load_hand_spec

    spec = load_hand_spec(spec_name)
    prof = load_profile(profile) if isinstance(profile, (str, type(None))) else profile
    rng = np.random.default_rng(seed)
    scene = SceneConfig(wrist=wrist, object=get_object(obj) if obj else None)
    hand = MujocoHand(spec, scene, profile=prof, initial_pose=center_pose, seed=seed)
    hand.connect()
    lower, upper = spec.lower, spec.upper
    center = spec.pose(center_pose)
    kinds = ("sines", "noise", "hold")
    episodes = []
    t0 = time.monotonic()
    for k in range(n_episodes):
        q0 = spec.clamp(center + rng.uniform(-0.05, 0.05, size=spec.n))
        hand.reset(q0)
        hand.set_torque(True)
        if callable(action_source):
            kind = getattr(action_source, "__name__", "callable")
            targets = spec.clamp(np.asarray(action_source(rng, q0, lower, upper, T), dtype=float))
        else:
            kind = kinds[int(rng.integers(3))] if action_source == "mixed" else action_source
            targets = random_targets(rng, q0, lower, upper, T, kind, amplitude, hand.control_dt)
        q = np.empty((T, spec.n))
        state = hand.read_state()
        for t in range(T):
            q[t] = state.position
            state = hand.step_control(targets[t])
        meta = {"source": "sim", "hand": spec.name, "profile": prof.name, "object": obj or "none", "wrist": wrist,
                "action_source": kind, "seed": seed, "episode": k, "control_dt": hand.control_dt}
        episodes.append(Episode(q, targets, spec.joint_names, meta))
        if log and ((k + 1) % 10 == 0 or k + 1 == n_episodes):
            el = time.monotonic() - t0
            log(f"[ndm sim] {k + 1}/{n_episodes} episodes ({prof.name}), ETA {el / (k + 1) * (n_episodes - k - 1):.0f} s")
    hand.disconnect()
    return episodes


def check_joint_order(ds: WindowDataset, joint_order: Sequence[str], what: str = "model") -> None:
    """Raise a ValueError unless the dataset's columns are in ``joint_order``."""
    if tuple(joint_order) != tuple(ds.joint_names):
        raise ValueError(f"the data's joint order {list(ds.joint_names)} differs from the {what}'s "
                         f"{list(joint_order)}; rebuild the dataset with joint_names=<the {what}'s order>")

