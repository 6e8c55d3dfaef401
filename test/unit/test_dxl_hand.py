"""DynamixelHand through the real dynamixel_sdk against the emulator (and the calibrate tool)."""

import argparse
import logging
import math
import time

import numpy as np
import pytest
import yaml

from dexndm.hand.dynamixel import protocol as p2
from dexndm.hand.dynamixel.bus import DynamixelBusError
from dexndm.hand.dynamixel.control_table import RAD_PER_TICK
from dexndm.hand.dynamixel.emulator import DynamixelEmulator
from dexndm.hand.dynamixel.leap import PARAMETERS, DynamixelConfig, DynamixelHand, config_from_options, from_options
from dexndm.hand.interface import Hand, HandError
from dexndm.hand.spec import load_hand_spec

# A LEAP-like hand whose canonical order differs from the hardware order (MCP-fwd before MCP-side),
# with non-trivial calibration, so every mapping is exercised.
LIMITS = {"rot": (-1.047, 1.047), "mcp": (-0.314, 2.23), "pip": (-0.506, 1.885), "dip": (-0.366, 2.042),
          "th_cmc": (-0.349, 2.094), "th_axl": (-0.47, 2.443), "th_mcp": (-1.2, 1.9), "th_ipl": (-1.34, 1.88)}
HARDWARE = [f"{f}_{j}" for f in ("if", "mf", "rf") for j in ("rot", "mcp", "pip", "dip")] + \
    ["th_cmc", "th_axl", "th_mcp", "th_ipl"]
CANONICAL = [f"{f}_{j}" for f in ("if", "mf", "rf") for j in ("mcp", "rot", "pip", "dip")] + \
    ["th_cmc", "th_axl", "th_mcp", "th_ipl"]
OFFSETS = {n: math.pi for n in HARDWARE} | {"if_mcp": math.pi + 0.25, "th_axl": math.pi - 0.4}
DIRECTIONS = {n: 1 for n in HARDWARE} | {"th_cmc": -1, "mf_pip": -1}


def _limits(name):
    return LIMITS.get(name) or LIMITS[name.split("_")[1]]


def write_spec(tmp_path, calibration=True):
    joints = "".join(
        f'<joint name="{n}" type="revolute"><parent link="base"/><child link="l_{n}"/>'
        f'<limit lower="{_limits(n)[0]}" upper="{_limits(n)[1]}" effort="0.95" velocity="8.48"/></joint>'
        for n in CANONICAL)
    links = "".join(f'<link name="l_{n}"/>' for n in CANONICAL)
    (tmp_path / "hand.urdf").write_text(f'<robot name="t"><link name="base"/>{links}{joints}</robot>')
    cal = {n: {"offset": OFFSETS[n], "direction": DIRECTIONS[n]} for n in HARDWARE}
    doc = {
        "name": "testleap",
        "urdf": str(tmp_path / "hand.urdf"),
        "joints": [{"name": n, "finger": n.split("_")[0]} for n in CANONICAL],
        "orderings": {"hardware": HARDWARE, "policy": CANONICAL, "sim": CANONICAL},
        "hardware": {"dynamixel": {
            "model": "XC330-M288-T",
            "ids": {n: k for k, n in enumerate(HARDWARE)},
            "calibration": cal if calibration else {},
            "gain_scale": {"if_rot": 0.75, "mf_rot": 0.75, "rf_rot": 0.75},
        }},
    }
    path = tmp_path / "hand.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def ticks_of(name, q):
    """Independent re-statement of the calibration: real = direction * sim + offset."""
    return int(round((DIRECTIONS[name] * q + OFFSETS[name]) / RAD_PER_TICK))


@pytest.fixture
def spec(tmp_path):
    return load_hand_spec(write_spec(tmp_path))


@pytest.fixture
def emu():
    with DynamixelEmulator(range(16), time_constant_s=0.01, seed=1) as e:
        yield e


# Generous timeouts for a loaded CI machine; short backoffs so fault tests stay quick.
FAST = {"latency_timer_ms": 5.0, "health_period_s": 0.02, "reconnect_backoff_s": 0.05, "reconnect_backoff_max_s": 0.3}


@pytest.fixture
def hand(spec, emu):
    h = from_options(spec, {"port": emu.port, **FAST})
    h.connect()
    yield h
    h.disconnect()


def reg(emu, name):
    return [emu.read_register(i, name) for i in range(16)]


def test_implements_hand_protocol(hand):
    assert isinstance(hand, Hand)


def test_positions_in_radians_with_calibration(spec, emu):
    q_true = np.linspace(-0.3, 0.8, 16)  # canonical order, inside every joint's limits
    for k, n in enumerate(HARDWARE):
        emu.set_position(k, ticks_of(n, q_true[CANONICAL.index(n)]))
    with from_options(spec, {"port": emu.port, **FAST}) as h:
        s = h.read_state()
    assert not s.stale and s.age == 0.0
    np.testing.assert_allclose(s.position, q_true, atol=RAD_PER_TICK)
    assert s.effort_unit == "A"


def test_goal_ticks_and_clamping(hand, emu, spec):
    q = np.linspace(-0.2, 0.9, 16)
    q[CANONICAL.index("if_mcp")] = 5.0  # above its upper limit
    q[CANONICAL.index("th_cmc")] = -3.0  # below its lower limit (direction -1 joint)
    sent = hand.write_targets(q)
    expected = np.clip(q, spec.lower, spec.upper)
    np.testing.assert_array_equal(sent, expected)
    hand.read_state()  # a round trip: the emulator has handled the sync write before it answers
    goal = reg(emu, "goal_position")
    assert goal == [ticks_of(n, expected[CANONICAL.index(n)]) for n in HARDWARE]
    assert hand.counters["clamped_targets"] == 2


def test_configure_writes_mode_gains_current_and_delay(hand, emu):
    assert reg(emu, "operating_mode") == [5] * 16
    assert reg(emu, "return_delay_time") == [0] * 16
    p, d = reg(emu, "position_p_gain"), reg(emu, "position_d_gain")
    for k, n in enumerate(HARDWARE):
        scale = 0.75 if n.endswith("_rot") else 1.0
        assert (p[k], d[k]) == (round(800 * scale), round(200 * scale)), n
    assert reg(emu, "position_i_gain") == [0] * 16
    assert reg(emu, "goal_current") == [350] * 16
    assert reg(emu, "bus_watchdog") == [25] * 16  # 500 ms / 20 ms


def test_gain_overrides_are_literal(spec, emu):
    with from_options(spec, {"port": emu.port, "gain_overrides": "if_rot=600/0/150,th_cmc=700/10/100", **FAST}):
        assert emu.read_register(0, "position_p_gain") == 600
        assert emu.read_register(0, "position_d_gain") == 150
        assert emu.read_register(12, "position_i_gain") == 10


def test_torque_only_after_activate_and_off_after_disconnect(spec, emu):
    for i in range(16):
        emu.write_register(i, "torque_enable", 1)  # a previous process left torque on
    h = from_options(spec, {"port": emu.port, **FAST})
    h.connect()
    assert reg(emu, "torque_enable") == [0] * 16
    present = reg(emu, "present_position")
    h.set_torque(True)
    assert reg(emu, "torque_enable") == [1] * 16
    assert reg(emu, "goal_position") == present  # holds the pose it found
    h.disconnect()
    assert reg(emu, "torque_enable") == [0] * 16
    h.disconnect()  # idempotent
    with pytest.raises(HandError, match="not connected"):
        h.read_state()


def test_torque_off_after_exception(spec, emu):
    with pytest.raises(RuntimeError, match="boom"):
        with from_options(spec, {"port": emu.port, **FAST}) as h:
            h.set_torque(True)
            h.write_targets(np.zeros(16))
            raise RuntimeError("boom")
    assert reg(emu, "torque_enable") == [0] * 16


def test_joint_follows_targets(hand, emu):
    hand.set_torque(True)
    target = np.full(16, 0.5)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        hand.write_targets(target)
        s = hand.read_state()
        if not s.stale and np.allclose(s.position, target, atol=2 * RAD_PER_TICK):
            break
    np.testing.assert_allclose(s.position, target, atol=2 * RAD_PER_TICK)


@pytest.mark.parametrize("mode,drop,corrupt", [("fast", 0.1, 0.1), ("sync", 0.01, 0.01)])
def test_faults_never_stale_as_fresh(spec, emu, mode, drop, corrupt):
    """Every fresh state must be backed by a read the emulator answered without a fault."""
    for i in range(16):
        emu.set_position(i, 2048 + i)
    h = from_options(spec, {"port": emu.port, "read_mode": mode, **FAST})
    h.connect()
    try:
        emu.set_faults(drop=drop, corrupt=corrupt, wrong_id=0.02)
        reads = (p2.Instruction.SYNC_READ, p2.Instruction.FAST_SYNC_READ)
        fresh = stale = 0
        for _ in range(120):
            t0 = time.monotonic()
            s = h.read_state()
            t1 = time.monotonic()
            window = [t for t in emu.transactions(t0) if t.t <= t1 and t.instruction in reads]
            if s.stale:
                stale += 1
                assert s.age > 0
            else:
                fresh += 1
                assert any(t.ok and len(t.ids) == 16 for t in window), window
        assert fresh > 60
        assert any(f.kind in ("drop", "corrupt") for f in emu.fault_log())
        # Push it until the retries are exhausted: stale states appear, with the old values.
        emu.set_faults(drop=1.0)
        s = h.read_state()
        assert s.stale and s.age > 0
        np.testing.assert_allclose(h.from_ticks(np.arange(2048, 2064)), s.position)
    finally:
        emu.clear_faults()
        h.disconnect()


def test_unplug_goes_stale_then_reconnects(spec, emu, caplog):
    caplog.set_level(logging.WARNING)
    h = from_options(spec, {"port": emu.port, **FAST})
    h.connect()
    try:
        h.set_torque(True)
        emu.unplug(2.0)
        ages, recovered = [], False
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            s = h.read_state()
            if s.stale:
                ages.append(s.age)
            elif ages:
                recovered = True
                break
            time.sleep(0.01)
        assert recovered, "no fresh state after replug"
        assert len(ages) > 5 and ages[-1] > ages[0]
        assert h.counters["reconnects"] == 1
        assert h.torque_enabled and reg(emu, "torque_enable") == [1] * 16
        assert 0xFF not in reg(emu, "bus_watchdog")  # the watchdog that fired is re-armed
        assert "reconnected" in caplog.text
    finally:
        h.disconnect()


def test_fault_state_after_reconnects_fail(spec, emu):
    h = from_options(spec, {"port": emu.port, **FAST, "reconnect_after": 1, "max_reconnect_attempts": 2,
                            "reconnect_backoff_s": 0.01, "reconnect_backoff_max_s": 0.01})
    h.connect()
    try:
        h.set_torque(True)
        emu.unplug()
        deadline = time.monotonic() + 5.0
        while not h.fault and time.monotonic() < deadline:
            assert h.read_state().stale
        assert h.fault and not h.torque_enabled
        with pytest.raises(HandError, match="fault"):
            h.write_targets(np.zeros(16))
        assert any(d.name == "dynamixel/bus" and d.level == 2 for d in h.diagnostics())
        emu.replug()
        h.recover()
        assert not h.fault and not h.read_state().stale
        assert reg(emu, "torque_enable") == [0] * 16
    finally:
        h.disconnect()


def test_missing_and_wrong_model_one_error(spec):
    ids = [i for i in range(16) if i not in (3, 7)]
    with DynamixelEmulator(ids, models={5: 1200}) as emu:
        h = from_options(spec, {"port": emu.port, **FAST})
        with pytest.raises(DynamixelBusError) as e:
            h.connect()
        msg = str(e.value)
        assert emu.port in msg and "missing IDs [3, 7]" in msg and "ID 5 is XL330-M288-T (1200)" in msg
        assert "found IDs [0, 1, 2, 4, 5, 6, 8," in msg
        assert not h.connected


def test_current_limit_above_rating_refused(spec, emu):
    with pytest.raises(ValueError, match="rating"):
        from_options(spec, {"port": emu.port, "current_limit_ma": 3000})
    emu.write_register(2, "current_limit", 300)  # this servo's own limit is lower
    h = from_options(spec, {"port": emu.port, **FAST})
    with pytest.raises(DynamixelBusError, match="ID 2.*Current Limit register is 300"):
        h.connect()
    assert emu.read_register(2, "goal_current") != 350


def test_overheat_derates_then_turns_torque_off(hand, emu, caplog):
    caplog.set_level(logging.WARNING)
    hand.set_torque(True)
    emu.overheat(5, 62.0)  # above soft (60), below the servo's own 70 degC limit
    deadline = time.monotonic() + 5.0
    while emu.read_register(5, "goal_current") != 175 and time.monotonic() < deadline:
        hand.read_state()
    assert emu.read_register(5, "goal_current") == 175 and "derated" in caplog.text
    assert hand.torque_enabled
    emu.overheat(5, 75.0)  # above hard (67) and the servo's own limit: it shuts down
    while hand.torque_enabled and time.monotonic() < deadline + 5.0:
        hand.read_state()
    assert not hand.torque_enabled and reg(emu, "torque_enable") == [0] * 16
    motor = next(d for d in hand.diagnostics() if "(ID 5)" in d.name)
    assert motor.level == 2 and "overheating" in motor.message
    with pytest.raises(HandError, match="too hot"):
        hand.set_torque(True)
    emu.cool(5)
    hand.reboot([HARDWARE[5]])
    hand.set_torque(True)
    assert reg(emu, "torque_enable") == [1] * 16


def test_diagnostics_cover_every_motor_and_the_bus(hand):
    for _ in range(5):
        hand.read_state()
    diags = hand.diagnostics()
    assert len(diags) == 17
    bus = {k: v for k, v in diags[-1].values}
    assert diags[-1].name == "dynamixel/bus" and float(bus["rate_hz"]) > 0 and float(bus["cycle_time_ms"]) > 0
    assert all(d.level == 0 for d in diags), diags


def test_options_and_parameters():
    names = [n for n, _, _ in PARAMETERS]
    assert names[:2] == ["port", "baudrate"] and all(desc for _, _, desc in PARAMETERS)
    cfg = config_from_options({"port": "/dev/x", "p_gain": 700, "current_limit_ma": 400})
    assert cfg == DynamixelConfig(port="/dev/x", p_gain=700, current_limit_ma=400.0)
    with pytest.raises(ValueError, match=r"unknown Dynamixel parameter\(s\) \['pgain'\]; valid: \['port'"):
        config_from_options({"pgain": 1})
    with pytest.raises(ValueError, match="fault_action"):
        config_from_options({"fault_action": "explode"})
    with pytest.raises(ValueError, match="gain_overrides"):
        config_from_options({"gain_overrides": "if_rot=1/2"})


def test_missing_calibration_is_an_error(tmp_path, emu):
    spec = load_hand_spec(write_spec(tmp_path, calibration=False))
    with pytest.raises(ValueError, match="calibration.*dexndm calibrate"):
        DynamixelHand(spec, DynamixelConfig(port=emu.port))


# ---- calibrate tool ------------------------------------------------------------------------------


def test_calibrate_measures_offsets_and_directions(spec, emu):
    from dexndm.hand.dynamixel.bus import DynamixelBus
    from dexndm.tools import calibrate

    flat = {n: ticks_of(n, 0.0) for n in HARDWARE}
    for k, n in enumerate(HARDWARE):
        emu.set_position(k, flat[n])

    def wait(message, step):
        if step == "closed":  # the user curls the fingers: +0.8 rad on every joint but the side ones
            for k, n in enumerate(HARDWARE):
                if not n.endswith("_rot"):
                    emu.set_position(k, ticks_of(n, 0.8))

    bus = DynamixelBus(emu.port, range(16), latency_timer_ms=5.0)
    bus.open()
    try:
        cal, notes = calibrate.measure(spec.__class__(**{**spec.__dict__, "hardware": {"dynamixel": {}}}), bus,
                                       pose="zero", closed=True, closed_pose="closed", samples=3, wait=wait)
    finally:
        bus.close()
    for n in HARDWARE:
        offset, direction = cal[n]
        assert offset == pytest.approx(OFFSETS[n], abs=RAD_PER_TICK)
        if not n.endswith("_rot"):
            assert direction == DIRECTIONS[n], n
    assert any("th_cmc: direction changed +1 -> -1" in x for x in notes)
    assert any("if_rot" in x and "unchecked" in x for x in notes)


def test_calibrate_cli_writes_block_and_never_overwrites_silently(tmp_path, emu, capsys):
    from dexndm.tools import calibrate

    hand_yaml = write_spec(tmp_path)
    for k, n in enumerate(HARDWARE):
        emu.set_position(k, ticks_of(n, 0.0) + 10)  # every horn 10 ticks further than the YAML says
    parser = argparse.ArgumentParser()
    calibrate.add_arguments(parser)
    base = ["--hand", str(hand_yaml), "--port", emu.port, "--yes", "--samples", "2", "--latency-timer-ms", "5"]
    assert calibrate.run(parser.parse_args(base)) == 0
    printed = yaml.safe_load(capsys.readouterr().out)["calibration"]
    assert printed["if_mcp"]["offset"] == pytest.approx(OFFSETS["if_mcp"] + 10 * RAD_PER_TICK, abs=RAD_PER_TICK)
    assert calibrate.run(parser.parse_args(base + ["--out", str(hand_yaml)])) == 2  # exists, no --write
    assert "--write" in capsys.readouterr().err
    before = hand_yaml.read_text()
    assert calibrate.run(parser.parse_args(base + ["--out", str(hand_yaml), "--write"])) == 0
    assert (tmp_path / "hand.yaml.bak").read_text() == before
    doc = yaml.safe_load(hand_yaml.read_text())
    new = doc["hardware"]["dynamixel"]["calibration"]
    assert new["th_cmc"] == {"offset": pytest.approx(OFFSETS["th_cmc"] + 10 * RAD_PER_TICK, abs=RAD_PER_TICK),
                             "direction": -1}
    assert doc["hardware"]["dynamixel"]["gain_scale"]["if_rot"] == 0.75  # rest of the file untouched
    load_hand_spec(hand_yaml)
    fresh = tmp_path / "fragment.yaml"
    assert calibrate.run(parser.parse_args(base + ["--out", str(fresh)])) == 0
    assert set(yaml.safe_load(fresh.read_text())["hardware"]["dynamixel"]["calibration"]) == set(HARDWARE)
