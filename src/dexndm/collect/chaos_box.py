"""Backend-agnostic Chaos Box collection loop.

Replays action trajectories open loop at 20 Hz on any hand (simulated or real): before each
episode the hand moves to the trajectory's first target (rate-limited) and settles; then every
step sends the next target (with probability ``noise_prob`` plus N(0, noise_std) noise, plus slow
per-joint offsets when ``offset_std`` > 0, then clamped to the limits) and records what was measured
and what was sent. With an ``adapter`` in the loop (DAgger-style rounds: data where the hand
answers the adapter's own held corrections) each replayed target is the adapter's base target and
the adapter's bounded correction from the measured state is added before it is sent; without one,
``ff_gain`` > 0 explores random per-joint stiffness/damping feed-forward corrections the same way. One rosbag2 bag per
episode, written atomically (``<dir>/episode_NNNNNN``): a crash loses at most the episode in
flight, and ``resume`` skips every finished bag. On hardware the loop pauses while a motor is too
hot and resumes when it has cooled.

Bag contents: ``joint_states`` (sensor_msgs/JointState: the sample measured right before each
command, and one after the last), ``joint_commands`` (sensor_msgs/JointState: the targets sent),
and episode metadata in the bag's custom data (JSON under key ``dexndm``).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from dexndm.hand.interface import Hand, HandState
from dexndm.hand.safety import clamp_sent, clamp_targets
from dexndm.hand.spec import HandSpec

EPISODE_PREFIX = "episode_"
CONTROL_DT = 0.05


class Stepper(Protocol):
    """Sends targets and returns the state one control period later."""

    def step(self, targets: np.ndarray) -> HandState: ...

    def now_ns(self) -> int: ...


class SimStepper:
    """Simulated hand: advances the simulator by exactly one control period per step."""

    def __init__(self, hand):
        self.hand = hand

    def step(self, targets: np.ndarray) -> HandState:
        return self.hand.step_control(targets)

    def now_ns(self) -> int:
        return int(round(self.hand.time * 1e9))

    def idle(self, seconds: float) -> None:
        for _ in range(int(seconds / CONTROL_DT)):
            self.hand.step_control(self.hand.targets)


class RealTimeStepper:
    """Any hardware Hand: writes targets, waits for the next 50 ms deadline, reads the state."""

    def __init__(self, hand: Hand, period: float = CONTROL_DT):
        self.hand = hand
        self.period = period
        self._next = None
        self.overruns = 0

    def step(self, targets: np.ndarray) -> HandState:
        self.hand.write_targets(targets)
        now = time.monotonic()
        if self._next is None or now > self._next + self.period:
            if self._next is not None:
                self.overruns += 1
            self._next = now + self.period
        else:
            self._next += self.period
        # Keep the servo bus alive (watchdog) while waiting for the deadline.
        while True:
            st = self.hand.read_state()
            left = self._next - time.monotonic()
            if left <= 0:
                return st
            time.sleep(min(left, 0.01))

    def now_ns(self) -> int:
        return time.time_ns()

    def idle(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.hand.read_state()
            time.sleep(0.02)
        self._next = None


@dataclass(frozen=True)
class CollectConfig:
    episodes: int
    steps: int = 400
    noise_prob: float = 0.5
    noise_std: float = 0.01
    # Slow per-joint target offsets (an Ornstein-Uhlenbeck process, time constant offset_tau_s) with a
    # standard deviation drawn per episode from U(0, offset_std): the held, low-frequency target changes an
    # adapter makes, so the NDM learns how the hand answers them. 0 disables (the paper's noise only).
    offset_std: float = 0.0
    offset_tau_s: float = 0.5
    # Feed-forward gain exploration: in a share ``ff_fraction`` of the episodes every target gets the
    # correction an adapter makes to stiffen and damp a soft servo, k_p (a - q) + k_d dq/dt, with per-joint
    # gains drawn per episode (k_p ~ U(0, ff_gain), k_d ~ U(0, 0.1 ff_gain) s) and bounded by ff_bound
    # rad. No knowledge of the hand: it shows the NDM how this hand answers held, state-dependent
    # corrections, which open-loop replays never do. 0 disables.
    ff_gain: float = 0.0
    ff_fraction: float = 1.0 / 3.0
    ff_bound: float = 0.15
    settle_steps: int = 20
    mode: str = "replay"  # replay | base_waves
    seed: int = 0
    wrist: str = "palm_up"
    max_temperature_c: float = 60.0  # pause above this (hardware)
    resume_temperature_c: float = 50.0
    meta: dict = field(default_factory=dict)  # extra metadata (profile, load, backend, ...)

    def __post_init__(self):
        if self.episodes < 1 or self.steps < 2:
            raise ValueError("episodes must be >= 1 and steps >= 2")
        if not 0 <= self.noise_prob <= 1 or self.noise_std < 0:
            raise ValueError("noise_prob must be in [0, 1] and noise_std >= 0")
        err = exploration_error(self.offset_std, self.ff_gain, self.ff_fraction)
        if err:
            raise ValueError(err)
        if self.offset_tau_s <= 0 or not 0 < self.ff_bound <= 0.5:
            raise ValueError(f"offset_tau_s must be > 0 (got {self.offset_tau_s}) and ff_bound in (0, 0.5] rad "
                             f"(got {self.ff_bound})")
        if self.mode not in ("replay", "base_waves"):
            raise ValueError(f"mode '{self.mode}' unknown; valid: replay, base_waves")


def exploration_error(offset_std: float, ff_gain: float, ff_fraction: float) -> str:
    """'' when the collection's exploration options are valid, else a message naming the first bad one
    (field name and command-line flag; CollectConfig and the collect/pipeline commands share it)."""
    if not 0 <= offset_std <= 0.5:
        return f"offset_std (--offset-std) must be in [0, 0.5] rad, got {offset_std}"
    if not 0 <= ff_gain <= 5:
        return f"ff_gain (--ff-gain) must be in [0, 5], got {ff_gain}"
    if not 0 <= ff_fraction <= 1:
        return f"ff_fraction (--ff-fraction) must be in [0, 1], got {ff_fraction}"
    return ""


def ou_offsets(rng: np.random.Generator, shape: tuple[int, int], std: float, tau_s: float,
               dt: float = CONTROL_DT) -> np.ndarray:
    """(T, n) stationary Ornstein-Uhlenbeck offsets with standard deviation ``std`` and time constant ``tau_s``."""
    T, n = shape
    out = np.zeros((T, n))
    if std <= 0:
        return out
    rho = float(np.exp(-dt / tau_s))
    eps = rng.normal(0.0, std * np.sqrt(1.0 - rho * rho), (T, n))
    x = rng.normal(0.0, std, n)
    for t in range(T):
        x = rho * x + eps[t]
        out[t] = x
    return out


class FeedforwardExplorer:
    """The per-episode exploration adapter of ``CollectConfig.ff_gain``: c = k_p (a - q) + k_d dq/dt, bounded."""

    name = "feedforward"

    def __init__(self, kp: np.ndarray, kd: np.ndarray, bound: float, dt: float = CONTROL_DT):
        self.kp, self.kd, self.bound, self.dt = np.asarray(kp, float), np.asarray(kd, float), float(bound), dt
        self.reset()

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int, gain: float, bound: float) -> FeedforwardExplorer:
        return cls(rng.uniform(0.0, gain, n), rng.uniform(0.0, 0.1 * gain, n), bound)

    def reset(self) -> None:
        self.q_prev: np.ndarray | None = None

    def correct(self, q: np.ndarray, a_base: np.ndarray, wrist_quat=None, axis=None) -> np.ndarray:
        q = np.asarray(q, float)
        dq = np.zeros_like(q) if self.q_prev is None else (q - self.q_prev) / self.dt
        self.q_prev = q.copy()
        return np.clip(self.kp * (np.asarray(a_base, float) - q) + self.kd * dq, -self.bound, self.bound)

    def info(self) -> dict:
        return {"kind": self.name, "kp": self.kp.tolist(), "kd": self.kd.tolist(), "bound": self.bound}


def episode_path(out: Path, k: int) -> Path:
    return out / f"{EPISODE_PREFIX}{k:06d}"


def finished_episodes(out: Path) -> list[Path]:
    return sorted(p for p in out.glob(f"{EPISODE_PREFIX}*") if p.is_dir() and not p.name.endswith(".partial"))


def _thermal_pause(hand, stepper, cfg: CollectConfig, log) -> None:
    temp = getattr(hand, "max_temperature_c", None)
    if temp is None:
        return
    t = temp()
    if t is None or t < cfg.max_temperature_c:
        return
    log(f"[collect] motor at {t:.0f} degC >= {cfg.max_temperature_c:.0f}: torque off, pausing until "
        f"<= {cfg.resume_temperature_c:.0f} degC")
    hand.set_torque(False)
    while True:
        stepper.idle(5.0)
        t = temp()
        if t is not None and t <= cfg.resume_temperature_c:
            break
    log(f"[collect] cooled to {t:.0f} degC: resuming")
    hand.set_torque(True)


def collect(hand, stepper: Stepper, spec: HandSpec, cfg: CollectConfig, out_dir: str | Path,
            trajectory: Callable[[int, np.random.Generator], tuple[np.ndarray, dict]], resume: bool = False,
            episode_ids: list[int] | None = None, adapter=None, adapter_info: dict | None = None, log=print) -> dict:
    """Run the collection. ``trajectory(k, rng) -> (actions (T, n) canonical, info)`` picks episode k's
    actions. ``adapter`` (a dexndm.ndm.adapters adapter: reset(), correct(q, a, wrist_quat, axis), bound)
    corrects every target from the measured state before it is sent; ``adapter_info`` goes into the
    episode metadata. Returns a summary. The hand must be connected; torque is switched on here."""
    from dexndm.bag.io import BagWriter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = {p.name for p in finished_episodes(out)} if resume else set()
    if not resume and finished_episodes(out):
        raise FileExistsError(f"{out} already holds episodes; pass --resume to continue, or choose another --out")
    hand.set_torque(True)
    t0 = time.monotonic()
    written = 0
    ids = list(range(cfg.episodes)) if episode_ids is None else list(episode_ids)
    todo = [k for k in ids if episode_path(out, k).name not in done]
    log(f"[collect] {len(todo)} episode(s) to record into {out} ({len(ids) - len(todo)} already done)")
    for i, k in enumerate(todo):
        _thermal_pause(hand, stepper, cfg, log)
        rng = np.random.default_rng([cfg.seed, k])
        actions, tinfo = trajectory(k, rng)
        actions = actions[: cfg.steps]
        noisy = rng.random(len(actions)) < cfg.noise_prob
        noise = rng.normal(0.0, cfg.noise_std, actions.shape) * noisy[:, None]
        offset_std = float(rng.uniform(0.0, cfg.offset_std)) if cfg.offset_std > 0 else 0.0
        noise = noise + ou_offsets(rng, actions.shape, offset_std, cfg.offset_tau_s)
        sent_all = np.array([clamp_targets(spec, a).targets for a in actions + noise])
        ep_adapter, ep_info = adapter, adapter_info
        if adapter is None and cfg.ff_gain > 0 and rng.random() < cfg.ff_fraction:
            ep_adapter = FeedforwardExplorer.draw(rng, spec.n, cfg.ff_gain, cfg.ff_bound)
            ep_info = ep_adapter.info()
        # Move to the first target without exceeding the policy's step bound, then settle.
        cur = hand.read_state().position
        target0 = sent_all[0]
        steps_needed = int(np.ceil(np.max(np.abs(target0 - cur)) / (1.0 / 24.0)))
        for s in range(1, steps_needed + 1):
            stepper.step(cur + (target0 - cur) * s / steps_needed)
        for _ in range(cfg.settle_steps):
            st = stepper.step(target0)
        st = hand.read_state()
        path = episode_path(out, k)
        partial = path.with_name(path.name + ".partial")
        if partial.exists():
            shutil.rmtree(partial)  # the episode that was in flight when an earlier run died
        meta = {"episode": k, "wrist": cfg.wrist, "mode": cfg.mode, "trajectory": tinfo,
                "noise_mask": noisy.astype(int).tolist(), "noise_std": cfg.noise_std, "offset_std": offset_std,
                "steps": len(sent_all), "adapter": ep_info if ep_adapter is not None else None,
                "joint_names": list(spec.joint_names), "config": {**asdict(cfg), "meta": None}, **cfg.meta}
        names = list(spec.joint_names)
        with BagWriter(path, custom_data={"dexndm": json.dumps(meta)}) as bag:
            bag.add_topic("/joint_states", "sensor_msgs/msg/JointState")
            bag.add_topic("/joint_commands", "sensor_msgs/msg/JointState")
            if ep_adapter is not None:
                ep_adapter.reset()
            for a in sent_all:
                if ep_adapter is not None:
                    a, _ = clamp_sent(spec, a, ep_adapter.correct(st.position, a, None, None), ep_adapter.bound)
                t_ns = stepper.now_ns()
                bag.write_msg("/joint_states", t_ns, _js(t_ns, names, st))
                bag.write_msg("/joint_commands", t_ns, {"header": {"stamp": t_ns}, "name": names,
                                                        "position": a})
                st = stepper.step(a)
            t_ns = stepper.now_ns()
            bag.write_msg("/joint_states", t_ns, _js(t_ns, names, st))
        written += 1
        el = time.monotonic() - t0
        log(f"[collect] episode {k + 1}/{cfg.episodes} ({tinfo.get('source', cfg.mode)}) written; "
            f"ETA {el / (i + 1) * (len(todo) - i - 1) / 60:.1f} min")
    return {"out": str(out), "written": written, "skipped": len(ids) - len(todo),
            "minutes": (time.monotonic() - t0) / 60}


def _js(t_ns: int, names: list[str], st: HandState) -> dict:
    return {"header": {"stamp": t_ns}, "name": names, "position": st.position, "velocity": st.velocity,
            "effort": st.effort}
