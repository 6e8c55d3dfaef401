"""NDM training throughput: the batched joint-wise model vs a per-joint Python loop, same data and sizes.

    .venv/bin/python benchmarks/ndm_training.py [--seconds 2] [--batch 64,256,1024] [--threads 1] [--json out.json]

Both joint-wise variants compute the same function (16 MLPs 2W -> hidden -> 1); the batched one runs all joints
in one batched matmul per layer, the loop one calls 16 nn.Sequential modules. Each model takes optimiser steps
(the training code's own ``train_step``: forward, standardised L2, backward, Adam) on the same simulated windows
for a fixed wall time; samples/s = steps * batch / time, at each batch size. Finger-wise and whole-hand models
(their default sizes) are timed the same way for reference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from dexndm.hand.spec import load_hand_spec
from dexndm.ndm.data import make_dataset, simulate_episodes
from dexndm.ndm.models import DEFAULT_HIDDEN, JointWiseNDMLoop, build_ndm, count_parameters
from dexndm.ndm.train import train_step


class Trainer:
    """Optimiser steps on random batches of the windows, with the training code's own ``train_step``."""

    def __init__(self, model, q, a, qn, batch: int, seed: int = 0):
        self.model, self.q, self.a, self.qn, self.batch = model.train(), q, a, qn, batch
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        self.gen = torch.Generator().manual_seed(seed)
        for _ in range(3):  # warm-up (allocator, autograd graph caches)
            self.step()

    def step(self) -> None:
        idx = torch.randint(0, self.q.shape[0], (self.batch,), generator=self.gen)
        train_step(self.model, self.opt, self.q[idx], self.a[idx], self.qn[idx])

    def rate(self, seconds: float) -> float:
        """samples/s over at least ``seconds`` (and at least 3 steps)."""
        steps, t0 = 0, time.perf_counter()
        while True:
            self.step()
            steps += 1
            el = time.perf_counter() - t0
            if el >= seconds and steps >= 3:
                return steps * self.batch / el


def throughput(models: dict, q, a, qn, batch: int, seconds: float, rounds: int) -> dict[str, dict]:
    """Models take turns (``rounds`` times, seconds/rounds each) so that background load hits them alike; returns
    per model the best and median round rate (samples/s)."""
    trainers = {name: Trainer(m, q, a, qn, batch) for name, m in models.items()}
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, tr in trainers.items():
            rates[name].append(tr.rate(seconds / rounds))
    return {name: {"samples_per_s": max(r), "median_samples_per_s": statistics.median(r),
                   "parameters": count_parameters(models[name])} for name, r in rates.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="timed wall time per model and batch size")
    ap.add_argument("--batch", default="64,256,1024", help="comma-separated batch sizes")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per batch size")
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--hidden", default="128,128", help="joint-wise hidden sizes (both variants)")
    ap.add_argument("--episodes", type=int, default=8, help="simulated episodes (ideal profile) to draw windows from")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    spec = load_hand_spec("leap")
    ds = make_dataset(simulate_episodes("leap", "ideal", args.episodes, 200, seed=0), args.window)
    q, a, qn = (torch.as_tensor(x) for x in (ds.q_win, ds.a_win, ds.q_next))

    torch.manual_seed(0)
    joint = build_ndm("joint", spec.n, args.window, hidden)
    joint.fit_normalizer(q, a, qn)
    models = {
        "joint-wise, batched": joint,
        "joint-wise, per-joint loop": JointWiseNDMLoop.from_batched(joint),
        "finger-wise, batched": build_ndm("finger", spec.n, args.window, fingers=spec.fingers),
        "whole-hand": build_ndm("whole", spec.n, args.window),
    }
    for m in list(models.values())[2:]:
        m.fit_normalizer(q, a, qn)
    sizes = {"joint-wise, batched": hidden, "joint-wise, per-joint loop": hidden,
             "finger-wise, batched": DEFAULT_HIDDEN["finger"], "whole-hand": DEFAULT_HIDDEN["whole"]}
    batches = [int(b) for b in args.batch.split(",")]
    print(f"NDM training throughput: {len(ds)} windows (W={args.window}, n={spec.n}), "
          f"{torch.get_num_threads()} thread(s), {args.seconds:.0f} s per model and batch in {args.rounds} interleaved rounds (best round shown), torch {torch.__version__}")
    results: dict[str, dict] = {}
    ratios = {}
    for batch in batches:
        print(f"batch {batch}:")
        res = throughput(models, q, a, qn, batch, args.seconds, args.rounds)
        for name, r in res.items():
            r["hidden"] = list(sizes[name])
            results.setdefault(name, {})[batch] = r
            print(f"  {name:28s} hidden {str(sizes[name]):11s} {r['parameters']:8d} params  "
                  f"{r['samples_per_s']:9.0f} samples/s (median {r['median_samples_per_s']:.0f})")
        ratios[batch] = (results["joint-wise, batched"][batch]["samples_per_s"]
                         / results["joint-wise, per-joint loop"][batch]["samples_per_s"])
        print(f"  batched / per-joint loop (joint-wise, same data and sizes): {ratios[batch]:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "batched_over_loop": ratios,
                       "threads": torch.get_num_threads(), "windows": len(ds)}, f, indent=1)


if __name__ == "__main__":
    main()
