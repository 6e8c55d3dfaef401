"""hand_driver with the allegro_bridge backend against a stand-in for the Wonik ros2_control driver.

The stand-in behaves like allegro_hand_ros2 with its ForwardCommandController: it subscribes
``/allegro_hand_position_controller/commands`` (std_msgs/Float64MultiArray in the controller's
joint order) and publishes ``/joint_states`` at ~300 Hz (joint names in a shuffled order, plus a
joint that is not the hand's) with first-order joint dynamics.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rosgraph import REPO, Launched, Probe, command, positions, statuses, values
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool

from dexndm.hand.spec import load_hand_spec

pytestmark = pytest.mark.ros

# allegro_hand_ros2 ros2_controllers.yaml joint list (thumb, index, middle, ring), stated independently.
VENDOR_ORDER = [f"ah_joint{finger}{k}" for finger in range(4) for k in range(4)]
DRIVER_JS = "/hand_driver/joint_states"  # where the driver publishes when the vendor owns /joint_states


class FakeAllegroDriver:
    """The vendor side: ForwardCommandController in, joint_state_broadcaster out, first-order joints."""

    def __init__(self, q0: dict[str, float], rate: float = 300.0, tau: float = 0.05):
        self.context = Context()
        rclpy.init(context=self.context, domain_id=int(os.environ["ROS_DOMAIN_ID"]))
        self.node = rclpy.create_node("fake_allegro_driver", context=self.context)
        self.q = np.array([q0[n] for n in VENDOR_ORDER])
        self.target = self.q.copy()
        self.dq = np.zeros(16)
        self.tau = tau
        self.commands: list[tuple[float, np.ndarray]] = []
        self.bad_commands = 0
        self.publishing = True
        self._rng = np.random.default_rng(0)
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self.pub = self.node.create_publisher(JointState, "/joint_states", 10)
        self.node.create_subscription(Float64MultiArray, "/allegro_hand_position_controller/commands", self._on_cmd, 10)
        self.node.create_timer(1.0 / rate, self._step)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = False
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while not self._stop and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def _on_cmd(self, msg: Float64MultiArray):
        data = np.asarray(msg.data, dtype=float)
        with self._lock:
            self.commands.append((time.monotonic(), data))
            if data.shape == (16,) and np.all(np.isfinite(data)):
                self.target = data  # ForwardCommandController: the last command holds
            else:
                self.bad_commands += 1

    def _step(self):
        now = time.monotonic()
        with self._lock:
            dt, self._last = now - self._last, now
            old = self.q.copy()
            self.q = self.target + (self.q - self.target) * math.exp(-dt / self.tau)
            self.dq = (self.q - old) / max(dt, 1e-6)
            q, dq = self.q.copy(), self.dq.copy()
        if not self.publishing:
            return
        names = [*VENDOR_ORDER, "wrist_joint"]
        pos, vel = [*q, 0.25], [*dq, 0.0]
        perm = self._rng.permutation(len(names))
        msg = JointState()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.name = [names[k] for k in perm]
        msg.position = [float(pos[k]) for k in perm]
        msg.velocity = [float(vel[k]) for k in perm]
        msg.effort = [0.0] * len(names)
        self.pub.publish(msg)

    def by_name(self) -> dict[str, float]:
        with self._lock:
            return dict(zip(VENDOR_ORDER, self.q.tolist(), strict=True))

    def received(self) -> list[tuple[float, np.ndarray]]:
        with self._lock:
            return list(self.commands)

    def close(self):
        self._stop = True
        self._thread.join(timeout=2)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()





def stamps_of(msgs) -> np.ndarray:
    return np.array([m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for m in msgs])


def arrivals_between(probe: Probe, topic: str, t0: float, t1: float) -> int:
    return sum(1 for t in probe.arrivals[topic][:] if t0 <= t < t1)


def test_allegro_bridge_rate_commands_limits_torque_and_staleness():
    spec = load_hand_spec("allegro")
    names = spec.joint_names
    home = {n: float(v) for n, v in zip(names, spec.pose("home"), strict=True)}
    lower = dict(zip(names, spec.lower, strict=True))
    upper = dict(zip(names, spec.upper, strict=True))
    vlo, vhi = np.array([lower[n] for n in VENDOR_ORDER]), np.array([upper[n] for n in VENDOR_ORDER])
    with FakeAllegroDriver(home) as vendor, Probe("probe_allegro") as probe, \
            Launched("launch", "hand", "--hand", "allegro", "--backend", "allegro_bridge", "--duration", "19") as launch:
        probe.subscribe(JointState, DRIVER_JS, qos=500)
        probe.subscribe(JointState, "/joint_states", qos=500)
        probe.subscribe(DiagnosticArray, "/diagnostics")
        cmd = probe.publisher(JointState, "/joint_commands")
        probe.wait_for(DRIVER_JS, 20, timeout=30)
        first = probe.latest(DRIVER_JS)
        assert list(first.name) == list(names)
        truth = vendor.by_name()
        np.testing.assert_allclose(positions(first, names), [truth[n] for n in names], atol=1e-3)
        # The vendor's /joint_states carries only the vendor's samples: the driver never feeds its own input.
        assert all("wrist_joint" in m.name for m in probe.msgs["/joint_states"][:])

        # Rate from the sample stamps over 2.5 s.
        probe.clear(DRIVER_JS)
        time.sleep(2.5)
        stamps = stamps_of(probe.msgs[DRIVER_JS][:])
        rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        assert 90.0 <= rate <= 110.0, f"joint_states at {rate:.1f} Hz (configured 100 Hz)"
        assert np.all(np.diff(stamps) > 0)

        # Two joints by name move within 1 s; the others hold (a wrong command order would move others).
        before = positions(probe.latest(DRIVER_JS), names)
        j1, j2 = names[0], names[13]  # ah_joint10 (index), ah_joint01 (thumb)
        i1, i2 = spec.index_of([j1, j2])
        t1 = float(np.clip(before[i1] + 0.3, spec.lower[i1] + 0.05, spec.upper[i1] - 0.05))
        t2 = float(np.clip(before[i2] - 0.3, spec.lower[i2] + 0.05, spec.upper[i2] - 0.05))
        for _ in range(5):
            cmd.publish(command([j2, j1], [t2, t1]))
            time.sleep(0.05)
        time.sleep(0.75)
        after = positions(probe.latest(DRIVER_JS), names)
        assert abs(after[i1] - t1) < 0.02 and abs(after[i2] - t2) < 0.02, (after[[i1, i2]], t1, t2)
        others = np.setdiff1d(np.arange(spec.n), [i1, i2])
        assert np.max(np.abs(after[others] - before[others])) < 0.01

        # Bad commands: nothing outside the limits ever reaches the vendor controller; the driver runs on.
        n_before = len(vendor.received())
        probe.clear(DRIVER_JS)
        bad = [command([j1], [math.nan]), command([j1, j2], [spec.upper[i1] + 5.0, spec.lower[i2] - 5.0]),
               command(["no_such_joint"], [0.1]), command([j1, j2], [0.1]), command([j1], [math.inf])]
        for _ in range(3):
            for m in bad:
                cmd.publish(m)
                time.sleep(0.04)
        time.sleep(0.8)
        assert len(probe.msgs[DRIVER_JS]) > 80, "driver stopped publishing after bad commands"
        sent = vendor.received()
        assert len(sent) - n_before > 100  # commands flow every cycle while torque is on
        assert vendor.bad_commands == 0
        arr = np.array([d for _, d in sent])
        assert arr.shape[1] == 16 and np.all(np.isfinite(arr))
        assert np.all(arr >= vlo) and np.all(arr <= vhi)
        k1, k2 = VENDOR_ORDER.index(j1), VENDOR_ORDER.index(j2)
        clamped = arr[n_before:]
        assert np.any((clamped[:, k1] == upper[j1]) & (clamped[:, k2] == lower[j2]))  # onto the limits, exactly
        q = np.array([positions(m, names) for m in probe.msgs[DRIVER_JS][:]])
        assert np.all(q >= spec.lower - 1e-9) and np.all(q <= spec.upper + 1e-9)

        time.sleep(1.1)
        st = statuses(probe.latest("/diagnostics"))
        bridge = st["/hand_driver: allegro_bridge"]
        assert bridge.level == DiagnosticStatus.OK and "torque on" in bridge.message
        assert 250.0 < float(values(bridge)["vendor_rate_hz"]) < 350.0
        drv = values(st["/hand_driver: driver"])
        assert int(drv["rejected_commands"]) >= 9 and int(drv["clamped_targets"]) >= 2
        assert drv["joint_states_topic"] == DRIVER_JS

        # Torque off: one command that holds the measured pose, then silence; on: commands resume.
        assert probe.call(SetBool, "/hand_driver/enable_torque", SetBool.Request(data=False)).success
        t_off = time.monotonic()
        time.sleep(0.5)
        sent = vendor.received()
        assert sum(1 for t, _ in sent if t > t_off + 0.1) == 0, "commands kept flowing with torque off"
        measured = vendor.by_name()
        np.testing.assert_allclose(sent[-1][1], [np.clip(measured[n], lower[n], upper[n]) for n in VENDOR_ORDER],
                                   atol=0.01)
        assert probe.call(SetBool, "/hand_driver/enable_torque", SetBool.Request(data=True)).success
        time.sleep(0.3)
        assert sum(1 for t, _ in vendor.received() if t > t_off + 0.5) > 10

        # The vendor goes silent for 0.6 s: no stale sample is published, diagnostics say why.
        vendor.publishing = False
        t_silent = time.monotonic()
        time.sleep(0.6)
        vendor.publishing = True
        assert arrivals_between(probe, DRIVER_JS, t_silent + 0.2, t_silent + 0.6) == 0
        time.sleep(1.2)
        assert arrivals_between(probe, DRIVER_JS, t_silent + 0.7, t_silent + 1.8) > 50  # back by itself
        drv = values(statuses(probe.latest("/diagnostics"))["/hand_driver: driver"])
        assert int(drv["stale_samples"]) >= 30

        assert launch.wait(40) == 0, launch.output
    assert "torque off" in launch.output


def test_allegro_bridge_without_vendor_fails_at_configure():
    """No vendor joint_states: configure fails at once with a message that says what to start."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", "dexndm.ros.hand_driver_node", "--ros-args", "-p", "hand:=allegro",
         "-p", "backend:=allegro_bridge", "-p", "allegro_bridge.state_topic:=/no_vendor/joint_states",
         "-p", "allegro_bridge.connect_timeout:=1.0"],
        capture_output=True, text=True, timeout=60, cwd=REPO, env=env,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "no joint_states on /no_vendor/joint_states" in out and "allegro_hand_bringup" in out, out
