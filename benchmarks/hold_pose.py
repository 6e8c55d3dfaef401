"""How often a hand's hold pose carries the object through the turn from palm up to the other wrists.

    .venv/bin/python benchmarks/hold_pose.py [--hand leap] [--json out.json]
    .venv/bin/python benchmarks/hold_pose.py --hand allegro --search 10      # tune a hold pose

Each trial is the simulated hand-over that starts every episode (and every live sim run) at a wrist other
than palm up: the object rests on the palm-up hand in the `grasp` pose, the fingers close to the hold pose
over 0.5 s, the wrist turns over 1 s, then the hand holds 5 s more. A trial counts as held when the object
is then within 7 cm of the palm centre on the palm's grasp side. The grid: five turned wrists x the regular objects x object
friction 0.3, 0.7, 2.5 x mass 0.01, 0.05 kg (150 trials).

It prints the held fraction of the hand config's `hold` pose and of its `grasp` pose (the baseline: no
closing), per wrist. With --search N it runs N generations of CMA-ES over offsets from `grasp` (bounded
to +-0.8 rad, clamped to the joint limits) on a separate training grid (object friction 0.4 and 1.0 at the
catalog mass), then prints the best pose's held fraction on the grid above and the pose as YAML for the
hand config.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time

import numpy as np

from dexndm.hand.sim.mujoco_hand import MujocoHand
from dexndm.hand.sim.objects import get_object, resolve_objects
from dexndm.hand.sim.scene import SceneConfig
from dexndm.hand.spec import load_hand_spec

WRISTS = ("palm_down", "thumb_down", "base_down", "thumb_up", "base_up")
EVAL_FRICTION = (0.3, 0.7, 2.5)
EVAL_MASS = (0.01, 0.05)
TRAIN_FRICTION = (0.4, 1.0)


def trial(args) -> float:
    hand, pose, wrist, obj, friction, mass, hold_steps = args
    spec = load_hand_spec(hand)
    h = MujocoHand(spec, SceneConfig(wrist="palm_up", object=get_object(obj, friction=friction, mass=mass)),
                   initial_pose="grasp")
    h.connect()
    h.set_torque(True)
    for _ in range(10):
        h.step_control(h.targets)
    ok = h.grasp_and_turn(spec.clamp(np.asarray(pose, float)), wrist, 10, 20, 10)
    for _ in range(hold_steps):
        h.step_control(h.targets)
    return float(ok and h.object_in_hand(0.07))


def grid(hand: str, pose: np.ndarray, frictions, masses, hold_steps: int) -> list[tuple]:
    objs = [o.name for o in resolve_objects("regular")]
    return [(hand, pose.tolist(), w, o, f, m, hold_steps) for w in WRISTS for o in objs for f in frictions
            for m in masses]


def held(pool, hand: str, pose: np.ndarray) -> tuple[float, dict[str, float]]:
    jobs = grid(hand, pose, EVAL_FRICTION, EVAL_MASS, 100)
    r = np.array(pool.map(trial, jobs)).reshape(len(WRISTS), -1)
    return float(r.mean()), {w: float(v) for w, v in zip(WRISTS, r.mean(axis=1), strict=True)}


def search(pool, hand: str, generations: int, seed: int) -> np.ndarray:
    import cma

    spec = load_hand_spec(hand)
    grasp = spec.pose("grasp")
    x0 = spec.pose("hold") - grasp if "hold" in spec.poses else np.zeros(spec.n)
    es = cma.CMAEvolutionStrategy(x0, 0.2, {"popsize": 10, "seed": seed, "verbose": -9, "bounds": [-0.8, 0.8]})
    best, best_x = -1.0, x0
    t0 = time.monotonic()
    for g in range(generations):
        xs = es.ask()
        fits = []
        for x in xs:
            # catalog mass (None), two frictions; 40 steps of holding after the turn
            jobs = grid(hand, spec.clamp(grasp + np.asarray(x)), TRAIN_FRICTION, (None,), 40)
            s = float(np.mean(pool.map(trial, jobs)))
            fits.append(s - 0.02 * float(np.abs(x).mean()))  # prefer small changes from the grasp
            if s > best:
                best, best_x = s, np.asarray(x, float)
        es.tell(xs, [-f for f in fits])
        el = time.monotonic() - t0
        print(f"[hold search] gen {g + 1}/{generations} best {max(fits):.3f} mean {np.mean(fits):.3f} "
              f"(held {best:.3f} so far) ETA {el / (g + 1) * (generations - g - 1) / 60:.1f} min", flush=True)
    return spec.clamp(grasp + best_x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hand", default="leap")
    ap.add_argument("--search", type=int, default=0, metavar="GENERATIONS")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    spec = load_hand_spec(a.hand)
    out: dict = {"hand": a.hand, "trials_per_pose": len(grid(a.hand, spec.pose("grasp"), EVAL_FRICTION, EVAL_MASS, 0))}
    with mp.get_context("fork").Pool(a.workers) as pool:
        poses = {"grasp (baseline)": spec.pose("grasp")}
        if "hold" in spec.poses:
            poses["hold"] = spec.pose("hold")
        if a.search:
            poses["searched"] = search(pool, a.hand, a.search, a.seed)
        print(f"{'pose':18s} {'held':>6s}  " + "  ".join(f"{w:>10s}" for w in WRISTS))
        base = None
        for name, pose in poses.items():
            frac, per = held(pool, a.hand, pose)
            base = frac if base is None else base
            out[name] = {"held": frac, "per_wrist": per, "pose": spec.by_name(pose)}
            ratio = f"  ({frac / base:.2f}x baseline)" if base > 0 and name != "grasp (baseline)" else ""
            print(f"{name:18s} {frac:6.2f}  " + "  ".join(f"{per[w]:10.2f}" for w in WRISTS) + ratio, flush=True)
    if a.search:
        print("hold: {" + ", ".join(f"{k}: {v:.3f}" for k, v in out["searched"]["pose"].items()) + "}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
