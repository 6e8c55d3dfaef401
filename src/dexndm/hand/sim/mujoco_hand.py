"""`sim` backend: the MuJoCo hand behind the same Hand interface as the real ones.

Time is simulation time. The ROS driver advances it in step with the wall clock
(:meth:`MujocoHand.run_until`); training and evaluation step it as fast as they can
(:meth:`MujocoHand.step_control`). Both go through the same actuator code, so a policy sees the
same dynamics live and offline.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import mujoco
import numpy as np

from dexndm.hand.interface import Diagnostic, HandState
from dexndm.hand.safety import clamp_targets
from dexndm.hand.sim.objects import ObjectSpec
from dexndm.hand.sim.profiles import IdealProfile, RealityProfile
from dexndm.hand.sim.scene import Scene, SceneConfig, build_scene, mat_to_quat, object_spawn_pose, wrist_rotation
from dexndm.hand.spec import HandSpec

CONTROL_DT = 0.05  # s, the policy's 20 Hz period


@dataclass(frozen=True)
class StartTurned:
    """A start at a wrist orientation where the object cannot rest on the palm: placed on the palm-up hand,
    it settles for ``settle_steps`` control periods, the fingers close to ``hold_pose`` (a pose name of the
    hand config) and the wrist turns to ``wrist`` (see MujocoHand.grasp_and_turn)."""

    wrist: str | tuple[float, ...]
    hold_pose: str = "hold"
    close_steps: int = 10
    turn_steps: int = 20
    settle_steps: int = 10
    hold_distance: float = 0.07  # m from the palm centre
    rest_speed: float = 0.15  # m/s


_UNSTABLE = (mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL, mujoco.mjtWarning.mjWARN_BADQACC)


class MujocoHand:
    """Simulated hand. All joint arrays are canonical order (rad, rad/s, N*m)."""

    def __init__(
        self,
        spec: HandSpec,
        scene: SceneConfig | None = None,
        profile: IdealProfile | RealityProfile | None = None,
        control_dt: float = CONTROL_DT,
        initial_pose: str | np.ndarray | None = None,
        seed: int = 0,
        start_turned: StartTurned | None = None,
    ):
        """start_turned: build the scene palm up, let the object settle on the palm, close the fingers and
        turn the wrist to ``start_turned.wrist`` at connect (how an operator hands an object to a hand that
        is not palm up); ``start_held`` then says whether the object is still held."""
        self.spec = spec
        self.start_turned = start_turned
        self.start_held: bool | None = None
        self.scene_config = scene or SceneConfig()
        self.profile = profile or IdealProfile()
        self.control_dt = float(control_dt)
        self._initial_pose = initial_pose
        self._rng = np.random.default_rng(seed)
        self.scene: Scene | None = None
        self.model: mujoco.MjModel | None = None
        self.data: mujoco.MjData | None = None
        self.torque_enabled = False
        # MuJoCo resets the whole state when the integration blows up (a NaN/huge qpos, qvel or qacc);
        # counted here, and the hand is put back at its targets with the object at its spawn pose.
        self.sim_resets = 0
        self.last_sim_reset: str = ""
        self._targets = np.zeros(spec.n)
        self._pending: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self._active_targets = np.zeros(spec.n)
        self._steps = 0
        self._setup_actuation()

    # ---- actuation ---------------------------------------------------------------------
    def _setup_actuation(self) -> None:
        p = self.profile
        n = self.spec.n
        if isinstance(p, RealityProfile):
            pj = p.per_joint(self.spec.joint_names)
            self._kp, self._kd, self._tau_max = pj["kp"], pj["kd"], pj["torque_limit"]
            self._latency = p.latency_s
            self._backlash = p.backlash_rad
        else:
            self._kp = np.full(n, p.kp)
            self._kd = np.full(n, p.kd)
            self._tau_max = np.full(n, p.torque_limit)
            self._latency = 0.0
            self._backlash = 0.0

    def _update_period_steps(self) -> int:
        """Physics steps between torque updates."""
        dt = self.scene_config.timestep
        if isinstance(self.profile, RealityProfile):
            return max(1, int(round(1.0 / (self.profile.update_hz * dt))))
        steps_per_ctrl = self.control_dt / dt
        return max(1, int(round(steps_per_ctrl / self.profile.pd_substeps)))

    def _compute_torque(self) -> np.ndarray:
        d = self.data
        q = d.qpos[self.scene.qpos_adr]
        qd = d.qvel[self.scene.dof_adr]
        err = self._active_targets - q
        if self._backlash > 0:
            # Gear play: the servo's output shaft transmits no torque within +-backlash/2 of the goal.
            half = 0.5 * self._backlash
            err = np.sign(err) * np.maximum(np.abs(err) - half, 0.0)
        tau = self._kp * err - self._kd * qd
        return np.clip(tau, -self._tau_max, self._tau_max)

    # ---- Hand interface ----------------------------------------------------------------
    def connect(self) -> None:
        self.scene = build_scene(self.spec, self.scene_config, self.profile)
        self.model = self.scene.model
        self.data = mujoco.MjData(self.model)
        self._period = self._update_period_steps()
        self._steps_per_control = max(1, int(round(self.control_dt / self.scene_config.timestep)))
        self.reset()
        st = self.start_turned
        if st is not None and self.scene.object_body is not None:
            self.set_torque(True)
            for _ in range(st.settle_steps):
                self.step_control(self._targets)
            self.start_held = self.grasp_and_turn(self.spec.pose(st.hold_pose), st.wrist, st.close_steps,
                                                  st.turn_steps, st.settle_steps, st.hold_distance, st.rest_speed)

    def grasp_and_turn(self, hold_q: np.ndarray, wrist: str | Sequence[float], close_steps: int = 10,
                       turn_steps: int = 20, settle_steps: int = 10, hold_distance: float = 0.07,
                       rest_speed: float = 0.15) -> bool:
        """Close the fingers from their targets to ``hold_q`` over ``close_steps`` control periods, turn the
        wrist from its current orientation to ``wrist`` (slerp, ``turn_steps``), hold ``settle_steps``.
        Returns whether the object is still held: within ``hold_distance`` m of the palm centre, slower
        than ``rest_speed`` m/s, and no simulation reset on the way."""
        from dexndm.wrist.kinematics import slerp

        resets = self.sim_resets
        q0 = self._targets.copy()
        q1 = self.spec.clamp(np.asarray(hold_q, dtype=float))
        for k in range(close_steps):
            self.step_control(q0 + (q1 - q0) * (k + 1) / close_steps)
        r0 = self.wrist_quat()
        r1 = mat_to_quat(wrist_rotation(self.spec, wrist))
        for k in range(turn_steps):
            self.set_wrist(tuple(slerp(r0, r1, (k + 1) / turn_steps)))
            self.step_control(q1)
        self.set_wrist(wrist)
        for _ in range(settle_steps):
            self.step_control(q1)
        if self.scene.object_body is None:
            return self.sim_resets == resets
        v, _ = self.object_velocity()
        return bool(self.sim_resets == resets and self.object_in_hand(hold_distance) and np.linalg.norm(v) <= rest_speed)

    def object_in_hand(self, distance: float = 0.07) -> bool:
        """Whether the object is within ``distance`` m of the palm centre on the palm's grasp side (an object
        that slipped through the fingers onto the back of a turned hand is as close, but not held)."""
        from dexndm.hand.sim.scene import palm_axes

        off = self.object_pose()[0] - self.scene.palm_center_world
        front = float(off @ (self.wrist_rotation() @ palm_axes(self.spec)["normal"]))
        return bool(np.linalg.norm(off) <= distance and front >= 0.0)

    def reset(self, q: np.ndarray | None = None, object_pose: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Put the hand at q (default: the initial pose) and the object at its spawn pose."""
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        # mj_resetData puts the mocap wrist back where the model was compiled: keep the current orientation.
        self.set_wrist(self.scene_config.wrist)
        if q is None:
            q = self._resolve_initial_pose()
        q = self.spec.clamp(np.asarray(q, dtype=float))
        d.qpos[self.scene.qpos_adr] = q
        if self.scene.object_qpos_adr is not None:
            if object_pose is None:
                R = self.wrist_rotation()
                object_pose = object_spawn_pose(self.spec, self.scene_config, R)
            a = self.scene.object_qpos_adr
            d.qpos[a:a + 3] = object_pose[0]
            d.qpos[a + 3:a + 7] = object_pose[1]
        self._targets = q.copy()
        self._active_targets = q.copy()
        self._pending.clear()
        self._steps = 0
        mujoco.mj_forward(m, d)

    def reseed(self, seed) -> None:
        """Restart the sensor-noise stream (an int or a numpy SeedSequence): an episode's noise then depends
        on its own seed only, not on which episodes this hand ran before."""
        self._rng = np.random.default_rng(seed)

    def _resolve_initial_pose(self) -> np.ndarray:
        ip = self._initial_pose
        if ip is None:
            ip = "home" if "home" in self.spec.poses else None
        if isinstance(ip, str):
            return self.spec.pose(ip)
        if ip is None:
            return self.spec.clamp(np.zeros(self.spec.n))
        return np.asarray(ip, dtype=float)

    def set_torque(self, enabled: bool) -> None:
        was = self.torque_enabled
        self.torque_enabled = bool(enabled)
        if self.torque_enabled and not was:
            # Take over from where the joints are, never jump to a stale target (already on: keep the
            # targets, e.g. the grip of a start_turned hand).
            q = self.data.qpos[self.scene.qpos_adr].copy()
            self._targets = q.copy()
            self._active_targets = q
            self._pending.clear()
        else:
            self.data.ctrl[self.scene.act_ids] = 0.0

    def read_state(self) -> HandState:
        d = self.data
        q = d.qpos[self.scene.qpos_adr].copy()
        if isinstance(self.profile, RealityProfile):
            if self.profile.quantization_rad > 0:
                q = np.round(q / self.profile.quantization_rad) * self.profile.quantization_rad
            if self.profile.position_noise_std > 0:
                q = q + self._rng.normal(0.0, self.profile.position_noise_std, size=q.shape)
        return HandState(
            stamp=float(d.time),
            position=q,
            velocity=d.qvel[self.scene.dof_adr].copy(),
            effort=d.ctrl[self.scene.act_ids].copy(),
        )

    def write_targets(self, targets: np.ndarray) -> np.ndarray:
        sent = clamp_targets(self.spec, targets).targets
        self._targets = sent.copy()
        if self._latency > 0:
            self._pending.append((self.data.time + self._latency, sent.copy()))
        else:
            self._active_targets = sent.copy()
        return sent

    def disconnect(self) -> None:
        if self.data is not None:
            self.set_torque(False)

    def diagnostics(self) -> list[Diagnostic]:
        return [
            Diagnostic(
                name="sim",
                level=1 if self.sim_resets else 0,
                message=f"MuJoCo {mujoco.__version__}, profile {self.profile.name}"
                        + (f"; the simulation became unstable and was reset {self.sim_resets} time(s)"
                           if self.sim_resets else ""),
                values=(("sim_time_s", f"{self.data.time:.3f}"), ("torque", str(self.torque_enabled)),
                        ("timestep_s", f"{self.scene_config.timestep:.6f}"), ("sim_resets", str(self.sim_resets)),
                        ("last_sim_reset", self.last_sim_reset)),
            )
        ]

    # ---- stepping ------------------------------------------------------------------------
    def step_physics(self, nsteps: int) -> None:
        """Advance nsteps physics steps, updating actuator torques on their own schedule."""
        m, d = self.model, self.data
        act = self.scene.act_ids
        remaining = int(nsteps)
        while remaining > 0:
            phase = self._steps % self._period
            if phase == 0:
                while self._pending and self._pending[0][0] <= d.time + 1e-12:
                    self._active_targets = self._pending.popleft()[1]
                d.ctrl[act] = self._compute_torque() if self.torque_enabled else 0.0
            k = min(remaining, self._period - phase)
            t = d.time
            mujoco.mj_step(m, d, nstep=k)
            self._steps += k
            remaining -= k
            if any(d.warning[w].number for w in _UNSTABLE):
                self._recover(t + k * m.opt.timestep)

    def _recover(self, sim_time: float) -> None:
        """After MuJoCo's automatic reset: hand at its current targets, object respawned, clock kept."""
        what = [mujoco.mjtWarning(w).name for w in _UNSTABLE if self.data.warning[w].number]
        self.sim_resets += 1
        self.last_sim_reset = f"{', '.join(what)} at t={sim_time:.3f} s"
        targets = self._targets.copy()
        self.reset(self._active_targets)
        self._targets = targets
        self.data.time = sim_time

    def step_control(self, targets: np.ndarray | None = None) -> HandState:
        """One control period: optionally write targets, advance control_dt, return the new state."""
        if targets is not None:
            self.write_targets(targets)
        self.step_physics(self._steps_per_control)
        return self.read_state()

    def run_until(self, sim_time: float) -> int:
        """Advance to sim_time (s); returns the number of physics steps taken."""
        n = int((sim_time - self.data.time) / self.scene_config.timestep + 1e-9)
        if n > 0:
            self.step_physics(n)
        return max(n, 0)

    @property
    def time(self) -> float:
        return float(self.data.time)

    @property
    def targets(self) -> np.ndarray:
        return self._targets.copy()

    # ---- scene access --------------------------------------------------------------------
    def wrist_rotation(self) -> np.ndarray:
        q = self.data.mocap_quat[self.scene.wrist_mocap]
        mat = np.zeros(9)
        mujoco.mju_quat2Mat(mat, q)
        return mat.reshape(3, 3)

    def wrist_quat(self) -> np.ndarray:
        """Hand root orientation in the world (gravity-aligned) frame, [w, x, y, z]."""
        return self.data.mocap_quat[self.scene.wrist_mocap].copy()

    def set_wrist(self, wrist: str | Sequence[float]) -> None:
        """Re-orient the hand about its palm centre (named pose or quaternion w,x,y,z)."""
        R = wrist_rotation(self.spec, wrist)
        from dexndm.hand.sim.scene import palm_axes

        center = palm_axes(self.spec)["center"]
        d = self.data
        d.mocap_quat[self.scene.wrist_mocap] = mat_to_quat(R)
        d.mocap_pos[self.scene.wrist_mocap] = self.scene.palm_center_world - R @ center
        self.scene_config = replace(self.scene_config, wrist=wrist if isinstance(wrist, str) else tuple(wrist))

    def object_pose(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Object position (m) and quaternion [w, x, y, z] in the world frame, or None."""
        if self.scene.object_body is None:
            return None
        a = self.scene.object_qpos_adr
        return self.data.qpos[a:a + 3].copy(), self.data.qpos[a + 3:a + 7].copy()

    def object_velocity(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Object linear (m/s) and angular (rad/s) velocity in the world frame, or None."""
        if self.scene.object_body is None:
            return None
        a = int(self.model.jnt_dofadr[self.model.body_jntadr[self.scene.object_body]])
        return self.data.qvel[a:a + 3].copy(), self.data.qvel[a + 3:a + 6].copy()

    def fingertips(self) -> dict[str, np.ndarray]:
        return {f: self.data.site_xpos[i].copy() for f, i in self.scene.tip_sites.items()}

    def set_object(self, obj: ObjectSpec | None) -> None:
        """Swap the object (rebuilds the model; joint state is kept)."""
        q = self.data.qpos[self.scene.qpos_adr].copy() if self.data is not None else None
        self.scene_config = replace(self.scene_config, object=obj)
        self.connect()
        if q is not None:
            self.reset(q)


class FrameRecorder:
    """Headless rendering of a run to PNG frames (and an animated GIF). Needs MUJOCO_GL=egl."""

    def __init__(self, hand: MujocoHand, out_dir: str | Path, camera: str = "front", width: int = 480,
                 height: int = 360, every: int = 1):
        self.hand = hand
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.renderer = mujoco.Renderer(hand.model, height, width)
        self.camera = camera
        self.every = max(1, int(every))
        self.frames: list[np.ndarray] = []
        self._n = 0

    def capture(self) -> None:
        self._n += 1
        if (self._n - 1) % self.every:
            return
        self.renderer.update_scene(self.hand.data, camera=self.camera)
        self.frames.append(self.renderer.render().copy())

    def close(self, gif_fps: float = 10.0) -> list[Path]:
        import imageio.v3 as iio

        paths = []
        for i, fr in enumerate(self.frames):
            p = self.out / f"frame_{i:04d}.png"
            iio.imwrite(p, fr)
            paths.append(p)
        if self.frames:
            gif = self.out / "run.gif"
            iio.imwrite(gif, np.stack(self.frames), duration=1000.0 / gif_fps, loop=0)
            paths.append(gif)
        self.renderer.close()
        return paths
