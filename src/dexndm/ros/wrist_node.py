"""wrist: moves the hand base between named orientations and reports its orientation to the policy.

Publishes ``dexndm/wrist_orientation`` (geometry_msgs/QuaternionStamped: hand base orientation
w,x,y,z in the gravity-aligned world frame; stamp = the measurement it comes from) at ``rate`` Hz
while the measurement is fresh, ``dexndm/wrist_status`` (std_msgs/String, transient local, on
change: ``waiting for measurement``, ``idle``, ``moving <pose>``, ``reached <pose>``, ``held: <why>``)
and ``diagnostics``.

Set-pose interface: the parameter ``pose`` (``ros2 param set /wrist pose palm_down``; a named pose,
or ``w,x,y,z`` for the sim and pose backends) and one std_srvs/Trigger service per named pose,
``dexndm/set_wrist_pose/<name>``. Both run the same checks; a refused request (limit, stale hand
driver, no measurement) fails the parameter set / the service with the reason, and leaves the
current motion as it is. ``~/hold`` (Trigger) stops any motion. Requests return at once; wait for
``reached <name>`` on ``dexndm/wrist_status``.

Backends (``backend``, read-only):

- ``sim``: streams ``dexndm/wrist_command`` (QuaternionStamped) at ``rate`` Hz, each step at most
  ``max_angular_speed / rate`` rad along the shortest arc; the hand driver applies it to the
  simulated hand and reports ``dexndm/sim_wrist_orientation``, which is the measurement.
- ``joint_trajectory``: one trajectory_msgs/JointTrajectory point per named pose (joint positions
  from ``config/arms/<arm>.yaml``) on ``trajectory_topic``; the measurement is the forward
  kinematics of the arm's joints in ``arm_joint_states``.
- ``pose``: streams geometry_msgs/PoseStamped flange targets (``frame_id``, arm base frame) on
  ``pose_command_topic`` like ``sim``; the measurement is the PoseStamped on ``measured_pose_topic``.

Safety: a target outside the joint limits (arm YAML) or the orientation limit
(``limit_reference`` / ``limit_max_angle_deg``) is refused, naming the limit. When the hand
driver's ``joint_states`` (``hand_timeout``) or ``dexndm/policy_action`` (``policy_timeout``) stop
after having been heard, the node holds: the arm is sent its measured pose (joint_trajectory: a
one-point trajectory of the measured joint positions), the motion is dropped. Requests are refused
while the hand driver is not heard; after a policy stop an explicit new request moves again.
"""

from __future__ import annotations

import math
import os
import sys
import time

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import numpy as np  # noqa: E402
from builtin_interfaces.msg import Duration  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped, QuaternionStamped  # noqa: E402
from rcl_interfaces.msg import SetParametersResult  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from dexndm.hand.interface import Diagnostic  # noqa: E402
from dexndm.ros.conversions import diagnostic_array, key_values  # noqa: E402
from dexndm.ros.node_main import run_node  # noqa: E402
from dexndm.ros.params import declare  # noqa: E402
from dexndm.wrist.backends import (  # noqa: E402
    JointTrajectoryWrist,
    PoseCommand,
    PoseWrist,
    QuatCommand,
    SimWrist,
    TrajectoryCommand,
)
from dexndm.wrist.poses import Freshness, OrientationLimit, WristLimitError, parse_orientation  # noqa: E402

BACKENDS = ("sim", "joint_trajectory", "pose")


def _quat_fields(msg, q) -> None:
    msg.w, msg.x, msg.y, msg.z = (float(v) for v in q)


class WristNode(Node):
    def __init__(self, **kwargs):
        super().__init__("wrist", **kwargs)
        self.p_backend = declare(self, "backend", "sim", "sim | joint_trajectory | pose", read_only=True)
        if self.p_backend not in BACKENDS:
            raise ValueError(f"backend '{self.p_backend}' unknown; valid: {', '.join(BACKENDS)}")
        hand = declare(self, "hand", "leap", "hand whose named orientations are meant (config/hands/<hand>.yaml)",
                       read_only=True)
        arm_name = declare(self, "arm", "franka_panda", "arm description config/arms/<arm>.yaml or a YAML path "
                                                       "(joint_trajectory; pose: '' = the measured pose is the hand "
                                                       "base in the world frame)", read_only=True)
        self.rate = declare(self, "rate", 50.0, "wrist_orientation rate and streaming rate (Hz)", lo=20.0, hi=1000.0)
        self.p_pose = declare(self, "pose", "", "named wrist pose (or 'w,x,y,z', sim/pose backends) to move to; "
                                                "set at run time to move; '' = stay")
        speed = declare(self, "max_angular_speed", 1.0, "hand orientation speed bound (rad/s)", lo=0.01, hi=6.0)
        joint_speed = declare(self, "max_joint_speed", 0.5, "joint_trajectory: joint speed bound (rad/s; URDF "
                                                            "velocity limits apply too)", lo=0.01, hi=10.0)
        min_duration = declare(self, "min_duration", 0.5, "joint_trajectory: shortest motion (s)", lo=0.0, hi=60.0)
        hold_duration = declare(self, "hold_duration", 0.2, "joint_trajectory: time_from_start of the hold point (s)",
                                lo=0.01, hi=5.0)
        limit_ref = declare(self, "limit_reference", "palm_up", "orientation limit reference: named pose or "
                                                                "'w,x,y,z'", read_only=True)
        limit_deg = declare(self, "limit_max_angle_deg", 180.0, "refuse orientations farther than this from "
                                                                "limit_reference (deg); 180 = no limit",
                            lo=0.0, hi=180.0, read_only=True)
        hand_timeout = declare(self, "hand_timeout", 0.5, "hold when the hand driver's joint_states stop this long "
                                                          "(s); 0 = do not watch", lo=0.0, hi=60.0)
        policy_timeout = declare(self, "policy_timeout", 0.5, "hold when dexndm/policy_action stops this long after "
                                                              "having been heard (s); 0 = do not watch", lo=0.0, hi=60.0)
        meas_timeout = declare(self, "measurement_timeout", 0.5, "stop publishing wrist_orientation (and stop "
                                                                 "moving) when the measurement is older (s)",
                               lo=0.01, hi=60.0)
        hand_js = declare(self, "hand_joint_states", "joint_states", "the hand driver's joint_states topic",
                          read_only=True)
        arm_js = declare(self, "arm_joint_states", "/joint_states", "joint_trajectory: the arm's joint_states topic",
                         read_only=True)
        traj_topic = declare(self, "trajectory_topic", "/arm_controller/joint_trajectory",
                             "joint_trajectory: the JointTrajectoryController's topic", read_only=True)
        pose_topic = declare(self, "pose_command_topic", "/cartesian_motion_controller/target_frame",
                             "pose: PoseStamped target topic (FZI cartesian controllers: /<controller>/target_frame; "
                             "MoveIt Servo 2.8+: /servo_node/pose_target_cmds)", read_only=True)
        meas_pose_topic = declare(self, "measured_pose_topic", "dexndm/arm_pose",
                                  "pose: PoseStamped of the flange in the arm base frame", read_only=True)
        self.frame_id = declare(self, "frame_id", "base_link", "pose: frame_id of the PoseStamped targets",
                                read_only=True)
        self.world_frame = declare(self, "world_frame", "world", "frame_id of wrist_orientation", read_only=True)
        position = declare(self, "pose_position", "", "pose: flange position 'x,y,z' (m, arm base frame) to hold "
                                                      "while turning; '' = where it is", read_only=True)

        from dexndm.hand.spec import load_hand_spec
        from dexndm.wrist.poses import named_orientations

        self.hand_joints = set(load_hand_spec(hand).joint_names)
        named = named_orientations(hand)
        arm = None
        if self.p_backend == "joint_trajectory" or (self.p_backend == "pose" and arm_name):
            from dexndm.wrist.arm import load_arm_config

            arm = load_arm_config(arm_name)
            if arm.hand != hand:
                raise ValueError(f"arm {arm.source} carries hand '{arm.hand}', this node is for hand '{hand}'")
        ref_label, ref_q = parse_orientation(limit_ref, named)
        limit = OrientationLimit(ref_q, math.radians(limit_deg), ref_label)
        if self.p_backend == "sim":
            self.backend = SimWrist(named, limit, speed)
        elif self.p_backend == "pose":
            pos = [float(v) for v in position.split(",")] if position.strip() else None
            if pos is not None and len(pos) != 3:
                raise ValueError(f"pose_position '{position}' must be 'x,y,z'")
            self.backend = PoseWrist(named, limit, speed, arm, pos)
        else:
            self.backend = JointTrajectoryWrist(arm, limit, speed, joint_speed, min_duration, hold_duration)

        self.hand_fresh = Freshness(f"hand driver joint_states ({self.resolve_topic_name(hand_js)})", hand_timeout)
        self.policy_fresh = Freshness(f"policy ({self.resolve_topic_name('dexndm/policy_action')})", policy_timeout)
        self.meas_fresh = Freshness("wrist measurement", meas_timeout)
        self.meas_stamp = None
        self.n_refused = 0
        self.n_holds = 0
        self.n_commands = 0
        self.last_refusal = ""
        self.status = ""
        self._pending = self.p_pose.strip()
        self._accepted = ""

        self.pub_orientation = self.create_publisher(QuaternionStamped, "dexndm/wrist_orientation", 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_status = self.create_publisher(String, "dexndm/wrist_status", latched)
        self.pub_diag = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        # Measurements and watched sources. The hand's and the arm's joint_states may share one topic.
        arm_topic = self.resolve_topic_name(arm_js)
        hand_topic = self.resolve_topic_name(hand_js)
        self.create_subscription(JointState, hand_js, self._on_hand_js, 50)
        if self.p_backend == "joint_trajectory":
            if arm_topic != hand_topic:
                self.create_subscription(JointState, arm_js, self._on_arm_js, 50)
            self.pub_cmd = self.create_publisher(JointTrajectory, traj_topic, 10)
            self.get_logger().info(f"arm {arm.name} ({arm.source}): joint states on {arm_topic}, trajectories on "
                                   f"{self.resolve_topic_name(traj_topic)}")
        elif self.p_backend == "sim":
            self.create_subscription(QuaternionStamped, "dexndm/sim_wrist_orientation", self._on_sim_wrist, 10)
            self.pub_cmd = self.create_publisher(QuaternionStamped, "dexndm/wrist_command", 10)
        else:
            self.create_subscription(PoseStamped, meas_pose_topic, self._on_pose, 10)
            self.pub_cmd = self.create_publisher(PoseStamped, pose_topic, 10)
        self._arm_topic_is_hand = arm_topic == hand_topic
        self.create_subscription(JointState, "dexndm/policy_action", self._on_policy, 10)
        for name in self.backend.pose_names:
            self.create_service(Trigger, f"dexndm/set_wrist_pose/{name}",
                                lambda req, resp, n=name: self._on_pose_service(n, resp))
        self.create_service(Trigger, "~/hold", self._on_hold_service)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(1.0 / self.rate, self._on_tick)
        self.create_timer(1.0, self._publish_diagnostics)
        self._set_status("waiting for measurement")
        self.get_logger().info(f"backend {self.p_backend}; poses {list(self.backend.pose_names)}; "
                               f"{speed:g} rad/s; services dexndm/set_wrist_pose/<pose>")

    # ---- measurements -----------------------------------------------------------------------
    def _on_hand_js(self, msg: JointState) -> None:
        if self.hand_joints.intersection(msg.name):
            self.hand_fresh.seen(time.monotonic())
        if self.p_backend == "joint_trajectory" and self._arm_topic_is_hand:
            self._on_arm_js(msg)

    def _on_arm_js(self, msg: JointState) -> None:
        if self.backend.measure(msg.name, msg.position):
            self._measured(msg.header.stamp)

    def _on_sim_wrist(self, msg: QuaternionStamped) -> None:
        q = msg.quaternion
        try:
            self.backend.measure([q.w, q.x, q.y, q.z])
        except ValueError:
            return
        self._measured(msg.header.stamp)

    def _on_pose(self, msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        pos = [p.x, p.y, p.z]
        if not np.all(np.isfinite(pos)):
            return
        try:
            self.backend.measure(pos, [q.w, q.x, q.y, q.z])
        except ValueError:
            return
        self._measured(msg.header.stamp)

    def _measured(self, stamp) -> None:
        self.meas_fresh.seen(time.monotonic())
        self.meas_stamp = stamp

    def _on_policy(self, msg: JointState) -> None:
        self.policy_fresh.seen(time.monotonic())

    # ---- requests ---------------------------------------------------------------------------
    def _request(self, text: str, via: str) -> tuple[bool, str]:
        text = str(text).strip()
        if not text:
            return True, "no pose requested"
        now = time.monotonic()
        try:
            if not self.hand_fresh.fresh(now):
                raise ValueError(f"hand driver not running: {self.hand_fresh.describe(now)}")
            if not self.meas_fresh.fresh(now):
                raise ValueError(f"no current wrist measurement: {self.meas_fresh.describe(now)}")
            acc = self.backend.request(text)
        except (WristLimitError, ValueError) as e:
            self.n_refused += 1
            self.last_refusal = f"{text}: {e}"
            self.get_logger().warning(f"wrist pose '{text}' ({via}) refused: {e}")
            return False, str(e)
        if acc.command is not None:
            self._send(acc.command)
        self._set_status(f"moving {acc.label}")
        self._accepted = acc.message
        self.get_logger().info(f"{acc.message} ({via})")
        return True, acc.message

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for p in params:
            if p.name == "pose":
                if p.type_ != Parameter.Type.STRING:
                    return SetParametersResult(successful=False, reason="pose must be a string")
                ok, msg = self._request(p.value, "parameter")
                if not ok:
                    return SetParametersResult(successful=False, reason=msg)
        return SetParametersResult(successful=True)

    def _on_pose_service(self, name: str, resp: Trigger.Response) -> Trigger.Response:
        # Through the parameter, so `ros2 param get /wrist pose` names the last accepted target.
        result = self.set_parameters([Parameter("pose", Parameter.Type.STRING, name)])[0]
        resp.success = bool(result.successful)
        resp.message = self._accepted if result.successful else result.reason
        return resp

    def _on_hold_service(self, req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        resp.success = self._hold("hold requested (~/hold)")
        resp.message = "holding the measured pose" if resp.success else "no measurement to hold"
        return resp

    def _hold(self, reason: str) -> bool:
        cmd = self.backend.hold()
        if cmd is not None:
            self._send(cmd)
        self.n_holds += 1
        self._set_status(f"held: {reason}")
        self.get_logger().warning(f"holding the wrist: {reason}")
        return cmd is not None

    # ---- commands ---------------------------------------------------------------------------
    def _send(self, cmd) -> None:
        self.n_commands += 1
        if isinstance(cmd, QuatCommand):
            m = QuaternionStamped()
            m.header.stamp = self.get_clock().now().to_msg()
            m.header.frame_id = self.world_frame
            _quat_fields(m.quaternion, cmd.quat)
        elif isinstance(cmd, PoseCommand):
            m = PoseStamped()
            m.header.stamp = self.get_clock().now().to_msg()
            m.header.frame_id = self.frame_id
            m.pose.position.x, m.pose.position.y, m.pose.position.z = (float(v) for v in cmd.position)
            _quat_fields(m.pose.orientation, cmd.quat)
        elif isinstance(cmd, TrajectoryCommand):
            m = JointTrajectory()  # header stamp 0: start now
            m.joint_names = list(cmd.joint_names)
            sec = int(cmd.duration)
            m.points = [JointTrajectoryPoint(positions=[float(v) for v in cmd.positions],
                                             velocities=[0.0] * len(cmd.positions),
                                             time_from_start=Duration(sec=sec, nanosec=int((cmd.duration - sec) * 1e9)))]
        else:
            raise TypeError(f"unknown command {cmd!r}")
        self.pub_cmd.publish(m)

    def _set_status(self, text: str) -> None:
        if text != self.status:
            self.status = text
            self.pub_status.publish(String(data=text))

    # ---- cycle ------------------------------------------------------------------------------
    def _on_tick(self) -> None:
        now = time.monotonic()
        for src in (self.hand_fresh, self.policy_fresh):
            if src.went_stale(now):
                self._hold(f"{src.describe(now)}")
        fresh = self.meas_fresh.last is not None and self.meas_fresh.fresh(now)
        if not fresh:
            if self.backend.target is not None:
                # Without a measurement no hold can be computed: stop (the stale hold command is not sent).
                self.backend.hold()
                self._set_status(f"held: {self.meas_fresh.describe(now)}")
                self.get_logger().error(f"wrist measurement lost while moving: {self.meas_fresh.describe(now)}")
            elif self.meas_fresh.last is None:
                self._set_status("waiting for measurement")
            return
        if self._pending and self.hand_fresh.fresh(now):
            text, self._pending = self._pending, ""
            self._request(text, "start parameter")
        cmd = self.backend.tick(1.0 / self.rate)
        if cmd is not None:
            self._send(cmd)
        if self.backend.target is not None and self.backend.reached():
            self._set_status(f"reached {self.backend.target_label}")
            self.backend.cancel()
        elif self.status in ("waiting for measurement", ""):
            self._set_status("idle")
        q = self.backend.orientation()
        if q is not None:
            m = QuaternionStamped()
            m.header.stamp = self.meas_stamp
            m.header.frame_id = self.world_frame
            _quat_fields(m.quaternion, q)
            self.pub_orientation.publish(m)

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        issues = []
        if self.status.startswith("held"):
            issues.append((1, self.status))
        if not self.meas_fresh.fresh(now) or self.meas_fresh.last is None:
            issues.append((2, self.meas_fresh.describe(now)))
        level = max((lvl for lvl, _ in issues), default=0)
        msg = "; ".join(m for _, m in issues) or self.status
        q = self.backend.orientation()
        values = key_values([
            ("backend", self.p_backend), ("status", self.status),
            ("orientation_wxyz", [] if q is None else np.round(q, 4).tolist()),
            ("measurement_age_s", f"{self.meas_fresh.age(now):.3f}"),
            ("hand_driver_age_s", f"{self.hand_fresh.age(now):.3f}"),
            ("policy_age_s", f"{self.policy_fresh.age(now):.3f}"),
            ("commands", self.n_commands), ("holds", self.n_holds), ("refused_requests", self.n_refused),
            ("last_refusal", self.last_refusal),
        ])
        self.pub_diag.publish(diagnostic_array(self, [Diagnostic("wrist", level, msg, values)], self.p_backend))


def main(argv: list[str] | None = None) -> int:
    return run_node(WristNode, argv)


if __name__ == "__main__":
    sys.exit(main())
