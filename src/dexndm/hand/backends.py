"""Backend registry: name -> module providing ``PARAMETERS`` and ``from_options(spec, options)``.

Backends that live in the ROS layer (``allegro_bridge``: the vendor's ros2_control driver owns
the bus, we talk to it over topics) are registered by the ROS node, not here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

BACKENDS = {
    "sim": "dexndm.hand.sim.backend",
    "dynamixel": "dexndm.hand.dynamixel.leap",
}


def backend_module(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise ValueError(f"backend '{name}' unknown; valid: {sorted(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])
