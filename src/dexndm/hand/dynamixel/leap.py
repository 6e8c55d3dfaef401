"""DynamixelHand: the LEAP Hand (16 Dynamixel servos on one bus) behind the ``Hand`` interface.

Above this module everything is radians in HandSpec canonical order. Here, and only here, joint
vectors are mapped to hardware slots (``spec.ordering('hardware')``, slot k = bus ID from
``hardware.dynamixel.ids``) and calibrated::

    real_rad = direction * sim_rad + offset          (per joint, hardware.dynamixel.calibration)
    ticks    = round(real_rad / (2*pi/4096))

Targets are clamped to the joint limits (``dexndm.hand.safety.clamp_targets``) before they are
converted. ``read_state`` never raises for a failed cycle: it returns the last good values with
``stale=True`` and the age of the data; repeated failures reopen the port with exponential
backoff and finally put the hand into a fault state (``fault_action``: disable torque or hold).
Motor temperature above ``temperature_soft_c`` derates that motor's current limit; above
``temperature_hard_c`` torque is turned off for the whole hand. ``disconnect`` (also on leaving a
``with`` block, exception or not) turns torque off and closes the port.

Effort is the servo's measured current in amperes (``HandState.effort_unit == 'A'``), signed
in the joint's direction.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import numpy as np

from dexndm.hand.dynamixel.bus import READ_MODES, BusReading, DynamixelBus, DynamixelBusError, HealthReading
from dexndm.hand.dynamixel.control_table import (
    MA_PER_CURRENT_UNIT,
    RAD_PER_TICK,
    RAD_S_PER_VELOCITY_UNIT,
    WATCHDOG_TRIPPED,
    ControlTable,
    control_table,
    describe_hardware_error,
)
from dexndm.hand.interface import Diagnostic, HandError, HandState
from dexndm.hand.safety import clamp_targets
from dexndm.hand.spec import HandSpec

log = logging.getLogger(__name__)

FAULT_ACTIONS = ("disable", "hold")
GAIN_MAX = 16383
_TEMP_HYSTERESIS_C = 3.0
_OK, _WARN, _ERROR, _STALE = 0, 1, 2, 3


def parse_gain_overrides(value: Any) -> dict[str, tuple[int, int, int]]:
    """Per-joint gains from a ROS-friendly string ``'joint=P/I/D,joint=P/I/D'``, a list of such
    items, or a mapping ``{joint: (P, I, D)}``. Register units."""
    if value is None or value == "" or value == []:
        return {}
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    else:
        parts = value.split(",") if isinstance(value, str) else list(value)
        items = []
        for part in parts:
            part = str(part).strip()
            if not part:
                continue
            name, sep, gains = part.partition("=")
            if not sep:
                raise ValueError(f"gain_overrides: '{part}' is not 'joint=P/I/D'")
            items.append((name.strip(), gains.split("/")))
    out = {}
    for name, gains in items:
        try:
            p, i, d = (int(g) for g in gains)
        except (TypeError, ValueError):
            raise ValueError(f"gain_overrides: '{name}' needs three integers P/I/D, got {gains!r}") from None
        out[name] = (p, i, d)
    return out


@dataclass(frozen=True)
class DynamixelConfig:
    """Driver settings (validated on construction). Gains in register units (KPP = P/128,
    KPI = I/65536, KPD = D/16); currents in mA; temperatures in degC; times in s unless named _ms."""

    port: str = ""
    baudrate: int = 4_000_000
    p_gain: int = 800
    i_gain: int = 0
    d_gain: int = 200
    gain_overrides: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)
    current_limit_ma: float = 350.0
    temperature_soft_c: float = 60.0
    temperature_hard_c: float = 67.0
    derate_factor: float = 0.5
    watchdog_ms: float = 500.0
    retries: int = 2
    latency_timer_ms: float = 1.0
    read_mode: str = "auto"
    health_period_s: float = 0.5
    reconnect_after: int = 3
    reconnect_backoff_s: float = 0.2
    reconnect_backoff_max_s: float = 2.0
    max_reconnect_attempts: int = 10
    fault_action: str = "disable"

    def __post_init__(self) -> None:
        object.__setattr__(self, "gain_overrides", MappingProxyType(parse_gain_overrides(self.gain_overrides)))
        problems = []
        for name in ("p_gain", "i_gain", "d_gain"):
            v = getattr(self, name)
            if not 0 <= v <= GAIN_MAX:
                problems.append(f"{name}={v} (0..{GAIN_MAX})")
        for joint, gains in self.gain_overrides.items():
            if not all(0 <= g <= GAIN_MAX for g in gains):
                problems.append(f"gain_overrides[{joint}]={gains} (each 0..{GAIN_MAX})")
        if not self.current_limit_ma > 0:
            problems.append(f"current_limit_ma={self.current_limit_ma} (> 0)")
        if not 0 < self.temperature_soft_c < self.temperature_hard_c <= 100:
            problems.append(f"temperature_soft_c={self.temperature_soft_c} < temperature_hard_c="
                            f"{self.temperature_hard_c} <= 100")
        if not 0 < self.derate_factor <= 1:
            problems.append(f"derate_factor={self.derate_factor} (0 < f <= 1)")
        if not 0 <= self.watchdog_ms <= 127 * 20:
            problems.append(f"watchdog_ms={self.watchdog_ms} (0 disables, max 2540)")
        if self.retries < 0 or self.reconnect_after < 1 or self.max_reconnect_attempts < 1:
            problems.append("retries >= 0, reconnect_after >= 1, max_reconnect_attempts >= 1")
        if not 0 < self.reconnect_backoff_s <= self.reconnect_backoff_max_s:
            problems.append("0 < reconnect_backoff_s <= reconnect_backoff_max_s")
        if self.latency_timer_ms < 0 or self.health_period_s <= 0:
            problems.append("latency_timer_ms >= 0, health_period_s > 0")
        if self.read_mode not in READ_MODES:
            problems.append(f"read_mode={self.read_mode!r} (one of {READ_MODES})")
        if self.fault_action not in FAULT_ACTIONS:
            problems.append(f"fault_action={self.fault_action!r} (one of {FAULT_ACTIONS})")
        if problems:
            raise ValueError("invalid Dynamixel settings: " + "; ".join(problems))


_DESCRIPTIONS = {
    "port": "Serial device of the U2D2, preferably /dev/serial/by-id/usb-FTDI_... (a pty for the emulator)",
    "baudrate": "Bus baud rate in bps; the servos must be set to the same rate (LEAP: 4000000)",
    "p_gain": "Position P gain (register units, KPP = P/128); multiplied by hardware.dynamixel.gain_scale",
    "i_gain": "Position I gain (register units, KPI = I/65536)",
    "d_gain": "Position D gain (register units, KPD = D/16); multiplied by hardware.dynamixel.gain_scale",
    "gain_overrides": "Per-joint gains taken literally (no gain_scale): 'joint=P/I/D,joint=P/I/D'",
    "current_limit_ma": "Goal Current (mA): torque cap in current-based position mode; refused above the rating",
    "temperature_soft_c": "Motor temperature (degC) above which its current limit is derated and a warning logged",
    "temperature_hard_c": "Motor temperature (degC) above which torque is turned off for the whole hand",
    "derate_factor": "Fraction of current_limit_ma a motor gets while above temperature_soft_c",
    "watchdog_ms": "Bus watchdog (ms, 20 ms steps, 0 disables): servos stop if the bus is silent this long; "
                   "read_state must run faster than this while torque is on",
    "retries": "Extra read attempts within one cycle before the sample is reported stale",
    "latency_timer_ms": "USB latency (ms) assumed in reply timeouts (the SDK assumes 16); set the FTDI timer to 1",
    "read_mode": "'auto' (fast sync read, falling back to sync read), 'fast' or 'sync'",
    "health_period_s": "Period (s) of temperature / voltage / hardware-error reads",
    "reconnect_after": "Consecutive failed cycles before the port is reopened",
    "reconnect_backoff_s": "First delay (s) between reconnect attempts; doubles up to reconnect_backoff_max_s",
    "reconnect_backoff_max_s": "Longest delay (s) between reconnect attempts",
    "max_reconnect_attempts": "Failed reconnect attempts before the hand enters the fault state",
    "fault_action": "In the fault state: 'disable' torque (safe; drops a held object) or 'hold' (servos keep "
                    "their last goal)",
}


def _default(f) -> Any:
    if f.name == "gain_overrides":
        return ""
    return f.default


PARAMETERS: list[tuple[str, Any, str]] = [(f.name, _default(f), _DESCRIPTIONS[f.name]) for f in fields(DynamixelConfig)]
"""(name, default, description) of every driver parameter, for ``declare_parameter``."""


def config_from_options(options: Mapping[str, Any]) -> DynamixelConfig:
    """DynamixelConfig from a flat dict of parameter values (ROS parameters); unknown keys are an error."""
    valid = [name for name, _, _ in PARAMETERS]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown Dynamixel parameter(s) {unknown}; valid: {valid}")
    kwargs: dict[str, Any] = {}
    for f in fields(DynamixelConfig):
        if f.name not in options:
            continue
        v = options[f.name]
        default = _default(f)
        try:
            if isinstance(default, bool):
                kwargs[f.name] = bool(v)
            elif isinstance(default, int):
                if isinstance(v, float) and not v.is_integer():
                    raise ValueError
                kwargs[f.name] = int(v)
            elif isinstance(default, float):
                kwargs[f.name] = float(v)
            else:
                kwargs[f.name] = v if f.name == "gain_overrides" else str(v)
        except (TypeError, ValueError):
            raise ValueError(f"Dynamixel parameter '{f.name}': cannot use {v!r} as {type(default).__name__}") from None
    return DynamixelConfig(**kwargs)


def from_options(spec: HandSpec, options: Mapping[str, Any], **kwargs: Any) -> DynamixelHand:
    """A DynamixelHand for ``spec`` from a flat dict of parameter values (see PARAMETERS)."""
    return DynamixelHand(spec, config_from_options(options), **kwargs)


@dataclass
class _MotorHealth:
    temperature_c: float = math.nan
    voltage_v: float = math.nan
    hardware_error: int = 0
    watchdog: int = 0
    derated: bool = False
    seen: bool = False


class DynamixelHand:
    """LEAP Hand over Dynamixel, implementing :class:`dexndm.hand.interface.Hand`.

    spec: the hand (needs ``hardware.dynamixel`` with model, ids, calibration, optional gain_scale).
    config: driver settings. bus_factory: builds the bus (tests inject fakes); default DynamixelBus.
    Thread-safe: every public method holds one lock.
    """

    def __init__(
        self,
        spec: HandSpec,
        config: DynamixelConfig,
        *,
        bus_factory: Callable[..., DynamixelBus] | None = None,
    ):
        self.spec = spec
        self.config = config
        self._bus_factory = bus_factory or DynamixelBus
        hw = self._hardware_block(spec)
        self.table: ControlTable = hw["table"]
        self._order = spec.ordering("hardware")
        names = self._order.names
        self.joint_ids: dict[str, int] = hw["ids"]
        self._ids = [self.joint_ids[n] for n in names]  # bus order = hardware slot order
        self._name_of_id = {self.joint_ids[n]: n for n in names}
        self._offset = np.array([hw["calibration"][n][0] for n in names])
        self._direction = np.array([hw["calibration"][n][1] for n in names], dtype=float)
        gain_scale = hw["gain_scale"]
        unknown = sorted(set(config.gain_overrides) - set(names))
        if unknown:
            raise ValueError(f"gain_overrides: unknown joint(s) {unknown}; valid: {list(spec.joint_names)}")
        self.gains: dict[int, tuple[int, int, int]] = {}
        for n in names:
            if n in config.gain_overrides:
                g = config.gain_overrides[n]
            else:
                s = gain_scale.get(n, 1.0)
                g = (int(round(config.p_gain * s)), config.i_gain, int(round(config.d_gain * s)))
            self.gains[self.joint_ids[n]] = g
        if config.current_limit_ma > self.table.max_current_ma:
            raise ValueError(
                f"current_limit_ma={config.current_limit_ma:g} mA is above the {self.table.model} rating "
                f"({self.table.max_current_ma:g} mA, the Current Limit register's maximum); LEAP uses 300-550 mA"
            )
        self._lock = threading.RLock()
        self._bus: DynamixelBus | None = None
        self._connected = False
        self._torque = False
        self._targets: np.ndarray | None = None
        self._last: tuple[np.ndarray, np.ndarray, np.ndarray, float, float] | None = None  # q, dq, i, wall, mono
        self._last_current: dict[int, int] = {}  # mA by bus ID
        self._fail_streak = 0
        self._reconnect_pending = False
        self._next_reconnect = 0.0
        self._reconnect_attempts = 0
        self._backoff = config.reconnect_backoff_s
        self._fault = ""
        self._overheated: set[int] = set()
        self._health = {i: _MotorHealth() for i in self._ids}
        self._next_health = 0.0
        self._cycle_s: deque[float] = deque(maxlen=200)
        self._read_times: deque[float] = deque(maxlen=200)
        self.counters = {"reads": 0, "fresh": 0, "stale": 0, "reconnects": 0, "reconnect_failures": 0,
                         "clamped_targets": 0, "write_errors": 0}

    # ---- spec ----------------------------------------------------------------------------------
    @staticmethod
    def _hardware_block(spec: HandSpec) -> dict[str, Any]:
        where = f"hand '{spec.name}' ({spec.source}): hardware.dynamixel"
        dx = spec.hardware.get("dynamixel")
        if not isinstance(dx, Mapping):
            raise ValueError(f"{where}: missing; it needs model, ids and calibration")
        try:
            table = control_table(str(dx.get("model", "")))
        except KeyError as e:
            raise ValueError(f"{where}.model: {e.args[0]}") from None
        names = spec.ordering("hardware").names
        ids = dx.get("ids") or {n: k for k, n in enumerate(names)}
        if set(ids) != set(names):
            raise ValueError(f"{where}.ids: must name every joint once; unknown {sorted(set(ids) - set(names))}, "
                             f"missing {sorted(set(names) - set(ids))}")
        ids = {str(k): int(v) for k, v in ids.items()}
        if len(set(ids.values())) != len(ids):
            raise ValueError(f"{where}.ids: IDs must be unique, got {ids}")
        cal_in = dx.get("calibration") or {}
        missing = sorted(set(names) - set(cal_in))
        if missing or set(cal_in) - set(names):
            raise ValueError(f"{where}.calibration: missing {missing}, unknown {sorted(set(cal_in) - set(names))}; "
                             "run `dexndm calibrate` to measure it")
        cal = {}
        for n in names:
            entry = cal_in[n] or {}
            try:
                offset, direction = float(entry["offset"]), int(entry.get("direction", 1))
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{where}.calibration.{n}: needs offset (rad) and direction (+1/-1)") from None
            if direction not in (1, -1) or not math.isfinite(offset):
                raise ValueError(f"{where}.calibration.{n}: direction must be +1 or -1 and offset finite")
            cal[n] = (offset, direction)
        scale = {str(k): float(v) for k, v in (dx.get("gain_scale") or {}).items()}
        bad = sorted(set(scale) - set(names))
        if bad or any(not 0 < v <= 4 for v in scale.values()):
            raise ValueError(f"{where}.gain_scale: unknown joints {bad} or factors outside (0, 4]")
        return {"table": table, "ids": ids, "calibration": cal, "gain_scale": scale}

    # ---- unit conversion (the only place with ticks and offsets) -----------------------------
    def to_ticks(self, q: np.ndarray) -> np.ndarray:
        """Canonical joint positions (n,) rad -> goal ticks (n,) in bus order."""
        q_hw = self._order.from_canonical(np.asarray(q, dtype=float))
        return np.rint((self._direction * q_hw + self._offset) / RAD_PER_TICK).astype(np.int64)

    def from_ticks(self, ticks: np.ndarray) -> np.ndarray:
        """Present ticks (n,) in bus order -> canonical joint positions (n,) rad."""
        real = np.asarray(ticks, dtype=float) * RAD_PER_TICK
        return self._order.to_canonical(self._direction * (real - self._offset))

    def _convert(self, r: BusReading) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q = self.from_ticks(r.position)
        dq = self._order.to_canonical(self._direction * r.velocity * RAD_S_PER_VELOCITY_UNIT)
        amps = self._order.to_canonical(self._direction * r.current * MA_PER_CURRENT_UNIT / 1000.0)
        return q, dq, amps

    # ---- lifecycle -----------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def torque_enabled(self) -> bool:
        return self._torque

    @property
    def fault(self) -> str:
        """Why the hand is in the fault state ('' when it is not)."""
        return self._fault

    def _new_bus(self) -> DynamixelBus:
        c = self.config
        return self._bus_factory(
            c.port, self._ids, baudrate=c.baudrate, table=self.table, latency_timer_ms=c.latency_timer_ms,
            retries=c.retries, read_mode=c.read_mode,
        )

    def _configure(self, bus: DynamixelBus) -> None:
        bus.read_current_limits()
        bus.configure(
            gains=self.gains,
            goal_current_ma={i: self.config.current_limit_ma for i in self._ids},
            watchdog_ms=self.config.watchdog_ms,
        )
        for h in self._health.values():
            h.derated = False

    def connect(self) -> None:
        """Open the port, check every servo, turn torque off, configure (mode 5, return delay 0,
        gains, Goal Current, watchdog) and take a first reading. Torque stays off."""
        with self._lock:
            if self._connected:
                return
            bus = self._new_bus()
            try:
                bus.open()
                bus.ping_all()
                bus.set_torque(False)
                self._configure(bus)
                reading = bus.read_state()
                if not reading.fresh:
                    raise DynamixelBusError(f"{bus.port_name}: no valid state after configuring: {reading.error}")
            except BaseException:
                bus.close()
                raise
            self._bus = bus
            self._connected = True
            self._torque = False
            self._fault = ""
            self._fail_streak = 0
            self._reconnect_pending = False
            self._store(reading)
            self._next_health = 0.0
            self._check_health(time.monotonic())

    def disconnect(self) -> None:
        """Torque off and close the port, even after errors. Safe to call more than once."""
        with self._lock:
            bus, self._bus = self._bus, None
            self._connected = False
            self._torque = False
            if bus is None:
                return
            try:
                if bus.is_open:
                    bus.abandon_transaction()  # Ctrl-C may have landed mid-transaction
                    bus.set_torque(False)
            except Exception as e:  # noqa: BLE001 - must still close the port
                log.error("%s: could not confirm torque off while disconnecting: %s", bus.port_name, e)
            finally:
                bus.close()

    def __enter__(self) -> DynamixelHand:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    def _require(self) -> DynamixelBus:
        if not self._connected:
            raise HandError(f"Dynamixel hand '{self.spec.name}' ({self.config.port}) is not connected; call connect()")
        return self._bus

    # ---- torque --------------------------------------------------------------------------------
    def set_torque(self, enabled: bool) -> None:
        """Torque on holds the present pose (goal = present position, clamped to the limits); off goes limp.

        Refused (HandError) while in the fault state, while a motor is above the hard temperature
        limit (minus 3 degC) or reports a hardware error, or without a fresh position.
        """
        with self._lock:
            bus = self._require()
            if not enabled:
                self._torque = False
                bus.set_torque(False)
                return
            if self._fault:
                raise HandError(f"{self.config.port}: hand is in the fault state ({self._fault}); call recover() first")
            hot = [self._name_of_id[i] for i, h in self._health.items()
                   if h.temperature_c >= self.config.temperature_hard_c - _TEMP_HYSTERESIS_C]
            if hot:
                raise HandError(f"{self.config.port}: refusing torque on: motor(s) {hot} still too hot "
                                f"(>= {self.config.temperature_hard_c - _TEMP_HYSTERESIS_C:g} degC); let them cool")
            errs = {self._name_of_id[i]: describe_hardware_error(h.hardware_error)
                    for i, h in self._health.items() if h.hardware_error}
            if errs:
                raise HandError(f"{self.config.port}: refusing torque on: hardware error(s) {errs}; fix the cause and "
                                "call reboot(names)")
            self._enable_holding(bus, self._ids)

    def _enable_holding(self, bus: DynamixelBus, ids: list[int], targets: np.ndarray | None = None) -> None:
        reading = bus.read_state()
        if not reading.fresh:
            raise HandError(f"{bus.port_name}: no fresh position to hold ({reading.error}); torque stays off")
        self._store(reading)
        hold = clamp_targets(self.spec, targets if targets is not None else self._last[0]).targets
        bus.write_goal_positions(self.to_ticks(hold))
        self._targets = hold
        try:
            bus.set_torque(True, ids)
        except DynamixelBusError:
            try:
                bus.set_torque(False)
            except DynamixelBusError as e2:
                log.error("%s", e2)
            self._torque = False
            raise
        self._torque = True

    # ---- cycle ---------------------------------------------------------------------------------
    def write_targets(self, targets: np.ndarray) -> np.ndarray:
        """Clamp canonical targets (n,) rad to the joint limits and sync-write them. Returns what was
        sent. While the bus is reconnecting the targets are kept and sent once it is back."""
        with self._lock:
            bus = self._require()
            clamped = clamp_targets(self.spec, targets)
            if self._fault:
                raise HandError(f"{self.config.port}: hand is in the fault state ({self._fault}); targets not sent")
            self.counters["clamped_targets"] += clamped.n_clamped
            self._targets = clamped.targets
            if not self._reconnect_pending and bus.is_open:
                try:
                    bus.write_goal_positions(self.to_ticks(clamped.targets))
                except DynamixelBusError as e:
                    self.counters["write_errors"] += 1
                    log.warning("%s", e)
                    self._schedule_reconnect(time.monotonic())
            return clamped.targets.copy()

    def read_state(self) -> HandState:
        """Latest sample. ``stale=True`` (with the age of the last good data) when this cycle
        failed after retries; never raises for a failed cycle."""
        with self._lock:
            bus = self._require()
            now = time.monotonic()
            fresh = False
            self.counters["reads"] += 1
            if not self._fault and not self._reconnect_pending:
                t0 = time.monotonic()
                try:
                    reading = bus.read_state()
                except DynamixelBusError as e:
                    log.warning("%s", e)
                    reading = None
                self._cycle_s.append(time.monotonic() - t0)
                if reading is not None and reading.fresh:
                    fresh = True
                    self._store(reading)
                    self._fail_streak = 0
                    if reading.alert_ids:
                        self._next_health = 0.0
                else:
                    self._fail_streak += 1
                    if reading is None or self._fail_streak >= self.config.reconnect_after:
                        self._schedule_reconnect(now)
            if self._reconnect_pending and not self._fault and time.monotonic() >= self._next_reconnect:
                fresh = self._attempt_reconnect()
            if fresh:
                self._read_times.append(time.monotonic())
                self._check_health(time.monotonic())
            self.counters["fresh" if fresh else "stale"] += 1
            q, dq, amps, wall, mono = self._last
            return HandState(
                stamp=wall, position=q.copy(), velocity=dq.copy(), effort=amps.copy(),
                stale=not fresh, age=0.0 if fresh else max(0.0, time.monotonic() - mono), effort_unit="A",
            )

    def _store(self, r: BusReading) -> None:
        q, dq, amps = self._convert(r)
        self._last = (q, dq, amps, time.time() - (time.monotonic() - r.stamp), r.stamp)
        self._last_current = dict(zip(self._ids, r.current.tolist(), strict=True))

    # ---- reconnect / fault ---------------------------------------------------------------------
    def _schedule_reconnect(self, now: float) -> None:
        if not self._reconnect_pending:
            log.warning("%s: %d failed cycle(s); reopening the port", self.config.port, self._fail_streak)
            self._reconnect_pending = True
            self._next_reconnect = now
            self._reconnect_attempts = 0
            self._backoff = self.config.reconnect_backoff_s

    def _attempt_reconnect(self) -> bool:
        bus = self._bus
        try:
            bus.close()
            bus.open()
            bus.ping_all(fail_fast=True)
            self._configure(bus)
            if self._torque:
                self._enable_holding(bus, self._ids, self._targets)
            reading = bus.read_state()
            if not reading.fresh:
                raise DynamixelBusError(f"{bus.port_name}: no valid state after reconnecting: {reading.error}")
        except (DynamixelBusError, HandError) as e:
            self.counters["reconnect_failures"] += 1
            self._reconnect_attempts += 1
            if self._reconnect_attempts >= self.config.max_reconnect_attempts:
                self._enter_fault(f"{self._reconnect_attempts} reconnect attempts failed; last: {e}")
            else:
                self._next_reconnect = time.monotonic() + self._backoff
                self._backoff = min(2 * self._backoff, self.config.reconnect_backoff_max_s)
                log.debug("reconnect attempt %d failed: %s", self._reconnect_attempts, e)
            return False
        self._store(reading)
        self._reconnect_pending = False
        self._fail_streak = 0
        self.counters["reconnects"] += 1
        log.warning("%s: reconnected after %d attempt(s)", bus.port_name, self._reconnect_attempts + 1)
        return True

    def _enter_fault(self, reason: str) -> None:
        self._fault = reason
        self._reconnect_pending = False
        log.error("%s: Dynamixel hand in fault state: %s. Check cable and 5 V power, then call recover() "
                  "(fault_action=%s)", self.config.port, reason, self.config.fault_action)
        if self.config.fault_action == "disable":
            self._torque = False
            bus = self._bus
            try:
                if bus is not None and bus.is_open:
                    bus.set_torque(False)
            except DynamixelBusError as e:
                log.error("%s; with the bus down the servos keep their last goal until their watchdog fires", e)

    def recover(self) -> None:
        """Leave the fault state: reopen and reconfigure the bus, torque off. Raises if the bus is still down."""
        with self._lock:
            bus = self._require()
            bus.close()
            bus.open()
            bus.ping_all()
            bus.set_torque(False)
            self._torque = False
            self._configure(bus)
            reading = bus.read_state()
            if not reading.fresh:
                raise DynamixelBusError(f"{bus.port_name}: no valid state after recover(): {reading.error}")
            self._store(reading)
            self._fault = ""
            self._reconnect_pending = False
            self._fail_streak = 0

    # ---- health --------------------------------------------------------------------------------
    def _check_health(self, now: float) -> None:
        if now < self._next_health:
            return
        self._next_health = now + self.config.health_period_s
        bus = self._bus
        try:
            h: HealthReading = bus.read_health()
        except DynamixelBusError as e:
            log.warning("%s", e)
            return
        c = self.config
        for i in self._ids:
            m = self._health[i]
            if i in h.temperature_c:
                m.temperature_c, m.voltage_v, m.seen = h.temperature_c[i], h.voltage_v[i], True
            if i in h.hardware_error:
                if h.hardware_error[i] != m.hardware_error and h.hardware_error[i]:
                    log.error("%s: %s (ID %d) reports hardware error '%s'; its torque is off. Fix the cause "
                              "(overload: lower current_limit_ma / remove the obstruction) and call reboot(['%s'])",
                              bus.port_name, self._name_of_id[i], i, describe_hardware_error(h.hardware_error[i]),
                              self._name_of_id[i])
                m.hardware_error = h.hardware_error[i]
            if i in h.watchdog:
                m.watchdog = h.watchdog[i]
        hot = [i for i in self._ids if self._health[i].temperature_c >= c.temperature_hard_c]
        if hot:
            names = [self._name_of_id[i] for i in hot]
            if self._torque:
                log.error("%s: motor(s) %s above %g degC: torque off for the whole hand", bus.port_name, names,
                          c.temperature_hard_c)
            self._torque = False
            try:
                bus.set_torque(False)
            except DynamixelBusError as e:
                log.error("%s", e)
        self._overheated = set(hot)
        for i in self._ids:
            m = self._health[i]
            if i in hot:
                continue
            try:
                if m.temperature_c >= c.temperature_soft_c and not m.derated:
                    bus.set_goal_current(i, c.current_limit_ma * c.derate_factor)
                    m.derated = True
                    log.warning("%s: %s (ID %d) at %g degC >= %g: current limit derated to %g mA", bus.port_name,
                                self._name_of_id[i], i, m.temperature_c, c.temperature_soft_c,
                                c.current_limit_ma * c.derate_factor)
                elif m.derated and m.temperature_c < c.temperature_soft_c - _TEMP_HYSTERESIS_C:
                    bus.set_goal_current(i, c.current_limit_ma)
                    m.derated = False
                    log.info("%s: %s cooled to %g degC: current limit back to %g mA", bus.port_name,
                             self._name_of_id[i], m.temperature_c, c.current_limit_ma)
                if m.watchdog == WATCHDOG_TRIPPED:
                    log.warning("%s: bus watchdog of %s fired (the bus was silent > %g ms); re-arming it",
                                bus.port_name, self._name_of_id[i], c.watchdog_ms)
                    bus.arm_watchdog(c.watchdog_ms, [i])
                    m.watchdog = 0
            except DynamixelBusError as e:
                log.warning("%s", e)

    def _current_for(self, dxl_id: int) -> float:
        c = self.config
        return c.current_limit_ma * (c.derate_factor if self._health[dxl_id].derated else 1.0)

    def faulted_joints(self) -> list[str]:
        """Joints whose servo reports a Hardware Error Status (shut down until :meth:`reboot`), hardware order."""
        with self._lock:
            return [self._name_of_id[i] for i in self._ids if self._health[i].hardware_error]

    def reboot(self, names: Iterable[str]) -> None:
        """Reboot the servos of these joints (clears a hardware-error shutdown), reconfigure them and,
        if the hand's torque is on, make them hold their present position."""
        with self._lock:
            bus = self._require()
            names = list(names)
            unknown = [n for n in names if n not in self.joint_ids]
            if unknown:
                raise ValueError(f"reboot: unknown joint(s) {unknown}; valid: {list(self.spec.joint_names)}")
            ids = [self.joint_ids[n] for n in names]
            bus.reboot(ids)
            bus.configure(gains=self.gains, goal_current_ma={i: self.config.current_limit_ma for i in ids},
                          watchdog_ms=self.config.watchdog_ms, ids=ids)
            for i in ids:
                self._health[i] = _MotorHealth()
            if self._torque:
                self._enable_holding(bus, ids, self._targets)
            self._next_health = 0.0
            self._check_health(time.monotonic())

    # ---- diagnostics ---------------------------------------------------------------------------
    def max_temperature_c(self) -> float | None:
        """The hottest motor's latest temperature reading (degC); None before the first health read.
        Long unattended runs (data collection) pause on it."""
        temps = [m.temperature_c for m in self._health.values() if m.seen and not math.isnan(m.temperature_c)]
        return max(temps) if temps else None

    def diagnostics(self) -> list[Diagnostic]:
        """One Diagnostic per motor (temperature, current, voltage, hardware error, read errors) and
        one for the bus (state, cycle time, rate, fresh/stale counts, reconnects)."""
        with self._lock:
            c = self.config
            out = []
            bus = self._bus
            errors_by_id = bus.stats.errors_by_id if bus is not None else {}
            currents = self._last_current
            for i in self._ids:
                name = self._name_of_id[i]
                m = self._health[i]
                level, msg = _OK, "OK"
                if not self._connected or not m.seen:
                    level, msg = _STALE, "no data"
                elif m.hardware_error:
                    level, msg = _ERROR, f"hardware error: {describe_hardware_error(m.hardware_error)}; reboot needed"
                elif m.temperature_c >= c.temperature_hard_c:
                    level, msg = _ERROR, f"overheated ({m.temperature_c:g} degC): torque off"
                elif m.derated:
                    level, msg = _WARN, f"hot ({m.temperature_c:g} degC): current derated"
                elif m.watchdog == WATCHDOG_TRIPPED:
                    level, msg = _WARN, "bus watchdog fired"
                out.append(Diagnostic(
                    name=f"dynamixel/{name} (ID {i})", level=level, message=msg,
                    values=(
                        ("temperature_c", f"{m.temperature_c:g}"),
                        ("current_ma", f"{currents.get(i, float('nan')):g}"),
                        ("voltage_v", f"{m.voltage_v:.1f}"),
                        ("hardware_error", describe_hardware_error(m.hardware_error) or "none"),
                        ("goal_current_ma", f"{self._current_for(i):g}"),
                        ("read_errors", str(errors_by_id.get(i, 0))),
                    ),
                ))
            if not self._connected:
                level, msg = _STALE, "disconnected"
            elif self._fault:
                level, msg = _ERROR, f"fault: {self._fault}"
            elif self._reconnect_pending:
                level, msg = _ERROR, f"reconnecting (attempt {self._reconnect_attempts + 1})"
            elif self._overheated:
                level, msg = _ERROR, "torque off: overheated motor(s)"
            elif self._fail_streak:
                level, msg = _WARN, f"{self._fail_streak} stale cycle(s)"
            else:
                level, msg = _OK, "torque on" if self._torque else "torque off"
            cyc = 1000.0 * float(np.mean(self._cycle_s)) if self._cycle_s else math.nan
            times = self._read_times
            rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else math.nan
            st = bus.stats if bus is not None else None
            tx, rx = bus.bytes_on_wire if bus is not None else (0, 0)
            out.append(Diagnostic(
                name="dynamixel/bus", level=level, message=msg,
                values=(
                    ("port", c.port), ("baudrate", str(c.baudrate)),
                    ("read_mode", ("fast" if bus is not None and bus.fast_sync_read_active else "sync")),
                    ("torque", "on" if self._torque else "off"),
                    ("cycle_time_ms", f"{cyc:.3f}"), ("rate_hz", f"{rate:.1f}"),
                    ("fresh_reads", str(self.counters["fresh"])), ("stale_reads", str(self.counters["stale"])),
                    ("retries", str(st.retries if st else 0)), ("last_error", st.last_error if st else ""),
                    ("late_replies_skipped", str(bus.stale_replies if bus is not None else 0)),
                    ("reconnects", str(self.counters["reconnects"])),
                    ("reconnect_failures", str(self.counters["reconnect_failures"])),
                    ("clamped_targets", str(self.counters["clamped_targets"])),
                    ("bytes_tx", str(tx)), ("bytes_rx", str(rx)),
                ),
            ))
            return out


__all__ = ["DynamixelConfig", "DynamixelHand", "FAULT_ACTIONS", "PARAMETERS", "config_from_options", "from_options",
           "parse_gain_overrides"]
