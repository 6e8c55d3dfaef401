"""A Protocol 2.0 emulator of N Dynamixel XC330 servos on a pseudo-terminal.

``dynamixel_sdk.PortHandler`` opens :attr:`DynamixelEmulator.port` (the pty's slave side) like a
U2D2, so the real SDK code path (packet building, stuffing, CRC, timeouts) is exercised end to
end. The emulator answers real packets: ping (unicast and broadcast), read, write, reg write /
action, sync read, fast sync read (0x8A, one combined status packet as the SDK parses it), sync
write, bulk read/write, reboot, factory reset; status packets carry error numbers and the alert
bit. Each servo has a full control table and a first-order joint model: with torque on, present
position approaches goal position with a configurable time constant; velocity and current follow
from it; temperature rises with current squared and relaxes to ambient.

The Bus Watchdog (register 98) behaves as on an XC330: with torque on and no instruction packet
for its timeout, the servo stops where it is (torque stays on), the register reads -1 (0xFF) and
goal writes are refused (Data Range Error) until it is written 0.

Faults can be injected at run time from any thread: drop / corrupt (bad CRC) / wrong-ID replies
with a probability per status packet, delayed replies, an unplugged bus for T seconds, an
overheated motor (sets the Hardware Error Status bit and shuts torque off as the real servo
does). Every request is logged as a :class:`Transaction` that records the faults applied to its
reply, so tests can check the driver's view against what actually happened on the wire.
:class:`ControlServer` / :class:`EmulatorControl` offer the same from another process over a
local UNIX socket (``dexndm emulate-bus --control PATH``).

In-process use with the stock ``PortHandler``: it polls the port without blocking while it waits
for a reply, so under load the emulator thread may wait for the GIL beyond the SDK's timeout;
lower ``sys.setswitchinterval`` (tests) or use ``bus.LowLatencyPortHandler``, which blocks in select.

Bus timing (baud rate, wire time) is not emulated; replies are written as soon as they are
computed, plus the servo's Return Delay Time (2 us per unit) and any injected delay.
"""

from __future__ import annotations

import functools
import heapq
import json
import math
import os
import random
import select
import socket
import stat
import threading
import time
import tty
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dexndm.hand.dynamixel import protocol as p2
from dexndm.hand.dynamixel.control_table import (
    MS_PER_WATCHDOG_UNIT,
    RAD_PER_TICK,
    RAD_S_PER_VELOCITY_UNIT,
    US_PER_RETURN_DELAY_UNIT,
    WATCHDOG_MAX_UNITS,
    WATCHDOG_TRIPPED,
    XC330_M288_T,
    ControlTable,
    HardwareError,
    Register,
)

TABLE_SIZE = 228  # bytes of control table (through Indirect Data 20)
SNAPSHOT_REGISTERS = (
    "torque_enable", "operating_mode", "return_delay_time", "position_p_gain", "position_i_gain", "position_d_gain",
    "goal_current", "goal_position", "present_position", "bus_watchdog", "hardware_error_status",
    "present_temperature",
)
_READ_INSTRUCTIONS = (
    p2.Instruction.PING, p2.Instruction.READ, p2.Instruction.SYNC_READ,
    p2.Instruction.FAST_SYNC_READ, p2.Instruction.BULK_READ,
)


@dataclass(frozen=True)
class FaultEvent:
    """One injected fault. t: time.monotonic() s; kind: drop|corrupt|wrong_id|delay|unplugged|overheat."""

    t: float
    kind: str
    dxl_id: int | None
    instruction: int | None


@dataclass(frozen=True)
class Transaction:
    """One instruction packet the emulator received and what happened to its reply.

    t: time.monotonic() when it was handled (s); ids: the servos addressed; faults: the faults
    applied to the reply (empty = answered completely and correctly, or no reply was due).
    """

    t: float
    instruction: int
    ids: tuple[int, ...]
    faults: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.faults

    @property
    def is_read(self) -> bool:
        return self.instruction in _READ_INSTRUCTIONS


@dataclass
class _Faults:
    drop: float = 0.0
    corrupt: float = 0.0
    wrong_id: float = 0.0
    delay: float = 0.0
    delay_s: float = 0.0


@dataclass
class _Servo:
    dxl_id: int
    mem: bytearray
    pos: float  # ticks (continuous)
    vel: float = 0.0  # ticks/s
    cur: float = 0.0  # mA
    temp: float = 30.0  # degC
    temp_pinned: bool = False
    blocked: bool = False  # an obstacle holds the joint where it is (stall: current at its cap)
    last_rx: float = 0.0  # time of the last instruction that addressed this servo (s)
    offline_until: float = 0.0  # rebooting: no answers before this time (s)
    registered: tuple[int, bytes] | None = None
    faults: dict[str, float] = field(default_factory=dict)


class DynamixelEmulator:
    """N emulated servos behind one pty; see the module docstring.

    ids: servo IDs on the bus. models: optional per-ID model number (default ``model_number``).
    time_constant_s: first-order position response with torque on (s).
    initial_positions: per-ID present position in ticks (default 2048, i.e. pi rad).
    seed: for the fault dice (reproducible fault sequences).
    """

    def __init__(
        self,
        ids: Iterable[int] = range(16),
        *,
        table: ControlTable = XC330_M288_T,
        model_number: int | None = None,
        models: Mapping[int, int] | None = None,
        firmware_version: int = 52,
        time_constant_s: float = 0.05,
        initial_positions: Mapping[int, int] | None = None,
        ambient_c: float = 30.0,
        heating_c_per_s_per_a2: float = 5.0,
        thermal_time_constant_s: float = 60.0,
        input_voltage_v: float = 5.0,
        reboot_time_s: float = 0.02,
        seed: int = 0,
    ):
        self.table = table
        self._reg = {name: table[name] for name in table.registers}
        self._owner: list[Register | None] = [None] * TABLE_SIZE
        for reg in table.registers.values():
            for a in range(reg.address, reg.address + reg.size):
                self._owner[a] = reg
        self.time_constant_s = float(time_constant_s)
        self.ambient_c = float(ambient_c)
        self.heating = float(heating_c_per_s_per_a2)
        self.thermal_tau = float(thermal_time_constant_s)
        self.input_voltage_v = float(input_voltage_v)
        self.reboot_time_s = float(reboot_time_s)
        self.firmware_version = int(firmware_version)
        self._default_model = table.model_number if model_number is None else int(model_number)
        self._models = dict(models or {})
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._faults = _Faults()
        self._unplugged_until = 0.0
        self._fault_log: deque[FaultEvent] = deque(maxlen=100_000)
        self._transactions: deque[Transaction] = deque(maxlen=100_000)
        self._stats = {"packets_rx": 0, "packets_tx": 0, "bytes_rx": 0, "bytes_tx": 0, "bad_packets_rx": 0}
        self._pending: list[tuple[float, int, bytes]] = []
        self._goal_range: dict[int, tuple[int, int]] = {}  # ID -> (min, max) Goal Position the host wrote
        self._seq = 0
        now = time.monotonic()
        self._t0 = now
        self._last_update = now
        self._servos: dict[int, _Servo] = {}
        init = dict(initial_positions or {})
        for dxl_id in ids:
            self._servos[int(dxl_id)] = self._new_servo(int(dxl_id), init.get(dxl_id, 2048), now)
        self._master: int | None = None
        self._slave: int | None = None
        self._port = ""
        self._thread: threading.Thread | None = None
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._running = False

    # ---- lifecycle ---------------------------------------------------------------------------
    @property
    def port(self) -> str:
        """Path of the pty slave to open with ``dynamixel_sdk.PortHandler`` ('' before start())."""
        return self._port

    @property
    def ids(self) -> tuple[int, ...]:
        with self._lock:
            return tuple(sorted(self._servos))

    def start(self) -> str:
        """Open the pty and start answering in a background thread; returns the port path."""
        if self._running:
            return self._port
        master, slave = os.openpty()
        tty.setraw(slave)  # bytes must pass unchanged (no echo, no CR/LF translation)
        tty.setraw(master)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._port = os.ttyname(slave)
        self._wake_r, self._wake_w = os.pipe()
        self._running = True
        self._thread = threading.Thread(target=self._serve, name=f"dxl-emulator {self._port}", daemon=True)
        self._thread.start()
        return self._port

    def stop(self) -> None:
        """Stop the thread and close the pty. Safe to call more than once."""
        if not self._running:
            return
        self._running = False
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = self._wake_r = self._wake_w = None

    def __enter__(self) -> DynamixelEmulator:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- fault injection (thread-safe) -------------------------------------------------------
    def set_faults(
        self,
        *,
        drop: float | None = None,
        corrupt: float | None = None,
        wrong_id: float | None = None,
        delay: float | None = None,
        delay_s: float | None = None,
    ) -> None:
        """Set fault probabilities per status packet (0..1) and the injected reply delay (s).

        ``delay`` is the probability that a reply is delayed by ``delay_s``; setting ``delay_s``
        alone delays every reply.
        """
        with self._lock:
            f = self._faults
            for name, v in (("drop", drop), ("corrupt", corrupt), ("wrong_id", wrong_id), ("delay", delay)):
                if v is not None:
                    if not 0.0 <= v <= 1.0:
                        raise ValueError(f"fault '{name}' must be a probability in [0, 1], got {v}")
                    setattr(f, name, float(v))
            if delay_s is not None:
                if delay_s < 0:
                    raise ValueError(f"delay_s must be >= 0, got {delay_s}")
                f.delay_s = float(delay_s)
                if delay is None:
                    f.delay = 1.0 if delay_s > 0 else 0.0

    def clear_faults(self) -> None:
        """No more injected faults (an unplugged bus is replugged)."""
        with self._lock:
            self._faults = _Faults()
            self._unplugged_until = 0.0

    def unplug(self, duration_s: float | None = None) -> None:
        """Stop answering (and ignore all writes) for ``duration_s`` seconds (None: until replug())."""
        with self._lock:
            now = time.monotonic()
            self._unplugged_until = math.inf if duration_s is None else now + float(duration_s)
            self._fault_log.append(FaultEvent(now, "unplugged", None, None))

    def replug(self) -> None:
        with self._lock:
            self._unplugged_until = 0.0

    @property
    def unplugged(self) -> bool:
        with self._lock:
            return time.monotonic() < self._unplugged_until

    def overheat(self, dxl_id: int, temperature_c: float = 80.0) -> None:
        """Pin a motor's temperature (degC). Above Temperature Limit the servo sets the overheating
        bit and, as the Shutdown register says by default, turns its torque off."""
        with self._lock:
            s = self._servo(dxl_id)
            s.temp = float(temperature_c)
            s.temp_pinned = True
            self._fault_log.append(FaultEvent(time.monotonic(), "overheat", dxl_id, None))
            self._update(time.monotonic())

    def cool(self, dxl_id: int, temperature_c: float | None = None) -> None:
        """Release a pinned temperature (back to ambient unless given); the error bit stays until reboot."""
        with self._lock:
            s = self._servo(dxl_id)
            s.temp = self.ambient_c if temperature_c is None else float(temperature_c)
            s.temp_pinned = False

    def block(self, dxl_id: int, blocked: bool = True) -> None:
        """Hold a joint where it is (an obstacle or a grasped object): with torque on and the goal
        elsewhere it stalls, draws its Goal Current and heats up."""
        with self._lock:
            self._update(time.monotonic())
            self._servo(dxl_id).blocked = bool(blocked)

    # ---- direct access (tests, tools) --------------------------------------------------------
    def set_position(self, dxl_id: int, ticks: float) -> None:
        """Move a joint by hand (ticks). With torque on the model pulls it back toward the goal."""
        with self._lock:
            s = self._servo(dxl_id)
            s.pos = float(ticks)
            s.vel = 0.0
            self._sync_present(s, time.monotonic())

    def read_register(self, dxl_id: int, name: str) -> int:
        """A register's current value (signed registers sign-extended), bypassing the bus."""
        with self._lock:
            self._update(time.monotonic())
            reg = self._reg_of(name)
            s = self._servo(dxl_id)
            return reg.decode(s.mem[reg.address: reg.address + reg.size])

    def write_register(self, dxl_id: int, name: str, value: int) -> None:
        """Set a register directly (no access checks): e.g. a wrong factory setting for a test."""
        with self._lock:
            reg = self._reg_of(name)
            s = self._servo(dxl_id)
            s.mem[reg.address: reg.address + reg.size] = reg.encode(value)

    def fault_log(self) -> list[FaultEvent]:
        with self._lock:
            return list(self._fault_log)

    def transactions(self, since: float = -math.inf) -> list[Transaction]:
        """Logged requests handled at or after ``since`` (time.monotonic() s)."""
        with self._lock:
            return [t for t in self._transactions if t.t >= since]

    def stats(self) -> dict[str, int]:
        """Counters: packets_rx/tx, bytes_rx/tx, bad_packets_rx (CRC or framing errors from the host)."""
        with self._lock:
            return dict(self._stats)

    def snapshot(self, registers: Iterable[str] = SNAPSHOT_REGISTERS) -> list[dict[str, int | float]]:
        """Every servo's state, by ascending ID: the named registers (decoded, signed ones sign-extended),
        plus ``id``, ``position_ticks`` (the joint model's continuous position) and ``silent_s`` (time since
        an instruction last addressed the servo)."""
        with self._lock:
            now = time.monotonic()
            self._update(now)
            regs = [self._reg_of(name) for name in registers]
            out = []
            for dxl_id in sorted(self._servos):
                s = self._servos[dxl_id]
                row: dict[str, int | float] = {"id": dxl_id, "position_ticks": s.pos, "silent_s": now - s.last_rx}
                for reg in regs:
                    row[reg.name] = reg.decode(s.mem[reg.address: reg.address + reg.size])
                out.append(row)
            return out

    def goal_range(self) -> dict[int, tuple[int, int]]:
        """ID -> (lowest, highest) Goal Position (ticks) the host has written since start or
        :meth:`reset_goal_range` (accepted writes only; the watchdog's and a reboot's own goal changes excluded)."""
        with self._lock:
            return dict(self._goal_range)

    def reset_goal_range(self) -> None:
        with self._lock:
            self._goal_range.clear()

    def fault_counts(self) -> dict[str, int]:
        """How many faults of each kind were injected (drop, corrupt, wrong_id, delay, unplugged, overheat)."""
        with self._lock:
            out: dict[str, int] = {}
            for ev in self._fault_log:
                out[ev.kind] = out.get(ev.kind, 0) + 1
            return out

    # ---- internals: servo model --------------------------------------------------------------
    def _reg_of(self, name: str) -> Register:
        try:
            return self._reg[name]
        except KeyError:
            raise KeyError(f"no register '{name}'; known: {sorted(self._reg)}") from None

    def _servo(self, dxl_id: int) -> _Servo:
        try:
            return self._servos[dxl_id]
        except KeyError:
            raise KeyError(f"emulator has no servo with ID {dxl_id}; IDs: {sorted(self._servos)}") from None

    def _new_servo(self, dxl_id: int, ticks: float, now: float) -> _Servo:
        mem = bytearray(TABLE_SIZE)
        for reg in self.table.registers.values():
            if reg.default is not None:
                mem[reg.address: reg.address + reg.size] = reg.encode(reg.default)
        self._put(mem, "model_number", self._models.get(dxl_id, self._default_model))
        self._put(mem, "firmware_version", self.firmware_version)
        self._put(mem, "id", dxl_id)
        self._put(mem, "goal_current", self._get(mem, "current_limit"))
        self._put(mem, "goal_pwm", self._get(mem, "pwm_limit"))
        self._put(mem, "goal_position", int(round(ticks)))
        for k in range(20):  # Indirect Address n -> Indirect Data n by default
            mem[168 + 2 * k: 170 + 2 * k] = (208 + k).to_bytes(2, "little")
        s = _Servo(dxl_id, mem, float(ticks), temp=self.ambient_c, last_rx=now)
        self._sync_present(s, now)
        return s

    def _put(self, mem: bytearray, name: str, value: int) -> None:
        reg = self._reg[name]
        mem[reg.address: reg.address + reg.size] = reg.encode(value)

    def _get(self, mem: bytearray, name: str) -> int:
        reg = self._reg[name]
        return reg.decode(mem[reg.address: reg.address + reg.size])

    def _update(self, now: float) -> None:
        """Advance every servo's joint and thermal model to ``now``."""
        dt = now - self._last_update
        if dt <= 0:
            return
        self._last_update = now
        for s in self._servos.values():
            self._step(s, dt, now)

    def _step(self, s: _Servo, dt: float, now: float) -> None:
        get = self._get
        mem = s.mem
        torque = mem[self._reg["torque_enable"].address] == 1
        wd = get(mem, "bus_watchdog")
        if torque:
            goal = float(get(mem, "goal_position"))
            old = s.pos
            t_trip = s.last_rx + wd * MS_PER_WATCHDOG_UNIT / 1000.0 if 0 < wd <= WATCHDOG_MAX_UNITS else math.inf
            if now > t_trip:
                # Bus watchdog (XC330, register 98): no instruction packet for wd x 20 ms while torque is on.
                # The servo stops where it is at that moment (profiles applied as 0; torque stays on and holds),
                # the register reads -1 and goal writes return Data Range Error until it is written 0.
                goal = float(round(self._approach(s, goal, min(dt, max(0.0, t_trip - (now - dt))))))
                s.pos = goal
                self._put(mem, "goal_position", int(goal))
                self._put(mem, "bus_watchdog", WATCHDOG_TRIPPED)
            else:
                s.pos = self._approach(s, goal, dt)
            s.vel = (s.pos - old) / dt
            limit = abs(get(mem, "goal_current"))
            p_gain = get(mem, "position_p_gain")
            # Current needed to hold the error: proportional to P gain x error, capped at Goal Current.
            demand = 0.05 * p_gain * (goal - s.pos) * RAD_PER_TICK * 40.0
            s.cur = max(-limit, min(limit, demand))
        else:
            s.vel = 0.0
            s.cur = 0.0
        if not s.temp_pinned:
            heat = self.heating * (s.cur / 1000.0) ** 2 - (s.temp - self.ambient_c) / self.thermal_tau
            s.temp += heat * dt
        if s.temp > get(mem, "temperature_limit"):
            err = get(mem, "hardware_error_status") | HardwareError.OVERHEATING
            self._put(mem, "hardware_error_status", err)
        hw = get(mem, "hardware_error_status")
        if hw & get(mem, "shutdown"):
            self._put(mem, "torque_enable", 0)
        self._sync_present(s, now)

    def _approach(self, s: _Servo, goal: float, dt: float) -> float:
        """Position (ticks) after ``dt`` s of first-order motion toward ``goal`` (a blocked joint stays)."""
        if s.blocked or dt <= 0.0:
            return s.pos
        return goal + (s.pos - goal) * math.exp(-dt / max(self.time_constant_s, 1e-6))

    def _sync_present(self, s: _Servo, now: float) -> None:
        put, mem = self._put, s.mem
        put(mem, "present_position", int(round(s.pos)))
        vel_units = s.vel * RAD_PER_TICK / RAD_S_PER_VELOCITY_UNIT
        put(mem, "present_velocity", int(round(vel_units)))
        put(mem, "present_current", int(round(s.cur)))
        put(mem, "present_temperature", max(0, min(255, int(round(s.temp)))))
        put(mem, "present_input_voltage", int(round(self.input_voltage_v * 10)))
        put(mem, "realtime_tick", int((now - self._t0) * 1000) % 32768)
        put(mem, "moving", 1 if abs(s.vel) > 1.0 else 0)

    def _status_error(self, s: _Servo, error: int = 0) -> int:
        if self._get(s.mem, "hardware_error_status"):
            error |= p2.ALERT_BIT
        return error

    # ---- internals: instructions -------------------------------------------------------------
    def _read_bytes(self, s: _Servo, address: int, length: int) -> tuple[int, bytes]:
        if length <= 0 or address + length > TABLE_SIZE:
            return p2.ErrorNumber.ACCESS, b""
        return 0, bytes(s.mem[address: address + length])

    def _write_bytes(self, s: _Servo, address: int, data: bytes) -> int:
        """Apply a write; returns the error number (0 = done). Checks access, EEPROM lock, ranges."""
        end = address + len(data)
        if not data or end > TABLE_SIZE:
            return p2.ErrorNumber.ACCESS
        torque = s.mem[self._reg["torque_enable"].address] == 1
        regs: list[Register] = []
        for a in range(address, end):
            reg = self._owner[a]
            if reg is None:
                if 168 <= a < TABLE_SIZE:  # indirect address/data area is RW
                    continue
                return p2.ErrorNumber.ACCESS
            if not reg.writable or (reg.area == "eeprom" and torque):
                return p2.ErrorNumber.ACCESS
            if reg not in regs:
                regs.append(reg)
        new = bytearray(s.mem)
        new[address:end] = data
        for reg in regs:
            if reg.address < address or reg.address + reg.size > end:
                continue  # partial write of a register: accepted byte-wise, no range check
            value = reg.decode(new[reg.address: reg.address + reg.size])
            if reg.minimum is not None and not reg.minimum <= value <= reg.maximum:
                return p2.ErrorNumber.DATA_RANGE
            if reg.name == "goal_current" and abs(value) > self._get(s.mem, "current_limit"):
                return p2.ErrorNumber.DATA_RANGE
            if reg.name.startswith("goal_") and self._get(s.mem, "bus_watchdog") == WATCHDOG_TRIPPED:
                return p2.ErrorNumber.DATA_RANGE
            if reg.name == "torque_enable" and value == 1 and self._get(s.mem, "hardware_error_status"):
                return p2.ErrorNumber.RESULT_FAIL  # shut down: only a reboot restores torque
        old_mode = self._get(s.mem, "operating_mode")
        s.mem[address:end] = data
        names = {r.name for r in regs}
        if "goal_position" in names:
            goal = self._get(s.mem, "goal_position")
            lo, hi = self._goal_range.get(s.dxl_id, (goal, goal))
            self._goal_range[s.dxl_id] = (min(lo, goal), max(hi, goal))
        if "operating_mode" in names and self._get(s.mem, "operating_mode") != old_mode:
            # Switching mode resets gains and profiles; Goal Current returns to Current Limit.
            for name in ("position_p_gain", "position_i_gain", "position_d_gain", "velocity_p_gain",
                         "velocity_i_gain", "profile_velocity", "profile_acceleration",
                         "feedforward_1st_gain", "feedforward_2nd_gain"):
                self._put(s.mem, name, self._reg[name].default)
            self._put(s.mem, "goal_current", self._get(s.mem, "current_limit"))
            self._put(s.mem, "goal_pwm", self._get(s.mem, "pwm_limit"))
        if "id" in names:
            new_id = self._get(s.mem, "id")
            if new_id != s.dxl_id and new_id not in self._servos:
                del self._servos[s.dxl_id]
                s.dxl_id = new_id
                self._servos[new_id] = s
        return 0

    def _reboot(self, s: _Servo, now: float) -> None:
        for reg in self.table.registers.values():
            if reg.area == "ram" and reg.writable and reg.default is not None:
                self._put(s.mem, reg.name, reg.default)
        self._put(s.mem, "hardware_error_status", 0)
        self._put(s.mem, "goal_current", self._get(s.mem, "current_limit"))
        self._put(s.mem, "goal_position", int(round(s.pos)))
        s.registered = None
        s.cur = s.vel = 0.0
        s.offline_until = now + self.reboot_time_s

    def _factory_reset(self, s: _Servo, option: int, now: float) -> None:
        keep_id, keep_baud = s.dxl_id, self._get(s.mem, "baud_rate")
        fresh = self._new_servo(s.dxl_id, s.pos, now)
        s.mem[:] = fresh.mem
        if option == 0xFF:
            self._put(s.mem, "id", 1)
        else:
            self._put(s.mem, "id", keep_id)
            if option == 0x02:
                self._put(s.mem, "baud_rate", keep_baud)
        new_id = self._get(s.mem, "id")
        if new_id != s.dxl_id and new_id not in self._servos:
            del self._servos[s.dxl_id]
            s.dxl_id = new_id
            self._servos[new_id] = s

    def _wrong_id(self) -> int:
        for cand in range(200, 253):
            if cand not in self._servos:
                return cand
        return 253

    def _roll(self, p: float) -> bool:
        return p > 0.0 and self._rng.random() < p

    def _status(self, s: _Servo, error: int, params: bytes, inst: int, faults: list[str]) -> bytes | None:
        """Build one status packet from ``s`` with the configured faults applied (None = dropped)."""
        f = self._faults
        now = time.monotonic()
        if self._roll(f.drop):
            faults.append("drop")
            self._fault_log.append(FaultEvent(now, "drop", s.dxl_id, inst))
            return None
        reply_id = s.dxl_id
        if self._roll(f.wrong_id):
            faults.append("wrong_id")
            self._fault_log.append(FaultEvent(now, "wrong_id", s.dxl_id, inst))
            reply_id = self._wrong_id()
        pkt = bytearray(p2.encode_status(reply_id, self._status_error(s, error), params))
        if self._roll(f.corrupt):
            faults.append("corrupt")
            self._fault_log.append(FaultEvent(now, "corrupt", s.dxl_id, inst))
            pkt[-1] ^= 0x5A
        return bytes(pkt)

    def _handle(self, pkt: p2.Packet, now: float) -> tuple[list[bytes], float]:
        """Execute one instruction; returns (status packets in order, reply delay in s)."""
        Inst = p2.Instruction
        inst, params, dxl_id = pkt.instruction, pkt.params, pkt.id
        out: list[bytes] = []
        faults: list[str] = []
        ids: tuple[int, ...] = ()
        online = {i: s for i, s in self._servos.items() if now >= s.offline_until}
        broadcast = dxl_id == p2.BROADCAST_ID

        def level(s: _Servo) -> int:
            return s.mem[self._reg["status_return_level"].address]

        def touch(sel: Iterable[_Servo]) -> None:
            for s in sel:
                s.last_rx = now

        if inst == Inst.PING:
            targets = sorted(online) if broadcast else ([dxl_id] if dxl_id in online else [])
            ids = tuple(targets)
            for i in targets:
                s = online[i]
                touch([s])
                model = self._get(s.mem, "model_number")
                r = self._status(s, 0, p2.u16(model) + bytes([self._get(s.mem, "firmware_version")]), inst, faults)
                if r:
                    out.append(r)
        elif inst in (Inst.READ, Inst.WRITE, Inst.REG_WRITE, Inst.ACTION, Inst.REBOOT, Inst.FACTORY_RESET,
                      Inst.CLEAR):
            targets = list(online.values()) if broadcast else ([online[dxl_id]] if dxl_id in online else [])
            ids = tuple(s.dxl_id for s in targets)
            touch(targets)
            for s in targets:
                err, data = 0, b""
                if inst == Inst.READ:
                    if len(params) != 4:
                        err = p2.ErrorNumber.DATA_LENGTH
                    else:
                        err, data = self._read_bytes(s, params[0] | params[1] << 8, params[2] | params[3] << 8)
                elif inst == Inst.WRITE:
                    if len(params) > 2:
                        err = self._write_bytes(s, params[0] | params[1] << 8, params[2:])
                    else:
                        err = p2.ErrorNumber.DATA_LENGTH
                elif inst == Inst.REG_WRITE:
                    if len(params) > 2:
                        s.registered = (params[0] | params[1] << 8, bytes(params[2:]))
                        self._put(s.mem, "registered_instruction", 1)
                    else:
                        err = p2.ErrorNumber.DATA_LENGTH
                elif inst == Inst.ACTION:
                    if s.registered is None:
                        err = p2.ErrorNumber.INSTRUCTION
                    else:
                        err = self._write_bytes(s, *s.registered)
                        s.registered = None
                        self._put(s.mem, "registered_instruction", 0)
                elif inst == Inst.REBOOT:
                    pass  # answered below, then reset
                elif inst == Inst.FACTORY_RESET:
                    pass
                elif inst == Inst.CLEAR:
                    if params != b"\x01\x44\x58\x4c\x22":
                        err = p2.ErrorNumber.DATA_RANGE
                    elif abs(s.vel) > 1.0:
                        err = p2.ErrorNumber.RESULT_FAIL
                    else:
                        s.pos = s.pos % 4096
                        self._put(s.mem, "goal_position", int(round(s.pos)))
                        self._sync_present(s, now)
                lvl = level(s)
                if not broadcast and (lvl >= 2 or (lvl == 1 and inst == Inst.READ)):
                    r = self._status(s, err, data, inst, faults)
                    if r:
                        out.append(r)
                if inst == Inst.REBOOT:
                    self._reboot(s, now)
                elif inst == Inst.FACTORY_RESET:
                    self._factory_reset(s, params[0] if params else 0xFF, now)
        elif inst in (Inst.SYNC_READ, Inst.FAST_SYNC_READ):
            address, length = params[0] | params[1] << 8, params[2] | params[3] << 8
            ids = tuple(params[4:])
            touch(online[i] for i in ids if i in online)
            if inst == Inst.SYNC_READ:
                for i in ids:
                    if i not in online:
                        continue
                    err, data = self._read_bytes(online[i], address, length)
                    r = self._status(online[i], err, data, inst, faults)
                    if r:
                        out.append(r)
            else:
                out.extend(self._fast_sync_reply(online, ids, address, length, inst, faults))
        elif inst == Inst.BULK_READ:
            entries = [(params[k], params[k + 1] | params[k + 2] << 8, params[k + 3] | params[k + 4] << 8)
                       for k in range(0, len(params) - 4, 5)]
            ids = tuple(e[0] for e in entries)
            for i, address, length in entries:
                if i in online:
                    touch([online[i]])
                    err, data = self._read_bytes(online[i], address, length)
                    r = self._status(online[i], err, data, inst, faults)
                    if r:
                        out.append(r)
        elif inst == Inst.SYNC_WRITE:
            address, length = params[0] | params[1] << 8, params[2] | params[3] << 8
            k, sel = 4, []
            while k + 1 + length <= len(params):
                i = params[k]
                if i in online:
                    sel.append(i)
                    touch([online[i]])
                    self._write_bytes(online[i], address, bytes(params[k + 1: k + 1 + length]))
                k += 1 + length
            ids = tuple(sel)
        elif inst == Inst.BULK_WRITE:
            k, sel = 0, []
            while k + 5 <= len(params):
                i, address, length = params[k], params[k + 1] | params[k + 2] << 8, params[k + 3] | params[k + 4] << 8
                if i in online:
                    sel.append(i)
                    touch([online[i]])
                    self._write_bytes(online[i], address, bytes(params[k + 5: k + 5 + length]))
                k += 5 + length
            ids = tuple(sel)
        elif not broadcast and dxl_id in online:
            ids = (dxl_id,)
            r = self._status(online[dxl_id], p2.ErrorNumber.INSTRUCTION, b"", inst, faults)
            if r:
                out.append(r)

        delay = 0.0
        if out:
            first = online.get(ids[0]) if ids and ids[0] in online else None
            if first is not None:
                delay = first.mem[self._reg["return_delay_time"].address] * US_PER_RETURN_DELAY_UNIT * 1e-6
            if self._roll(self._faults.delay):
                faults.append("delay")
                self._fault_log.append(FaultEvent(now, "delay", ids[0] if ids else None, inst))
                delay += self._faults.delay_s
        self._transactions.append(Transaction(now, inst, ids, tuple(faults)))
        return out, delay

    def _fast_sync_reply(self, online: dict[int, _Servo], ids: tuple[int, ...], address: int, length: int,
                         inst: int, faults: list[str]) -> list[bytes]:
        """The combined reply. Faults are rolled once per reply (it is one packet): a drop cuts the
        reply at a random device (as if that servo stayed silent), wrong_id replaces one device's ID."""
        f = self._faults
        now = time.monotonic()
        cut = next((k for k, i in enumerate(ids) if i not in online), None)
        if cut is not None:
            faults.append("missing")
        elif self._roll(f.drop):
            cut = self._rng.randrange(len(ids))
            faults.append("drop")
            self._fault_log.append(FaultEvent(now, "drop", ids[cut], inst))
        wrong = None
        if cut is None and self._roll(f.wrong_id):
            wrong = self._rng.randrange(len(ids))
            faults.append("wrong_id")
            self._fault_log.append(FaultEvent(now, "wrong_id", ids[wrong], inst))
        entries = []
        for k, i in enumerate(ids):
            if cut is not None and k >= cut:
                entries.append((0, 0, bytes(length)))
                continue
            s = online[i]
            err, data = self._read_bytes(s, address, length)
            entries.append((self._status_error(s, err), self._wrong_id() if k == wrong else i, data or bytes(length)))
        pkt = bytearray(p2.encode_fast_sync_read_status(entries))
        if cut is not None:
            # A silent device breaks the chain: the host sees a truncated packet (nothing if the first is silent).
            return [bytes(pkt[: 8 + cut * (length + 4)])] if cut else []
        if self._roll(f.corrupt):
            faults.append("corrupt")
            self._fault_log.append(FaultEvent(now, "corrupt", ids[0], inst))
            pkt[-1] ^= 0x5A
        return [bytes(pkt)]

    # ---- internals: I/O loop -----------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        try:
            n = os.write(self._master, data)
        except (BlockingIOError, OSError):
            n = 0
        self._stats["bytes_tx"] += n

    def _serve(self) -> None:
        buf = bytearray()
        master, wake = self._master, self._wake_r
        poller = select.poll()
        poller.register(master, select.POLLIN)
        poller.register(wake, select.POLLIN)
        while self._running:
            if self._pending:
                timeout_ms = max(0.0, (self._pending[0][0] - time.monotonic()) * 1000.0)
            else:
                timeout_ms = 100.0
            events = poller.poll(timeout_ms)
            for fd, _ in events:
                if fd == wake:
                    return
                try:
                    chunk = os.read(master, 65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    buf += chunk
                    self._process(buf)
            now = time.monotonic()
            with self._lock:
                if not events:
                    self._update(now)
                while self._pending and self._pending[0][0] <= now:
                    _, _, data = heapq.heappop(self._pending)
                    if now >= self._unplugged_until:
                        self._send(data)

    def _process(self, buf: bytearray) -> None:
        with self._lock:
            now = time.monotonic()
            self._stats["bytes_rx"] += len(buf)
            pos = 0
            while True:
                try:
                    pkt, end = p2.parse(buf, pos)
                except p2.ProtocolError as e:
                    self._stats["bad_packets_rx"] += 1
                    pos = e.position + 1
                    continue
                if pkt is None:
                    pos = end
                    break
                pos = end
                if pkt.is_status:
                    continue
                self._stats["packets_rx"] += 1
                if now < self._unplugged_until:
                    self._transactions.append(Transaction(now, pkt.instruction, (), ("unplugged",)))
                    continue
                self._update(now)
                replies, delay = self._handle(pkt, now)
                if not replies:
                    continue
                self._stats["packets_tx"] += len(replies)
                data = b"".join(replies)
                if delay <= 0.0:
                    self._send(data)
                else:
                    self._seq += 1
                    heapq.heappush(self._pending, (now + delay, self._seq, data))
            self._stats["bytes_rx"] -= len(buf) - pos  # count only consumed bytes
            del buf[:pos]


# ---- control channel (drive a running emulator from another process) ------------------------

CONTROL_OPS = (
    "set_faults", "clear_faults", "unplug", "replug", "overheat", "cool", "block", "set_position", "read_register",
    "write_register", "snapshot", "stats", "goal_range", "reset_goal_range", "fault_counts", "ids", "unplugged",
)
"""Emulator methods (and the properties ``ids``, ``unplugged``) reachable through :class:`ControlServer`."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class ControlServer:
    """A local control socket for a running emulator (``dexndm emulate-bus --control PATH``).

    A UNIX stream socket (this machine only; created with mode 0600). Each request is one JSON object
    on one line, ``{"op": NAME, "args": {...}}``, where NAME is one of :data:`CONTROL_OPS` and args
    are that emulator method's keyword arguments; each answer is one line, ``{"ok": true, "result":
    ...}`` or ``{"ok": false, "error": "..."}``. Mapping keys come back as strings (JSON), non-finite
    floats as null. Example with a shell: ``echo '{"op": "unplug", "args": {"duration_s": 2}}' | nc -U PATH``.
    """

    def __init__(self, emulator: DynamixelEmulator, path: str | os.PathLike):
        self.emulator = emulator
        self.path = Path(path)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._running = False

    def start(self) -> str:
        path = self.path
        if path.is_symlink() or path.exists():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise FileExistsError(f"control path {path} exists and is not a socket; choose another path")
            path.unlink()  # a leftover from an emulator that was killed
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_umask)
        sock.listen(4)
        sock.settimeout(0.2)
        self._sock, self._running = sock, True
        self._thread = threading.Thread(target=self._accept, name=f"dxl-emulator control {path}", daemon=True)
        self._thread.start()
        return str(path)

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._sock is not None:
            self._sock.close()
        try:
            if self.path.is_socket():
                self.path.unlink()
        except OSError:
            pass

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while self._running:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            threading.Thread(target=self._serve_client, args=(conn,), daemon=True).start()

    def _serve_client(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            for line in f:
                if not line.strip():
                    continue
                f.write(json.dumps(self.handle(line)).encode() + b"\n")
                f.flush()

    def handle(self, line: bytes | str) -> dict[str, Any]:
        """Execute one request line; never raises (errors are answered)."""
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError('a request is a JSON object {"op": ..., "args": {...}}')
            op, args = req.get("op"), req.get("args") or {}
            if op not in CONTROL_OPS:
                raise ValueError(f"unknown op {op!r}; valid: {list(CONTROL_OPS)}")
            if not isinstance(args, dict):
                raise ValueError("args must be a JSON object of keyword arguments")
            attr = getattr(self.emulator, op)
            result = attr(**args) if callable(attr) else attr
            return {"ok": True, "result": _jsonable(result)}
        except Exception as e:  # noqa: BLE001 - answered to the client, the emulator keeps running
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}


class EmulatorControlError(RuntimeError):
    """The emulator refused a control request (the message is its error) or cannot be reached."""


class EmulatorControl:
    """Client of :class:`ControlServer`: ``ctl.call("unplug", duration_s=2.0)``, or the same as
    ``ctl.unplug(duration_s=2.0)`` for every op in :data:`CONTROL_OPS`. Waits up to ``timeout`` s
    for the socket to appear (the emulator may still be starting)."""

    def __init__(self, path: str | os.PathLike, timeout: float = 10.0):
        self.path = str(path)
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
                break
            except OSError as e:
                sock.close()
                if time.monotonic() > deadline:
                    raise EmulatorControlError(f"cannot reach the emulator's control socket {self.path}: {e}; "
                                               "is `dexndm emulate-bus --control PATH` running?") from e
                time.sleep(0.05)
        sock.settimeout(timeout)
        self._sock = sock
        self._file = sock.makefile("rwb")
        self._lock = threading.Lock()

    def call(self, op: str, **args: Any) -> Any:
        with self._lock:
            self._file.write(json.dumps({"op": op, "args": args}).encode() + b"\n")
            self._file.flush()
            line = self._file.readline()
        if not line:
            raise EmulatorControlError(f"{self.path}: the emulator closed the control connection")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise EmulatorControlError(f"{self.path}: {op}: {reply.get('error')}")
        return reply.get("result")

    def __getattr__(self, op: str) -> Any:
        if op in CONTROL_OPS:
            return functools.partial(self.call, op)
        raise AttributeError(f"{type(self).__name__} has no attribute {op!r}; control ops: {list(CONTROL_OPS)}")

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            self._sock.close()

    def __enter__(self) -> EmulatorControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
