"""Dynamixel backend: control table, Protocol 2.0 packets, a bus emulator, the bus and the LEAP hand.

Ticks, calibration offsets and direction signs exist only inside this package; ``DynamixelHand``
speaks radians in HandSpec canonical order like every other backend.
"""

from dexndm.hand.dynamixel.bus import BusReading, DynamixelBus, DynamixelBusError, HealthReading
from dexndm.hand.dynamixel.control_table import XC330_M288_T, ControlTable, HardwareError, OperatingMode, Register
from dexndm.hand.dynamixel.emulator import DynamixelEmulator
from dexndm.hand.dynamixel.leap import PARAMETERS, DynamixelConfig, DynamixelHand, config_from_options, from_options

__all__ = [
    "PARAMETERS", "XC330_M288_T", "BusReading", "ControlTable", "DynamixelBus", "DynamixelBusError",
    "DynamixelConfig", "DynamixelEmulator", "DynamixelHand", "HardwareError", "HealthReading", "OperatingMode",
    "Register", "config_from_options", "from_options",
]
