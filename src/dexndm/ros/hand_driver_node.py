"""hand_driver: lifecycle node that owns a hand backend.

Publishes ``joint_states`` (sensor_msgs/JointState: names from the HandSpec, position, velocity,
effort; stamp = time of the sample) at ``rate`` Hz, subscribes ``joint_commands``
(sensor_msgs/JointState, position targets by joint name, any subset), publishes ``diagnostics``.
Every command is validated and clamped to the joint limits (:mod:`dexndm.hand.safety`); a
rejected command changes nothing. When commands stop for ``command_timeout`` s the hand holds
its measured position. Torque: on at activate, off at deactivate/shutdown, and on request
(``~/enable_torque``, std_srvs/SetBool).

Samples the backend flags stale (no fresh data from the device) are not published, nor is the
same sample twice; the driver's diagnostics count them and turn WARN/ERROR while it happens. A
backend error (``HandError``, e.g. the Dynamixel hand's fault state) does not stop the node: it
reports ERROR in diagnostics, keeps publishing them and retries every cycle. Backends with
``reboot`` get ``~/reboot_faulted`` (std_srvs/Trigger): leave the fault state (bus reopened, torque
off) and reboot the servos that report a hardware error. Where a backend reserves a topic (the
Allegro bridge reads the vendor's ``/joint_states``) and this node's ``joint_states`` resolves to
it, the node publishes on ``~/joint_states`` instead, so it never feeds its own input.

Sim backend only (the wrist node's ``sim`` backend drives it): ``dexndm/wrist_command``
(geometry_msgs/QuaternionStamped, hand base orientation w,x,y,z in the world frame) re-orients the
simulated hand at once (``MujocoHand.set_wrist``; the wrist node streams small, speed-bounded steps),
and ``dexndm/sim_wrist_orientation`` (QuaternionStamped) reports the simulated hand base orientation
with every joint_states sample.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import numpy as np  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import QuaternionStamped, Vector3Stamped  # noqa: E402
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from dexndm.hand.backends import backend_module  # noqa: E402
from dexndm.hand.interface import Diagnostic, HandError  # noqa: E402
from dexndm.hand.safety import CommandRejected, command_from_named  # noqa: E402
from dexndm.hand.spec import load_hand_spec  # noqa: E402
from dexndm.policy.metrics import ObjectRotationReport, parse_axis  # noqa: E402
from dexndm.ros.conversions import diagnostic_array, joint_state_msg, key_values, time_msg  # noqa: E402
from dexndm.ros.node_main import run_node  # noqa: E402
from dexndm.ros.params import declare, declare_table  # noqa: E402
from dexndm.timing import RateMonitor  # noqa: E402

ROS_BACKENDS = ("allegro_bridge",)


class HandDriverNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("hand_driver", **kwargs)
        self.p_hand = declare(self, "hand", "leap", "hand description: config/hands/<hand>.yaml or a YAML path",
                              read_only=True)
        self.p_backend = declare(self, "backend", "sim", "sim | dynamixel | allegro_bridge", read_only=True)
        self.p_rate = declare(self, "rate", 100.0, "joint_states rate and control cycle (Hz)", lo=1.0, hi=2000.0)
        self.p_timeout = declare(self, "command_timeout", 0.5,
                                 "hold the measured position when no command arrived for this long (s); 0 disables",
                                 lo=0.0, hi=60.0)
        self.p_diag_rate = declare(self, "diagnostics_rate", 1.0, "diagnostics publish rate (Hz)", lo=0.1, hi=50.0)
        self.p_autostart = declare(self, "autostart", True, "configure and activate at start (no lifecycle manager)")
        self.p_metrics_axis = declare(self, "metrics_axis", "z", "sim only: axis for the object rotation report "
                                                                "(dexndm/rotation_axis overrides it)")
        self.p_metrics_window = declare(self, "metrics_window_s", 20.0, "sim only: the rotation report counts this "
                                        "many seconds from the first joint_commands (an evaluation episode); "
                                        "0 = until shutdown", lo=0.0, hi=3600.0)
        if self.p_backend in ROS_BACKENDS:
            from dexndm.ros import allegro_bridge

            self._backend_mod = allegro_bridge
        else:
            self._backend_mod = backend_module(self.p_backend)
        self.backend_options = declare_table(self, self.p_backend, self._backend_mod.PARAMETERS)
        self.spec = None
        self.hand = None
        self._timer = None
        self._diag_timer = None
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.n_rejected = 0
        self.n_clamped = 0
        self.n_commands = 0
        self.n_stale = 0
        self.n_watchdog = 0
        self.last_rejection = ""
        self.watchdog_active = False
        self.n_published = 0
        self.n_repeated = 0
        self.n_hand_errors = 0
        self.hand_error = ""
        self.last_hand_error = ""
        self._last_sample_stamp: float | None = None
        self._last_fresh: float | None = None
        self._diag_marks = (0, 0)  # (stale, published) at the previous diagnostics message
        self._diag_time = time.monotonic()
        self._last_cmd_time: float | None = None
        self._sim_resyncs = 0
        self._sim_resets_logged = 0
        self._rtf_window: list[tuple[float, float]] = []

    # ---- lifecycle -------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.spec = load_hand_spec(self.p_hand)
            if self.p_backend in ROS_BACKENDS:
                self.hand = self._backend_mod.from_options(self.spec, self.backend_options, node=self)
            else:
                self.hand = self._backend_mod.from_options(self.spec, self.backend_options)
            self._check_backend_timing()
            self.hand.connect()
            held = getattr(self.hand, "start_held", None)
            if held is not None:  # sim: the object was handed over palm up, then the wrist turned
                turned = self.hand.start_turned.wrist
                if held:
                    self.get_logger().info(f"object grasped palm up and held through the turn to {turned}")
                else:
                    self.get_logger().warning(f"object grasped palm up but not held through the turn to {turned}")
        except Exception as e:  # noqa: BLE001 - report any backend failure as a failed transition
            self.get_logger().error(f"configure failed: {e}")
            self.hand = None
            return TransitionCallbackReturn.FAILURE
        self.joint_states_topic = self._joint_states_topic()
        self.pub_js = self.create_lifecycle_publisher(JointState, self.joint_states_topic, 10)
        self.pub_diag = self.create_lifecycle_publisher(DiagnosticArray, "diagnostics", 10)
        self.sub_cmd = self.create_subscription(JointState, "joint_commands", self._on_command, 10)
        self.srv_torque = self.create_service(SetBool, "~/enable_torque", self._on_enable_torque)
        self.rotation = None
        if hasattr(self.hand, "object_pose") and self.hand.object_pose() is not None:
            self.rotation = ObjectRotationReport(self.hand, parse_axis(self.p_metrics_axis), 1.0 / self.p_rate,
                                                 window_s=self.p_metrics_window)
            self.create_subscription(Vector3Stamped, "dexndm/rotation_axis", self._on_axis, 10)
        self.pub_wrist = None
        if hasattr(self.hand, "set_wrist"):  # sim: the wrist node turns the simulated hand (see module doc)
            self.pub_wrist = self.create_lifecycle_publisher(QuaternionStamped, "dexndm/sim_wrist_orientation", 10)
            self.create_subscription(QuaternionStamped, "dexndm/wrist_command", self._on_wrist_command, 10)
        if hasattr(self.hand, "reboot"):
            self.srv_reboot = self.create_service(Trigger, "~/reboot_faulted", self._on_reboot)
        self._targets = self.hand.read_state().position.copy()
        self.monitor = RateMonitor(1.0 / self.p_rate)
        self.get_logger().info(
            f"configured: hand={self.spec.name} ({self.spec.n} joints) backend={self.p_backend} rate={self.p_rate} Hz"
        )
        return TransitionCallbackReturn.SUCCESS

    def _check_backend_timing(self) -> None:
        """A backend with a bus watchdog (Dynamixel) needs a control cycle well inside it while torque is on."""
        watchdog_ms = float(getattr(getattr(self.hand, "config", None), "watchdog_ms", 0.0) or 0.0)
        period_ms = 1000.0 / self.p_rate
        if watchdog_ms > 0 and 2.0 * period_ms > watchdog_ms:
            raise ValueError(f"rate {self.p_rate:g} Hz (period {period_ms:g} ms) is too slow for the servos' bus "
                             f"watchdog of {watchdog_ms:g} ms: raise rate or {self.p_backend}.watchdog_ms")

    def _joint_states_topic(self) -> str:
        """'joint_states', or '~/joint_states' where that would publish on a topic the backend reads."""
        reserved = set(getattr(self.hand, "reserved_topics", ()))
        resolved = self.resolve_topic_name("joint_states")
        if resolved not in reserved:
            return "joint_states"
        private = self.resolve_topic_name("~/joint_states")
        self.get_logger().warning(
            f"joint_states resolves to {resolved}, which the {self.p_backend} backend reads from the vendor driver; "
            f"publishing this driver's joint_states on {private} instead (start the launch in a namespace, e.g. "
            "--namespace allegro, to keep the driver's stream on joint_states)"
        )
        return "~/joint_states"

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        st = self.hand.read_state()
        self._targets = self.spec.clamp(st.position)  # hold where we are
        if getattr(self.hand, "start_held", None) is not None and getattr(self.hand, "torque_enabled", False):
            # A sim hand that was handed the object and turned keeps its grip: holding the measured pose would
            # let the fingers give way under the object until the policy's first command.
            self._targets = self.spec.clamp(self.hand.targets)
        try:
            self.hand.set_torque(True)
        except HandError as e:
            self.get_logger().error(f"activate failed: torque on refused: {e}")
            return TransitionCallbackReturn.FAILURE
        self._wall0 = time.monotonic()
        self._sim0 = getattr(self.hand, "time", 0.0)
        self._reset_counters()
        self._timer = self.create_timer(1.0 / self.p_rate, self._on_tick)
        self._diag_timer = self.create_timer(1.0 / self.p_diag_rate, self._publish_diagnostics)
        self.get_logger().info("active: torque on")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_timers()
        if self.hand is not None:
            self.hand.set_torque(False)
        self.get_logger().info("inactive: torque off")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _stop_timers(self) -> None:
        for t in (self._timer, self._diag_timer):
            if t is not None:
                self.destroy_timer(t)
        self._timer = self._diag_timer = None

    def _release(self) -> None:
        """Torque off and release the device. Safe to call repeatedly and after errors."""
        self._stop_timers()
        if getattr(self, "rotation", None) is not None and self.rotation.steps:
            self.get_logger().info(self.rotation.summary())
        if self.hand is not None:
            try:
                self.hand.disconnect()
                self.get_logger().info("torque off, device released")
            finally:
                self.hand = None

    # ---- callbacks -------------------------------------------------------------------------
    def _on_command(self, msg: JointState) -> None:
        if self.hand is None:
            return
        try:
            res = command_from_named(self.spec, msg.name, msg.position, self._targets)
        except CommandRejected as e:
            self.n_rejected += 1
            self.last_rejection = str(e)
            self.get_logger().warning(f"joint_commands rejected: {e}", throttle_duration_sec=1.0)
            return
        if res.n_clamped:
            self.n_clamped += res.n_clamped
            self.get_logger().warning(
                f"joint_commands: {res.n_clamped} target(s) outside joint limits clamped", throttle_duration_sec=1.0
            )
        self._targets = res.targets
        self.n_commands += 1
        if self._last_cmd_time is None and getattr(self, "rotation", None) is not None:
            self.rotation.start()  # the report counts from the first command, as an episode does
        self._last_cmd_time = time.monotonic()
        self.watchdog_active = False

    def _on_tick(self) -> None:
        t_start = time.monotonic()
        self.monitor.tick(t_start)
        hand = self.hand
        if hand is None:
            return
        try:
            self._cycle(hand, t_start)
        except HandError as e:
            # E.g. the Dynamixel hand's fault state: the backend has already applied its fault_action;
            # the node stays up, reports it and retries each cycle (~/reboot_faulted recovers).
            self.n_hand_errors += 1
            text = str(e)
            if text != self.hand_error:
                self.get_logger().error(f"hand backend: {text}")
            self.hand_error = self.last_hand_error = text
        else:
            if self.hand_error:
                self.get_logger().info(f"hand backend working again (was: {self.hand_error})")
                self.hand_error = ""
        self.monitor.work(time.monotonic() - t_start)

    def _cycle(self, hand, t_start: float) -> None:
        if (self.p_timeout > 0 and self._last_cmd_time is not None and not self.watchdog_active
                and t_start - self._last_cmd_time > self.p_timeout):
            # Commands stopped: hold the measured position instead of chasing a stale target.
            self._targets = self.spec.clamp(hand.read_state().position)
            self.watchdog_active = True
            self.n_watchdog += 1
            self.get_logger().warning(f"no joint_commands for {self.p_timeout:.2f} s: holding position")
        hand.write_targets(self._targets)
        if hasattr(hand, "run_until"):
            self._advance_sim(t_start)
            if self.rotation is not None:
                self.rotation.update()
        state = hand.read_state()
        if state.stale:
            self.n_stale += 1  # never published: the values are not from this cycle
        elif state.stamp == self._last_sample_stamp:
            self.n_repeated += 1  # the device has no newer sample than the one already published
        else:
            self._last_sample_stamp = state.stamp
            self._last_fresh = time.monotonic()
            self.n_published += 1
            stamp = self.get_clock().now().nanoseconds - int(state.age * 1e9)
            self.pub_js.publish(
                joint_state_msg(self.spec.joint_names, stamp, state.position, state.velocity, state.effort)
            )
            if self.pub_wrist is not None:
                w = QuaternionStamped()
                w.header.stamp = time_msg(stamp)
                w.header.frame_id = "world"
                w.quaternion.w, w.quaternion.x, w.quaternion.y, w.quaternion.z = (float(v) for v in hand.wrist_quat())
                self.pub_wrist.publish(w)

    def _advance_sim(self, now: float) -> None:
        """Keep simulation time in step with the wall clock."""
        hand = self.hand
        target = self._sim0 + (now - self._wall0)
        if target - hand.time > 0.25:
            # Fell behind (CPU starved): resynchronise instead of a burst of catch-up steps.
            self._sim_resyncs += 1
            self._sim0, self._wall0 = hand.time, now
            target = hand.time + 1.0 / self.p_rate
        hand.run_until(target)
        self._rtf_window.append((now, hand.time))
        if len(self._rtf_window) > 200:
            self._rtf_window.pop(0)

    def _on_axis(self, msg: Vector3Stamped) -> None:
        v = np.array([msg.vector.x, msg.vector.y, msg.vector.z])
        if np.all(np.isfinite(v)) and np.linalg.norm(v) > 1e-6 and self.rotation is not None:
            self.rotation.set_axis(v)

    def _on_wrist_command(self, msg: QuaternionStamped) -> None:
        q = np.array([msg.quaternion.w, msg.quaternion.x, msg.quaternion.y, msg.quaternion.z])
        if self.hand is None or not np.all(np.isfinite(q)) or np.linalg.norm(q) < 1e-6:
            self.get_logger().warning(f"wrist_command ignored: not a quaternion {q.tolist()}", throttle_duration_sec=1.0)
            return
        self.hand.set_wrist(tuple(q / np.linalg.norm(q)))

    def _on_enable_torque(self, req: SetBool.Request, resp: SetBool.Response) -> SetBool.Response:
        if self.hand is None:
            resp.success, resp.message = False, "not configured"
            return resp
        try:
            if req.data:
                self._targets = self.spec.clamp(self.hand.read_state().position)
            self.hand.set_torque(bool(req.data))
        except HandError as e:
            resp.success, resp.message = False, str(e)
            return resp
        resp.success, resp.message = True, f"torque {'on' if req.data else 'off'}"
        return resp

    def _on_reboot(self, req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        """Leave the backend's fault state (``recover``: torque stays off) and reboot the servos that
        report a hardware error (``reboot(names)``: they hold their target again if torque is on)."""
        hand = self.hand
        if hand is None:
            resp.success, resp.message = False, "not configured"
            return resp
        done = []
        try:
            if getattr(hand, "fault", "") and hasattr(hand, "recover"):
                hand.recover()
                self._targets = self.spec.clamp(hand.read_state().position)
                done.append("left the fault state (bus reopened and reconfigured); torque is off: "
                            "call ~/enable_torque to hold again")
            names = list(hand.faulted_joints()) if hasattr(hand, "faulted_joints") else []
            if names:
                hand.reboot(names)
                done.append(f"rebooted {names}")
        except (HandError, ValueError) as e:
            resp.success, resp.message = False, "; ".join([*done, f"failed: {e}"])
            return resp
        resp.success = True
        resp.message = "; ".join(done) or "nothing to do: no fault state and no servo reports a hardware error"
        self.get_logger().info(f"reboot_faulted: {resp.message}")
        return resp

    def _publish_diagnostics(self) -> None:
        if self.hand is None:
            return
        st = self.monitor.stats()
        now = time.monotonic()
        stale_mark, published_mark = self._diag_marks
        stale_recent, published_recent = self.n_stale - stale_mark, self.n_published - published_mark
        window = now - self._diag_time
        self._diag_marks, self._diag_time = (self.n_stale, self.n_published), now
        issues: list[tuple[int, str]] = []
        if st["rate_hz"] < 0.9 * self.p_rate:
            issues.append((1, f"rate {st['rate_hz']:.1f} Hz below {self.p_rate:.0f} Hz"))
        if self.watchdog_active:
            issues.append((1, "no commands: holding position"))
        if self.hand_error:
            issues.append((2, f"backend error: {self.hand_error}"))
        elif stale_recent and not published_recent:
            issues.append((2, f"no fresh samples for {window:.1f} s: {stale_recent} stale sample(s) not published"))
        elif stale_recent:
            issues.append((1, f"{stale_recent} stale sample(s) in {window:.1f} s not published"))
        level = max((lvl for lvl, _ in issues), default=0)
        msg = "; ".join(m for _, m in sorted(issues, key=lambda x: -x[0])) or "ok"
        fresh_age = now - self._last_fresh if self._last_fresh is not None else float("nan")
        values = [
            ("rate_hz", f"{st['rate_hz']:.2f}"),
            ("period_p50_ms", f"{st['period_p50_ms']:.3f}"),
            ("jitter_p99_ms", f"{st['jitter_p99_ms']:.3f}"),
            ("overruns", st["overruns"]),
            ("load", f"{st['load']:.3f}"),
            ("commands", self.n_commands),
            ("clamped_targets", self.n_clamped),
            ("rejected_commands", self.n_rejected),
            ("last_rejection", self.last_rejection),
            ("stale_samples", self.n_stale),
            ("published_samples", self.n_published),
            ("repeated_samples", self.n_repeated),
            ("last_fresh_age_s", f"{fresh_age:.3f}"),
            ("backend_errors", self.n_hand_errors),
            ("last_backend_error", self.last_hand_error),
            ("joint_states_topic", self.resolve_topic_name(self.joint_states_topic)),
            ("watchdog_holds", self.n_watchdog),
        ]
        if self.rotation is not None:
            values += list(self.rotation.values())
        if len(self._rtf_window) > 2:
            (w0, s0), (w1, s1) = self._rtf_window[0], self._rtf_window[-1]
            values.append(("real_time_factor", f"{(s1 - s0) / max(w1 - w0, 1e-9):.3f}"))
            values.append(("sim_resyncs", self._sim_resyncs))
        diags = [Diagnostic("driver", level, msg, key_values(values))]
        resets = getattr(self.hand, "sim_resets", 0)
        if resets > self._sim_resets_logged:
            self._sim_resets_logged = resets
            self.get_logger().warning(f"the simulation became unstable and was reset ({self.hand.last_sim_reset}); "
                                      "hand back at its targets, object respawned")
        if hasattr(self.hand, "diagnostics"):
            diags += list(self.hand.diagnostics())
        self.pub_diag.publish(diagnostic_array(self, diags, self.spec.name))


def _start(node: HandDriverNode) -> bool:
    if not node.p_autostart:
        return True
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        node.get_logger().fatal("configure failed; exiting")
        return False
    if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
        node.get_logger().fatal("activate failed; exiting")
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    return run_node(HandDriverNode, argv, start=_start, release=lambda n: n._release())


if __name__ == "__main__":
    sys.exit(main())
