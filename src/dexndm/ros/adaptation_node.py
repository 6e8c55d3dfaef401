"""adaptation: sim-to-real correction between the policy and the hand (event-driven, no timer).

Subscribes ``dexndm/policy_action`` (sensor_msgs/JointState, absolute targets; stamp = the
joint_states sample the policy used), ``joint_states``, ``dexndm/wrist_orientation`` and
``dexndm/rotation_axis``; publishes ``joint_commands`` = clamp(a + correction, limits) at once for
every policy action, and ``diagnostics`` (mode, per-joint mean |correction|, fallbacks). Modes
(parameter ``mode``): ``off`` forwards the base action unchanged, ``residual`` adds the trained
residual policy, ``inversion`` inverts the joint-wise NDMs online. A model that fails to load, or a
missing history sample, falls back to forwarding with a warning. Logic: :mod:`dexndm.ndm.adaptation`.
"""

from __future__ import annotations

import os
import sys

from dexndm.ndm import DEFAULT_BOUND

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import numpy as np  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import QuaternionStamped, Vector3Stamped  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from dexndm.hand.interface import Diagnostic  # noqa: E402
from dexndm.hand.spec import load_hand_spec  # noqa: E402
from dexndm.ndm.adaptation import AdaptationRunner, build_adapter  # noqa: E402
from dexndm.ndm.adapters import MODES, OffAdapter  # noqa: E402
from dexndm.policy.metrics import parse_axis  # noqa: E402
from dexndm.policy.runner import validate_axis, validate_quat  # noqa: E402
from dexndm.ros.conversions import diagnostic_array, joint_state_msg, key_values, stamp_ns  # noqa: E402
from dexndm.ros.node_main import run_node  # noqa: E402
from dexndm.ros.params import declare  # noqa: E402


class AdaptationNode(Node):
    def __init__(self, **kwargs):
        super().__init__("adaptation", **kwargs)
        hand = declare(self, "hand", "leap", "hand description", read_only=True)
        self.mode = declare(self, "mode", "off", f"correction: {' | '.join(MODES)}", read_only=True)
        residual = declare(self, "residual", "", "residual artifact (.pt) for mode 'residual'", read_only=True)
        ndm_real = declare(self, "ndm_real", "", "NDM finetuned on real data (mode 'inversion')", read_only=True)
        ndm_sim = declare(self, "ndm_sim", "", "sim-pretrained NDM (mode 'inversion')", read_only=True)
        self.bound = declare(self, "bound", DEFAULT_BOUND, "max |correction| per joint (rad)", lo=0.0, hi=0.5)
        wrist = declare(self, "wrist", "palm_up", "wrist orientation until dexndm/wrist_orientation arrives")
        axis = declare(self, "axis", "z", "rotation axis until dexndm/rotation_axis arrives")
        policy = declare(self, "policy", "", "the policy artifact upstream (mode 'residual': warn when the "
                         "residual was trained for another one)", read_only=True)
        self.spec = load_hand_spec(hand)
        self.load_error = ""
        try:
            adapter = build_adapter(self.mode, self.spec, residual, ndm_real, ndm_sim, self.bound)
        except Exception as e:  # noqa: BLE001 - any load failure -> forward unchanged, loudly
            self.load_error = str(e)
            self.get_logger().error(f"mode '{self.mode}' unavailable ({e}); falling back to 'off'")
            adapter = OffAdapter(self.spec)
        self.active_mode = adapter.name
        from dexndm.ndm.residual import policy_mismatch

        self.policy_warning = policy_mismatch(getattr(adapter, "metadata", {}), policy)
        if self.policy_warning:
            self.get_logger().warning(self.policy_warning)
        self.runner = AdaptationRunner(self.spec, adapter, self.bound)
        from dexndm.hand.sim.backend import parse_wrist
        from dexndm.hand.sim.scene import mat_to_quat, wrist_rotation

        self.wrist_quat = validate_quat(mat_to_quat(wrist_rotation(self.spec, parse_wrist(wrist))))
        self.axis = validate_axis(parse_axis(axis))
        self.n_actions = 0
        self.n_rejected = 0
        self.last_fallback = ""
        self.pub = self.create_publisher(JointState, "joint_commands", 10)
        self.pub_diag = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self.create_subscription(JointState, "joint_states", self._on_state, 50)
        self.create_subscription(JointState, "dexndm/policy_action", self._on_action, 10)
        self.create_subscription(QuaternionStamped, "dexndm/wrist_orientation", self._on_wrist, 10)
        self.create_subscription(Vector3Stamped, "dexndm/rotation_axis", self._on_axis, 10)
        self.create_timer(1.0, self._publish_diagnostics)
        # An action can arrive before the joint_states sample it names (topics are not ordered): hold it
        # until that sample arrives, at most ``sample_wait`` seconds, then forward it uncorrected.
        self.sample_wait = declare(self, "sample_wait", 0.03, "max wait for the sample an action names (s)",
                                   lo=0.0, hi=1.0)
        self._pending: JointState | None = None
        self._pending_timer = None
        self.get_logger().info(f"adaptation mode '{self.active_mode}' (bound {self.bound} rad)")

    def _on_state(self, msg: JointState) -> None:
        try:
            self.runner.on_joint_state(msg.name, msg.position, stamp_ns(msg.header.stamp))
        except ValueError as e:
            self.get_logger().warning(f"joint_states ignored: {e}", throttle_duration_sec=2.0)
            return
        if self._pending is not None and self.runner.has_sample(stamp_ns(self._pending.header.stamp)):
            self._flush_pending()

    def _flush_pending(self) -> None:
        msg, self._pending = self._pending, None
        if self._pending_timer is not None:
            self.destroy_timer(self._pending_timer)
            self._pending_timer = None
        if msg is not None:
            self._process(msg)

    def _on_wrist(self, msg: QuaternionStamped) -> None:
        q = msg.quaternion
        try:
            self.wrist_quat = validate_quat([q.w, q.x, q.y, q.z])
        except ValueError as e:
            self.get_logger().warning(f"wrist_orientation ignored: {e}", throttle_duration_sec=2.0)

    def _on_axis(self, msg: Vector3Stamped) -> None:
        try:
            self.axis = validate_axis([msg.vector.x, msg.vector.y, msg.vector.z])
        except ValueError as e:
            self.get_logger().warning(f"rotation_axis ignored: {e}", throttle_duration_sec=2.0)

    def _on_action(self, msg: JointState) -> None:
        if self._pending is not None:  # a newer action: the older one goes out now (uncorrected if need be)
            self._flush_pending()
        if not self.runner.has_sample(stamp_ns(msg.header.stamp)) and self.sample_wait > 0:
            self._pending = msg
            self._pending_timer = self.create_timer(self.sample_wait, self._flush_pending)
            return
        self._process(msg)

    def _process(self, msg: JointState) -> None:
        s = stamp_ns(msg.header.stamp)
        try:
            out = self.runner.on_action(msg.name, msg.position, s, self.wrist_quat, self.axis)
        except ValueError as e:
            self.n_rejected += 1
            self.get_logger().warning(f"policy_action rejected: {e}", throttle_duration_sec=1.0)
            return
        if out.fallback:
            self.last_fallback = out.fallback
            self.get_logger().warning(f"forwarding uncorrected: {out.fallback}", throttle_duration_sec=2.0)
        self.n_actions += 1
        self.pub.publish(joint_state_msg(self.spec.joint_names, s, out.sent))

    def _publish_diagnostics(self) -> None:
        level = 2 if self.load_error else (1 if self.last_fallback or self.policy_warning else 0)
        msg = self.load_error or self.last_fallback or self.policy_warning or f"mode {self.active_mode}"
        vals = [("mode", self.active_mode), ("requested_mode", self.mode), ("actions", self.n_actions),
                ("policy_match", "no" if self.policy_warning else "yes or unrecorded"),
                ("policy_warning", self.policy_warning),
                ("rejected_actions", self.n_rejected), ("fallbacks", self.runner.n_fallback)]
        vals += [(f"abs_correction.{n}", f"{c:.5f}") for n, c in
                 zip(self.spec.joint_names, self.runner.abs_correction, strict=True)]
        vals.append(("abs_correction.max", f"{float(np.max(self.runner.abs_correction)):.5f}"))
        self.pub_diag.publish(diagnostic_array(self, [Diagnostic("adaptation", level, msg, key_values(vals))],
                                               self.spec.name))


def main(argv: list[str] | None = None) -> int:
    return run_node(AdaptationNode, argv)


if __name__ == "__main__":
    sys.exit(main())
