"""A Hand driven through a running hand driver node, and the wrist node's set-pose interface.

``dexndm collect --backend ros`` uses this to collect Chaos Box data in a robot cell: the hand
driver (any backend: sim, dynamixel, allegro_bridge) and the wrist node (sim, joint_trajectory or
pose backend) are already up (``dexndm launch collect``); the collector only talks to them:

- ``joint_states`` in: the latest sample is ``read_state()`` (canonical order by joint name; a
  sample older than ``stale_after`` s is refused with an error naming the topic, so a collection
  stops instead of recording a frozen hand);
- ``joint_commands`` out: ``write_targets()`` (clamped to the joint limits here as well; the driver
  validates again);
- ``dexndm/set_wrist_pose/<name>`` (std_srvs/Trigger) and ``dexndm/wrist_status`` (``reached <name>``)
  move the arm between wrist orientations; ``dexndm/wrist_orientation`` is the measured orientation
  recorded in each episode's metadata.

Torque belongs to the driver (on at activate). ``set_torque(False)`` asks the driver's
``<driver>/enable_torque`` service (std_srvs/SetBool) to let the hand go limp, ``set_torque(True)``
turns it back on the same way (otherwise it only checks that the driver is heard).
``max_temperature_c()`` is the hottest motor's ``temperature_c`` in the driver's ``diagnostics``
(backends that report temperatures: dynamixel), so a collection pauses on over-temperature here as it
does on a directly attached hand. The node spins in a background thread.
"""

from __future__ import annotations

import os
import threading
import time

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import math  # noqa: E402

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import QuaternionStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from dexndm.hand.interface import HandError, HandState  # noqa: E402
from dexndm.hand.safety import clamp_targets  # noqa: E402
from dexndm.hand.spec import HandSpec  # noqa: E402
from dexndm.ros.conversions import joint_state_msg  # noqa: E402


class RosHand:
    """The Hand interface over a hand driver node's topics (see module doc)."""

    # A motor temperature older than this (s) no longer counts (the driver publishes diagnostics at 1 Hz by
    # default and reads temperatures every few seconds).
    TEMPERATURE_MAX_AGE_S = 15.0
    DIAGNOSTICS_WAIT_S = 3.0

    def __init__(self, spec: HandSpec, namespace: str = "", stale_after: float = 0.5, wait_s: float = 20.0,
                 driver: str = "hand_driver"):
        self.spec = spec
        self.driver = driver.strip("/")
        self._temperatures: dict[str, tuple[float, float]] = {}  # diagnostic status name -> (degC, received at)
        self._torque_off = False
        self._diagnostics_heard = False
        self.namespace = namespace.strip("/")
        self.stale_after = stale_after
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._state: HandState | None = None
        self._got_at = 0.0
        self._wrist_quat: np.ndarray | None = None
        self._wrist_status = ""
        self._node = None
        self._executor = None
        self._thread = None
        self._own_context = False

    # ---- Hand interface -------------------------------------------------------------------------
    def connect(self) -> None:
        if not rclpy.ok():
            rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
            self._own_context = True
        self._node = rclpy.create_node(f"dexndm_collector_{os.getpid()}", namespace=self.namespace or None)
        n = self._node
        self._pub = n.create_publisher(JointState, "joint_commands", 10)
        n.create_subscription(JointState, "joint_states", self._on_js, 50)
        n.create_subscription(QuaternionStamped, "dexndm/wrist_orientation", self._on_wrist, 10)
        n.create_subscription(DiagnosticArray, "diagnostics", self._on_diagnostics, 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        n.create_subscription(String, "dexndm/wrist_status", self._on_wrist_status, latched)
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(n)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()
        self._wait(lambda: self._state is not None,
                   f"no joint_states from the hand driver on '{self._topic('joint_states')}' within {self.wait_s:.0f} s "
                   f"(start it first: dexndm launch collect ...)")
        # The driver's diagnostics (motor temperatures on hardware) come about once a second: give the first
        # one a moment so the thermal check before the first episode already knows them. No error without.
        end = time.monotonic() + min(self.wait_s, self.DIAGNOSTICS_WAIT_S)
        while not self._diagnostics_heard and time.monotonic() < end:
            time.sleep(0.02)

    def set_torque(self, enabled: bool) -> None:
        if enabled and not self._torque_off:
            self.read_state()  # raises when the driver is not heard
            return
        srv = f"{self.driver}/enable_torque"
        cli = self._node.create_client(SetBool, srv)
        try:
            self._await_service(cli, srv, "hand driver service")
            res = self._call(cli, srv, SetBool.Request(data=bool(enabled)), time.monotonic() + self.wait_s)
            if not res.success:
                raise HandError(f"hand driver refused torque {'on' if enabled else 'off'}: {res.message}")
            self._torque_off = not enabled
        finally:
            self._node.destroy_client(cli)

    def max_temperature_c(self) -> float | None:
        """The hottest motor's temperature (degC) in the driver's recent diagnostics; None when the driver
        reports no temperatures (simulated hand) or none lately."""
        now = time.monotonic()
        with self._lock:
            recent = [t for t, at in self._temperatures.values() if now - at < self.TEMPERATURE_MAX_AGE_S]
        return max(recent) if recent else None

    def read_state(self) -> HandState:
        with self._lock:
            st, got = self._state, self._got_at
        if st is None:
            raise HandError(f"no joint_states on '{self._topic('joint_states')}' yet")
        age = time.monotonic() - got
        if age > self.stale_after:
            raise HandError(f"joint_states on '{self._topic('joint_states')}' stale for {age:.2f} s "
                            f"(> {self.stale_after} s): is the hand driver running?")
        return st

    def write_targets(self, targets: np.ndarray) -> np.ndarray:
        t = clamp_targets(self.spec, np.asarray(targets, float)).targets
        self._pub.publish(joint_state_msg(self.spec.joint_names, time.time_ns(), t))
        return t

    def disconnect(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._node is not None:
            self._node.destroy_node()
            self._node = None
        if self._own_context:
            rclpy.try_shutdown()
            self._own_context = False

    # ---- wrist ------------------------------------------------------------------------------------
    def wrist_quat(self) -> np.ndarray | None:
        """The wrist node's last measured orientation (w, x, y, z), or None when none was heard."""
        with self._lock:
            return None if self._wrist_quat is None else self._wrist_quat.copy()

    def move_wrist(self, pose: str, hold: np.ndarray, timeout: float = 60.0, period: float = 0.05) -> None:
        """Ask the wrist node for a named pose and wait for ``reached <pose>``, holding the hand at ``hold``."""
        srv = f"dexndm/set_wrist_pose/{pose}"
        cli = self._node.create_client(Trigger, srv)
        try:
            self._await_service(cli, srv, "wrist node service",
                                f" (is the wrist node up, and is '{pose}' one of its named poses?)")
            end = time.monotonic() + self.wait_s
            while True:
                with self._lock:
                    self._wrist_status = ""
                res = self._call(cli, srv, Trigger.Request(), end, period, while_waiting=lambda: self.write_targets(hold))
                if res.success:
                    break
                # Just after start-up the wrist node may not have heard the driver or the arm yet
                # (its subscriptions match a moment after ours): ask again until wait_s is spent.
                if "nothing received yet" not in res.message or time.monotonic() > end:
                    raise HandError(f"wrist pose '{pose}' refused by the wrist node: {res.message}")
                self.write_targets(hold)
                time.sleep(0.2)
            end = time.monotonic() + timeout
            while True:
                with self._lock:
                    status = self._wrist_status
                if status == f"reached {pose}":
                    return
                if status.startswith("held"):
                    raise HandError(f"wrist stopped on the way to '{pose}': {status}")
                if time.monotonic() > end:
                    raise HandError(f"wrist did not reach '{pose}' within {timeout:.0f} s (status '{status}')")
                self.write_targets(hold)
                self.read_state()
                time.sleep(period)
        finally:
            self._node.destroy_client(cli)

    # ---- callbacks ------------------------------------------------------------------------------
    def _on_js(self, msg: JointState) -> None:
        idx = {name: i for i, name in enumerate(msg.name)}
        missing = [j for j in self.spec.joint_names if j not in idx]
        if missing or len(msg.position) != len(msg.name):
            return
        order = [idx[j] for j in self.spec.joint_names]
        pos = np.asarray(msg.position, float)[order]
        vel = np.asarray(msg.velocity, float)[order] if len(msg.velocity) == len(msg.name) else np.zeros(len(order))
        eff = np.asarray(msg.effort, float)[order] if len(msg.effort) == len(msg.name) else np.zeros(len(order))
        stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        with self._lock:
            self._state = HandState(stamp=stamp, position=pos, velocity=vel, effort=eff)
            self._got_at = time.monotonic()

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        now = time.monotonic()
        self._diagnostics_heard = True
        for st in msg.status:
            for kv in st.values:
                if kv.key != "temperature_c":
                    continue
                try:
                    t = float(kv.value)
                except ValueError:
                    continue
                if math.isfinite(t):
                    with self._lock:
                        self._temperatures[st.name] = (t, now)

    def _on_wrist(self, msg: QuaternionStamped) -> None:
        q = msg.quaternion
        with self._lock:
            self._wrist_quat = np.array([q.w, q.x, q.y, q.z])

    def _on_wrist_status(self, msg: String) -> None:
        with self._lock:
            self._wrist_status = msg.data

    def _await_service(self, cli, srv: str, what: str, hint: str = "") -> None:
        if not cli.wait_for_service(timeout_sec=self.wait_s):
            raise HandError(f"{what} '{self._topic(srv)}' not available within {self.wait_s:.0f} s{hint}")

    def _call(self, cli, srv: str, request, deadline: float, period: float = 0.02, while_waiting=None):
        """Call a service (the executor thread answers it) and wait for the response until ``deadline``."""
        fut = cli.call_async(request)
        while not fut.done():
            if time.monotonic() > deadline:
                raise HandError(f"'{self._topic(srv)}' did not answer within {self.wait_s:.0f} s")
            if while_waiting is not None:
                while_waiting()
            time.sleep(period)
        return fut.result()

    def _topic(self, name: str) -> str:
        return f"/{self.namespace}/{name}" if self.namespace else f"/{name}"

    def _wait(self, cond, message: str) -> None:
        end = time.monotonic() + self.wait_s
        while not cond():
            if time.monotonic() > end:
                self.disconnect()
                raise HandError(message)
            time.sleep(0.02)
