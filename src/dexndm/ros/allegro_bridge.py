"""allegro_bridge: the ``Hand`` interface over the Wonik ``allegro_hand_ros2`` driver (ros2_control).

The vendor's driver stays in charge of the CAN bus. This backend lives on the hand_driver's own
rclpy node and only talks to it over topics:

- state: ``sensor_msgs/JointState`` from the vendor's joint_state_broadcaster (``state_topic``,
  default ``/joint_states``). Joints are taken by name (``ah_jointXY``); other joints may be present
  and the order is free. A sample older than ``stale_after`` s is stale (not published by the node).
- command: ``std_msgs/Float64MultiArray`` to the vendor's ForwardCommandController
  (``command_topic``, default ``/allegro_hand_position_controller/commands``), 16 positions in the
  controller's joint order, ``spec.ordering('hardware')`` (thumb, index, middle, ring).

Both defaults come from ``hardware.allegro_bridge`` of the hand YAML; both are absolute names, so a
namespace on the dexndm launch does not move them, and both stay remappable (``-r FROM:=TO``).

Torque maps onto what a ForwardCommandController can do. On: commands are sent every cycle. Off:
one last command equal to the measured position is sent (the hand stops where it is) and then
nothing; the controller has no timeout and its PD keeps holding that pose. Torque off therefore
does **not** make the hand limp, and neither does losing dexndm (the vendor driver holds the last
command). A limp hand needs the vendor side: deactivate ``allegro_hand_position_controller`` with the
controller_manager, or stop the vendor driver.

Joint limits, the command watchdog and the driver diagnostics are the hand_driver node's, as for
every backend; this module adds its own diagnostics (vendor rate, sample age, topics).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import MessageInfo
from rclpy.wait_for_message import wait_for_message
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from dexndm.hand.interface import Diagnostic, HandError, HandState
from dexndm.hand.safety import clamp_targets
from dexndm.hand.spec import HandSpec

DEFAULT_STATE_TOPIC = "/joint_states"
DEFAULT_COMMAND_TOPIC = "/allegro_hand_position_controller/commands"
_OK, _WARN, _ERROR, _STALE = 0, 1, 2, 3
# Best effort matches reliable and best-effort publishers; depth 1: only the newest sample matters, and no
# backlog of old samples may arrive looking new after the executor stalled.
_STATE_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)


@dataclass(frozen=True)
class AllegroBridgeConfig:
    """Bridge settings. Topics: '' = the hand YAML's ``hardware.allegro_bridge`` entry (then the
    Wonik default). Times in seconds."""

    state_topic: str = ""
    command_topic: str = ""
    stale_after: float = 0.1
    connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 < self.stale_after <= 10.0:
            problems.append(f"stale_after={self.stale_after} (0 < s <= 10)")
        if not 0.0 < self.connect_timeout <= 600.0:
            problems.append(f"connect_timeout={self.connect_timeout} (0 < s <= 600)")
        if problems:
            raise ValueError("invalid allegro_bridge settings: " + "; ".join(problems))


_DESCRIPTIONS = {
    "state_topic": "Vendor joint_states topic (sensor_msgs/JointState, joints by name); '' = hardware.allegro_bridge."
                   "joint_states_topic of the hand YAML (/joint_states)",
    "command_topic": "Vendor ForwardCommandController topic (std_msgs/Float64MultiArray, hardware joint order); '' = "
                     "hardware.allegro_bridge.command_topic of the hand YAML (/allegro_hand_position_controller/commands)",
    "stale_after": "A vendor joint_states sample older than this (s) is stale and not published",
    "connect_timeout": "At configure, wait this long (s) for the first vendor joint_states before failing",
}

PARAMETERS: list[tuple[str, Any, str]] = [(f.name, f.default, _DESCRIPTIONS[f.name]) for f in fields(AllegroBridgeConfig)]
"""(name, default, description) of every bridge parameter, for ``declare_parameter``."""


def config_from_options(options: Mapping[str, Any]) -> AllegroBridgeConfig:
    valid = [name for name, _, _ in PARAMETERS]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown allegro_bridge parameter(s) {unknown}; valid: {valid}")
    kwargs: dict[str, Any] = {}
    for f in fields(AllegroBridgeConfig):
        if f.name in options:
            try:
                kwargs[f.name] = type(f.default)(options[f.name])
            except (TypeError, ValueError):
                raise ValueError(f"allegro_bridge parameter '{f.name}': cannot use {options[f.name]!r} as "
                                 f"{type(f.default).__name__}") from None
    return AllegroBridgeConfig(**kwargs)


def from_options(spec: HandSpec, options: Mapping[str, Any], *, node: Node | None = None) -> AllegroBridgeHand:
    """An AllegroBridgeHand on ``node`` (the hand_driver) from a flat dict of parameter values."""
    if node is None:
        raise ValueError("the allegro_bridge backend runs on the hand_driver's rclpy node; pass node=")
    return AllegroBridgeHand(spec, config_from_options(options), node)


class AllegroBridgeHand:
    """Implements :class:`dexndm.hand.interface.Hand` over the vendor's topics (see the module docstring).

    Callbacks run on the node's executor, so state updates and the node's control timer never race
    (single-threaded executor). ``reserved_topics`` names the vendor state topic (resolved), on which
    the node must not publish its own joint_states.
    """

    def __init__(self, spec: HandSpec, config: AllegroBridgeConfig, node: Node):
        self.spec = spec
        self.config = config
        self.node = node
        hw = spec.hardware.get("allegro_bridge")
        if not isinstance(hw, Mapping):
            raise ValueError(f"hand '{spec.name}' ({spec.source}) has no hardware.allegro_bridge block: the allegro_bridge "
                             "backend is for the Allegro hand (--hand allegro)")
        self.state_topic = config.state_topic or str(hw.get("joint_states_topic") or DEFAULT_STATE_TOPIC)
        self.command_topic = config.command_topic or str(hw.get("command_topic") or DEFAULT_COMMAND_TOPIC)
        self._order = spec.ordering("hardware")
        self._lookup = {n: i for i, n in enumerate(spec.joint_names)}
        self._sub = None
        self._pub = None
        self._connected = False
        self._torque = False
        self._q = np.full(spec.n, np.nan)
        self._dq = np.full(spec.n, np.nan)
        self._eff = np.full(spec.n, np.nan)
        self._stamp = math.nan  # header stamp of the latest vendor sample (s)
        self._arrival: float | None = None  # time.monotonic() of its arrival
        self._arrivals: deque[float] = deque(maxlen=300)
        self.counters = {"samples": 0, "incomplete": 0, "commands": 0}
        self.last_problem = ""
        self._last_incomplete = -math.inf

    # ---- topics ----------------------------------------------------------------------------
    @property
    def reserved_topics(self) -> tuple[str, ...]:
        return (self.node.resolve_topic_name(self.state_topic),)

    def _on_joint_states(self, msg: JointState, info: MessageInfo) -> None:
        # Age counts from reception by the middleware, not from when the executor got round to us.
        received = info.get("received_timestamp") or 0
        delay = min(max(0.0, time.time() - received * 1e-9), 1.0) if received else 0.0
        self._take(msg, time.monotonic() - delay)

    def _take(self, msg: JointState, arrival: float) -> bool:
        """Store a vendor sample; False (ignored) if it lacks one of the hand's joints or is malformed."""
        idx = {n: k for k, n in enumerate(msg.name)}
        missing = [n for n in self.spec.joint_names if n not in idx]
        if missing or len(msg.position) != len(msg.name):
            self.counters["incomplete"] += 1
            self._last_incomplete = arrival
            self.last_problem = (f"{self.state_topic}: sample without {missing}" if missing else
                                 f"{self.state_topic}: {len(msg.position)} positions for {len(msg.name)} names")
            return False
        k = np.array([idx[n] for n in self.spec.joint_names])
        self._q = np.asarray(msg.position, dtype=float)[k]
        # Velocity/effort are optional in JointState (empty = not reported): NaN, never made-up zeros.
        self._dq = np.asarray(msg.velocity, dtype=float)[k] if len(msg.velocity) == len(msg.name) else \
            np.full(self.spec.n, np.nan)
        self._eff = np.asarray(msg.effort, dtype=float)[k] if len(msg.effort) == len(msg.name) else \
            np.full(self.spec.n, np.nan)
        self._stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        self._arrival = arrival
        self._arrivals.append(arrival)
        self.counters["samples"] += 1
        return True

    # ---- Hand interface --------------------------------------------------------------------
    def connect(self) -> None:
        """Subscribe and advertise, then wait for a complete vendor sample (``connect_timeout``)."""
        if self._connected:
            return
        node = self.node
        self._pub = node.create_publisher(Float64MultiArray, self.command_topic, 10)
        self._sub = node.create_subscription(JointState, self.state_topic, self._on_joint_states, _STATE_QOS)
        # The node's executor may not spin yet (configure runs before it): wait with a wait set of our own.
        deadline = time.monotonic() + self.config.connect_timeout
        got_any = False
        while True:
            left = deadline - time.monotonic()
            ok, msg = wait_for_message(JointState, node, self.state_topic, qos_profile=_STATE_QOS,
                                       time_to_wait=max(left, 0.01)) if left > 0 else (False, None)
            if ok:
                got_any = True
                if self._take(msg, time.monotonic()):
                    break
            if time.monotonic() >= deadline:
                self._teardown()
                resolved = node.resolve_topic_name(self.state_topic)
                if got_any:
                    raise HandError(f"allegro_bridge: {self.last_problem}; the hand '{self.spec.name}' needs "
                                    f"{list(self.spec.joint_names)} (is the vendor driver for this hand, with the "
                                    "ah_ joint prefix, on that topic?)")
                raise HandError(
                    f"allegro_bridge: no joint_states on {resolved} within {self.config.connect_timeout:g} s. Start "
                    "the vendor driver first (ros2 launch allegro_hand_bringup allegro_hand.launch.py hand:=right "
                    "ros2_control_hardware_type:=physical_device, or :=mock_components without hardware), check "
                    "ROS_DOMAIN_ID, or set allegro_bridge.state_topic"
                )
        self._connected = True
        self._torque = False

    def _teardown(self) -> None:
        if self._sub is not None:
            self.node.destroy_subscription(self._sub)
        if self._pub is not None:
            self.node.destroy_publisher(self._pub)
        self._sub = self._pub = None

    def _require(self) -> None:
        if not self._connected:
            raise HandError(f"allegro_bridge for '{self.spec.name}' is not connected; call connect()")

    def read_state(self) -> HandState:
        """Latest vendor sample; stale when it is older than ``stale_after``. Effort is the vendor's
        effort interface as published (``effort_unit='vendor'``); missing velocity/effort are NaN."""
        self._require()
        age = max(0.0, time.monotonic() - self._arrival)
        return HandState(stamp=self._stamp, position=self._q.copy(), velocity=self._dq.copy(),
                         effort=self._eff.copy(), stale=age > self.config.stale_after, age=age,
                         effort_unit="vendor")

    def write_targets(self, targets: np.ndarray) -> np.ndarray:
        """Clamp canonical targets (n,) rad to the limits; publish them in the controller's joint order
        while torque is on (nothing is sent while it is off). Returns the clamped targets."""
        self._require()
        sent = clamp_targets(self.spec, targets).targets
        if self._torque:
            self._publish(sent)
        return sent

    def _publish(self, canonical: np.ndarray) -> None:
        self._pub.publish(Float64MultiArray(data=self._order.from_canonical(canonical).tolist()))
        self.counters["commands"] += 1

    def set_torque(self, enabled: bool) -> None:
        """On: send commands from now on. Off: send the measured position once (stop where it is) and
        then nothing; the vendor controller keeps holding it (the hand is not limp)."""
        self._require()
        if not enabled and self._torque and np.all(np.isfinite(self._q)):
            self._publish(clamp_targets(self.spec, self._q).targets)
        self._torque = bool(enabled)

    @property
    def torque_enabled(self) -> bool:
        return self._torque

    def disconnect(self) -> None:
        """Stop commanding (hold the measured pose) and release the topics. Safe to call more than once."""
        if not self._connected:
            return
        try:
            self.set_torque(False)
        finally:
            self._teardown()
            self._connected = False

    def diagnostics(self) -> list[Diagnostic]:
        c = self.config
        node = self.node
        if not self._connected:
            return [Diagnostic("allegro_bridge", _STALE, "disconnected")]
        age = time.monotonic() - self._arrival
        arr = self._arrivals
        rate = (len(arr) - 1) / (arr[-1] - arr[0]) if len(arr) > 1 and arr[-1] > arr[0] else math.nan
        if age > c.stale_after:
            level, msg = _ERROR, f"no vendor joint_states for {age:.2f} s (> {c.stale_after:g} s): is the vendor " \
                                 "driver running?"
        elif time.monotonic() - self._last_incomplete < 5.0:
            level, msg = _WARN, f"ignored incomplete sample(s): {self.last_problem}"
        else:
            level, msg = _OK, ("torque on: commanding" if self._torque else
                               "torque off: not commanding (the vendor controller holds the last command)")
        return [Diagnostic("allegro_bridge", level, msg, values=(
            ("state_topic", node.resolve_topic_name(self.state_topic)),
            ("command_topic", node.resolve_topic_name(self.command_topic)),
            ("vendor_rate_hz", f"{rate:.1f}"),
            ("sample_age_s", f"{age:.4f}"),
            ("samples", str(self.counters["samples"])),
            ("incomplete_samples", str(self.counters["incomplete"])),
            ("commands_sent", str(self.counters["commands"])),
            ("torque", "on" if self._torque else "off"),
        ))]


__all__ = ["AllegroBridgeConfig", "AllegroBridgeHand", "PARAMETERS", "config_from_options", "from_options"]
