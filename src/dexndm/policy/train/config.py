"""Training configuration of `dexndm train-policy` (no heavy imports: the CLI parser reads it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    hand: str = "leap"
    wrists: tuple[str, ...] = ("palm_up",)
    axes: tuple[str, ...] = ("z", "-z")
    objects: str = "regular"
    specialist_objects: tuple[str, ...] = ()
    seed_gait: str = "circular"  # circular | random: where the gait search starts  # one specialist per entry (object or set); () = each object of `objects`
    seed: int = 0
    generations: int = 36
    popsize: int = 16
    gait_episodes: int = 3
    bc_episodes: int = 60  # per specialist
    bc_epochs: int = 40
    width: int = 256
    blocks: int = 3
    eval_episodes: int = 100  # per (wrist, axis)
    workers: int = 2
    episode_steps: int = 400
    out: str = "models/policy-leap-palmup.pt"
    work_dir: str = "runs/train-policy"
