"""`dexndm ndm-study`: NDM held-out error vs amount of data, joint-wise vs whole-hand, in and out of distribution."""

from __future__ import annotations

import argparse

COMMAND = "ndm-study"
HELP = "data efficiency and generalisation of joint-wise vs whole-hand NDMs (JSON + PNG)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, nargs="+", help="training-distribution data (bags / libraries)")
    p.add_argument("--ood", required=True, nargs="+", help="out-of-distribution data (other wrist, objects, load)")
    p.add_argument("--sizes", default="25,50,100,200", help="training episode counts")
    p.add_argument("--archs", default="joint,whole")
    p.add_argument("--init", default="sim", help="'sim' (finetune the shipped sim-pretrained NDMs) or 'none'")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory (study.json, study.png, study.md)")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from dexndm.hand.spec import load_hand_spec
    from dexndm.ndm.data import make_dataset, split_episodes
    from dexndm.ndm.sources import load_sources
    from dexndm.ndm.train import evaluate, train_ndm
    from dexndm.paths import share_path

    spec = load_hand_spec("leap")
    try:
        eps = load_sources(args.data, spec, log=lambda *_: None)
        ood = load_sources(args.ood, spec, log=lambda *_: None)
        sizes = [int(s) for s in args.sizes.split(",")]
    except (FileNotFoundError, ValueError) as e:
        print(f"dexndm ndm-study: {e}")
        return 2
    tr_all, va = split_episodes(eps, 0.1, args.seed)
    val = make_dataset(va, 10, spec.joint_names)
    ood_ds = make_dataset(ood, 10, spec.joint_names)
    sizes = [s for s in sizes if s <= len(tr_all)] or [len(tr_all)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(tr_all))
    rows = []
    for arch in args.archs.split(","):
        init = None
        if args.init == "sim":
            found = sorted(share_path("models").glob(f"ndm-leap-sim-{arch}.pt"))
            init = str(found[0]) if found else None
        for n in sizes:
            train = make_dataset([tr_all[i] for i in order[:n]], 10, spec.joint_names)
            model, rep = train_ndm(train, val, arch=arch, init=init, epochs=args.epochs, seed=args.seed, spec=spec,
                                   log=lambda *_: None)
            o = evaluate(model, ood_ds)
            rows.append({"arch": arch, "episodes": n, "init": init or "none", "in_dist_rmse_rad": rep["rmse_rad"],
                         "ood_rmse_rad": o["rmse_rad"], "baseline_in_dist": rep["baseline_rmse_rad"],
                         "baseline_ood": o["baseline_rmse_rad"]})
            print(f"[ndm-study] {arch:6s} {n:4d} episodes: held-out {rep['rmse_rad']:.5f} rad, "
                  f"out-of-distribution {o['rmse_rad']:.5f} rad")
    summary = {}
    for n in sizes:
        j = [r for r in rows if r["arch"] == "joint" and r["episodes"] == n]
        w = [r for r in rows if r["arch"] == "whole" and r["episodes"] == n]
        if j and w:
            summary[n] = {"ood_joint_over_whole": j[0]["ood_rmse_rad"] / w[0]["ood_rmse_rad"],
                          "in_dist_joint_over_whole": j[0]["in_dist_rmse_rad"] / w[0]["in_dist_rmse_rad"]}
    result = {"rows": rows, "summary": summary, "data": [str(d) for d in args.data], "ood": [str(d) for d in args.ood],
              "train_episodes_available": len(tr_all), "val_episodes": len(va), "ood_episodes": len(ood)}
    (out / "study.json").write_text(json.dumps(result, indent=1))
    lines = [f"{'arch':6} {'episodes':>8} {'held-out (rad)':>15} {'OOD (rad)':>10}"]
    lines += [f"{r['arch']:6} {r['episodes']:8d} {r['in_dist_rmse_rad']:15.5f} {r['ood_rmse_rad']:10.5f}" for r in rows]
    lines += [f"{n} episodes: OOD joint/whole = {s['ood_joint_over_whole']:.2f}" for n, s in summary.items()]
    (out / "study.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8), sharey=False)
    for arch, c in (("joint", "#3377cc"), ("whole", "#dd9944"), ("finger", "#44aa66")):
        rs = [r for r in rows if r["arch"] == arch]
        if rs:
            ax[0].plot([r["episodes"] for r in rs], [r["in_dist_rmse_rad"] for r in rs], "o-", c=c, label=arch)
            ax[1].plot([r["episodes"] for r in rs], [r["ood_rmse_rad"] for r in rs], "o-", c=c, label=arch)
    for a, t in zip(ax, ("held-out, same distribution", "out of distribution"), strict=True):
        a.set_xscale("log")
        a.set_xlabel("training episodes")
        a.set_ylabel("one-step RMSE (rad)")
        a.set_title(t)
        a.legend()
    fig.tight_layout()
    fig.savefig(out / "study.png", dpi=110)
    print(f"wrote {out / 'study.json'}, {out / 'study.png'}")
    return 0
