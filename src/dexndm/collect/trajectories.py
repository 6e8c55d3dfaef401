"""Trajectory libraries: action sequences from sim rollouts of the policy, and base waves.

A library holds, per trajectory, the absolute targets a_t the policy sent (canonical joint order,
rad) and what it saw: measured positions q_t (with the observation noise the policy saw), the
wrist quaternion and the rotation axis. Collection replays the actions; residual training uses
the rest (q_sim, observations) as the sim reference.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "dexndm-trajectories/1"


@dataclass
class TrajectoryLibrary:
    actions: np.ndarray  # (N, T, n) canonical order, rad: target commanded at step t (after seeing q[t])
    q: np.ndarray  # (N, T + 1, n) measured positions (as the policy saw them), canonical order
    q_true: np.ndarray  # (N, T + 1, n) simulator positions without observation noise
    a0: np.ndarray  # (N, n) the target in force before the first action (the policy's initial a_prev)
    wrist_quat: np.ndarray  # (N, 4) w, x, y, z
    axis: np.ndarray  # (N, 3) unit
    joint_names: list[str]
    meta: list[dict]  # per trajectory: wrist, axis label, object, rot, ttf
    info: dict  # policy, command, seed, ...
    # (N, T, n) |actuator torque| (N*m) at the end of each step in the simulator, canonical order; None in
    # libraries written before it was recorded. Residual training can leave out what a weaker servo cannot do.
    torque: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        extra = {} if self.torque is None else {"torque": self.torque.astype(np.float32)}
        np.savez_compressed(tmp, actions=self.actions.astype(np.float32), q=self.q.astype(np.float32),
                            q_true=self.q_true.astype(np.float32), a0=self.a0.astype(np.float32), wrist_quat=self.wrist_quat, axis=self.axis,
                            **extra, header=np.array(json.dumps({"format": FORMAT, "joint_names": self.joint_names,
                                                        "meta": self.meta, "info": self.info})))
        tmp.replace(path)
        return path

    @staticmethod
    def load(path: str | Path) -> TrajectoryLibrary:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"trajectory library {path} does not exist (build one with "
                                    "`dexndm collect --build-library`)")
        try:
            z = np.load(path, allow_pickle=False)
            head = json.loads(str(z["header"]))
        except Exception as e:  # noqa: BLE001 - numpy/zip raise many types for a bad file
            raise ValueError(f"{path}: not a trajectory library ({e.__class__.__name__}: {e})") from e
        if head.get("format") != FORMAT:
            raise ValueError(f"{path}: format {head.get('format')!r}, expected {FORMAT}")
        try:
            return TrajectoryLibrary(z["actions"].astype(float), z["q"].astype(float), z["q_true"].astype(float),
                                     z["a0"].astype(float), z["wrist_quat"], z["axis"], head["joint_names"],
                                     head["meta"], head["info"],
                                     z["torque"].astype(float) if "torque" in z.files else None)
        except KeyError as e:
            raise ValueError(f"{path}: trajectory library lacks {e.args[0]}; rebuild it with "
                             "`dexndm collect --build-library`") from None

    def select(self, wrist: str | None = None) -> np.ndarray:
        """Indices of trajectories recorded at a wrist orientation (all if None)."""
        idx = [i for i, m in enumerate(self.meta) if wrist is None or m["wrist"] == wrist]
        if not idx:
            have = sorted({m["wrist"] for m in self.meta})
            raise ValueError(f"library has no trajectory for wrist '{wrist}'; it has {have}")
        return np.array(idx)


def rollout_policy(env, pol, wrist: str, axis: np.ndarray) -> dict:
    """One episode of a policy artifact in a RotationEnv; arrays in canonical order (obs in policy order)."""
    o = env.order
    obs = env.reset(wrist=wrist, axis=axis)
    q_seen = [o.to_canonical(env.history.last_q())]
    q_true = [env.hand.data.qpos[env.hand.scene.qpos_adr].copy()]
    a0 = o.to_canonical(env.a_prev)
    acts, observations, torque = [], [], []
    done = False
    while not done:
        observations.append(obs)
        obs, _, done, info = env.step(pol.act(obs))
        acts.append(o.to_canonical(env.a_prev))
        torque.append(np.abs(env.hand.data.ctrl[env.hand.scene.act_ids]))
        q_seen.append(o.to_canonical(env.history.last_q()))
        q_true.append(env.hand.data.qpos[env.hand.scene.qpos_adr].copy())
    return {"actions": np.array(acts), "q": np.array(q_seen), "q_true": np.array(q_true), "a0": a0,
            "torque": np.array(torque),
            "obs": np.array(observations), "wrist_quat": env.wrist_quat.copy(), "axis": env.tracker.axis.copy(),
            "info": info}


def build_library(policy_path: str, wrists: list[str], axes: list[str], objects: str, episodes: int, seed: int,
                  keep_failed: bool = False, steps: int = 400, log=print) -> TrajectoryLibrary:
    """Roll out the policy in the ideal simulator (with domain randomisation); keep episodes that held
    the object for all ``steps`` (all episodes if keep_failed)."""
    from dexndm.policy.env import EnvConfig, RotationEnv
    from dexndm.policy.exported import load_policy
    from dexndm.policy.metrics import axis_label, parse_axis

    pol = load_policy(policy_path)
    env = RotationEnv(EnvConfig(hand=pol.hand, wrists=tuple(wrists), axes=tuple(axes), objects=objects,
                                joint_order=tuple(pol.joint_order), episode_steps=steps), seed=seed)
    eps, meta = [], []
    t0 = time.monotonic()
    total = episodes * len(wrists) * len(axes)
    k = 0
    for w in wrists:
        for a in axes:
            for _ in range(episodes):
                r = rollout_policy(env, pol, w, parse_axis(a))
                info = r["info"]
                k += 1
                if (info.fell or len(r["actions"]) < steps) and not keep_failed:
                    continue
                if len(r["actions"]) < steps:
                    continue
                eps.append(r)
                meta.append({"wrist": w, "axis": axis_label(parse_axis(a)), "object": info.object,
                             "rot": info.rot, "ttf": info.ttf})
                if k % 10 == 0 or k == total:
                    el = time.monotonic() - t0
                    log(f"[library] {k}/{total} rollouts, kept {len(eps)}, ETA {el / k * (total - k) / 60:.1f} min")
    if not eps:
        raise RuntimeError("no rollout kept the object; the policy cannot seed a library here")

    def stack(key):
        return np.array([e[key] for e in eps])

    return TrajectoryLibrary(stack("actions"), stack("q"), stack("q_true"), stack("a0"), stack("wrist_quat"),
                             stack("axis"), list(env.spec.joint_names), meta,
                             {"policy": str(policy_path), "objects": objects, "seed": seed, "episodes": total},
                             stack("torque"))


def base_wave(spec, rng: np.random.Generator, steps: int, dt: float, center: np.ndarray) -> tuple[np.ndarray, dict]:
    """Ablation trajectories (paper: 'base waves'): one joint follows a sine or square wave (amplitude
    U(0.5, 1) rad, frequency U(0.2, 0.5) Hz, optionally with N(0, 0.01) noise); the others hold."""
    j = int(rng.integers(spec.n))
    kind = ["sine", "square", "square_noisy"][int(rng.integers(3))]
    amp = rng.uniform(0.5, 1.0)
    f = rng.uniform(0.2, 0.5)
    t = np.arange(steps) * dt
    wave = np.sin(2 * np.pi * f * t)
    if kind != "sine":
        wave = np.sign(wave)
    a = np.repeat(center[None], steps, axis=0)
    a[:, j] = center[j] + amp * wave
    if kind == "square_noisy":
        a[:, j] += rng.normal(0, 0.01, steps)
    return spec.clamp(a), {"joint": spec.joint_names[j], "wave": kind, "amplitude": amp, "freq": f}


def merge_libraries(libs: list[TrajectoryLibrary]) -> TrajectoryLibrary:
    if not libs:
        raise ValueError("nothing to merge")
    names = libs[0].joint_names
    if any(lib.joint_names != names for lib in libs):
        raise ValueError("libraries have different joints")

    def cat(attr):
        return np.concatenate([getattr(lib, attr) for lib in libs])

    torque = cat("torque") if all(lib.torque is not None for lib in libs) else None
    return TrajectoryLibrary(cat("actions"), cat("q"), cat("q_true"), cat("a0"), cat("wrist_quat"), cat("axis"), names,
                             [m for lib in libs for m in lib.meta], {**libs[0].info, "parts": len(libs)}, torque)
