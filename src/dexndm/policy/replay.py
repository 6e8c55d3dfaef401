"""Offline replay of a recorded session through the same core objects the live nodes run.

:func:`replay` reads a bag's ``joint_states`` (plus, where recorded, ``dexndm/policy_action``,
``joint_commands``, ``dexndm/wrist_orientation`` and ``dexndm/rotation_axis``), drives a
:class:`~dexndm.policy.runner.PolicyRunner` (and optionally an
:class:`~dexndm.ndm.adaptation.AdaptationRunner`) exactly as ``policy_node`` / ``adaptation_node`` do,
and returns the actions they produce next to the recorded ones.

Tick timing. With recorded policy actions the replay ticks on them: each action's header stamp names
the joint_states sample the live policy used, so the runner is fed every sample up to that stamp and
ticks with ``now`` = that stamp. Wrist orientation and rotation axis are the last valid recorded
messages received (bag time) before the action was, else the configured defaults, as in the node.
Without recorded actions the replay ticks at ``rate`` Hz on the joint_states stamps, starting at
the first sample, and refuses stale samples as the node does.

The policy node's own settings (stale timeout, start pose, wrist/axis parsing) are defined here and
imported by the node, so a replay with default settings reproduces a live session bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dexndm.ndm import DEFAULT_BOUND

if TYPE_CHECKING:  # runtime imports stay inside functions: the CLI imports this module for its defaults
    from dexndm.hand.spec import HandSpec

# ---- the policy node's settings (one source of truth for the node and the replay) ------------------

DEFAULT_RATE_HZ = 20.0
DEFAULT_STALE_TIMEOUT = 0.1  # s: refuse to act on older joint_states
DEFAULT_START_POSE = "trained"  # the artifact's initial pose
DEFAULT_AXIS = "z"
DEFAULT_WRIST = "palm_up"


def start_pose_for(spec: HandSpec, policy, start: str) -> np.ndarray | None:
    """The pose the policy moves to before acting: 'trained' (the artifact's initial pose), a pose name
    from the hand config, or None for '' / 'none'."""
    if start == "trained":
        return spec.pose(policy.metadata.get("trained_on", {}).get("initial_pose", "grasp"))
    if start in ("", "none"):
        return None
    return spec.pose(start)


def turned_start_pose_for(spec: HandSpec, policy, start: str) -> np.ndarray | None:
    """The start pose when the wrist is not palm up at the first tick. 'trained': the pose training
    episodes at such wrists start from (the artifact's hold pose: the grip that carried the object through
    the turn), else the same as :func:`start_pose_for`."""
    if start == "trained":
        hold = policy.metadata.get("trained_on", {}).get("hold_pose", "hold")
        return spec.pose(hold) if hold in spec.poses else start_pose_for(spec, policy, start)
    return start_pose_for(spec, policy, start)


def make_runner(spec: HandSpec, policy, start: str, stale_after: float):
    """The policy node's PolicyRunner (shared with the replay so both start the same way)."""
    from dexndm.policy.runner import PolicyRunner

    return PolicyRunner(policy, spec, stale_after=stale_after, start_pose=start_pose_for(spec, policy, start),
                        turned_start_pose=turned_start_pose_for(spec, policy, start))


def wrist_quat_from_text(spec: HandSpec, text: str) -> np.ndarray | None:
    """A wrist orientation parameter (named pose or 'w,x,y,z') as a unit quaternion; None for ''."""
    if not text:
        return None
    from dexndm.hand.sim.backend import parse_wrist
    from dexndm.hand.sim.scene import mat_to_quat, wrist_rotation
    from dexndm.policy.runner import validate_quat

    return validate_quat(mat_to_quat(wrist_rotation(spec, parse_wrist(text))))


def axis_from_text(text: str) -> np.ndarray:
    from dexndm.policy.metrics import parse_axis
    from dexndm.policy.runner import validate_axis

    return validate_axis(parse_axis(text))


# ---- replay --------------------------------------------------------------------------------------

JOINT_STATE = "sensor_msgs/msg/JointState"
QUATERNION_STAMPED = "geometry_msgs/msg/QuaternionStamped"
VECTOR3_STAMPED = "geometry_msgs/msg/Vector3Stamped"
STAGES = ("policy", "adaptation")

# Default topic names (relative; a namespace prefixes them).
TOPICS = {
    "joint_states": ("joint_states", JOINT_STATE),
    "policy_action": ("dexndm/policy_action", JOINT_STATE),
    "joint_commands": ("joint_commands", JOINT_STATE),
    "wrist": ("dexndm/wrist_orientation", QUATERNION_STAMPED),
    "axis": ("dexndm/rotation_axis", VECTOR3_STAMPED),
}


class ReplayError(Exception):
    """Bad input for a replay; ``str(err)`` is one line naming the file or topic."""


def topic_names(namespace: str = "", joint_states: str = "") -> dict[str, str]:
    ns = namespace.strip("/")
    out = {k: "/" + "/".join(p for p in (ns, rel) if p) for k, (rel, _) in TOPICS.items()}
    if joint_states:
        out["joint_states"] = "/" + joint_states.strip("/")
    return out


@dataclass(frozen=True)
class JointSample:
    t_ns: int  # bag (receive) time
    stamp_ns: int  # header stamp
    names: tuple[str, ...]
    position: tuple[float, ...]


@dataclass(frozen=True)
class Timed:
    t_ns: int  # bag (receive) time
    value: tuple[float, ...]  # quaternion w,x,y,z or vector x,y,z, as recorded


@dataclass
class Recording:
    """The messages of a bag that a replay uses, decoded (bag order)."""

    path: Path
    topics: dict[str, str]
    joint_states: list[JointSample]
    policy_actions: list[JointSample]
    joint_commands: list[JointSample]
    wrist: list[Timed]
    axis: list[Timed]


def load_recording(path: str | Path, namespace: str = "", joint_states_topic: str = "") -> Recording:
    """Read the topics a replay needs; raises :class:`ReplayError` (one line) for bad input."""
    from dexndm.bag.io import BagError, BagReader

    path = Path(path)
    names = topic_names(namespace, joint_states_topic)
    types = {k: t for k, (_, t) in TOPICS.items()}
    lists: dict[str, list] = {k: [] for k in names}
    try:
        with BagReader(path) as bag:
            present = bag.topics
            for key, topic in names.items():
                meta = present.get(topic)
                if meta is not None and meta.msgtype != types[key]:
                    raise ReplayError(f"{path}: topic {topic} has type {meta.msgtype}, not {types[key]}")
            js = names["joint_states"]
            if js not in present:
                raise ReplayError(f"{path}: no topic {js} in the bag (topics: {', '.join(sorted(present)) or 'none'})")
            key_of = {t: k for k, t in names.items() if t in present}
            for m in bag.messages(list(key_of)):
                key = key_of[m.topic]
                try:
                    msg = bag.decode(m)
                except ValueError as exc:
                    raise ReplayError(f"{path}: {m.topic}: {exc}") from None
                stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
                if key == "wrist":
                    q = msg.quaternion
                    lists[key].append(Timed(m.t_ns, (float(q.w), float(q.x), float(q.y), float(q.z))))
                elif key == "axis":
                    v = msg.vector
                    lists[key].append(Timed(m.t_ns, (float(v.x), float(v.y), float(v.z))))
                else:
                    lists[key].append(JointSample(m.t_ns, stamp, tuple(msg.name),
                                                  tuple(float(x) for x in msg.position)))
    except BagError as exc:
        raise ReplayError(str(exc)) from None
    if not lists["joint_states"]:
        raise ReplayError(f"{path}: topic {names['joint_states']} has no messages")
    return Recording(path, names, lists["joint_states"], lists["policy_action"], lists["joint_commands"],
                     lists["wrist"], lists["axis"])


@dataclass
class ReplayTick:
    now_ns: int  # the tick's time (recorded: the action's stamp)
    t_ns: int  # bag time the tick is placed at (wrist/axis in force at this time)
    sample_ns: int | None  # stamp of the joint_states sample the replayed policy used
    phase: str
    reason: str = ""  # why the replayed policy did not act / why the comparison is not exact
    missing_sample: bool = False  # the bag lacks the joint_states sample the recorded action names
    policy: np.ndarray | None = None  # replayed policy targets (canonical)
    recorded_policy: np.ndarray | None = None  # recorded policy_action (canonical)
    adapted: np.ndarray | None = None  # replayed joint_commands
    correction: np.ndarray | None = None
    fallback: str = ""
    recorded_command: np.ndarray | None = None  # recorded joint_commands with the same stamp

    @property
    def policy_diff(self) -> np.ndarray | None:
        if self.policy is None or self.recorded_policy is None:
            return None
        return self.policy - self.recorded_policy

    @property
    def adapted_diff(self) -> np.ndarray | None:
        if self.adapted is None or self.recorded_command is None:
            return None
        return self.adapted - self.recorded_command


@dataclass
class ReplayResult:
    bag: Path
    spec: HandSpec
    through: tuple[str, ...]
    timing: str  # "recorded" (on recorded policy actions) | "rate"
    ticks: list[ReplayTick]
    states_stamp_ns: np.ndarray  # (N,) joint_states stamps (the samples fed)
    states_position: np.ndarray  # (N, n) canonical, NaN where a joint is missing
    adapter: str = ""
    notes: list[str] = field(default_factory=list)
    recorded_commands: int = 0  # joint_commands in the bag (by stamp)
    commands_not_replayed: int = 0  # of those, stamps the replayed adaptation produced no command for

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"bag": str(self.bag), "timing": self.timing, "through": list(self.through),
                               "ticks": len(self.ticks)}
        if "policy" in self.through:
            out["policy"] = _stage_summary([t.policy_diff for t in self.ticks],
                                           n_replayed=sum(t.policy is not None for t in self.ticks),
                                           n_recorded=sum(t.recorded_policy is not None for t in self.ticks))
            out["policy"]["missing_samples"] = sum(t.missing_sample for t in self.ticks)
            out["policy"]["recorded_not_replayed"] = sum(t.recorded_policy is not None and t.policy is None
                                                         for t in self.ticks)
        if "adaptation" in self.through:
            out["adaptation"] = _stage_summary([t.adapted_diff for t in self.ticks],
                                               n_replayed=sum(t.adapted is not None for t in self.ticks),
                                               n_recorded=sum(t.recorded_command is not None for t in self.ticks))
            out["adaptation"]["recorded"] = self.recorded_commands
            out["adaptation"]["recorded_not_replayed"] = self.commands_not_replayed
            out["adaptation"]["mode"] = self.adapter
            out["adaptation"]["fallbacks"] = sum(bool(t.fallback) for t in self.ticks)
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def _stage_summary(diffs: Sequence[np.ndarray | None], n_replayed: int, n_recorded: int) -> dict[str, Any]:
    d = [x for x in diffs if x is not None]
    if d:
        a = np.abs(np.array(d))
        per_joint = np.max(a, axis=0)
        worst = float(np.max(a))
        n_exact = int(np.sum(np.all(a == 0, axis=1)))
    else:
        per_joint, worst, n_exact = None, None, 0
    return {"replayed": n_replayed, "recorded": n_recorded, "compared": len(d), "identical": n_exact,
            "max_abs_diff": worst, "max_abs_diff_per_joint": None if per_joint is None else per_joint.tolist()}


def _canonical(spec: HandSpec, names: Sequence[str], position: Sequence[float]) -> np.ndarray | None:
    pos = dict(zip(names, position, strict=False))
    if any(n not in pos for n in spec.joint_names):
        return None
    return np.array([pos[n] for n in spec.joint_names], dtype=float)


class _InForce:
    """The last valid recorded value received at or before a bag time (else the default)."""

    def __init__(self, msgs: Sequence[Timed], default: np.ndarray | None, validate):
        self.msgs = sorted(msgs, key=lambda m: m.t_ns)
        self.value = default
        self.validate = validate
        self.i = 0
        self.rejected = 0

    def at(self, t_ns: int) -> np.ndarray | None:
        while self.i < len(self.msgs) and self.msgs[self.i].t_ns <= t_ns:
            try:
                self.value = self.validate(self.msgs[self.i].value)
            except ValueError:
                self.rejected += 1  # the node logs and keeps the last good value
            self.i += 1
        return self.value


def replay(rec: Recording, spec: HandSpec, policy=None, adapter=None, *, through: Sequence[str] = ("policy",),
           wrist: str = DEFAULT_WRIST, axis: str = DEFAULT_AXIS, adaptation_wrist: str = DEFAULT_WRIST,
           rate: float = DEFAULT_RATE_HZ, stale_timeout: float = DEFAULT_STALE_TIMEOUT,
           start_pose: str = DEFAULT_START_POSE, bound: float = DEFAULT_BOUND, timing: str = "auto") -> ReplayResult:
    """Replay ``rec`` through the policy (``policy``: a loaded artifact) and/or the adaptation (``adapter``:
    from :func:`dexndm.ndm.adaptation.build_adapter`). ``through`` is ('policy',), ('policy', 'adaptation')
    or ('adaptation',) (adapts the recorded policy actions). ``timing``: 'auto' (recorded actions if any,
    else ``rate``), 'recorded' or 'rate'."""
    from dexndm.ndm.adaptation import AdaptationRunner
    from dexndm.policy.runner import validate_axis, validate_quat

    through = tuple(s for s in STAGES if s in through)
    if not through:
        raise ReplayError(f"nothing to replay through; choose from {', '.join(STAGES)}")
    do_policy, do_adapt = "policy" in through, "adaptation" in through
    if do_policy and policy is None:
        raise ReplayError("replay through the policy needs a policy artifact")
    if do_adapt and adapter is None:
        raise ReplayError("replay through the adaptation needs an adapter")
    actions_topic = rec.topics["policy_action"]
    if timing == "auto":
        timing = "recorded" if rec.policy_actions else "rate"
    if timing not in ("recorded", "rate"):
        raise ReplayError(f"timing '{timing}' unknown; valid: auto, recorded, rate")
    if timing == "recorded" and not rec.policy_actions:
        raise ReplayError(f"{rec.path}: no messages on {actions_topic} to take the tick times from")
    if not do_policy and not rec.policy_actions:
        raise ReplayError(f"{rec.path}: replay through the adaptation alone needs recorded {actions_topic}")
    if not do_policy:
        timing = "recorded"
    if rate <= 0:
        raise ReplayError(f"rate must be > 0, got {rate}")

    runner = None
    if do_policy:
        runner = make_runner(spec, policy, start_pose, stale_timeout)
    arunner = AdaptationRunner(spec, adapter, bound) if do_adapt else None
    default_axis = axis_from_text(axis)
    p_wrist = _InForce(rec.wrist, wrist_quat_from_text(spec, wrist), validate_quat)
    p_axis = _InForce(rec.axis, default_axis, validate_axis)
    a_wrist = _InForce(rec.wrist, wrist_quat_from_text(spec, adaptation_wrist or DEFAULT_WRIST), validate_quat)
    a_axis = _InForce(rec.axis, default_axis, validate_axis)

    # Samples in stamp order (stable: bag order among equal stamps), as the nodes see them.
    states = sorted(rec.joint_states, key=lambda s: s.stamp_ns)
    positions = np.array([_nan_canonical(spec, s) for s in states])
    stamps = np.array([s.stamp_ns for s in states], dtype=np.int64)
    commands: dict[int, np.ndarray] = {}
    for c in rec.joint_commands:
        q = _canonical(spec, c.names, c.position)
        if q is not None:
            commands[c.stamp_ns] = q  # the last one wins, as a subscriber would see last
    notes: list[str] = []
    n_bad_states = 0
    fed = 0
    last_fed: JointSample | None = None

    def feed_until(now_ns: int) -> None:
        nonlocal fed, last_fed, n_bad_states
        while fed < len(states) and states[fed].stamp_ns <= now_ns:
            s = states[fed]
            fed += 1
            try:
                if runner is not None:
                    runner.update_joint_state(s.names, s.position, s.stamp_ns)
                if arunner is not None:
                    arunner.on_joint_state(s.names, s.position, s.stamp_ns)
                last_fed = s
            except ValueError:
                n_bad_states += 1  # the nodes warn and ignore the sample

    ticks: list[ReplayTick] = []
    if timing == "recorded":
        schedule = [(a.stamp_ns, a.t_ns, a) for a in rec.policy_actions]
    else:
        period = int(round(1e9 / rate))
        start, end = int(stamps[0]), int(stamps[-1])
        n_ticks = (end - start) // period + 1
        schedule = []
        j = 0
        for k in range(n_ticks):
            now = start + k * period
            while j + 1 < len(states) and states[j + 1].stamp_ns <= now:
                j += 1
            schedule.append((now, states[j].t_ns, None))
    stamp_set = set(stamps.tolist())
    for now_ns, t_ns, recorded in schedule:
        feed_until(now_ns)
        tk = ReplayTick(now_ns, t_ns, last_fed.stamp_ns if last_fed else None, "wait")
        if recorded is not None:
            tk.recorded_policy = _canonical(spec, recorded.names, recorded.position)
            if recorded.stamp_ns not in stamp_set:
                tk.missing_sample = True
                tk.reason = f"missing joint_states sample {recorded.stamp_ns} (the live policy used it)"
        base = None
        if do_policy:
            wq, ax = p_wrist.at(t_ns), p_axis.at(t_ns)
            if wq is None:
                tk.reason = tk.reason or "no wrist_orientation received yet"
            else:
                out = runner.tick(now_ns, wq, ax)
                tk.phase = out.phase
                tk.sample_ns = out.stamp_ns
                if out.targets is None:
                    tk.reason = tk.reason or out.reason
                else:
                    tk.policy = out.targets
                    base = (spec.joint_names, out.targets, out.stamp_ns)
        elif recorded is not None:
            tk.phase = "recorded"
            base = (recorded.names, recorded.position, recorded.stamp_ns)
        if do_adapt and base is not None:
            names, position, s = base
            try:
                ad = arunner.on_action(names, position, s, a_wrist.at(t_ns), a_axis.at(t_ns))
            except ValueError as exc:
                tk.fallback = f"rejected: {exc}"
            else:
                tk.adapted, tk.correction, tk.fallback = ad.sent, ad.correction, ad.fallback
            tk.recorded_command = commands.get(s)
        ticks.append(tk)
    if n_bad_states:
        notes.append(f"{n_bad_states} joint_states samples ignored (missing hand joints or non-finite)")
    rejected = p_wrist.rejected + p_axis.rejected
    if rejected:
        notes.append(f"{rejected} recorded wrist/axis messages rejected (invalid), as the node does")
    adapted_stamps = {t.sample_ns if do_policy else t.now_ns for t in ticks if t.adapted is not None}
    return ReplayResult(rec.path, spec, through, timing, ticks, stamps, positions,
                        adapter=getattr(adapter, "name", "") if adapter is not None else "", notes=notes,
                        recorded_commands=len(commands) if do_adapt else 0,
                        commands_not_replayed=sum(s not in adapted_stamps for s in commands) if do_adapt else 0)


def _nan_canonical(spec: HandSpec, s: JointSample) -> np.ndarray:
    pos = dict(zip(s.names, s.position, strict=False))
    return np.array([pos.get(n, math.nan) for n in spec.joint_names], dtype=float)


# ---- outputs -------------------------------------------------------------------------------------


def _list(x: np.ndarray | None) -> list[float] | None:
    return None if x is None else [float(v) for v in x]


def write_json(result: ReplayResult, path: Path) -> Path:
    """Per tick: stamps, phase, replayed and recorded targets, differences (floats round-trip exactly)."""
    import json

    ticks = []
    for t in result.ticks:
        row: dict[str, Any] = {"stamp_ns": t.now_ns, "bag_time_ns": t.t_ns, "sample_stamp_ns": t.sample_ns,
                               "phase": t.phase}
        if t.reason:
            row["reason"] = t.reason
        if "policy" in result.through:
            row.update(policy=_list(t.policy), recorded_policy=_list(t.recorded_policy),
                       policy_diff=_list(t.policy_diff))
        elif t.recorded_policy is not None:
            row["recorded_policy"] = _list(t.recorded_policy)
        if "adaptation" in result.through:
            row.update(adapted=_list(t.adapted), correction=_list(t.correction),
                       recorded_command=_list(t.recorded_command), adapted_diff=_list(t.adapted_diff))
            if t.fallback:
                row["fallback"] = t.fallback
        ticks.append(row)
    doc = {"summary": result.summary(), "hand": result.spec.name, "joint_names": list(result.spec.joint_names),
           "ticks": ticks}
    path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return path


def write_csv(result: ReplayResult, path: Path) -> Path:
    """One row per tick; full-precision floats; empty cells where there is nothing."""
    import csv

    names = result.spec.joint_names
    groups = []
    if "policy" in result.through:
        groups += [("policy", lambda t: t.policy), ("recorded_policy", lambda t: t.recorded_policy),
                   ("policy_diff", lambda t: t.policy_diff)]
    if "adaptation" in result.through:
        if "policy" not in result.through:
            groups.append(("recorded_policy", lambda t: t.recorded_policy))
        groups += [("adapted", lambda t: t.adapted), ("recorded_command", lambda t: t.recorded_command),
                   ("adapted_diff", lambda t: t.adapted_diff)]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["stamp_ns", "bag_time_ns", "sample_stamp_ns", "phase", "reason"]
                   + [f"{g}.{n}" for g, _ in groups for n in names])
        for t in result.ticks:
            row: list[Any] = [t.now_ns, t.t_ns, "" if t.sample_ns is None else t.sample_ns, t.phase,
                              t.reason or t.fallback]
            for _, get in groups:
                v = get(t)
                row += [""] * len(names) if v is None else [repr(float(x)) for x in v]
            w.writerow(row)
    return path


def write_plots(result: ReplayResult, out_dir: Path) -> list[Path]:
    """One PNG per finger: per joint, replayed vs recorded target over time and the measured position."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = result.spec
    t0 = int(result.states_stamp_ns[0])
    ts = (result.states_stamp_ns - t0) * 1e-9
    tt = np.array([(t.now_ns - t0) * 1e-9 for t in result.ticks])

    def series(get) -> np.ndarray | None:
        vals = [get(t) for t in result.ticks]
        if all(v is None for v in vals):
            return None
        return np.array([np.full(spec.n, np.nan) if v is None else v for v in vals])

    # Wide light lines under narrow dark ones, so identical series stay visible.
    lines = [("replayed policy", series(lambda t: t.policy), dict(color="C0", lw=3.0, alpha=0.45)),
             ("recorded policy_action", series(lambda t: t.recorded_policy), dict(color="C0", lw=1.0, ls="--")),
             ("replayed joint_commands", series(lambda t: t.adapted), dict(color="C3", lw=2.2, alpha=0.45)),
             ("recorded joint_commands", series(lambda t: t.recorded_command), dict(color="C3", lw=0.9, ls=":"))]
    paths = []
    for finger, idx in spec.fingers.items():
        fig, axes = plt.subplots(len(idx), 1, figsize=(9, 1.9 * len(idx) + 0.6), sharex=True, squeeze=False)
        for ax, j in zip(axes[:, 0], idx, strict=True):
            ax.plot(ts, result.states_position[:, j], color="0.55", lw=0.8, label="measured")
            for label, arr, style in lines:
                if arr is not None and len(tt):
                    ax.plot(tt, arr[:, j], label=label, **style)
            ax.set_ylabel(f"{spec.joint_names[j]}\n[rad]", fontsize=8)
            ax.grid(alpha=0.3)
        axes[0, 0].set_title(f"{finger}: replay of {result.bag.name} ({result.timing} timing)", fontsize=9)
        axes[0, 0].legend(fontsize=7, loc="upper right", ncol=3)
        axes[-1, 0].set_xlabel("time since first joint_states sample [s]")
        fig.tight_layout()
        p = out_dir / f"{finger}.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
    return paths


def write_outputs(result: ReplayResult, out_dir: Path, plots: bool = True) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [write_json(result, out_dir / "actions.json"), write_csv(result, out_dir / "actions.csv")]
    if plots:
        paths += write_plots(result, out_dir)
    return paths


def format_summary(result: ReplayResult) -> str:
    s = result.summary()
    how = "on the recorded policy_action stamps" if result.timing == "recorded" else "at the policy rate"
    lines = [f"replay {result.bag}: {s['ticks']} ticks {how}"]

    def stage(name: str, what: str) -> None:
        st = s[name]
        if st["compared"]:
            worst = st["max_abs_diff"]
            verdict = "identical" if worst == 0 else f"max |difference| {worst:.3g} rad"
            lines.append(f"  {name}: {st['compared']} ticks compared with recorded {what}: {verdict} "
                         f"({st['identical']} ticks bit-identical)")
        else:
            lines.append(f"  {name}: {st['replayed']} actions replayed, no recorded {what} to compare")
        extra = []
        for key in ("missing_samples", "recorded_not_replayed", "fallbacks"):
            if st.get(key):
                extra.append(f"{st[key]} {key.replace('_', ' ')}")
        if extra:
            lines.append("    " + ", ".join(extra))

    if "policy" in s:
        stage("policy", "policy_action")
    if "adaptation" in s:
        stage("adaptation", f"joint_commands (adapter {s['adaptation']['mode']})")
    lines += [f"  note: {n}" for n in s.get("notes", [])]
    return "\n".join(lines)
