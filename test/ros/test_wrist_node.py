"""wrist node in a live graph: joint_trajectory backend against an in-test trajectory controller,
sim backend against `dexndm launch hand`."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped, QuaternionStamped, Vector3Stamped
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile
from rosgraph import REPO, Launched, Probe
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from dexndm.hand.spec import load_hand_spec
from dexndm.ros.conversions import stamp_ns
from dexndm.wrist.arm import load_arm_config
from dexndm.wrist.kinematics import quat_angle
from dexndm.wrist.poses import named_orientations

pytestmark = pytest.mark.ros


class NodeProc:
    """`python -m <module> --ros-args -p k:=v ...` with captured output."""

    def __init__(self, module: str, **params):
        args = [a for k, v in params.items() for a in ("-p", f"{k}:={v}")]
        self.proc = subprocess.Popen([sys.executable, "-m", module, "--ros-args", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                                     env=dict(os.environ), start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class FakeTrajectoryController:
    """Like a JointTrajectoryController for a position-controlled arm: takes the last point of each
    trajectory on its topic, moves the joints linearly from where they are to it over the point's
    time_from_start, and publishes joint_states at 100 Hz (remembering each sample by stamp)."""

    def __init__(self, probe: Probe, names, q0, topic="/arm_controller/joint_trajectory", js="/joint_states"):
        self.node = probe.node
        self.names = list(names)
        self.q = np.array(q0, dtype=float)
        self.start, self.goal, self.t0, self.T = self.q.copy(), self.q.copy(), 0.0, 0.0
        self.received: list[JointTrajectory] = []
        self.samples: dict[int, np.ndarray] = {}
        self.lock = threading.Lock()
        self.pub = self.node.create_publisher(JointState, js, 50)
        self.node.create_subscription(JointTrajectory, topic, self._on_traj, 10)
        self.timer = self.node.create_timer(0.01, self._tick)

    def _on_traj(self, msg: JointTrajectory) -> None:
        pt = msg.points[-1]
        idx = {n: i for i, n in enumerate(msg.joint_names)}
        with self.lock:
            self.received.append(msg)
            self.start = self.q.copy()
            self.goal = np.array([pt.positions[idx[n]] for n in self.names])
            self.T = pt.time_from_start.sec + 1e-9 * pt.time_from_start.nanosec
            self.t0 = time.monotonic()

    def _tick(self) -> None:
        with self.lock:
            a = 1.0 if self.T <= 0 else min(1.0, (time.monotonic() - self.t0) / self.T)
            self.q = self.start + a * (self.goal - self.start)
            m = JointState(name=self.names, position=self.q.tolist())
            m.header.stamp = self.node.get_clock().now().to_msg()
            self.samples[stamp_ns(m.header.stamp)] = self.q.copy()
        self.pub.publish(m)


def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise TimeoutError(what)


def _quat(msg: QuaternionStamped) -> np.ndarray:
    q = msg.quaternion
    return np.array([q.w, q.x, q.y, q.z])


def _subscribe_status(probe: Probe) -> None:
    """dexndm/wrist_status is latched (transient local): a late subscriber still gets the current status."""
    def cb(msg):
        with probe._lock:
            probe.msgs["/dexndm/wrist_status"].append(msg)

    qos = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    probe.node.create_subscription(String, "/dexndm/wrist_status", cb, qos)


def _statuses(probe: Probe) -> list[str]:
    return [m.data for m in probe.msgs["/dexndm/wrist_status"]]


def test_joint_trajectory_backend_moves_reports_fk_and_holds():
    arm = load_arm_config("franka_panda")
    hand = load_hand_spec("leap")
    named = named_orientations("leap")
    with Probe("probe_wrist_jt") as probe:
        ctl = FakeTrajectoryController(probe, arm.joint_names, arm.poses["palm_up"])
        # The hand driver's joint_states share /joint_states with the arm's (the node sorts them by name).
        hand_alive = threading.Event()
        hand_alive.set()
        hand_pub = probe.publisher(JointState, "/joint_states")

        def hand_tick():
            if hand_alive.is_set():
                hand_pub.publish(JointState(name=list(hand.joint_names), position=[0.0] * hand.n))

        probe.node.create_timer(0.02, hand_tick)
        probe.subscribe(QuaternionStamped, "/dexndm/wrist_orientation", qos=500)
        _subscribe_status(probe)
        with NodeProc("dexndm.ros.wrist_node", backend="joint_trajectory", max_joint_speed=3.0, max_angular_speed=4.0, min_duration=0.3,
                       hand_timeout=0.4) as wp:
            probe.wait_for("/dexndm/wrist_orientation", 5, timeout=30)
            # Rate >= 20 Hz (50 by default); each orientation is the FK of the joint_states sample it names.
            probe.clear("/dexndm/wrist_orientation")
            time.sleep(1.0)
            msgs = probe.msgs["/dexndm/wrist_orientation"][:]
            assert len(msgs) >= 35, f"{len(msgs)} wrist_orientation messages in 1 s"
            for m in msgs[-10:]:
                q = ctl.samples[stamp_ns(m.header.stamp)]
                assert quat_angle(_quat(m), arm.hand_quat(q)) < 1e-6
            assert quat_angle(_quat(msgs[-1]), named["palm_up"]) < math.radians(3)

            resp = probe.call(Trigger, "/dexndm/set_wrist_pose/palm_down", Trigger.Request())
            assert resp.success, resp.message
            _wait(lambda: "reached palm_down" in _statuses(probe), 15, f"never reached palm_down: {_statuses(probe)}")
            (traj,) = ctl.received
            assert list(traj.joint_names) == list(arm.joint_names) and len(traj.points) == 1
            np.testing.assert_allclose(traj.points[0].positions, arm.poses["palm_down"])
            time.sleep(0.1)
            last = probe.latest("/dexndm/wrist_orientation")
            assert quat_angle(_quat(last), named["palm_down"]) < math.radians(3)
            assert quat_angle(_quat(last), arm.hand_quat(ctl.samples[stamp_ns(last.header.stamp)])) < 1e-6

            # `ros2 param set /wrist pose ...` runs the same checks: an unknown pose is refused with the reason.
            req = SetParameters.Request(parameters=[Parameter("pose", Parameter.Type.STRING, "sideways").to_parameter_msg()])
            (res,) = probe.call(SetParameters, "/wrist/set_parameters", req).results
            assert not res.successful and "named poses" in res.reason and len(ctl.received) == 1

            # The hand driver stops mid-motion: the node re-sends the measured joints as a one-point
            # trajectory; the arm stops short of the target.
            assert probe.call(Trigger, "/dexndm/set_wrist_pose/palm_up", Trigger.Request()).success
            time.sleep(0.25)
            hand_alive.clear()
            _wait(lambda: len(ctl.received) >= 3, 5, "no hold trajectory after the hand driver stopped")
            hold = ctl.received[2]
            assert len(hold.points) == 1
            q_hold = np.array(hold.points[0].positions)
            assert not np.allclose(q_hold, arm.poses["palm_up"], atol=0.05)
            time.sleep(0.8)
            with ctl.lock:
                q_now = ctl.q.copy()
            np.testing.assert_allclose(q_now, q_hold, atol=1e-9)
            assert any(s.startswith("held: hand driver joint_states") for s in _statuses(probe))
            # While the hand driver is silent, requests are refused with the reason.
            resp = probe.call(Trigger, "/dexndm/set_wrist_pose/thumb_up", Trigger.Request())
            assert not resp.success and "hand driver" in resp.message
            assert len(ctl.received) == 3
    assert "refused" in wp.output


def test_sim_backend_turns_the_simulated_hand_smoothly():
    named = named_orientations("leap")
    speed, rate = 2.0, 50.0
    with Probe("probe_wrist_sim") as probe, \
            Launched("launch", "hand", "--object", "none", "--duration", "45") as launch:
        probe.subscribe(QuaternionStamped, "/dexndm/sim_wrist_orientation", qos=1000)
        probe.subscribe(QuaternionStamped, "/dexndm/wrist_command", qos=1000)
        probe.subscribe(QuaternionStamped, "/dexndm/wrist_orientation", qos=1000)
        _subscribe_status(probe)
        with NodeProc("dexndm.ros.wrist_node", backend="sim", max_angular_speed=speed, rate=rate) as wp:
            probe.wait_for("/dexndm/wrist_orientation", 5, timeout=40)
            probe.wait_for("/dexndm/sim_wrist_orientation", 5, timeout=10)
            start = _quat(probe.latest("/dexndm/sim_wrist_orientation"))
            assert quat_angle(start, named["palm_up"]) < math.radians(1)
            assert quat_angle(_quat(probe.latest("/dexndm/wrist_orientation")), start) < math.radians(1)
            probe.clear("/dexndm/sim_wrist_orientation")
            t0 = time.monotonic()
            resp = probe.call(Trigger, "/dexndm/set_wrist_pose/palm_down", Trigger.Request())
            assert resp.success, resp.message
            _wait(lambda: "reached palm_down" in _statuses(probe), 20, f"never reached: {_statuses(probe)}")
            elapsed = time.monotonic() - t0
            time.sleep(0.3)
            final = _quat(probe.latest("/dexndm/sim_wrist_orientation"))
            assert quat_angle(final, named["palm_down"]) < math.radians(1)
            assert quat_angle(_quat(probe.latest("/dexndm/wrist_orientation")), final) < math.radians(1)
        cmds = [_quat(m) for m in probe.msgs["/dexndm/wrist_command"]]
        # From the measured start: the first sample after the clear may already be one step into the motion.
        sims = [start] + [_quat(m) for m in probe.msgs["/dexndm/sim_wrist_orientation"]]
        launch.interrupt()
    bound = speed / rate
    # The streamed commands: palm_up -> palm_down (pi rad) in steps of at most speed / rate.
    assert len(cmds) >= math.ceil(math.pi / bound)
    assert quat_angle(cmds[0], named["palm_up"]) <= bound + 1e-6
    steps = [quat_angle(a, b) for a, b in zip(cmds, cmds[1:], strict=False)]
    assert max(steps) <= bound + 1e-6, max(steps)
    assert quat_angle(cmds[-1], named["palm_down"]) < 1e-6
    # The simulated hand followed without a jump (a few commands may land in one driver cycle when the
    # machine is loaded; a jump to the target would be pi) and took at least the time the bound allows.
    sim_steps = [quat_angle(a, b) for a, b in zip(sims, sims[1:], strict=False)]
    assert max(sim_steps) <= 4 * bound + 1e-6, max(sim_steps)
    assert sum(sim_steps) == pytest.approx(math.pi, abs=0.02)
    assert elapsed >= math.pi / speed - 0.1
    assert "moving to palm_down" in wp.output


def test_teleop_node_axis_and_deadman():
    def joy(pressed=(), axes=None):
        m = Joy(buttons=[0] * 15, axes=[0.0] * 6)
        for i in pressed:
            m.buttons[i] = 1
        for i, v in (axes or {}).items():
            m.axes[i] = v
        return m

    with Probe("probe_teleop") as probe, NodeProc("dexndm.ros.teleop_node", controller="gamepad", rate=20.0) as tp:
        probe.subscribe(Vector3Stamped, "/dexndm/rotation_axis", qos=500)
        probe.subscribe(Bool, "/dexndm/enable", qos=500)
        pub = probe.publisher(Joy, "/joy")
        probe.wait_for("/dexndm/enable", 1, timeout=30)
        assert not probe.latest("/dexndm/enable").data  # no gamepad yet: paused
        _wait(lambda: probe.node.count_subscribers("/joy") > 0, 10, "teleop does not subscribe /joy")
        # Y selects +z; the dead-man (LB) enables; the stick (pushed left) selects +y; junk never leaks.
        for m in (joy([3]), joy([3, 9]), joy([9], {2: float("nan"), 3: float("inf")}), joy([9], {2: 0.0, 3: 0.0}),
                  joy([9], {2: 1.0})):
            for _ in range(3):
                pub.publish(m)
                time.sleep(0.05)
        _wait(lambda: probe.latest("/dexndm/enable").data, 5, "dead-man held but not enabled")
        time.sleep(0.2)
        axes = [np.array([m.vector.x, m.vector.y, m.vector.z]) for m in probe.msgs["/dexndm/rotation_axis"]]
        np.testing.assert_allclose(axes[0], [0, 0, 1])
        np.testing.assert_allclose(axes[-1], [0, 1, 0])
        assert all(np.all(np.isfinite(a)) and abs(np.linalg.norm(a) - 1) < 1e-9 for a in axes)
        # The gamepad goes silent: enable drops within the Joy timeout (0.5 s) plus a republish period.
        probe.clear("/dexndm/enable")
        _wait(lambda: probe.latest("/dexndm/enable") is not None and not probe.latest("/dexndm/enable").data, 3,
              "enable stayed true after Joy stopped")
    assert "rotation axis" in tp.output


def test_pose_backend_streams_flange_targets():
    arm = load_arm_config("franka_panda")
    hand = load_hand_spec("leap")
    named = named_orientations("leap")
    speed, rate = 3.0, 50.0
    with Probe("probe_wrist_pose") as probe:
        # A cartesian controller that reaches each target at once and reports it as the measured pose.
        measured = PoseStamped()
        measured.header.frame_id = "base_link"
        measured.pose.position.x, measured.pose.position.z = 0.4, 0.5
        f = arm.flange_quat_for(named["palm_up"])
        o = measured.pose.orientation
        o.w, o.x, o.y, o.z = (float(v) for v in f)
        meas_pub = probe.publisher(PoseStamped, "/dexndm/arm_pose")
        hand_pub = probe.publisher(JointState, "/joint_states")
        targets: list[PoseStamped] = []

        def on_target(msg):
            targets.append(msg)
            measured.pose = msg.pose

        def tick():
            measured.header.stamp = probe.node.get_clock().now().to_msg()
            meas_pub.publish(measured)
            hand_pub.publish(JointState(name=list(hand.joint_names), position=[0.0] * hand.n))

        probe.node.create_subscription(PoseStamped, "/cartesian_motion_controller/target_frame", on_target, 100)
        probe.node.create_timer(0.02, tick)
        probe.subscribe(QuaternionStamped, "/dexndm/wrist_orientation", qos=500)
        _subscribe_status(probe)
        with NodeProc("dexndm.ros.wrist_node", backend="pose", max_angular_speed=speed, rate=rate,
                      limit_reference="palm_up", limit_max_angle_deg=150.0) as wp:
            probe.wait_for("/dexndm/wrist_orientation", 3, timeout=30)
            assert quat_angle(_quat(probe.latest("/dexndm/wrist_orientation")), named["palm_up"]) < 1e-6
            # palm_down is 180 deg from palm_up: outside the 150 deg orientation limit.
            resp = probe.call(Trigger, "/dexndm/set_wrist_pose/palm_down", Trigger.Request())
            assert not resp.success and "orientation limit" in resp.message and not targets
            assert probe.call(Trigger, "/dexndm/set_wrist_pose/thumb_up", Trigger.Request()).success
            _wait(lambda: "reached thumb_up" in _statuses(probe), 10, f"never reached: {_statuses(probe)}")
            time.sleep(0.2)
            assert quat_angle(_quat(probe.latest("/dexndm/wrist_orientation")), named["thumb_up"]) < math.radians(1)
    qs = [np.array([t.pose.orientation.w, t.pose.orientation.x, t.pose.orientation.y, t.pose.orientation.z])
          for t in targets]
    assert all(t.header.frame_id == "base_link" for t in targets)
    assert all((t.pose.position.x, t.pose.position.y, t.pose.position.z) == (0.4, 0.0, 0.5) for t in targets)
    assert max(quat_angle(a, b) for a, b in zip(qs, qs[1:], strict=False)) <= speed / rate + 1e-6
    assert quat_angle(qs[-1], arm.flange_quat_for(named["thumb_up"])) < 1e-6
    assert "orientation limit" in wp.output
