"""The real dynamixel_sdk against the Protocol 2.0 emulator on a pty."""

import sys
import time

import pytest
from dynamixel_sdk import (
    COMM_RX_CORRUPT,
    COMM_RX_TIMEOUT,
    COMM_SUCCESS,
    GroupSyncRead,
    GroupSyncWrite,
    PacketHandler,
    PortHandler,
)

from dexndm.hand.dynamixel import protocol as p2
from dexndm.hand.dynamixel.bus import DynamixelBus
from dexndm.hand.dynamixel.control_table import XC330_M288_T, HardwareError, OperatingMode
from dexndm.hand.dynamixel.emulator import DynamixelEmulator

T = XC330_M288_T
IDS = list(range(16))


@pytest.fixture
def emu():
    with DynamixelEmulator(IDS, time_constant_s=0.01) as e:
        yield e


@pytest.fixture(autouse=True)
def _short_gil_switch():
    """The stock PortHandler spins (non-blocking reads) while it waits for a reply; with the emulator
    thread in the same process the default 5 ms GIL switch interval can starve the emulator past
    the SDK's timeout on a loaded machine. (DynamixelBus's port handler waits in select instead.)"""
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    yield
    sys.setswitchinterval(old)


@pytest.fixture
def sdk(emu):
    port = PortHandler(emu.port)
    assert port.setBaudRate(4_000_000)
    yield port, PacketHandler(2.0)
    port.closePort()


def wait_until(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return False


def test_ping_unicast_broadcast_and_missing(emu, sdk):
    port, ph = sdk
    assert ph.ping(port, 7) == (1240, COMM_SUCCESS, 0)
    assert ph.ping(port, 40)[1] == COMM_RX_TIMEOUT
    found, result = ph.broadcastPing(port)
    assert result == COMM_SUCCESS
    assert sorted(found) == IDS and all(v[0] == 1240 for v in found.values())


def test_read_write_and_access_errors(emu, sdk):
    port, ph = sdk
    assert ph.read2ByteTxRx(port, 2, T["model_number"].address) == (1240, COMM_SUCCESS, 0)
    assert ph.write4ByteTxRx(port, 2, T["goal_position"].address, 1000) == (COMM_SUCCESS, 0)
    assert emu.read_register(2, "goal_position") == 1000
    # read-only register, EEPROM while torque on, out-of-range goal current
    assert ph.write2ByteTxRx(port, 2, T["present_current"].address, 5)[1] == p2.ErrorNumber.ACCESS
    assert ph.write1ByteTxRx(port, 2, T["torque_enable"].address, 1) == (COMM_SUCCESS, 0)
    assert ph.write1ByteTxRx(port, 2, T["operating_mode"].address, 5)[1] == p2.ErrorNumber.ACCESS
    assert ph.write2ByteTxRx(port, 2, T["goal_current"].address, 3000)[1] == p2.ErrorNumber.DATA_RANGE
    assert emu.read_register(2, "operating_mode") == OperatingMode.POSITION


def test_mode_switch_resets_gains_and_goal_current(emu, sdk):
    port, ph = sdk
    assert ph.write2ByteTxRx(port, 1, T["position_p_gain"].address, 640) == (COMM_SUCCESS, 0)
    assert ph.write2ByteTxRx(port, 1, T["goal_current"].address, 300) == (COMM_SUCCESS, 0)
    assert ph.write1ByteTxRx(port, 1, T["operating_mode"].address, 5) == (COMM_SUCCESS, 0)
    assert emu.read_register(1, "position_p_gain") == T["position_p_gain"].default
    assert emu.read_register(1, "goal_current") == emu.read_register(1, "current_limit")


def test_stuffed_reply_decoded_by_sdk(emu, sdk):
    port, ph = sdk
    value = int.from_bytes(b"\xff\xff\xfd\x00", "little")  # the header pattern inside the data
    emu.set_position(4, value)
    assert ph.read4ByteTxRx(port, 4, T["present_position"].address) == (value, COMM_SUCCESS, 0)


@pytest.mark.parametrize("fast", [False, True])
def test_sync_read_and_fast_sync_read(emu, sdk, fast):
    port, ph = sdk
    for i in IDS:
        emu.set_position(i, 100 * i - 700)  # negative ones too
    address, length = T.span("present_current", "present_position")
    group = GroupSyncRead(port, ph, address, length)
    for i in IDS:
        assert group.addParam(i)
    result = group.fastSyncRead() if fast else group.txRxPacket()
    assert result == COMM_SUCCESS
    reg = T["present_position"]
    for i in IDS:
        assert group.isAvailable(i, reg.address, reg.size)
        assert reg.decode(group.getData(i, reg.address, reg.size)) == 100 * i - 700
    kind = p2.Instruction.FAST_SYNC_READ if fast else p2.Instruction.SYNC_READ
    assert emu.transactions()[-1].instruction == kind and emu.transactions()[-1].ok


def test_sync_write_moves_joints_with_torque_on(emu, sdk):
    port, ph = sdk
    reg = T["goal_position"]
    for i in IDS:
        assert ph.write1ByteTxRx(port, i, T["torque_enable"].address, 1) == (COMM_SUCCESS, 0)
    writer = GroupSyncWrite(port, ph, reg.address, reg.size)
    for i in IDS:
        writer.addParam(i, list(reg.encode(2048 + 10 * i)))
    assert writer.txPacket() == COMM_SUCCESS
    assert wait_until(lambda: emu.read_register(15, "goal_position") == 2198)
    assert [emu.read_register(i, "goal_position") for i in IDS] == [2048 + 10 * i for i in IDS]
    assert wait_until(lambda: abs(emu.read_register(15, "present_position") - 2198) <= 1)


def test_overheat_sets_error_bits_alert_and_reboot_clears(emu, sdk):
    port, ph = sdk
    assert ph.write1ByteTxRx(port, 3, T["torque_enable"].address, 1) == (COMM_SUCCESS, 0)
    emu.overheat(3, 80.0)
    hw, result, error = ph.read1ByteTxRx(port, 3, T["hardware_error_status"].address)
    assert result == COMM_SUCCESS and hw & HardwareError.OVERHEATING
    assert error & p2.ALERT_BIT
    assert ph.read1ByteTxRx(port, 3, T["present_temperature"].address)[0] == 80
    assert ph.read1ByteTxRx(port, 3, T["torque_enable"].address)[0] == 0  # shut down
    assert ph.write1ByteTxRx(port, 3, T["torque_enable"].address, 1)[1] & 0x7F == p2.ErrorNumber.RESULT_FAIL
    emu.cool(3)
    assert ph.reboot(port, 3) == (COMM_SUCCESS, p2.ALERT_BIT)
    assert wait_until(lambda: ph.ping(port, 3)[1] == COMM_SUCCESS)
    assert ph.read1ByteTxRx(port, 3, T["hardware_error_status"].address) == (0, COMM_SUCCESS, 0)
    assert ph.write1ByteTxRx(port, 3, T["torque_enable"].address, 1) == (COMM_SUCCESS, 0)


def test_bus_watchdog_stops_and_locks_goals(emu, sdk):
    port, ph = sdk
    assert ph.write1ByteTxRx(port, 0, T["bus_watchdog"].address, 1) == (COMM_SUCCESS, 0)  # 20 ms
    assert ph.write1ByteTxRx(port, 0, T["torque_enable"].address, 1) == (COMM_SUCCESS, 0)
    assert wait_until(lambda: emu.read_register(0, "bus_watchdog") == 0xFF)
    assert ph.write4ByteTxRx(port, 0, T["goal_position"].address, 100)[1] == p2.ErrorNumber.DATA_RANGE
    assert ph.write1ByteTxRx(port, 0, T["bus_watchdog"].address, 0) == (COMM_SUCCESS, 0)
    assert ph.write4ByteTxRx(port, 0, T["goal_position"].address, 100) == (COMM_SUCCESS, 0)


def test_faults_drop_corrupt_wrong_id_and_log(emu, sdk):
    port, ph = sdk
    emu.set_faults(drop=1.0)
    assert ph.ping(port, 1)[1] == COMM_RX_TIMEOUT
    emu.set_faults(drop=0.0, corrupt=1.0)
    assert ph.ping(port, 1)[1] == COMM_RX_CORRUPT
    emu.set_faults(corrupt=0.0, wrong_id=1.0)
    assert ph.ping(port, 1)[1] == COMM_RX_TIMEOUT  # the SDK waits for its own ID
    emu.clear_faults()
    assert ph.ping(port, 1)[1] == COMM_SUCCESS
    kinds = [f.kind for f in emu.fault_log()]
    assert kinds == ["drop", "corrupt", "wrong_id"]
    pings = [t for t in emu.transactions() if t.instruction == p2.Instruction.PING]
    assert [t.faults for t in pings] == [("drop",), ("corrupt",), ("wrong_id",), ()]


def test_fast_sync_read_faults_break_the_reply(emu, sdk):
    port, ph = sdk
    address, length = T.span("present_current", "present_position")
    group = GroupSyncRead(port, ph, address, length)
    for i in IDS:
        group.addParam(i)
    emu.set_faults(drop=1.0)
    assert group.fastSyncRead() != COMM_SUCCESS
    emu.set_faults(drop=0.0, wrong_id=1.0)
    assert group.fastSyncRead() == COMM_RX_CORRUPT
    emu.clear_faults()
    assert group.fastSyncRead() == COMM_SUCCESS


def test_unplug_and_replug(emu, sdk):
    port, ph = sdk
    emu.unplug(0.3)
    assert emu.unplugged
    assert ph.ping(port, 1)[1] == COMM_RX_TIMEOUT
    assert wait_until(lambda: not emu.unplugged)
    assert ph.ping(port, 1)[1] == COMM_SUCCESS


def test_delayed_reply_times_out_then_recovers(emu, sdk):
    port, ph = sdk
    emu.set_faults(delay_s=0.2)  # longer than the SDK's ~34 ms packet timeout
    assert ph.ping(port, 1)[1] == COMM_RX_TIMEOUT
    emu.clear_faults()
    time.sleep(0.25)  # let the late reply land; the next transaction flushes it
    assert ph.ping(port, 2) == (1240, COMM_SUCCESS, 0)
    assert "delay" in [f.kind for f in emu.fault_log()]


def test_bus_fast_read_survives_header_pattern_in_data(emu):
    """The SDK's own fast-sync split would shift every later servo; DynamixelBus unstuffs first."""
    value = int.from_bytes(b"\xff\xff\xfd\x00", "little")
    emu.set_position(5, value)
    bus = DynamixelBus(emu.port, IDS, read_mode="fast", latency_timer_ms=5.0)
    bus.open()
    try:
        r = bus.read_state()
        assert r.fresh
        assert r.position[5] == value
        assert r.position.tolist() == [2048] * 5 + [value] + [2048] * 10
    finally:
        bus.close()


def test_emulate_bus_cli(capsys, tmp_path):
    import argparse

    from dexndm.tools import emulate_bus

    parser = argparse.ArgumentParser()
    emulate_bus.add_arguments(parser)
    link = tmp_path / "bus"
    args = parser.parse_args(["--ids", "0-3", "--duration", "0.2", "--drop", "0.1", "--link", str(link)])
    assert emulate_bus.run(args) == 0
    out = capsys.readouterr().out
    assert "IDs [0, 1, 2, 3]" in out and f"--port {link}" in out
    assert not link.exists()


def test_reg_write_action_and_bulk_read(emu, sdk):
    from dynamixel_sdk import GroupBulkRead

    port, ph = sdk
    goal = T["goal_position"]
    assert ph.regWriteTxRx(port, 6, goal.address, goal.size, list(goal.encode(1500))) == (COMM_SUCCESS, 0)
    assert emu.read_register(6, "goal_position") != 1500
    assert emu.read_register(6, "registered_instruction") == 1
    ph.action(port, p2.BROADCAST_ID)  # unicast ACTION is answered, but the SDK does not wait for it
    assert ph.read4ByteTxRx(port, 6, goal.address) == (1500, COMM_SUCCESS, 0)
    bulk = GroupBulkRead(port, ph)
    volt, temp = T["present_input_voltage"], T["present_temperature"]
    assert bulk.addParam(1, volt.address, volt.size) and bulk.addParam(2, temp.address, temp.size)
    assert bulk.txRxPacket() == COMM_SUCCESS
    assert bulk.getData(1, volt.address, volt.size) == 50  # 5.0 V
    assert bulk.getData(2, temp.address, temp.size) == 30  # ambient degC


def test_latency_timer_warning_and_timeout(emu, tmp_path, monkeypatch, caplog):
    import os

    from dexndm.hand.dynamixel import bus as bus_mod

    monkeypatch.setattr(bus_mod, "LATENCY_SYSFS", str(tmp_path / "{tty}" / "latency_timer"))
    bus = DynamixelBus(emu.port, IDS)
    bus.open()  # no sysfs file (a pty): silent
    assert bus.check_latency_timer() is None and "latency" not in caplog.text
    bus.close()
    tty = os.path.basename(os.path.realpath(emu.port))
    (tmp_path / tty).mkdir()
    (tmp_path / tty / "latency_timer").write_text("16\n")
    bus.open()
    try:
        assert f"echo 1 | sudo tee {tmp_path / tty / 'latency_timer'}" in caplog.text
        assert bus._port.latency_timer_ms == 16.0  # replies are awaited as long as the adapter holds them
        assert bus.read_state().fresh
    finally:
        bus.close()


def test_stalled_joint_draws_goal_current_and_heats():
    with DynamixelEmulator([0], heating_c_per_s_per_a2=200.0) as emu:
        port = PortHandler(emu.port)
        port.setBaudRate(4_000_000)
        ph = PacketHandler(2.0)
        try:
            assert ph.write1ByteTxRx(port, 0, T["operating_mode"].address, 5) == (COMM_SUCCESS, 0)
            assert ph.write2ByteTxRx(port, 0, T["goal_current"].address, 300) == (COMM_SUCCESS, 0)
            emu.block(0)
            assert ph.write1ByteTxRx(port, 0, T["torque_enable"].address, 1) == (COMM_SUCCESS, 0)
            assert ph.write4ByteTxRx(port, 0, T["goal_position"].address, 3000) == (COMM_SUCCESS, 0)
            t0 = emu.read_register(0, "present_temperature")
            current = T["present_current"]
            assert wait_until(lambda: current.decode(ph.read2ByteTxRx(port, 0, current.address)[0]) == 300)
            assert wait_until(lambda: ph.read1ByteTxRx(port, 0, T["present_temperature"].address)[0] >= t0 + 3)
            assert emu.read_register(0, "present_position") == 2048  # it did not move
        finally:
            port.closePort()


def test_second_process_on_the_port_is_refused(emu):
    from dexndm.hand.dynamixel.bus import DynamixelBusError

    first = DynamixelBus(emu.port, IDS)
    first.open()
    try:
        with pytest.raises(DynamixelBusError, match="no other process"):
            DynamixelBus(emu.port, IDS).open()
    finally:
        first.close()


def test_late_state_replies_are_not_read_as_temperatures(emu):
    """A sync read that timed out leaves its replies to arrive late, after the next request went out. A
    status packet from the right ID but for the earlier request (10 bytes of current/velocity/position)
    must not be decoded as the health read's voltage and temperature: the velocity's low byte read as a
    temperature once switched a whole hand off for 'overheating'."""
    bus = DynamixelBus(emu.port, IDS, read_mode="sync", latency_timer_ms=20.0)  # ~44 ms packet timeout
    bus.open()
    try:
        state = T.span("present_current", "present_position")
        emu.set_faults(delay_s=0.06)  # the state replies come ~16 ms after the read gave up
        _, error = bus._sync_read_partial(*state)
        assert "no status packet" in error
        emu.set_faults(delay_s=0.03)  # the health replies come after the late state replies
        health = bus.read_health()  # goes out at once; the late state replies land while it waits
        emu.clear_faults()
        assert "delay" in [f.kind for f in emu.fault_log()]
        temps = {i: emu.read_register(i, "present_temperature") for i in IDS}
        assert health.temperature_c, health.error
        for i, t in health.temperature_c.items():
            assert t == temps[i], (i, health.temperature_c, temps)
        assert bus.stale_replies + bus.flushes > 0  # the late state replies were flushed or seen and skipped
        time.sleep(0.1)
        assert bus.read_health().temperature_c == {i: float(t) for i, t in temps.items()}
    finally:
        bus.close()


@pytest.mark.parametrize("late_ms", [7, 25])
def test_a_late_fast_sync_reply_is_never_taken_for_the_next_read(emu, late_ms):
    """A fast sync read reply has no sequence number. One that arrives after its read timed out must not be
    decoded as the answer to the next read (old positions reported as fresh): a little late, it is flushed
    before the next request; later than that, it is flushed before the next request or, landing inside a read, makes
    that read fail (two replies, neither taken)."""
    for i in IDS:
        emu.set_position(i, 1000 + i)
    bus = DynamixelBus(emu.port, IDS, read_mode="fast", retries=0)  # ~4 ms reply timeout
    bus.open()
    try:
        assert bus.read_state().fresh
        emu.set_faults(delay_s=late_ms / 1000.0)
        assert not bus.read_state().fresh  # timed out; its reply is on the way
        emu.clear_faults()
        for i in IDS:
            emu.set_position(i, 3000 + i)
        seen = []
        for _ in range(20):
            r = bus.read_state()
            if r.fresh:
                seen.append(r.position.tolist())
            time.sleep(0.005)
        assert seen, "no fresh reading after the late reply"
        assert all(p == list(range(3000, 3016)) for p in seen), seen[:3]
        assert bus.flushes + bus.stale_replies > 0
    finally:
        emu.clear_faults()
        bus.close()


def test_single_register_read_skips_a_late_reply_to_an_earlier_read(emu):
    """The same for one register: a timed-out read of the 4-byte position answers late, while a read of the
    1-byte temperature waits; the SDK's readTxRx would return the position's low byte as the temperature."""
    from dexndm.hand.dynamixel.bus import DynamixelBusError

    bus = DynamixelBus(emu.port, IDS, read_mode="sync", latency_timer_ms=20.0)  # ~30 ms single-read timeout
    bus.open()
    try:
        emu.set_faults(delay_s=0.05)
        with pytest.raises(DynamixelBusError, match="present_position"):
            bus.read(3, "present_position", retries=0)
        emu.set_faults(delay_s=0.02)  # the temperature reply comes after the late position reply
        before = bus.stale_replies
        temp = bus.read(3, "present_temperature", retries=0)
        emu.clear_faults()
        assert temp == emu.read_register(3, "present_temperature")
        assert bus.stale_replies > before
        assert bus.read(3, "present_position") == emu.read_register(3, "present_position")
    finally:
        bus.close()
