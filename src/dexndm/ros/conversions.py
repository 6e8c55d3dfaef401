"""Message <-> core conversions. No logic beyond field mapping lives here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import JointState

from dexndm.hand.interface import Diagnostic

LEVELS = {0: DiagnosticStatus.OK, 1: DiagnosticStatus.WARN, 2: DiagnosticStatus.ERROR, 3: DiagnosticStatus.STALE}


def time_msg(ns: int) -> Time:
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def stamp_ns(t: Time) -> int:
    return int(t.sec) * 1_000_000_000 + int(t.nanosec)


def joint_state_msg(names: Sequence[str], stamp_ns_: int, position: np.ndarray,
                    velocity: np.ndarray | None = None, effort: np.ndarray | None = None,
                    frame_id: str = "") -> JointState:
    msg = JointState()
    msg.header.stamp = time_msg(stamp_ns_)
    msg.header.frame_id = frame_id
    msg.name = list(names)
    msg.position = np.asarray(position, dtype=float).tolist()
    msg.velocity = [] if velocity is None else np.asarray(velocity, dtype=float).tolist()
    msg.effort = [] if effort is None else np.asarray(effort, dtype=float).tolist()
    return msg


def diagnostic_status(d: Diagnostic, prefix: str, hardware_id: str) -> DiagnosticStatus:
    return DiagnosticStatus(
        level=LEVELS.get(int(d.level), DiagnosticStatus.ERROR),
        name=f"{prefix}: {d.name}",
        message=d.message,
        hardware_id=hardware_id,
        values=[KeyValue(key=str(k), value=str(v)) for k, v in d.values],
    )


def key_values(pairs: Iterable[tuple[str, object]]) -> tuple[tuple[str, str], ...]:
    return tuple((k, str(v)) for k, v in pairs)


def diagnostic_array(node, diagnostics: Iterable[Diagnostic], hardware_id: str) -> DiagnosticArray:
    """One DiagnosticArray stamped now, each status named '<node fully qualified name>: <name>'."""
    prefix = node.get_fully_qualified_name()
    arr = DiagnosticArray(status=[diagnostic_status(d, prefix, hardware_id) for d in diagnostics])
    arr.header.stamp = node.get_clock().now().to_msg()
    return arr
