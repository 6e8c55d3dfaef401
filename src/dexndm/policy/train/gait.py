"""Gait specialists: CMA-ES over an open-loop periodic gait per (wrist, axis).

Gait (canonical joint order): a(t) = clip(q_init + c + A * sin(2*pi*f*t + phi), limits), executed
through the environment's relative action interface (so the 1/24 rad per step rate bound holds).
Parameter vector x (3n + 1): c = 0.3 x[0:n], A = 0.3 x[n:2n], phi = pi x[2n:3n], f = 0.8 exp(0.5 x[3n]) Hz.
Fitness (maximised): mean over episodes of Rot + 2 * TTF/T - 10 * fell.

A specialist may also be a :class:`GaitFamily`: gait parameters linear in privileged features of the
episode's object (its size and friction, which a specialist may know and the generalist must infer from
proprioception): x(object) = x_ref + sum_k feature_k * slope_k. An open-loop gait tuned for one object is
brittle to a few per cent of size; a family turns each object of a group with the gait made for it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dexndm.policy.actions import delta_for
from dexndm.policy.env import EnvConfig, RotationEnv


@dataclass(frozen=True)
class Gait:
    center: np.ndarray  # (n,) offset from q_init, rad, canonical order
    amplitude: np.ndarray  # (n,) rad
    phase: np.ndarray  # (n,) rad
    freq: float  # Hz

    @staticmethod
    def from_vector(x: np.ndarray, n: int) -> Gait:
        x = np.asarray(x, float)
        return Gait(0.3 * x[:n], 0.3 * x[n:2 * n], np.pi * x[2 * n:3 * n],
                    float(np.clip(0.8 * np.exp(0.5 * x[3 * n]), 0.2, 3.0)))

    def target(self, t: float, q_init: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
        return np.clip(q_init + self.center + self.amplitude * np.sin(2 * np.pi * self.freq * t + self.phase),
                       lower, upper)

    def to_vector(self) -> np.ndarray:
        """Inverse of from_vector (phases wrapped to [-pi, pi))."""
        ph = (self.phase + np.pi) % (2 * np.pi) - np.pi
        return np.concatenate([self.center / 0.3, self.amplitude / 0.3, ph / np.pi, [2 * np.log(self.freq / 0.8)]])

    def reversed(self) -> Gait:
        """The same gait run backwards in time (rotates the other way, to first order)."""
        return Gait(self.center, -self.amplitude, -self.phase, self.freq)

    def to_json(self) -> dict:
        return {"center": self.center.tolist(), "amplitude": self.amplitude.tolist(), "phase": self.phase.tolist(),
                "freq": self.freq}

    @staticmethod
    def from_json(d: dict) -> Gait:
        return Gait(np.array(d["center"]), np.array(d["amplitude"]), np.array(d["phase"]), float(d["freq"]))


# Privileged object features a GaitFamily may depend on, each scaled to about [-1, 1] over a training group.
FAMILY_FEATURES = ("size", "friction")
SIZE_SPAN = 0.1  # size feature: relative bounding radius change per unit (+-10 %)
FRICTION_SPAN = float(np.log(3.0))  # friction feature: log ratio per unit (x3)


@dataclass(frozen=True)
class GaitFamily:
    """Gait parameters (search vector, see Gait.from_vector) linear in the episode object's features."""

    base: np.ndarray  # (3n + 1,) the gait at the reference object
    slopes: np.ndarray  # (len(features), 3n + 1)
    features: tuple[str, ...]
    ref_size: float  # m, bounding radius of the reference object (the group's middle object)
    ref_friction: float
    n: int

    def __post_init__(self):
        bad = [f for f in self.features if f not in FAMILY_FEATURES]
        if bad or not self.features:
            raise ValueError(f"gait family features {list(self.features)}: choose from {list(FAMILY_FEATURES)}")
        if self.slopes.shape != (len(self.features), 3 * self.n + 1):
            raise ValueError(f"gait family slopes shape {self.slopes.shape}, expected "
                             f"{(len(self.features), 3 * self.n + 1)}")

    def feature_values(self, size: float, friction: float) -> np.ndarray:
        v = {"size": (size / self.ref_size - 1.0) / SIZE_SPAN,
             "friction": float(np.log(friction / self.ref_friction)) / FRICTION_SPAN}
        return np.array([v[f] for f in self.features])

    def gait_for(self, size: float, friction: float) -> Gait:
        return Gait.from_vector(self.base + self.feature_values(size, friction) @ self.slopes, self.n)

    # The search works on one flat vector [base, slopes...].
    @staticmethod
    def from_vector(x: np.ndarray, n: int, features: tuple[str, ...], ref_size: float,
                    ref_friction: float) -> GaitFamily:
        d = 3 * n + 1
        x = np.asarray(x, float)
        return GaitFamily(x[:d].copy(), x[d:].reshape(len(features), d).copy(), tuple(features), float(ref_size),
                          float(ref_friction), n)

    def to_vector(self) -> np.ndarray:
        return np.concatenate([self.base, self.slopes.reshape(-1)])

    def reversed(self) -> GaitFamily:
        """Every member run backwards in time (Gait.reversed: amplitudes and phases negated)."""
        n = self.n
        flip = np.ones(3 * n + 1)
        flip[n:3 * n] = -1.0
        return GaitFamily(self.base * flip, self.slopes * flip, self.features, self.ref_size, self.ref_friction, n)

    def to_json(self) -> dict:
        return {"family": {"base": self.base.tolist(), "slopes": self.slopes.tolist(), "features": list(self.features),
                           "ref_size": self.ref_size, "ref_friction": self.ref_friction, "n": self.n}}

    @staticmethod
    def from_json(d: dict) -> GaitFamily:
        f = d["family"]
        return GaitFamily(np.array(f["base"], float), np.array(f["slopes"], float).reshape(len(f["features"]), -1),
                          tuple(f["features"]), float(f["ref_size"]), float(f["ref_friction"]), int(f["n"]))


def gait_from_json(d: dict) -> Gait | GaitFamily:
    return GaitFamily.from_json(d) if "family" in d else Gait.from_json(d)


def circular_seed(spec, direction: float = 1.0, abduction: float = 0.25, flexion: float = 0.15,
                  freq: float = 0.5) -> Gait:
    """A finger-gaiting start for the search: every finger's fingertip circles (side joint and flexion
    joints a quarter period apart), the fingers a quarter period apart from each other and the thumb
    opposite. ``direction`` -1 reverses both phase lags, i.e. the circling and the travelling wave.
    In the palm-up scene it turns a resting cylinder about the palm normal (about 2 rad per 10 s)."""
    n = spec.n
    amp, ph = np.zeros(n), np.zeros(n)
    lag = direction * np.pi / 2
    base = {"index": 0.0, "middle": lag, "ring": 2 * lag, "thumb": np.pi}
    first = {f: idx[0] for f, idx in spec.fingers.items()}
    for i, j in enumerate(spec.joints):
        b = base.get(j.finger, 0.0)
        side = j.name.endswith("_rot") or (j.finger == "thumb" and i == first["thumb"])
        flex = j.name.endswith(("_mcp", "_pip")) or (j.finger == "thumb" and i in (first["thumb"] + 1,
                                                                                  first["thumb"] + 2))
        if side:
            amp[i], ph[i] = abduction, b
        elif flex:
            amp[i], ph[i] = flexion, b + lag
    return Gait(np.zeros(n), amp, ph, freq)


class GaitPolicy:
    """Acts like a policy in the env: emits the relative action that tracks the gait (policy order). A
    GaitFamily picks its member for each episode's object at reset (privileged: size and friction)."""

    def __init__(self, gait: Gait | GaitFamily, env: RotationEnv):
        self.gait = gait
        self._gait = gait if isinstance(gait, Gait) else None
        self.env = env
        o = env.order
        self._q_init = o.to_canonical(env.q_init)
        self._lo, self._hi = env.spec.lower, env.spec.upper
        self.t = 0.0

    def reset(self) -> None:
        """Call after env.reset: the gait is centred on the episode's start targets (the initial pose, or the
        hold pose when the wrist was turned)."""
        self.t = 0.0
        self._q_init = self.env.order.to_canonical(self.env.a_prev)
        if isinstance(self.gait, GaitFamily):
            self._gait = self.gait.gait_for(self.env.info.size, self.env.info.friction)

    def target(self) -> np.ndarray:
        """Gait target for the next step, policy order."""
        if self._gait is None:
            raise RuntimeError("GaitPolicy: reset() after env.reset() first (a gait family picks its gait there)")
        a = self._gait.target(self.t + self.env.dt, self._q_init, self._lo, self._hi)
        return self.env.order.from_canonical(a)

    def act(self) -> np.ndarray:
        d = delta_for(self.env.a_prev, self.target(), self.env.cfg.action_scale)
        self.t += self.env.dt
        return d


def fitness(infos, horizon_s: float) -> float:
    return float(np.mean([i.rot + 2.0 * i.ttf / horizon_s - 10.0 * i.fell for i in infos]))


def rollout_gait(env: RotationEnv, gait: Gait, seeds, **reset_kw) -> list:
    infos = []
    pol = GaitPolicy(gait, env)
    for s in seeds:
        env.rng = np.random.default_rng(s)
        env.reset(**reset_kw)
        pol.reset()
        done = False
        while not done:
            _, _, done, info = env.step(pol.act())
        infos.append(info)
    return infos


# ---- CMA-ES search (runs in worker processes) ---------------------------------------------------
_WORKER: dict = {}


def _init_worker(cfg: EnvConfig, wrist: str, axis: str, family: dict | None = None) -> None:
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER["env"] = RotationEnv(cfg)
    _WORKER["wrist"] = wrist
    _WORKER["axis"] = env_axis(cfg, axis)
    _WORKER["family"] = family


def decode(x: np.ndarray, n: int, family: dict | None) -> Gait | GaitFamily:
    """A search vector as a Gait, or (``family``: features, ref_size, ref_friction) as a GaitFamily."""
    return Gait.from_vector(x, n) if family is None else GaitFamily.from_vector(x, n, **family)


def env_axis(cfg: EnvConfig, axis: str) -> np.ndarray:
    from dexndm.policy.metrics import parse_axis

    return parse_axis(axis)


def _eval_candidate(args) -> float:
    x, seeds, steps = args
    env: RotationEnv = _WORKER["env"]
    env.cfg = _with_steps(env.cfg, steps)
    gait = decode(x, env.spec.n, _WORKER["family"])
    infos = rollout_gait(env, gait, seeds, wrist=_WORKER["wrist"], axis=_WORKER["axis"])
    return fitness(infos, steps * env.dt)


def _with_steps(cfg: EnvConfig, steps: int) -> EnvConfig:
    from dataclasses import replace

    return cfg if cfg.episode_steps == steps else replace(cfg, episode_steps=steps)


def search(cfg: EnvConfig, wrist: str, axis: str, generations: int = 40, popsize: int = 16,
           episodes: int = 3, sigma0: float = 0.3, seed: int = 0, workers: int = 2, out_dir: Path | None = None,
           x0: np.ndarray | None = None, family: dict | None = None, log=print) -> tuple[Gait | GaitFamily, dict]:
    """CMA-ES gait search. Returns the best gait (by a final re-evaluation) and a history dict.
    ``family`` (features, ref_size, ref_friction): search a GaitFamily; an ``x0`` of a single gait starts it
    with zero slopes (and a family's x0 starts a single-gait search from its reference gait)."""
    import multiprocessing as mp

    import cma

    n = RotationEnv(cfg).spec.n
    d = 3 * n + 1
    dim = d * (1 + len(family["features"])) if family else d
    if x0 is not None:
        x0 = np.asarray(x0, float)
        x0 = np.concatenate([x0, np.zeros(dim - len(x0))]) if len(x0) < dim else x0[:dim]
    rng = np.random.default_rng(seed)
    if x0 is None:
        x0 = np.zeros(dim)
        x0[n:2 * n] = 0.3  # 9 cm-ish finger motions to start from
        x0[2 * n:3 * n] = rng.uniform(-1, 1, n)
    es = cma.CMAEvolutionStrategy(x0, sigma0, {"popsize": popsize, "seed": seed + 1, "verbose": -9,
                                               "bounds": [-3, 3]})
    hist = {"gen": [], "best": [], "mean": [], "sigma": []}
    ctx = mp.get_context("fork")
    t0 = time.monotonic()
    best = (-np.inf, x0)
    with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg, wrist, axis, family)) as pool:
        for g in range(generations):
            steps = cfg.episode_steps if g >= generations // 3 else cfg.episode_steps // 2
            seeds = [int(s) for s in rng.integers(1 << 30, size=episodes)]
            xs = es.ask()
            fits = pool.map(_eval_candidate, [(x, seeds, steps) for x in xs])
            es.tell(xs, [-f for f in fits])
            i = int(np.argmax(fits))
            if steps == cfg.episode_steps and fits[i] > best[0]:
                best = (fits[i], np.array(xs[i]))
            hist["gen"].append(g)
            hist["best"].append(float(np.max(fits)))
            hist["mean"].append(float(np.mean(fits)))
            hist["sigma"].append(float(es.sigma))
            el = time.monotonic() - t0
            eta = el / (g + 1) * (generations - g - 1)
            log(f"[gait {wrist} {axis}] gen {g + 1}/{generations} best {np.max(fits):6.2f} mean {np.mean(fits):6.2f} "
                f"sigma {es.sigma:.3f} elapsed {el / 60:.1f} min ETA {eta / 60:.1f} min")
        # Final selection among the distribution mean and the best seen, on fresh seeds.
        cands = [np.array(es.result.xfavorite), best[1]]
        seeds = [int(s) for s in rng.integers(1 << 30, size=2 * episodes)]
        finals = pool.map(_eval_candidate, [(x, seeds, cfg.episode_steps) for x in cands])
    xbest = cands[int(np.argmax(finals))]
    gait = decode(xbest, n, family)
    hist["final"] = [float(f) for f in finals]
    hist["x"] = xbest.tolist()
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"gait_{wrist}_{axis}.json").write_text(json.dumps({"wrist": wrist, "axis": axis,
                                                                        "gait": gait.to_json(), "history": hist,
                                                                        "x": xbest.tolist()}, indent=1))
    return gait, hist
