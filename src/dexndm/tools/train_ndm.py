"""`dexndm train-ndm`: fit a neural dynamics model on recorded episodes -> models/ndm-*.pt + card + plot."""

from __future__ import annotations

import argparse

COMMAND = "train-ndm"
HELP = "train the neural dynamics model (joint-wise, finger-wise or whole-hand) on recorded episodes"
DESCRIPTION = (
    "Train a neural dynamics model that predicts each joint's next position from its last W (position, target) "
    "pairs. Episodes are split 9:1 by episode (seeded); the best held-out checkpoint is kept. Writes the model, a "
    "model card (.md) and a held-out prediction plot (.png) next to it. --init fine-tunes an existing model (e.g. "
    "one pretrained on simulated episodes)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", required=True, metavar="DIR_OR_FILE",
                   help="rosbag2 bags or folders of bags (dexndm collect), trajectory libraries (.npz from "
                        "`dexndm collect --build-library`: policy rollouts in the simulator), or .npz episode files")
    p.add_argument("--arch", choices=("joint", "finger", "whole"), default="joint")
    p.add_argument("--init", default=None, metavar="MODEL", help="NDM artifact to fine-tune from")
    p.add_argument("--hand", default=None, help="hand name (default: from the episodes' metadata)")
    p.add_argument("--window", type=int, default=10, help="history length W (control steps of 50 ms)")
    p.add_argument("--hidden", default=None, help="hidden sizes, e.g. 128,128 (default: per arch)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the initial weights and the shuffling")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of episodes held out")
    p.add_argument("--cache-dir", default="runs/ndm-cache", help="windowed-dataset cache ('' to disable)")
    p.add_argument("--out", default=None, help="artifact path (default: models/ndm-<hand>-<arch>.pt); the card "
                                               "(.md) and plot (.png) are written next to it")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from dexndm.cli import command_line
    from dexndm.ndm.data import EpisodeFileError, find_sources, load_windowed
    from dexndm.ndm.models import NDMLoadError, load_ndm, save_ndm
    from dexndm.ndm.sources import _is_library
    from dexndm.ndm.train import artifact_metadata, train_ndm, write_model_card

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    hidden = tuple(int(h) for h in args.hidden.split(",")) if args.hidden else None
    try:
        joint_order = load_ndm(args.init).metadata["joint_order"] if args.init else None
        if all(Path(d).suffix == ".npz" and not _is_library(Path(d)) for d in args.data):
            sources = find_sources(args.data)
            train, val = load_windowed(sources, args.window, cache_dir=args.cache_dir or None,
                                       val_fraction=args.val_fraction, seed=args.seed, joint_names=joint_order)
        else:
            from dexndm.hand.spec import load_hand_spec
            from dexndm.ndm.data import make_dataset, split_episodes
            from dexndm.ndm.sources import load_sources

            spec = load_hand_spec(args.hand or "leap")
            sources = [Path(d) for d in args.data]
            eps = load_sources(sources, spec)
            tr, va = split_episodes(eps, args.val_fraction, args.seed)
            train = make_dataset(tr, args.window, joint_order or spec.joint_names)
            val = make_dataset(va, args.window, joint_order or spec.joint_names)
            args.hand = args.hand or spec.name
    except (EpisodeFileError, NDMLoadError, FileNotFoundError, ValueError) as e:
        print(f"train-ndm: {e}")
        return 2
    hand = args.hand or train.hand
    if hand is None:
        print("train-ndm: the episodes do not name one hand in their metadata; pass --hand")
        return 2
    out = Path(args.out or f"models/ndm-{hand}-{args.arch}.pt")
    model, report = train_ndm(train, val, arch=args.arch, init=args.init, epochs=args.epochs, batch=args.batch,
                              lr=args.lr, seed=args.seed, hidden=hidden, weight_decay=args.weight_decay, spec=hand,
                              png=out.with_suffix(".png"))
    md = artifact_metadata(model, report, train, val, hand, command=command_line(args),
                           extra={"sources": [str(s) for s in sources]})
    save_ndm(out, model, md)
    md = load_ndm(out).metadata
    card = write_model_card(out, md, report)
    print(f"[train-ndm] wrote {out} ({out.stat().st_size / 1e6:.2f} MB), {card}, {report['png']}")
    return 0
