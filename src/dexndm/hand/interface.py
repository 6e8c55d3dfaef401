"""The Hand interface every backend implements (sim, dynamixel, allegro_bridge).

All arrays are in HandSpec canonical order, radians / rad/s / N*m (effort may be a backend's
native unit where no torque is measured; ``HandState.effort_unit`` says which).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from dexndm.hand.spec import HandSpec


class HandError(RuntimeError):
    """A backend failed; the message names the device and what to do next."""


@dataclass(frozen=True)
class HandState:
    """One sample of the hand.

    stamp: time of the sample in seconds, on the backend's clock (wall time for hardware,
        simulation time for the sim backend unless it runs in real time).
    position, velocity, effort: (n,) canonical order.
    stale: True when this sample could not be refreshed from the device (values are the last
        good ones and must not be presented as fresh).
    age: seconds since the values were last refreshed from the device.
    """

    stamp: float
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray
    stale: bool = False
    age: float = 0.0
    effort_unit: str = "N*m"


@runtime_checkable
class Hand(Protocol):
    spec: HandSpec

    def connect(self) -> None:
        """Open the device / build the model. Torque stays off."""

    def set_torque(self, enabled: bool) -> None:
        """Enable or disable actuation. Disabled joints are limp (sim: zero torque)."""

    def read_state(self) -> HandState:
        """Latest sample."""

    def write_targets(self, targets: np.ndarray) -> np.ndarray:
        """Send position targets (n,), canonical order, rad. Returns what was actually sent
        (after clamping to the joint limits)."""

    def disconnect(self) -> None:
        """Torque off and release the device. Safe to call more than once."""


@dataclass(frozen=True)
class Diagnostic:
    """One status line a backend reports (the ROS layer turns it into a DiagnosticStatus).

    level: 0 OK, 1 WARN, 2 ERROR, 3 STALE (diagnostic_msgs levels).
    """

    name: str
    level: int
    message: str
    values: tuple[tuple[str, str], ...] = ()
