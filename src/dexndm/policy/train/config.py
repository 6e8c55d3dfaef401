"""Training configuration of `dexndm train-policy` (no heavy imports: the CLI parser reads it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    hand: str = "leap"
    wrists: tuple[str, ...] = ("palm_up",)
    axes: tuple[str, ...] = ("z", "-z")
    objects: str = "regular"
    specialist_objects: tuple[str, ...] = ()  # one specialist per entry (object or set); () = each object of `objects`
    seed_gait: str = "circular"  # circular | random: where the gait search starts
    seed: int = 0
    # Specialist search in two stages: first on one nominal object without randomisation (fast progress: a
    # gait that turns it well), then on the whole object group with domain randomisation (robustness).
    nominal_generations: int = 40
    # Optional middle stage: the group's objects (size +-5 %) at the nominal object's mass and friction, no
    # disturbance or noise. Open-loop gaits tuned on one object are brittle to size: on cylinder_45 a gait
    # turning it ~6 rad per 20 s turned 2.7 rad at +-5 % size. 0 skips the stage.
    shape_generations: int = 0
    generations: int = 24  # the randomised stage
    # Privileged object features ('size', 'friction') the specialists' gaits depend on linearly after the
    # nominal stage (a GaitFamily per group); () = one gait per group.
    family_features: tuple[str, ...] = ()
    # Work directories of earlier runs: their cached specialist for the same (wrist, axis, group), where there is
    # one, competes with this run's on `select_episodes` held-out episodes; the better one is kept.
    candidate_dirs: tuple[str, ...] = ()
    select_episodes: int = 16
    # Trained policy artifacts that teach the generalist the (wrist, axis) slots they were trained on (their
    # metadata's trained_on), on the `objects` set, in place of gait specialists: an earlier generalist keeps
    # what it does while the new one learns other wrists and axes from new specialists.
    teachers: tuple[str, ...] = ()
    popsize: int = 16
    nominal_episodes: int = 1  # the nominal stage is deterministic: one episode says it all
    # Relative spread of the nominal object in the first stage: mass and friction x(1 +- j), size x(1 +- j/5),
    # gait_episodes per candidate. 0 = the deterministic stage. Contact outcomes there are chaotic in the
    # object's parameters: the deterministic stage's best gait for cylinder_50 (+z) turned it 8.6 rad per 20 s
    # at 0.030 kg but 0.6 rad at 0.029 kg; a jittered stage (0.1) selects gaits that turn every nearby object.
    nominal_jitter: float = 0.0
    gait_episodes: int = 4  # per candidate in the randomised stage
    bc_episodes: int = 60  # per specialist
    bc_epochs: int = 40
    width: int = 256
    blocks: int = 3
    eval_episodes: int = 100  # per (wrist, axis)
    workers: int = 2
    episode_steps: int = 400
    out: str = "models/policy-leap-palmup.pt"
    work_dir: str = "runs/train-policy"
