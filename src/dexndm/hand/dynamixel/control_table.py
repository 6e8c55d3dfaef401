"""Dynamixel X-series control table (XC330-M288-T) as data, plus unit conversions.

Every register the driver and the emulator touch is looked up here by name; no other module
writes an address as a number. Values on the wire are little-endian integers; ``signed``
registers are two's complement of their size.

Units (per register unit):
- position: 2*pi/4096 rad per tick (12-bit absolute encoder, 4096 ticks per revolution);
- velocity: 0.229 rev/min per unit;
- current: 1 mA per unit (XC330 measures the supply-side current);
- input voltage: 0.1 V per unit;
- temperature: 1 degC per unit;
- return delay time: 2 us per unit;
- bus watchdog: 20 ms per unit.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

# ---- unit conversions ------------------------------------------------------------------------

TICKS_PER_REV = 4096
RAD_PER_TICK = 2.0 * math.pi / TICKS_PER_REV  # rad per position tick
RPM_PER_VELOCITY_UNIT = 0.229  # rev/min per velocity unit
RAD_S_PER_VELOCITY_UNIT = RPM_PER_VELOCITY_UNIT * 2.0 * math.pi / 60.0  # rad/s per velocity unit
MA_PER_CURRENT_UNIT = 1.0  # mA per current unit
V_PER_VOLTAGE_UNIT = 0.1  # V per input-voltage unit
C_PER_TEMPERATURE_UNIT = 1.0  # degC per temperature unit
US_PER_RETURN_DELAY_UNIT = 2.0  # us per return-delay unit
MS_PER_WATCHDOG_UNIT = 20.0  # ms per bus-watchdog unit
WATCHDOG_MAX_UNITS = 127  # largest enabling value of the bus watchdog
WATCHDOG_TRIPPED = 0xFF  # the 1-byte watchdog register reads -1 (0xFF) after it fired


class OperatingMode(enum.IntEnum):
    """Values of the Operating Mode register."""

    CURRENT = 0
    VELOCITY = 1
    POSITION = 3
    EXTENDED_POSITION = 4
    CURRENT_BASED_POSITION = 5
    PWM = 16


class HardwareError(enum.IntFlag):
    """Bits of the Hardware Error Status register (same layout as the Shutdown register)."""

    INPUT_VOLTAGE = 0x01
    OVERHEATING = 0x04
    MOTOR_ENCODER = 0x08
    ELECTRICAL_SHOCK = 0x10
    OVERLOAD = 0x20


def describe_hardware_error(value: int) -> str:
    """Human-readable names of the set bits of a Hardware Error Status value ('' when 0)."""
    names = [flag.name.lower() for flag in HardwareError if value & flag]
    unknown = value & ~sum(HardwareError)
    if unknown:
        names.append(f"unknown_bits_0x{unknown:02x}")
    return ",".join(names)


@dataclass(frozen=True)
class Register:
    """One control-table entry.

    address/size: bytes; access: 'R' or 'RW'; area: 'eeprom' (writable only with torque off)
    or 'ram'; unit: what one count means; default: factory value (None when it has none).
    """

    name: str
    address: int
    size: int
    access: str
    area: str
    unit: str = "-"
    signed: bool = False
    default: int | None = None
    minimum: int | None = None
    maximum: int | None = None

    @property
    def writable(self) -> bool:
        return "W" in self.access

    def encode(self, value: int) -> bytes:
        """Integer -> little-endian bytes of this register's size (two's complement if signed)."""
        value = int(value)
        lo, hi = self.raw_range()
        if not lo <= value <= hi:
            raise ValueError(f"register '{self.name}': value {value} does not fit {self.size} byte(s) [{lo}, {hi}]")
        return (value & ((1 << (8 * self.size)) - 1)).to_bytes(self.size, "little")

    def decode(self, data: bytes | bytearray | int) -> int:
        """Little-endian bytes (or the SDK's unsigned int) -> integer, sign-extended if signed."""
        raw = int.from_bytes(bytes(data[: self.size]), "little") if not isinstance(data, int) else data
        if self.signed and raw >= 1 << (8 * self.size - 1):
            raw -= 1 << (8 * self.size)
        return raw

    def raw_range(self) -> tuple[int, int]:
        bits = 8 * self.size
        return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if self.signed else (0, (1 << bits) - 1)


@dataclass(frozen=True)
class ControlTable:
    """A model's control table: registers by name and the model's identity and ratings."""

    model: str
    model_number: int
    registers: Mapping[str, Register]
    max_current_ma: float  # upper bound of the Current Limit register (the rating Goal Current may not exceed)

    def __getitem__(self, name: str) -> Register:
        try:
            return self.registers[name]
        except KeyError:
            raise KeyError(f"{self.model} has no register '{name}'; known: {sorted(self.registers)}") from None

    def at(self, address: int) -> Register | None:
        """The register starting at ``address`` (None when none does)."""
        for reg in self.registers.values():
            if reg.address == address:
                return reg
        return None

    def span(self, first: str, last: str) -> tuple[int, int]:
        """(start address, length in bytes) of a contiguous read covering registers first..last."""
        a, b = self[first], self[last]
        return a.address, b.address + b.size - a.address


def _table(entries: list[tuple]) -> dict[str, Register]:
    out = {}
    for e in entries:
        name, address, size, access, area, unit, signed, default, lo, hi = e
        out[name] = Register(name, address, size, access, area, unit, signed, default, lo, hi)
    return out


# name, address, size, access, area, unit, signed, default, min, max
_XC330_M288_T = _table([
    ("model_number", 0, 2, "R", "eeprom", "-", False, 1240, None, None),
    ("model_information", 2, 4, "R", "eeprom", "-", False, None, None, None),
    ("firmware_version", 6, 1, "R", "eeprom", "-", False, None, None, None),
    ("id", 7, 1, "RW", "eeprom", "-", False, 1, 0, 252),
    ("baud_rate", 8, 1, "RW", "eeprom", "-", False, 1, 0, 6),
    ("return_delay_time", 9, 1, "RW", "eeprom", "2 us", False, 250, 0, 254),
    ("drive_mode", 10, 1, "RW", "eeprom", "-", False, 0, 0, 5),
    ("operating_mode", 11, 1, "RW", "eeprom", "-", False, 3, 0, 16),
    ("secondary_id", 12, 1, "RW", "eeprom", "-", False, 255, 0, 255),
    ("protocol_type", 13, 1, "RW", "eeprom", "-", False, 2, 2, 22),
    ("homing_offset", 20, 4, "RW", "eeprom", "1 tick", True, 0, -1044479, 1044479),
    ("moving_threshold", 24, 4, "RW", "eeprom", "0.229 rev/min", False, 10, 0, 1023),
    ("temperature_limit", 31, 1, "RW", "eeprom", "1 degC", False, 70, 0, 100),
    ("max_voltage_limit", 32, 2, "RW", "eeprom", "0.1 V", False, 70, 31, 70),
    ("min_voltage_limit", 34, 2, "RW", "eeprom", "0.1 V", False, 35, 31, 70),
    ("pwm_limit", 36, 2, "RW", "eeprom", "0.113 %", False, 885, 0, 885),
    ("current_limit", 38, 2, "RW", "eeprom", "1 mA", False, 2352, 0, 2352),
    ("velocity_limit", 44, 4, "RW", "eeprom", "0.229 rev/min", False, 350, 0, 2047),
    ("max_position_limit", 48, 4, "RW", "eeprom", "1 tick", False, 4095, 0, 4095),
    ("min_position_limit", 52, 4, "RW", "eeprom", "1 tick", False, 0, 0, 4095),
    ("startup_configuration", 60, 1, "RW", "eeprom", "-", False, 0, 0, 3),
    ("pwm_slope", 62, 1, "RW", "eeprom", "1.977 mV/ms", False, 140, 1, 255),
    ("shutdown", 63, 1, "RW", "eeprom", "-", False, 52, 0, 255),
    ("torque_enable", 64, 1, "RW", "ram", "-", False, 0, 0, 1),
    ("led", 65, 1, "RW", "ram", "-", False, 0, 0, 1),
    ("status_return_level", 68, 1, "RW", "ram", "-", False, 2, 0, 2),
    ("registered_instruction", 69, 1, "R", "ram", "-", False, 0, None, None),
    ("hardware_error_status", 70, 1, "R", "ram", "-", False, 0, None, None),
    ("velocity_i_gain", 76, 2, "RW", "ram", "-", False, 1600, 0, 16383),
    ("velocity_p_gain", 78, 2, "RW", "ram", "-", False, 50, 0, 16383),
    ("position_d_gain", 80, 2, "RW", "ram", "-", False, 500, 0, 16383),
    ("position_i_gain", 82, 2, "RW", "ram", "-", False, 0, 0, 16383),
    ("position_p_gain", 84, 2, "RW", "ram", "-", False, 1100, 0, 16383),
    ("feedforward_2nd_gain", 88, 2, "RW", "ram", "-", False, 0, 0, 16383),
    ("feedforward_1st_gain", 90, 2, "RW", "ram", "-", False, 0, 0, 16383),
    ("bus_watchdog", 98, 1, "RW", "ram", "20 ms", False, 0, 0, 127),
    ("goal_pwm", 100, 2, "RW", "ram", "0.113 %", True, None, -885, 885),
    ("goal_current", 102, 2, "RW", "ram", "1 mA", True, None, -2352, 2352),
    ("goal_velocity", 104, 4, "RW", "ram", "0.229 rev/min", True, None, -2047, 2047),
    ("profile_acceleration", 108, 4, "RW", "ram", "214.577 rev/min^2", False, 0, 0, 32767),
    ("profile_velocity", 112, 4, "RW", "ram", "0.229 rev/min", False, 0, 0, 32767),
    ("goal_position", 116, 4, "RW", "ram", "1 tick", True, None, -1048575, 1048575),
    ("realtime_tick", 120, 2, "R", "ram", "1 ms", False, None, None, None),
    ("moving", 122, 1, "R", "ram", "-", False, 0, None, None),
    ("moving_status", 123, 1, "R", "ram", "-", False, 0, None, None),
    ("present_pwm", 124, 2, "R", "ram", "0.113 %", True, None, None, None),
    ("present_current", 126, 2, "R", "ram", "1 mA", True, None, None, None),
    ("present_velocity", 128, 4, "R", "ram", "0.229 rev/min", True, None, None, None),
    ("present_position", 132, 4, "R", "ram", "1 tick", True, None, None, None),
    ("velocity_trajectory", 136, 4, "R", "ram", "0.229 rev/min", True, None, None, None),
    ("position_trajectory", 140, 4, "R", "ram", "1 tick", True, None, None, None),
    ("present_input_voltage", 144, 2, "R", "ram", "0.1 V", False, None, None, None),
    ("present_temperature", 146, 1, "R", "ram", "1 degC", False, None, None, None),
    ("backup_ready", 147, 1, "R", "ram", "-", False, None, None, None),
])

XC330_M288_T = ControlTable(
    model="XC330-M288-T",
    model_number=1240,
    registers=_XC330_M288_T,
    max_current_ma=float(_XC330_M288_T["current_limit"].maximum),
)

MODELS: dict[str, ControlTable] = {XC330_M288_T.model: XC330_M288_T}
MODEL_NAMES_BY_NUMBER: dict[int, str] = {
    1240: "XC330-M288-T",
    1230: "XC330-M181-T",
    1220: "XC330-T288-T",
    1210: "XC330-T181-T",
    1200: "XL330-M288-T",
    1190: "XL330-M077-T",
}


def control_table(model: str) -> ControlTable:
    """The control table of a model name (e.g. 'XC330-M288-T'); KeyError lists the supported ones."""
    try:
        return MODELS[model]
    except KeyError:
        raise KeyError(f"unsupported Dynamixel model '{model}'; supported: {sorted(MODELS)}") from None


def model_name(number: int) -> str:
    """A model number as read by PING, as a name when known ('model 1234' otherwise)."""
    return MODEL_NAMES_BY_NUMBER.get(number, f"model {number}")
