"""policy: runs a rotation policy artifact at 20 Hz on the live hand.

Subscribes ``joint_states``, ``dexndm/wrist_orientation`` (geometry_msgs/QuaternionStamped),
``dexndm/rotation_axis`` (geometry_msgs/Vector3Stamped); publishes ``dexndm/policy_action``
(sensor_msgs/JointState: absolute targets a_t by joint name; header stamp = the joint_states sample
used) and ``diagnostics``. All logic lives in :class:`dexndm.policy.runner.PolicyRunner`.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import numpy as np  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import QuaternionStamped, Vector3Stamped  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402

from dexndm.hand.interface import Diagnostic  # noqa: E402
from dexndm.hand.spec import load_hand_spec  # noqa: E402
from dexndm.policy.exported import load_policy  # noqa: E402
from dexndm.policy.metrics import parse_axis  # noqa: E402
from dexndm.policy.replay import (  # noqa: E402 - the node's defaults, shared with replay
    DEFAULT_AXIS,
    DEFAULT_RATE_HZ,
    DEFAULT_STALE_TIMEOUT,
    DEFAULT_START_POSE,
    DEFAULT_WRIST,
    make_runner,
    wrist_quat_from_text,
)
from dexndm.policy.runner import validate_axis, validate_quat  # noqa: E402
from dexndm.ros.conversions import diagnostic_array, joint_state_msg, key_values, stamp_ns  # noqa: E402
from dexndm.ros.node_main import run_node  # noqa: E402
from dexndm.ros.params import declare  # noqa: E402
from dexndm.timing import RateMonitor  # noqa: E402


def default_policy_path() -> str:
    from dexndm.policy.exported import shipped_policy

    return shipped_policy()


class PolicyNode(Node):
    def __init__(self, **kwargs):
        super().__init__("policy", **kwargs)
        path = declare(self, "policy", "", "policy artifact (.pt); '' = the shipped models/policy-leap-*.pt",
                       read_only=True) or default_policy_path()
        rate = declare(self, "rate", DEFAULT_RATE_HZ, "policy rate (Hz); the artifact's control period applies",
                       lo=1.0, hi=100.0)
        self.stale_after = declare(self, "stale_timeout", DEFAULT_STALE_TIMEOUT,
                                   "refuse to act on joint_states older than this (s)", lo=0.0, hi=10.0)
        axis = declare(self, "axis", DEFAULT_AXIS,
                       "rotation axis until dexndm/rotation_axis says otherwise (x, -y, 'x,y,z')")
        wrist = declare(self, "wrist", DEFAULT_WRIST, "wrist orientation until dexndm/wrist_orientation arrives: a "
                                                      "named pose, 'w,x,y,z', or '' to wait for the topic")
        start = declare(self, "start_pose", DEFAULT_START_POSE, "move to this pose before acting: 'trained' (the "
                                                                "artifact's initial pose; its hold pose when the wrist "
                                                                "is not palm up), a pose name, or 'none'")
        self.policy = load_policy(path)
        self.spec = load_hand_spec(self.policy.hand)
        self.runner = make_runner(self.spec, self.policy, start, self.stale_after)
        self.axis = validate_axis(parse_axis(axis))
        self.wrist_quat = self._wrist_from_param(wrist)
        self.n_bad_axis = 0
        self.n_bad_state = 0
        self.last_reason = ""
        self.n_skipped = 0
        self.phase = "wait"
        self.infer_ms: list[float] = []
        self.pub = self.create_publisher(JointState, "dexndm/policy_action", 10)
        self.pub_diag = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self.create_subscription(JointState, "joint_states", self._on_joint_states, 10)
        self.create_subscription(QuaternionStamped, "dexndm/wrist_orientation", self._on_wrist, 10)
        self.create_subscription(Vector3Stamped, "dexndm/rotation_axis", self._on_axis, 10)
        # Dead-man (teleop): while False the policy holds its last targets instead of acting.
        self.enabled = True
        self.create_subscription(Bool, "dexndm/enable", self._on_enable, 10)
        self.monitor = RateMonitor(1.0 / rate)
        self.create_timer(1.0 / rate, self._on_tick)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(f"policy {path} (hand {self.spec.name}, history {self.policy.history}, "
                               f"scale {self.policy.action_scale:.4f}); axis {self.axis.round(3).tolist()}")

    def _wrist_from_param(self, wrist: str) -> np.ndarray | None:
        return wrist_quat_from_text(self.spec, wrist)

    def _on_joint_states(self, msg: JointState) -> None:
        try:
            self.runner.update_joint_state(msg.name, msg.position, stamp_ns(msg.header.stamp))
        except ValueError as e:
            self.n_bad_state += 1
            self.get_logger().warning(f"joint_states ignored: {e}", throttle_duration_sec=2.0)

    def _on_wrist(self, msg: QuaternionStamped) -> None:
        q = msg.quaternion
        try:
            self.wrist_quat = validate_quat([q.w, q.x, q.y, q.z])
        except ValueError as e:
            self.get_logger().warning(f"wrist_orientation ignored: {e}", throttle_duration_sec=2.0)

    def _on_axis(self, msg: Vector3Stamped) -> None:
        v = msg.vector
        try:
            self.axis = validate_axis([v.x, v.y, v.z])
        except ValueError as e:
            self.n_bad_axis += 1
            self.get_logger().warning(f"rotation_axis ignored, keeping {self.axis.round(3).tolist()}: {e}",
                                      throttle_duration_sec=2.0)

    def _on_enable(self, msg: Bool) -> None:
        if bool(msg.data) != self.enabled:
            self.get_logger().info("policy " + ("enabled" if msg.data else "paused by dexndm/enable: holding"))
        self.enabled = bool(msg.data)

    def _on_tick(self) -> None:
        t0 = time.monotonic()
        self.monitor.tick(t0)
        if not self.enabled:
            self.phase = "paused"
            held = self.runner.hold()
            if held.targets is not None:
                self.pub.publish(joint_state_msg(self.spec.joint_names, held.stamp_ns, held.targets))
            return
        if self.wrist_quat is None:
            self._skip("no wrist_orientation received yet")
            return
        tick = self.runner.tick(self.get_clock().now().nanoseconds, self.wrist_quat, self.axis)
        self.phase = tick.phase
        if tick.targets is None:
            self._skip(tick.reason)
            return
        self.pub.publish(joint_state_msg(self.spec.joint_names, tick.stamp_ns, tick.targets))
        dt = time.monotonic() - t0
        self.monitor.work(dt)
        self.infer_ms.append(dt * 1e3)
        if len(self.infer_ms) > 400:
            del self.infer_ms[:200]

    def _skip(self, reason: str) -> None:
        self.n_skipped += 1
        if reason != self.last_reason:
            self.get_logger().warning(f"not acting: {reason}")
        self.last_reason = reason

    def _publish_diagnostics(self) -> None:
        st = self.monitor.stats()
        level = 0 if self.phase in ("run", "approach", "settle", "paused") else 1
        ms = np.array(self.infer_ms) if self.infer_ms else np.zeros(1)
        values = key_values([("phase", self.phase), ("rate_hz", f"{st['rate_hz']:.2f}"),
                             ("jitter_p99_ms", f"{st['jitter_p99_ms']:.3f}"), ("overruns", st["overruns"]),
                             ("tick_p50_ms", f"{np.percentile(ms, 50):.3f}"),
                             ("tick_p99_ms", f"{np.percentile(ms, 99):.3f}"), ("skipped_ticks", self.n_skipped),
                             ("last_skip_reason", self.last_reason), ("rejected_axes", self.n_bad_axis),
                             ("axis", self.axis.round(4).tolist())])
        self.pub_diag.publish(diagnostic_array(
            self, [Diagnostic("policy", level, self.last_reason if level else "running", values)], self.spec.name))


def main(argv: list[str] | None = None) -> int:
    return run_node(PolicyNode, argv)


if __name__ == "__main__":
    sys.exit(main())
