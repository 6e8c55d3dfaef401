"""DynamixelBus: one Protocol 2.0 bus of servos through ``dynamixel_sdk`` (U2D2 or any serial port).

Everything here is in register units (ticks, 0.229 rev/min, mA, 0.1 V, degC) and bus-ID order;
:mod:`dexndm.hand.dynamixel.leap` converts to radians and canonical joint order.

Per control cycle the bus sends one sync write of Goal Position and one (fast) sync read of
Present Current, Velocity and Position (one contiguous span), retrying the read within the cycle;
the result says whether the data is fresh. Temperature, input voltage, Hardware Error Status and
the bus watchdog are read at a low rate by :meth:`DynamixelBus.read_health`.

SDK details handled here:
- ``PortHandler`` paces reply timeouts with a module constant of 16 ms (about 34 ms per missing
  reply); our port handler subclass uses ``latency_timer_ms`` instead, and waits for bytes with
  ``select`` instead of spinning the CPU while a reply is on its way.
- Reads use the SDK's ``syncReadTx``/``readRx``/``rxPacket`` primitives rather than
  ``GroupSyncRead`` so a failure names the servo that broke the chain, partial results survive
  for low-rate reads, and fast-sync-read replies are unstuffed before they are split (the SDK
  splits the stuffed bytes, which shifts every later servo's data if FF FF FD ever appears).
"""

from __future__ import annotations

import logging
import math
import os
import select
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import serial
from dynamixel_sdk import COMM_RX_TIMEOUT, COMM_SUCCESS, GroupSyncWrite, PacketHandler, PortHandler

from dexndm.hand.dynamixel import protocol as p2
from dexndm.hand.dynamixel.control_table import (
    MS_PER_WATCHDOG_UNIT,
    US_PER_RETURN_DELAY_UNIT,
    WATCHDOG_MAX_UNITS,
    XC330_M288_T,
    ControlTable,
    OperatingMode,
    model_name,
)
from dexndm.hand.interface import HandError

log = logging.getLogger(__name__)

DEFAULT_BAUDRATE = 4_000_000
LATENCY_SYSFS = "/sys/bus/usb-serial/devices/{tty}/latency_timer"
STATE_FIRST, STATE_LAST = "present_current", "present_position"  # one contiguous span, 10 bytes
READ_MODES = ("auto", "fast", "sync")
_AUTO_PROBE_AFTER = 5  # consecutive failed fast-read cycles before 'auto' tries a plain sync read
# Protocol 2.0 status packet layout: FF FF FD 00 ID LEN_L LEN_H 0x55 ERR PARAMS... CRC_L CRC_H
_PKT_ID, _PKT_LENGTH_L, _PKT_LENGTH_H, _PKT_ERROR = 4, 5, 6, 8


class DynamixelBusError(HandError):
    """The bus or a servo failed; the message names the port, the ID and register, and the next step."""


class _CycleError(Exception):
    def __init__(self, message: str, dxl_id: int | None = None, timed_out: bool = False):
        super().__init__(message)
        self.dxl_id = dxl_id
        self.timed_out = timed_out  # no (complete) reply in time: it may still arrive, late


class LowLatencyPortHandler(PortHandler):
    """``PortHandler`` with a configurable latency term in the reply timeout, a blocking wait and
    an exclusive lock on the port.

    The SDK computes ``timeout = tx_time * bytes + 2 * LATENCY_TIMER + 2 ms`` with a module
    constant of 16 ms; here ``latency_timer_ms`` replaces it (set the FTDI latency timer to 1 ms to
    match). ``readPort`` waits in ``select`` (up to the remaining timeout) when nothing has arrived
    yet, so the SDK's receive loop does not spin a CPU core. Bytes on the wire are counted.
    """

    def __init__(self, port_name: str, latency_timer_ms: float = 1.0, margin_ms: float = 2.0):
        super().__init__(port_name)
        self.latency_timer_ms = float(latency_timer_ms)
        self.margin_ms = float(margin_ms)
        self.tx_bytes = 0
        self.rx_bytes = 0

    def setupPort(self, cflag_baud: int) -> bool:  # noqa: N802 - SDK API
        # As the SDK does, plus an exclusive lock: a second process on the same bus would steal
        # replies (both see empty or partial reads); with the lock it fails to open instead.
        if self.is_open:
            self.closePort()
        self.ser = serial.Serial(port=self.port_name, baudrate=self.baudrate, bytesize=serial.EIGHTBITS, timeout=0,
                                 exclusive=True)
        self.is_open = True
        self.ser.reset_input_buffer()
        self.tx_time_per_byte = (1000.0 / self.baudrate) * 10.0
        return True

    def setPacketTimeout(self, packet_length: int) -> None:  # noqa: N802 - SDK API
        self.packet_start_time = self.getCurrentTime()
        self.packet_timeout = self.tx_time_per_byte * packet_length + 2.0 * self.latency_timer_ms + self.margin_ms

    def readPort(self, length: int) -> bytes:  # noqa: N802 - SDK API
        data = self.ser.read(length)
        if not data:
            remaining_s = (self.packet_timeout - self.getTimeSinceStart()) / 1000.0
            fd = getattr(self.ser, "fd", None)
            if remaining_s > 0 and fd is not None:
                select.select([fd], [], [], min(remaining_s, 0.05))
                data = self.ser.read(length)
        self.rx_bytes += len(data)
        return data

    def writePort(self, packet) -> int:  # noqa: N802 - SDK API
        n = super().writePort(packet)
        self.tx_bytes += n or 0
        return n


@dataclass(frozen=True)
class BusReading:
    """One cycle's Present Current/Velocity/Position, bus-ID order.

    fresh: read from the servos in this cycle. When False the arrays hold the last good values
    (never presented as new) and ``error`` says why.
    position: (n,) ticks; velocity: (n,) units of 0.229 rev/min; current: (n,) mA.
    stamp: time.monotonic() (s) when the values were received.
    attempts: transactions tried this cycle (1 = no retry).
    alert_ids: servos whose status byte had the alert bit (a hardware error is set).
    """

    fresh: bool
    position: np.ndarray
    velocity: np.ndarray
    current: np.ndarray
    stamp: float
    attempts: int
    alert_ids: tuple[int, ...] = ()
    error: str = ""
    failed_id: int | None = None


@dataclass(frozen=True)
class HealthReading:
    """Low-rate status per servo (IDs that did not answer are absent).

    temperature_c: degC; voltage_v: V; hardware_error: Hardware Error Status bits;
    watchdog: Bus Watchdog register (0xFF = it fired). errors: what failed, '' if all answered.
    """

    temperature_c: dict[int, float]
    voltage_v: dict[int, float]
    hardware_error: dict[int, int]
    watchdog: dict[int, int]
    stamp: float
    errors: str = ""


@dataclass
class BusStats:
    """Counters since open(). Times in seconds."""

    cycles: int = 0
    fresh: int = 0
    stale: int = 0
    retries: int = 0
    errors_by_id: dict[int, int] = field(default_factory=dict)
    last_error: str = ""


class DynamixelBus:
    """Servos ``ids`` of one model on one serial port.

    port: device path (``/dev/serial/by-id/...`` preferred; a pty for the emulator).
    latency_timer_ms: USB latency assumed in reply timeouts (see LowLatencyPortHandler).
    retries: extra attempts of the state read within one cycle.
    read_mode: 'fast' (fast sync read), 'sync' (sync read) or 'auto' (fast; after several failed
        cycles in a row a plain sync read is tried, and if it works the bus stays with it).
    """

    def __init__(
        self,
        port: str,
        ids: Sequence[int],
        *,
        baudrate: int = DEFAULT_BAUDRATE,
        table: ControlTable = XC330_M288_T,
        latency_timer_ms: float = 1.0,
        timeout_margin_ms: float = 2.0,
        retries: int = 2,
        read_mode: str = "auto",
        port_handler_factory: Callable[[str], PortHandler] | None = None,
    ):
        if not port:
            raise DynamixelBusError(
                "no Dynamixel port given; pass the U2D2's device, e.g. /dev/serial/by-id/usb-FTDI_USB__-__Serial_"
                "Converter_XXXX-if00-port0 (list them with `ls /dev/serial/by-id/`)"
            )
        if read_mode not in READ_MODES:
            raise ValueError(f"read_mode must be one of {READ_MODES}, got {read_mode!r}")
        ids = [int(i) for i in ids]
        if len(set(ids)) != len(ids) or not all(0 <= i <= p2.MAX_ID for i in ids):
            raise ValueError(f"bus IDs must be unique and within 0..{p2.MAX_ID}, got {ids}")
        self.port_name = str(port)
        self.ids = tuple(ids)
        self.baudrate = int(baudrate)
        self.table = table
        self.latency_timer_ms = float(latency_timer_ms)
        self.timeout_margin_ms = float(timeout_margin_ms)
        self.stale_replies = 0  # late status packets of an earlier read, skipped (see _read_status)
        self.flushes = 0  # input flushes before a read that follows a failed one (see _settle)
        self._unsettled = ""  # after a failed read: "flush" its leftovers, or "wait" for late replies first
        self.retries = int(retries)
        self.read_mode = read_mode
        self._fast = read_mode != "sync"
        self._fast_failed_cycles = 0
        self._factory = port_handler_factory
        self._port: PortHandler | None = None
        self._ph = PacketHandler(2.0)
        self._goal_writer: GroupSyncWrite | None = None
        self._goal_reg = table["goal_position"]
        self._state_span = table.span(STATE_FIRST, STATE_LAST)
        self._state_fields = [
            (table[name], table[name].address - self._state_span[0])
            for name in ("present_position", "present_velocity", "present_current")
        ]
        n = len(self.ids)
        self._last = (np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64), -math.inf)
        self.current_limit_ma: dict[int, float] = {}
        self.stats = BusStats()
        self._latency_warned = False

    # ---- port --------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._port is not None and bool(getattr(self._port, "is_open", False))

    @property
    def fast_sync_read_active(self) -> bool:
        """Whether the state read currently uses fast sync read (auto mode may have fallen back)."""
        return self._fast

    @property
    def bytes_on_wire(self) -> tuple[int, int]:
        """(bytes sent, bytes received) since open()."""
        if self._port is None:
            return 0, 0
        return getattr(self._port, "tx_bytes", 0), getattr(self._port, "rx_bytes", 0)

    def _where(self) -> str:
        return f"Dynamixel bus {self.port_name} @ {self.baudrate} bps"

    def open(self) -> None:
        """Open the port at ``baudrate`` and check the USB latency timer. Torque is not touched."""
        if self.is_open:
            return
        if self._factory is not None:
            port = self._factory(self.port_name)
        else:
            port = LowLatencyPortHandler(self.port_name, self.latency_timer_ms, self.timeout_margin_ms)
        if not port.getCFlagBaud(self.baudrate) > 0:
            raise DynamixelBusError(
                f"{self._where()}: baud rate {self.baudrate} is not supported by dynamixel_sdk; use one of "
                "57600, 115200, 1000000, 2000000, 3000000, 4000000 (LEAP: 4000000)"
            )
        port.baudrate = self.baudrate
        try:
            ok = port.openPort()
        except (serial.SerialException, OSError) as e:
            raise DynamixelBusError(
                f"{self._where()}: cannot open the port: {e}. Check that the U2D2 is plugged in and the path exists "
                "(`ls -l /dev/serial/by-id/`), that your user is in the 'dialout' group, and that no other process "
                "(another driver node, DYNAMIXEL Wizard) holds the port"
            ) from e
        if not ok:
            raise DynamixelBusError(f"{self._where()}: dynamixel_sdk refused to open the port; check the path and baud")
        self._port = port
        self._goal_writer = GroupSyncWrite(port, self._ph, self._goal_reg.address, self._goal_reg.size)
        for dxl_id in self.ids:
            self._goal_writer.addParam(dxl_id, [0] * self._goal_reg.size)
        timer = self.check_latency_timer()
        if timer is not None and timer > getattr(port, "latency_timer_ms", math.inf):
            # Replies would arrive after our timeout: wait for what the adapter really does.
            port.latency_timer_ms = float(timer)

    def close(self) -> None:
        """Close the port (torque is not touched; see DynamixelHand.disconnect). Idempotent."""
        port, self._port = self._port, None
        self._goal_writer = None
        if port is not None and getattr(port, "ser", None) is not None:
            try:
                port.closePort()
            except (serial.SerialException, OSError) as e:
                log.warning("%s: error while closing the port (ignored): %s", self._where(), e)

    def abandon_transaction(self) -> None:
        """Forget a transaction that was cut short (an exception such as KeyboardInterrupt between
        request and reply): clear the SDK's port-busy flag, which would otherwise refuse every later
        packet, torque off included, and drop any half-received reply."""
        port = self._port
        if port is None:
            return
        port.is_using = False
        if getattr(port, "ser", None) is not None:
            try:
                port.clearPort()
            except (serial.SerialException, OSError) as e:
                log.warning("%s: could not flush the port (ignored): %s", self._where(), e)

    def check_latency_timer(self) -> int | None:
        """The FTDI latency timer (ms) of this port, warning (once) with the fix when it is above 1 ms.

        None when the port is not a USB serial adapter with that sysfs file (e.g. a pty). open()
        widens the reply timeout to this value when it exceeds ``latency_timer_ms``, so a slow
        timer costs rate rather than every read.
        """
        try:
            tty = Path(os.path.realpath(self.port_name)).name
            path = Path(LATENCY_SYSFS.format(tty=tty))
            if not path.is_file():
                return None
            value = int(path.read_text().strip())
        except (OSError, ValueError):
            return None
        if value > 1 and not self._latency_warned:
            self._latency_warned = True
            log.warning(
                "%s: the USB latency timer of %s is %d ms, which adds up to %d ms to every reply. Fix now: "
                "`echo 1 | sudo tee %s`; permanently: a udev rule for 0403:6014 with "
                "ATTR{latency_timer}=\"1\"",
                self._where(), tty, value, value, path,
            )
        return value

    def _require_port(self) -> PortHandler:
        if self._port is None:
            raise DynamixelBusError(f"{self._where()}: port is not open; call open() (or connect() on the hand) first")
        return self._port

    def _transport(self, e: Exception, what: str) -> DynamixelBusError:
        if self._port is not None:
            self._port.is_using = False
        return DynamixelBusError(
            f"{self._where()}: {what} failed: {e}. The adapter may have been unplugged; check the USB cable "
            "and reconnect"
        )

    def _comm(self, result: int) -> str:
        return self._ph.getTxRxResult(result)

    # ---- single registers ------------------------------------------------------------------
    def read(self, dxl_id: int, name: str, retries: int | None = None) -> int:
        """One register of one servo (sign-extended), retried; raises DynamixelBusError. Like the sync reads,
        it takes only a status packet of that ID and of the register's length (see _read_status): a late
        reply to an earlier read is skipped, not decoded as this register."""
        reg = self.table[name]
        port = self._require_port()
        last = ""
        for _ in range(1 + (self.retries if retries is None else retries)):
            try:
                result = self._ph.readTx(port, dxl_id, reg.address, reg.size)
                data, error = b"", 0
                if result == COMM_SUCCESS:
                    data, result, error = self._read_status(port, dxl_id, reg.size)
            except (serial.SerialException, OSError) as e:
                raise self._transport(e, f"reading '{name}' of ID {dxl_id}") from e
            finally:
                port.is_using = False
            if result == COMM_SUCCESS and not error & 0x7F:
                return reg.decode(bytes(data))
            last = self._comm(result) if result != COMM_SUCCESS else self._ph.getRxPacketError(error)
        raise DynamixelBusError(
            f"{self._where()}: reading '{name}' (address {reg.address}) of ID {dxl_id} failed: {last}. "
            "Check that the servo is powered and cabled"
        )

    def write(self, dxl_id: int, name: str, value: int, retries: int | None = None) -> None:
        """Write one register of one servo and check its status packet; raises DynamixelBusError."""
        reg = self.table[name]
        if not reg.writable:
            raise ValueError(f"register '{name}' is read-only")
        data = list(reg.encode(value))
        port = self._require_port()
        last, errnum = "", 0
        for _ in range(1 + (self.retries if retries is None else retries)):
            try:
                result, error = self._ph.writeTxRx(port, dxl_id, reg.address, reg.size, data)
            except (serial.SerialException, OSError) as e:
                raise self._transport(e, f"writing '{name}' of ID {dxl_id}") from e
            if result == COMM_SUCCESS and not error & 0x7F:
                return
            if result == COMM_SUCCESS:
                last, errnum = self._ph.getRxPacketError(error & 0x7F), error & 0x7F
                break  # the servo answered and refused: retrying will not help
            last = self._comm(result)
        hint = "Check that the servo is powered and cabled"
        if errnum == p2.ErrorNumber.ACCESS and reg.area == "eeprom":
            hint = "EEPROM registers can only be written with torque off"
        elif errnum in (p2.ErrorNumber.DATA_RANGE, p2.ErrorNumber.DATA_LIMIT):
            hint = "the value is out of range for this servo (or its bus watchdog fired: write 0 to bus_watchdog)"
        elif errnum == p2.ErrorNumber.RESULT_FAIL:
            hint = "the servo is in a hardware-error shutdown; fix the cause and reboot it"
        raise DynamixelBusError(
            f"{self._where()}: writing {value} to '{name}' (address {reg.address}) of ID {dxl_id} failed: {last}. {hint}"
        )

    def sync_write(self, name: str, values: Mapping[int, int]) -> None:
        """One sync write of a register to several servos (no status packets; not verified)."""
        reg = self.table[name]
        port = self._require_port()
        writer = GroupSyncWrite(port, self._ph, reg.address, reg.size)
        for dxl_id, v in values.items():
            writer.addParam(dxl_id, list(reg.encode(v)))
        try:
            result = writer.txPacket()
        except (serial.SerialException, OSError) as e:
            raise self._transport(e, f"sync write of '{name}'") from e
        if result != COMM_SUCCESS:
            raise DynamixelBusError(f"{self._where()}: sync write of '{name}' failed: {self._comm(result)}")

    # ---- discovery ---------------------------------------------------------------------------
    def ping_all(self, fail_fast: bool = False) -> dict[int, int]:
        """Ping every expected ID; returns {id: model number}.

        Raises ONE DynamixelBusError listing missing IDs, wrong models and the IDs that answered
        (plus, when something is missing, what a broadcast ping finds). fail_fast: give up after
        the first ID that does not answer (used while reconnecting).
        """
        port = self._require_port()
        found: dict[int, int] = {}
        missing: list[int] = []
        for dxl_id in self.ids:
            model = None
            for _ in range(2):
                try:
                    m, result, _err = self._ph.ping(port, dxl_id)
                except (serial.SerialException, OSError) as e:
                    raise self._transport(e, f"ping of ID {dxl_id}") from e
                if result == COMM_SUCCESS:
                    model = m
                    break
            if model is None:
                missing.append(dxl_id)
                if fail_fast:
                    raise DynamixelBusError(f"{self._where()}: ID {dxl_id} does not answer a ping")
            else:
                found[dxl_id] = model
        wrong = {i: m for i, m in found.items() if m != self.table.model_number}
        if missing or wrong:
            extra = ""
            if missing:
                try:
                    seen, result = self._ph.broadcastPing(port)
                except (serial.SerialException, OSError):
                    seen, result = {}, -1
                others = sorted(set(seen) - set(self.ids)) if result == COMM_SUCCESS else []
                if others:
                    extra = f"; a broadcast ping also found unexpected IDs {others}"
            parts = [f"{self._where()}: expected {len(self.ids)} {self.table.model} (model {self.table.model_number})"
                     f" with IDs {list(self.ids)}"]
            if missing:
                parts.append(f"missing IDs {missing}")
            if wrong:
                parts.append("wrong model: " + ", ".join(f"ID {i} is {model_name(m)} ({m})" for i, m in wrong.items()))
            parts.append(f"found IDs {sorted(found)}{extra}")
            raise DynamixelBusError(
                "; ".join(parts) + ". Check 5 V power and the daisy-chain cables of the missing servos, the baud rate "
                "and IDs (DYNAMIXEL Wizard 2.0), and hardware.dynamixel.ids/model in the hand YAML"
            )
        return found

    # ---- configuration -----------------------------------------------------------------------
    def read_current_limits(self) -> dict[int, float]:
        """Current Limit register of every servo (mA); cached in ``current_limit_ma``."""
        self.current_limit_ma = {i: float(self.read(i, "current_limit")) for i in self.ids}
        return dict(self.current_limit_ma)

    def check_goal_current(self, dxl_id: int, goal_ma: float) -> int:
        """Goal Current in register units, refusing values above the rating or the servo's Current Limit."""
        limit = min(self.table.max_current_ma, self.current_limit_ma.get(dxl_id, self.table.max_current_ma))
        if not 0 < goal_ma <= limit:
            raise DynamixelBusError(
                f"{self._where()}: goal current {goal_ma:g} mA for ID {dxl_id} is outside (0, {limit:g}] mA "
                f"(the {self.table.model} rating is {self.table.max_current_ma:g} mA and this servo's Current Limit "
                f"register is {self.current_limit_ma.get(dxl_id, float('nan')):g} mA); lower current_limit_ma"
            )
        return int(round(goal_ma))

    def configure(
        self,
        *,
        gains: Mapping[int, tuple[int, int, int]],
        goal_current_ma: Mapping[int, float],
        watchdog_ms: float = 0.0,
        operating_mode: OperatingMode = OperatingMode.CURRENT_BASED_POSITION,
        return_delay_us: float = 0.0,
        ids: Iterable[int] | None = None,
    ) -> None:
        """Write the operating registers of ``ids`` (default all), each write checked.

        EEPROM registers (Return Delay Time, Operating Mode) are written only where they differ,
        turning that servo's torque off first (EEPROM is locked while torque is on; changing the
        mode also resets gains and Goal Current, so those follow). RAM: position P/I/D gains
        (register units), Goal Current (mA, the torque cap in current-based position mode), Bus
        Watchdog (cleared first, because a fired watchdog locks the goal registers; armed last with
        ``watchdog_ms`` in 20 ms steps; 0 disables).
        """
        ids = list(self.ids if ids is None else ids)
        if not self.current_limit_ma:
            self.read_current_limits()
        goal_units = {i: self.check_goal_current(i, goal_current_ma[i]) for i in ids}  # refuse before writing
        delay_units = int(round(return_delay_us / US_PER_RETURN_DELAY_UNIT))
        for i in ids:
            self.write(i, "bus_watchdog", 0)  # a fired watchdog locks the goal registers until cleared
            eeprom = {"return_delay_time": delay_units, "operating_mode": int(operating_mode)}
            todo = {k: v for k, v in eeprom.items() if self.read(i, k) != v}
            if todo:
                if self.read(i, "torque_enable"):
                    self.write(i, "torque_enable", 0)
                for k, v in todo.items():
                    self.write(i, k, v)
            p, i_gain, d = gains[i]
            self.write(i, "position_p_gain", p)
            self.write(i, "position_i_gain", i_gain)
            self.write(i, "position_d_gain", d)
            self.write(i, "goal_current", goal_units[i])
        self.arm_watchdog(watchdog_ms, ids)

    def arm_watchdog(self, watchdog_ms: float, ids: Iterable[int] | None = None) -> None:
        """Clear the Bus Watchdog (also a fired one) and set it to ``watchdog_ms`` (20 ms steps; 0 = off)."""
        units = 0 if watchdog_ms <= 0 else min(WATCHDOG_MAX_UNITS, max(1, math.ceil(watchdog_ms / MS_PER_WATCHDOG_UNIT)))
        for i in self.ids if ids is None else ids:
            self.write(i, "bus_watchdog", 0)
            if units:
                self.write(i, "bus_watchdog", units)

    def set_goal_current(self, dxl_id: int, goal_ma: float) -> None:
        """Change one servo's Goal Current (mA) at run time (e.g. thermal derating)."""
        self.write(dxl_id, "goal_current", self.check_goal_current(dxl_id, goal_ma))

    def set_torque(self, enabled: bool, ids: Iterable[int] | None = None) -> None:
        """Torque on/off, each servo's write checked. Turning off tries every servo (a broadcast
        sync write first) and then raises one error naming those that did not confirm."""
        ids = list(self.ids if ids is None else ids)
        if not enabled:
            try:
                self.sync_write("torque_enable", {i: 0 for i in ids})
            except DynamixelBusError as e:
                log.warning("%s", e)
        failed = []
        for i in ids:
            try:
                self.write(i, "torque_enable", 1 if enabled else 0)
            except DynamixelBusError as e:
                if enabled:
                    raise
                failed.append((i, str(e)))
        if failed:
            raise DynamixelBusError(
                f"{self._where()}: torque off not confirmed by IDs {[i for i, _ in failed]} ({failed[0][1]}); "
                "they may still hold torque: cut servo power if the hand is unsafe"
            )

    def reboot(self, ids: Iterable[int], timeout_s: float = 2.0) -> None:
        """Reboot servos (clears a hardware-error shutdown; torque comes back off, RAM registers at
        factory values) and wait until each answers a ping again."""
        port = self._require_port()
        ids = list(ids)
        for i in ids:
            try:
                result, error = self._ph.reboot(port, i)
            except (serial.SerialException, OSError) as e:
                raise self._transport(e, f"reboot of ID {i}") from e
            if result != COMM_SUCCESS:
                raise DynamixelBusError(f"{self._where()}: reboot of ID {i} failed: {self._comm(result)}; power-cycle it")
        deadline = time.monotonic() + timeout_s
        for i in ids:
            while True:
                _m, result, _e = self._ph.ping(port, i)
                if result == COMM_SUCCESS:
                    break
                if time.monotonic() > deadline:
                    raise DynamixelBusError(f"{self._where()}: ID {i} did not answer within {timeout_s} s after reboot")
                time.sleep(0.01)

    # ---- cycle -------------------------------------------------------------------------------
    def write_goal_positions(self, ticks: Sequence[int]) -> None:
        """One sync write of Goal Position (ticks, bus-ID order). No status packets come back."""
        self._require_port()
        writer = self._goal_writer
        if len(ticks) != len(self.ids):
            raise ValueError(f"expected {len(self.ids)} goal positions, got {len(ticks)}")
        enc = self._goal_reg.encode
        for dxl_id, t in zip(self.ids, ticks, strict=True):
            writer.changeParam(dxl_id, list(enc(int(t))))
        try:
            result = writer.txPacket()
        except (serial.SerialException, OSError) as e:
            raise self._transport(e, "sync write of goal positions") from e
        if result != COMM_SUCCESS:
            raise DynamixelBusError(f"{self._where()}: sync write of goal positions failed: {self._comm(result)}")

    def read_state(self) -> BusReading:
        """Present position/velocity/current of all servos with up to ``retries`` retries.

        Never raises for a failed read (the reading says fresh=False); raises DynamixelBusError
        only when the port itself is gone.
        """
        self._require_port()
        address, length = self._state_span
        st = self.stats
        st.cycles += 1
        err, failed_id = "", None
        attempts = 0
        for _ in range(1 + self.retries):
            attempts += 1
            try:
                blocks = self._fast_sync_read(address, length) if self._fast else self._sync_read(address, length)
                break
            except _CycleError as e:
                err, failed_id = self._note_failure(e)
        else:
            blocks = None
            if self._fast and self.read_mode == "auto":
                self._fast_failed_cycles += 1
                if self._fast_failed_cycles >= _AUTO_PROBE_AFTER:
                    # Fast sync read keeps failing: does a plain sync read work? (Some firmware/bus
                    # combinations answer fast sync read unreliably.) If it does, stay with it.
                    attempts += 1
                    try:
                        blocks = self._sync_read(address, length)
                        self._fast = False
                        log.warning("%s: fast sync read failed %d cycles in a row while sync read works; using "
                                    "sync read from now on (read_mode='sync' skips the attempt)", self._where(),
                                    self._fast_failed_cycles)
                    except _CycleError as e:
                        err, failed_id = self._note_failure(e)
        st.retries += attempts - 1
        if blocks is None:
            st.stale += 1
            pos, vel, cur, stamp = self._last
            return BusReading(False, pos.copy(), vel.copy(), cur.copy(), stamp, attempts, (), err, failed_id)
        self._fast_failed_cycles = 0
        st.fresh += 1
        n = len(self.ids)
        pos, vel, cur = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
        alerts = []
        (rp, op), (rv, ov), (rc, oc) = self._state_fields
        for k, dxl_id in enumerate(self.ids):
            error, data = blocks[dxl_id]
            pos[k] = rp.decode(data[op: op + rp.size])
            vel[k] = rv.decode(data[ov: ov + rv.size])
            cur[k] = rc.decode(data[oc: oc + rc.size])
            if error & p2.ALERT_BIT:
                alerts.append(dxl_id)
        stamp = time.monotonic()
        self._last = (pos, vel, cur, stamp)
        return BusReading(True, pos.copy(), vel.copy(), cur.copy(), stamp, attempts, tuple(alerts))

    def _note_failure(self, e: _CycleError) -> tuple[str, int | None]:
        self._mark_unsettled(e.timed_out)
        st = self.stats
        st.last_error = str(e)
        if e.dxl_id is not None:
            st.errors_by_id[e.dxl_id] = st.errors_by_id.get(e.dxl_id, 0) + 1
        return str(e), e.dxl_id

    def read_health(self) -> HealthReading:
        """Temperature, input voltage, Hardware Error Status and Bus Watchdog of every servo that answers."""
        self._require_port()
        hw, wd, temp, volt = {}, {}, {}, {}
        errors = []
        t = self.table
        for first, last, sink in (
            ("hardware_error_status", "hardware_error_status", "hw"),
            ("bus_watchdog", "bus_watchdog", "wd"),
            ("present_input_voltage", "present_temperature", "tv"),
        ):
            address, length = t.span(first, last)
            blocks, error = self._sync_read_partial(address, length)
            if error:
                errors.append(f"{first}: {error}")
            for dxl_id, (_err, data) in blocks.items():
                if sink == "hw":
                    hw[dxl_id] = t["hardware_error_status"].decode(data)
                elif sink == "wd":
                    wd[dxl_id] = t["bus_watchdog"].decode(data)
                else:
                    rv, rt = t["present_input_voltage"], t["present_temperature"]
                    volt[dxl_id] = rv.decode(data[rv.address - address:]) * 0.1
                    temp[dxl_id] = float(rt.decode(data[rt.address - address:]))
        return HealthReading(temp, volt, hw, wd, time.monotonic(), "; ".join(errors))

    # ---- reads on the wire -------------------------------------------------------------------
    def _settle(self, port) -> None:
        """Before a read that follows a failed one: drop what is left of the failed read's replies.

        A fast sync read reply carries no sequence number. A reply that comes after its read timed out
        (a loaded host, a slow servo) would otherwise be taken as the answer to the next read, and old
        positions reported as fresh. After a timeout the bus first waits one reply timeout for such late
        replies; after a bad reply (CRC, wrong ID) it only flushes. A reply later than that is caught by
        the check for a second reply in _fast_sync_read."""
        if not self._unsettled:
            return
        if self._unsettled == "wait":
            time.sleep((2.0 * self.latency_timer_ms + self.timeout_margin_ms) / 1000.0)
        self._unsettled = ""
        port.clearPort()
        self.flushes += 1

    def _mark_unsettled(self, timed_out: bool) -> None:
        """After a failed read: wait for its late replies (a timeout) or only flush (a bad reply); see _settle."""
        self._unsettled = "wait" if timed_out else "flush"

    def _fast_sync_read(self, address: int, length: int) -> dict[int, tuple[int, bytes]]:
        port, ph, ids = self._port, self._ph, self.ids
        try:
            self._settle(port)
            if port.getBytesAvailable():  # a late reply to an earlier read, landed after it was given up
                self.stale_replies += 1
                port.clearPort()
                self.flushes += 1
            result = ph.syncReadTx(port, address, length, list(ids), len(ids), True)
            if result != COMM_SUCCESS:
                raise _CycleError(f"fast sync read: {self._comm(result)}")
            rx, result = ph.rxPacket(port, True)
        except (serial.SerialException, OSError) as e:
            raise self._transport(e, "fast sync read") from e
        if result != COMM_SUCCESS:
            # A truncated reply tells which servo broke the chain.
            got = len(rx) if rx else 0
            k = max(0, (got - 8)) // (length + 4)
            culprit = ids[k] if got > 8 and k < len(ids) else None
            raise _CycleError(f"fast sync read: {self._comm(result)} ({got} bytes)", culprit,
                              timed_out=result == COMM_RX_TIMEOUT)
        if rx[4] != p2.BROADCAST_ID:
            raise _CycleError(f"fast sync read: got a status packet from ID {rx[4]} instead of the combined reply", rx[4])
        # A second complete reply in one read: one of the two answers an earlier, timed-out read, and a fast sync
        # reply carries nothing that tells which (the late one may land before or after this read's own). Neither
        # is taken: the read fails (flush), and the next starts clean.
        if port.getBytesAvailable() >= len(rx) - 4:  # (byte stuffing may make it a little shorter)
            self.stale_replies += 1
            raise _CycleError("fast sync read: two replies to one read (one answers an earlier, timed-out read)")
        size = (rx[5] | rx[6] << 8) + 7
        payload = p2.unstuff(bytes(rx[8: size - 2]))
        try:
            return p2.split_fast_sync_read(payload, length, ids)
        except p2.ProtocolError as e:
            raise _CycleError(f"fast sync read: {e}") from None

    def _sync_read(self, address: int, length: int) -> dict[int, tuple[int, bytes]]:
        blocks, error = self._sync_read_partial(address, length)
        if error:
            missing = [i for i in self.ids if i not in blocks]
            raise _CycleError(f"sync read: {error}", missing[0] if missing else None)
        return blocks

    def _read_status(self, port, dxl_id: int, length: int) -> tuple[bytes, int, int]:
        """The status packet of ``dxl_id`` that answers a read of ``length`` bytes: (data, result, error).

        The SDK's ``readRx`` takes the first packet of the ID whatever it carries. A read that timed out
        leaves its replies to arrive late, during the next request; one of them (e.g. 10 bytes of current,
        velocity and position) would be decoded as this read's registers (the velocity byte as a
        temperature). Packets of other IDs and of another length are skipped until the timeout."""
        ph = self._ph
        while True:
            rx, result = ph.rxPacket(port, False)
            if result != COMM_SUCCESS:
                return b"", result, 0
            n_params = (rx[_PKT_LENGTH_L] | rx[_PKT_LENGTH_H] << 8) - 4  # minus instruction, error, CRC
            if rx[_PKT_ID] == dxl_id and n_params == length:
                return bytes(rx[_PKT_ERROR + 1: _PKT_ERROR + 1 + length]), result, rx[_PKT_ERROR]
            self.stale_replies += 1

    def _sync_read_partial(self, address: int, length: int) -> tuple[dict[int, tuple[int, bytes]], str]:
        port, ph = self._require_port(), self._ph
        blocks: dict[int, tuple[int, bytes]] = {}
        try:
            self._settle(port)
            result = ph.syncReadTx(port, address, length, list(self.ids), len(self.ids), False)
            if result != COMM_SUCCESS:
                return blocks, self._comm(result)
            for dxl_id in self.ids:
                data, result, error = self._read_status(port, dxl_id, length)
                if result != COMM_SUCCESS:
                    self._mark_unsettled(result == COMM_RX_TIMEOUT)
                    return blocks, f"ID {dxl_id}: {self._comm(result)}"
                blocks[dxl_id] = (error, data)
        except (serial.SerialException, OSError) as e:
            raise self._transport(e, "sync read") from e
        finally:
            port.is_using = False
        return blocks, ""
