"""In-hand rotation environment on the MuJoCo hand (no ROS).

One episode: the hand starts in its grasp pose with an object from the configured set on the palm,
the wrist orientation and the target rotation axis are drawn from the configured sets (a wrist other
than palm up is reached by closing the fingers on the object and turning the hand), and the
policy acts at 20 Hz for up to ``episode_steps`` steps with relative targets
``a_t = clip(a_{t-1} + da_t / 24, limits)``. Domain randomisation follows the paper: object mass
0.01-0.05 kg, friction 0.3-3.0, a random disturbance force of magnitude 2*m resampled with
probability 0.25 per step, and joint-position observation noise.

Vectors the policy sees or emits are in the HandSpec ``policy`` ordering.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dexndm.hand.sim.mujoco_hand import MujocoHand
from dexndm.hand.sim.objects import ObjectSpec, resolve_objects
from dexndm.hand.sim.profiles import load_profile
from dexndm.hand.sim.scene import SceneConfig, is_palm_up
from dexndm.hand.spec import load_hand_spec
from dexndm.policy.actions import integrate
from dexndm.policy.history import ProprioHistory, observation, observation_size
from dexndm.policy.metrics import RotationTracker, parse_axis


@dataclass(frozen=True)
class EnvConfig:
    hand: str = "leap"
    wrists: tuple[str, ...] = ("palm_up",)
    axes: tuple[str, ...] = ("z",)
    objects: str = "regular"
    episode_steps: int = 400  # 20 s at 20 Hz
    reality: str | None = None  # None: the ideal (training) simulator
    history: int = 10
    action_scale: float = 1.0 / 24.0
    initial_pose: str = "grasp"
    settle_steps: int = 10  # control steps holding the initial pose before the episode starts
    randomize: bool = True
    mass_range: tuple[float, float] = (0.01, 0.05)
    friction_range: tuple[float, float] = (0.3, 3.0)
    size_scale_range: tuple[float, float] = (0.95, 1.05)
    obs_noise: float = 0.005  # rad, uniform +-
    disturbance_scale: float = 2.0  # force magnitude = scale * mass (N)
    disturbance_prob: float = 0.25
    fall_distance: float = 0.1  # m from the palm centre (on its grasp side)
    # An object that moves farther than this in one 50 ms control step (4 m/s: no drop from a hand is that
    # fast) was flung by a contact blow-up MuJoCo did not flag; the episode ends as ``unstable``.
    max_object_step: float = 0.2
    # The object must be resting on the hand when an episode starts, as an experimenter would check: after
    # the settle phase it is within ``rest_drift`` m of where it was placed and slower than ``rest_speed``
    # m/s, and the simulation did not blow up; otherwise it is placed again (object size, mass and
    # friction re-drawn; at most ``max_placements`` tries).
    rest_drift: float = 0.045
    rest_speed: float = 0.15
    max_placements: int = 5
    # Wrists other than palm up start the way an operator would hand the object over: placed on the palm-up
    # hand, the fingers close to the ``hold_pose`` over ``close_steps``, the wrist turns to the episode's
    # orientation over ``turn_steps`` (slerp) and holds for ``settle_steps``; the object must then be within
    # ``hold_distance`` m of the palm centre on the palm's grasp side and slower than ``rest_speed``
    # (otherwise placed again).
    hold_pose: str = "hold"
    close_steps: int = 10
    turn_steps: int = 20
    hold_distance: float = 0.07
    joint_order: tuple[str, ...] | None = None  # policy vector order; None: the HandSpec 'policy' ordering
    reward: dict = field(default_factory=lambda: dict(rot=1.0, goal=0.1, rotp=0.1, linvel=0.3, pose=0.3,
                                                     work=2.0, torque=0.1, fall=-50.0))


@dataclass
class EpisodeInfo:
    wrist: str
    axis: np.ndarray
    object: str
    mass: float
    friction: float
    size: float = 0.0  # m, the object's bounding radius this episode (size randomisation included)
    rot: float = 0.0
    ttf: float = 0.0
    rotp: float = 0.0
    fell: bool = False
    unstable: bool = False  # the simulation blew up: the episode ended there (left out of evaluation means)
    placements: int = 1  # tries until the object rested on the hand at the start
    steps: int = 0
    ret: float = 0.0


class RotationEnv:
    """Single-environment rotation task. ``step`` takes da (policy order, in [-1, 1])."""

    def __init__(self, cfg: EnvConfig | None = None, seed: int = 0):
        self.cfg = cfg or EnvConfig()
        self.spec = load_hand_spec(self.cfg.hand)
        self.order = (self.spec.ordering_from_names(self.cfg.joint_order) if self.cfg.joint_order
                      else self.spec.ordering("policy"))
        self.objects = resolve_objects(self.cfg.objects)
        self.axes = [parse_axis(a) for a in self.cfg.axes]
        self.profile = load_profile(self.cfg.reality)
        self.rng = np.random.default_rng(seed)
        self._hands: dict[str, MujocoHand] = {}
        self.hand: MujocoHand | None = None
        self.lower = self.order.from_canonical(self.spec.lower)
        self.upper = self.order.from_canonical(self.spec.upper)
        self.q_init = self.order.from_canonical(self.spec.pose(self.cfg.initial_pose))
        self.history = ProprioHistory(self.cfg.history, self.spec.n)
        self.info: EpisodeInfo | None = None

    # ---- sizes --------------------------------------------------------------------------
    @property
    def obs_size(self) -> int:
        return observation_size(self.cfg.history, self.spec.n)

    @property
    def act_size(self) -> int:
        return self.spec.n

    @property
    def dt(self) -> float:
        return 0.05

    # ---- episode ------------------------------------------------------------------------
    def _hand_for(self, obj: ObjectSpec) -> MujocoHand:
        if obj.name not in self._hands:
            # seed 0: reset() reseeds the sensor noise per episode; drawing here from self.rng would shift the
            # episode that first meets this object.
            h = MujocoHand(self.spec, SceneConfig(wrist=self.cfg.wrists[0], object=obj), profile=self.profile,
                           initial_pose=self.cfg.initial_pose, seed=0)
            h.connect()
            m = h.model
            b = h.scene.object_body
            g = int(m.body_geomadr[b])
            self._nominal = getattr(self, "_nominal", {})
            self._nominal[obj.name] = (m.geom_size[g].copy(), float(m.geom_rbound[g]), m.body_inertia[b].copy(),
                                       float(m.body_mass[b]))
            self._hands[obj.name] = h
        return self._hands[obj.name]

    def nominal_size(self, obj: ObjectSpec) -> float:
        """The object's bounding radius (m) at its catalog size (EpisodeInfo.size without randomisation)."""
        self._hand_for(obj)
        return self._nominal[obj.name][1]

    def _randomize(self, h: MujocoHand, obj: ObjectSpec) -> tuple[float, float, float]:
        """Draw this placement's object; returns (mass, friction, bounding radius)."""
        m = h.model
        b = h.scene.object_body
        g = int(m.body_geomadr[b])
        size0, rb0, inertia0, mass0 = self._nominal[obj.name]
        if not self.cfg.randomize:
            return mass0, float(m.geom_friction[g, 0]), rb0
        s = self.rng.uniform(*self.cfg.size_scale_range)
        mass = self.rng.uniform(*self.cfg.mass_range)
        fr = self.rng.uniform(*self.cfg.friction_range)
        m.geom_size[g] = size0 * s
        m.geom_rbound[g] = rb0 * s
        m.body_mass[b] = mass
        m.body_inertia[b] = inertia0 * (mass / mass0) * s * s
        m.geom_friction[g, 0] = fr
        return mass, fr, rb0 * s

    def reset(self, wrist: str | None = None, axis: np.ndarray | None = None,
              obj: ObjectSpec | None = None) -> np.ndarray:
        cfg = self.cfg
        obj = obj or self.objects[int(self.rng.integers(len(self.objects)))]
        wrist = wrist or cfg.wrists[int(self.rng.integers(len(cfg.wrists)))]
        axis = np.asarray(axis if axis is not None else self.axes[int(self.rng.integers(len(self.axes)))], float)
        h = self.hand = self._hand_for(obj)
        # The hand's sensor noise follows this env's seed, without drawing from its stream: results then do
        # not depend on which episodes a (cached, per-object) hand ran before, e.g. on the evaluation's workers.
        h.reseed(self.rng.bit_generator.seed_seq.spawn(1)[0])
        turned = not is_palm_up(self.spec, wrist)
        placements = 0
        while True:
            placements += 1
            mass, fr, size = self._randomize(h, obj)
            h.set_wrist("palm_up" if turned else wrist)
            h.reset(self.order.to_canonical(self.q_init))
            h.set_torque(True)
            resets = h.sim_resets
            for _ in range(cfg.settle_steps):
                h.step_control(h.targets)
            ok = self._resting(h, resets)
            last = placements >= cfg.max_placements
            if turned and (ok or last):  # the last try starts the episode at its wrist orientation regardless
                ok = h.grasp_and_turn(self.spec.pose(cfg.hold_pose), wrist, cfg.close_steps, cfg.turn_steps,
                                      cfg.settle_steps, cfg.hold_distance, cfg.rest_speed) and ok
                ok = ok and h.sim_resets == resets
            if ok or last:
                break
        self.a_prev = self.order.from_canonical(h.targets)
        q = self._observe_q()
        self.history.reset(q, self.a_prev)
        self.wrist_quat = h.wrist_quat()
        self.tracker = RotationTracker(axis, self.dt)
        self.tracker.update(h.object_pose()[1])
        self.info = EpisodeInfo(wrist=wrist, axis=axis, object=obj.name, mass=mass, friction=fr, size=size,
                                placements=placements)
        self._obj_pos = h.object_pose()[0].copy()
        self._force = np.zeros(3)
        self._goal_angle = np.pi / 2
        return self.observation()

    def _resting(self, h: MujocoHand, resets_before: int) -> bool:
        """Whether the object rests where it was placed after the settle phase (see EnvConfig.rest_*)."""
        from dexndm.hand.sim.scene import object_spawn_pose

        if h.sim_resets != resets_before:
            return False
        placed = object_spawn_pose(self.spec, h.scene_config, h.wrist_rotation())[0]
        pos = h.object_pose()[0]
        m = h.model
        dof = int(m.jnt_dofadr[m.body_jntadr[h.scene.object_body]])
        speed = float(np.linalg.norm(h.data.qvel[dof:dof + 3]))
        return bool(np.linalg.norm(pos - placed) <= self.cfg.rest_drift and speed <= self.cfg.rest_speed)

    def _observe_q(self) -> np.ndarray:
        q = self.order.from_canonical(self.hand.read_state().position)
        if self.cfg.obs_noise > 0:
            q = q + self.rng.uniform(-self.cfg.obs_noise, self.cfg.obs_noise, size=q.shape)
        return q

    def observation(self) -> np.ndarray:
        return observation(self.history, self.wrist_quat, self.tracker.axis)

    def _disturb(self) -> None:
        h = self.hand
        b = h.scene.object_body
        if self.rng.random() < self.cfg.disturbance_prob:
            d = self.rng.normal(size=3)
            self._force = d / np.linalg.norm(d) * self.cfg.disturbance_scale * float(h.model.body_mass[b])
        h.data.xfrc_applied[b, :3] = self._force

    def step(self, delta: np.ndarray) -> tuple[np.ndarray, float, bool, EpisodeInfo]:
        """One control step with the policy's relative action (policy order, [-1, 1])."""
        a = integrate(self.a_prev, delta, self.cfg.action_scale, self.lower, self.upper)
        return self.step_targets(a, a)

    def step_targets(self, a_sent: np.ndarray, a_base: np.ndarray) -> tuple[np.ndarray, float, bool, EpisodeInfo]:
        """Send absolute targets a_sent (policy order; clamped to the limits) while the policy's own history
        records a_base -- how an adapter's correction sits between the policy and the hand."""
        cfg = self.cfg
        h = self.hand
        a_sent = np.clip(a_sent, self.lower, self.upper)
        if cfg.disturbance_scale > 0:
            self._disturb()
        resets = h.sim_resets
        st = h.step_control(self.order.to_canonical(a_sent))
        pos = h.object_pose()[0]
        flung = bool(np.linalg.norm(pos - self._obj_pos) > cfg.max_object_step)
        self._obj_pos = pos.copy()
        if h.sim_resets != resets or flung:
            # The object was respawned (MuJoCo reset) or flung by an unflagged blow-up: end here, keep the
            # rotation measured before.
            self.info.unstable = True
            self.info.steps += 1
            self.info.ttf = self.info.steps * self.dt
            return self.observation(), 0.0, True, self.info
        q = self._observe_q()
        self.history.push(q, a_base)
        self.a_prev = a_base
        _, quat = h.object_pose()
        step_rot = self.tracker.update(quat)
        info = self.info
        info.steps += 1
        # Dropped: farther than fall_distance from the palm centre, or on the back of a turned hand (as close,
        # but not held).
        fell = not h.object_in_hand(cfg.fall_distance)
        r = self._reward(step_rot, st, fell)
        info.ret += r
        info.rot = self.tracker.rot
        info.rotp = self.tracker.rotp
        if fell:
            info.fell = True
        info.ttf = info.steps * self.dt
        done = fell or info.steps >= cfg.episode_steps
        return self.observation(), r, done, info

    def _reward(self, step_rot: float, st, fell: bool) -> float:
        w = self.cfg.reward
        h = self.hand
        v, omega = h.object_velocity()
        k = self.tracker.axis
        r_rot = np.clip(omega @ k, -0.5, 0.5)
        # Intermediate goal: a waypoint 90 degrees ahead, advanced when within 15 degrees.
        err = abs(self._goal_angle - self.tracker.rot)
        if err < np.deg2rad(15):
            self._goal_angle += np.pi / 2
        r_goal = min(1.0 / (err + 0.1), 5.0) + (1.0 if err < np.deg2rad(15) else 0.0)
        q = self.order.from_canonical(st.position)
        pen = (w["rotp"] * np.abs(np.cross(omega, k)).sum() + w["linvel"] * float(v @ v)
               + w["pose"] * float(np.sum((q - self.q_init) ** 2))
               + w["work"] * abs(float(st.effort @ st.velocity)) * self.dt + w["torque"] * float(st.effort @ st.effort))
        return float(w["rot"] * r_rot + w["goal"] * r_goal - pen + (w["fall"] if fell else 0.0))
