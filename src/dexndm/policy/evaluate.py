"""Evaluation harness: run a policy in the simulator (ideal or a reality profile), no ROS.

One row per (wrist, axis) combination; Rot (rad about the target axis per episode), TTF (s), RotP
(mean off-axis angular speed, rad/s) and the fraction of episodes that dropped the object.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from dexndm.artifacts import software_versions
from dexndm.ndm import DEFAULT_BOUND
from dexndm.policy.env import EnvConfig, RotationEnv
from dexndm.policy.metrics import axis_label, parse_axis


@dataclass(frozen=True)
class EvalConfig:
    wrists: tuple[str, ...] = ("palm_up",)
    axes: tuple[str, ...] = ("z",)
    objects: str = "regular"
    episodes: int = 20  # per (wrist, axis)
    seed: int = 0
    world: str | None = None  # None/ideal or a reality profile name/path
    hand: str = "leap"
    randomize: bool = True
    workers: int = 2
    episode_steps: int = 400
    extra: dict = field(default_factory=dict)
    # (wrist, axis) pairs to evaluate instead of every wrist with every axis (a policy trained on some pairs)
    slots: tuple[tuple[str, str], ...] | None = None

    def pairs(self) -> list[tuple[str, str]]:
        return list(self.slots) if self.slots is not None else [(w, a) for w in self.wrists for a in self.axes]


# A controller factory builds, inside a worker, something with reset() and act(obs) -> delta.
ControllerFactory = Callable[[RotationEnv], object]


def _run(args) -> list[dict]:
    import torch

    # One thread per worker: the workers already use every core between them.
    torch.set_num_threads(1)
    cfg, env_cfg, factory, jobs = args
    env = RotationEnv(env_cfg)
    ctrl = factory(env)
    out = []
    for wrist, axis, seed in jobs:
        env.rng = np.random.default_rng(seed)
        obs = env.reset(wrist=wrist, axis=parse_axis(axis))
        ctrl.reset()
        done = False
        while not done:
            if hasattr(ctrl, "act_targets"):
                obs, _, done, info = env.step_targets(*ctrl.act_targets(obs, env))
            else:
                obs, _, done, info = env.step(ctrl.act(obs))
        out.append({"wrist": wrist, "axis": axis_label(parse_axis(axis)), "object": info.object,
                    "mass": info.mass, "friction": info.friction, "rot_rad": info.rot, "ttf_s": info.ttf,
                    "rotp": info.rotp, "fell": info.fell, "unstable": info.unstable, "placements": info.placements,
                    "seed": seed})
    return out


def evaluate(factory: ControllerFactory, cfg: EvalConfig, joint_order: tuple[str, ...] | None = None,
             log=print) -> dict:
    env_cfg = EnvConfig(hand=cfg.hand, wrists=cfg.wrists, axes=cfg.axes, objects=cfg.objects, reality=cfg.world,
                        randomize=cfg.randomize, joint_order=joint_order, episode_steps=cfg.episode_steps)
    rng = np.random.default_rng(cfg.seed)
    jobs = [(w, a, int(rng.integers(1 << 30))) for w, a in cfg.pairs() for _ in range(cfg.episodes)]
    t0 = time.monotonic()
    workers = max(1, min(cfg.workers, len(jobs)))
    chunks = [jobs[i::workers] for i in range(workers)]
    if workers == 1:
        episodes = _run((cfg, env_cfg, factory, jobs))
    else:
        import multiprocessing as mp

        # spawn, not fork: the workers run torch, whose thread pools do not survive a fork of a process
        # that already used them (the children deadlock).
        with mp.get_context("spawn").Pool(workers) as pool:
            episodes = [e for part in pool.map(_run, [(cfg, env_cfg, factory, c) for c in chunks]) for e in part]
    rows = []
    for w, a in cfg.pairs():
        lab = axis_label(parse_axis(a))
        eps = [e for e in episodes if e["wrist"] == w and e["axis"] == lab]
        rows.append({"wrist": w, "axis": lab, "episodes": len(eps), **_means(eps)})
    log(f"[eval] {len(episodes)} episodes in {time.monotonic() - t0:.1f} s")
    n_bad = sum(e["unstable"] for e in episodes)
    if n_bad:
        log(f"[eval] {n_bad} episode(s) ended early because the simulation blew up (a MuJoCo reset, or the object "
            "flung farther in one step than any drop); they are left out of the means")
    return {
        **_means(episodes),
        "rows": rows,
        "episodes": episodes,
        "config": {**asdict(replace(cfg, extra={})), **cfg.extra, "software": software_versions()},
    }


def _means(eps: list[dict]) -> dict:
    """Means over the episodes the simulator finished (a blow-up is neither a hold nor a drop)."""
    ok = [e for e in eps if not e.get("unstable", False)]

    def mean(k):
        return float(np.mean([e[k] for e in ok])) if ok else float("nan")

    return {"rot_rad": mean("rot_rad"), "ttf_s": mean("ttf_s"), "rotp": mean("rotp"), "drop_rate": mean("fell"),
            "unstable": len(eps) - len(ok)}


def format_table(result: dict) -> str:
    lines = [f"{'wrist':11} {'axis':>6} {'episodes':>8} {'Rot (rad)':>10} {'TTF (s)':>8} {'RotP':>7} {'drops':>6} "
             f"{'sim blow-ups':>12}"]
    for r in result["rows"]:
        lines.append(f"{r['wrist']:11} {r['axis']:>6} {r['episodes']:8d} {r['rot_rad']:10.2f} {r['ttf_s']:8.2f} "
                     f"{r['rotp']:7.3f} {100 * r['drop_rate']:5.0f}% {r.get('unstable', 0):12d}")
    lines.append(f"{'all':11} {'':>6} {len(result['episodes']):8d} {result['rot_rad']:10.2f} {result['ttf_s']:8.2f} "
                 f"{result['rotp']:7.3f} {100 * result['drop_rate']:5.0f}% {result.get('unstable', 0):12d}")
    return "\n".join(lines)


class ArtifactController:
    """Runs a policy artifact in the env (the factory re-loads it inside each worker)."""

    def __init__(self, path: str):
        from dexndm.policy.exported import load_policy

        self.policy = load_policy(path)

    def reset(self) -> None:
        self.policy.reset()

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.policy.act(obs)


class ArtifactFactory:
    """Picklable factory (worker processes build their own controller)."""

    def __init__(self, path: str):
        self.path = str(path)

    def __call__(self, env: RotationEnv) -> ArtifactController:
        return ArtifactController(self.path)


class AdaptedController:
    """Policy + sim-to-real adapter, as the live graph runs them (policy node -> adaptation node)."""

    def __init__(self, policy_path: str, mode: str, residual: str = "", ndm_real: str = "", ndm_sim: str = "",
                 bound: float = DEFAULT_BOUND):
        from dexndm.hand.spec import load_hand_spec
        from dexndm.ndm.adaptation import AdaptationRunner, build_adapter

        self.base = ArtifactController(policy_path)
        spec = load_hand_spec(self.base.policy.hand)
        self.runner = AdaptationRunner(spec, build_adapter(mode, spec, residual, ndm_real, ndm_sim, bound), bound)

    def reset(self) -> None:
        self.base.reset()
        self.runner.adapter.reset()
        self._first = True

    def act_targets(self, obs: np.ndarray, env: RotationEnv) -> tuple[np.ndarray, np.ndarray]:
        from dexndm.policy.actions import integrate

        o = env.order
        if self._first and hasattr(self.runner.adapter, "prime"):
            self.runner.adapter.prime(o.to_canonical(env.history.last_q()), o.to_canonical(env.a_prev))
        self._first = False
        a_base = integrate(env.a_prev, self.base.policy.act(obs), env.cfg.action_scale, env.lower, env.upper)
        q = o.to_canonical(env.history.last_q())
        out = self.runner.adapt(q, o.to_canonical(a_base), env.wrist_quat, env.tracker.axis)
        return o.from_canonical(out.sent), a_base


class AdaptedFactory:
    def __init__(self, policy_path: str, mode: str, **kw):
        self.args = (str(policy_path), mode)
        self.kw = kw

    def __call__(self, env: RotationEnv) -> AdaptedController:
        return AdaptedController(*self.args, **self.kw)
