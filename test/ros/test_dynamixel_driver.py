"""hand_driver with the dynamixel backend through a live graph.

The servo emulator runs as its own process (`dexndm emulate-bus --control`), the driver as
`dexndm launch hand --backend dynamixel --port <pty>`; this test reads and perturbs the emulated
servos through the emulator's control socket and watches the driver through a probe node.
"""

from __future__ import annotations

import math
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rosgraph import REPO, Emulator, Launched, Probe, command, positions, statuses, values
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger

from dexndm.hand.spec import load_hand_spec

pytestmark = pytest.mark.ros

TICK = 2.0 * math.pi / 4096  # rad per tick, stated independently of the driver
# Generous reply timeouts: the emulator shares two loaded cores with the driver and the test.
DRIVER_PARAMS = {"dynamixel.latency_timer_ms": 8.0}


def params_file(tmp_path: Path, extra: dict | None = None) -> str:
    path = tmp_path / "driver_params.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": {**DRIVER_PARAMS, **(extra or {})}}}))
    return str(path)


def calibrated_hand(tmp_path: Path) -> tuple[str, dict[str, tuple[float, int, int]]]:
    """The LEAP hand with a non-trivial calibration: an offset away from pi and two reversed joints.
    Returns the YAML path and joint -> (offset, direction, bus ID)."""
    doc = yaml.safe_load((REPO / "config" / "hands" / "leap.yaml").read_text())
    doc["urdf"] = str(REPO / doc["urdf"])
    cal = doc["hardware"]["dynamixel"]["calibration"]
    cal["if_mcp"] = {"offset": math.pi + 0.25, "direction": 1}
    cal["th_cmc"] = {"offset": math.pi, "direction": -1}
    cal["mf_pip"] = {"offset": math.pi - 0.3, "direction": -1}
    path = tmp_path / "leap_calibrated.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    ids = doc["hardware"]["dynamixel"]["ids"]
    return str(path), {n: (float(c["offset"]), int(c["direction"]), int(ids[n])) for n, c in cal.items()}


def to_ticks(cal, name: str, q: float) -> int:
    offset, direction, _ = cal[name]
    return int(round((direction * q + offset) / TICK))





def wait_until(fn, timeout: float, period: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = fn()
        if out:
            return out
        time.sleep(period)
    return fn()


def driver_status(probe: Probe) -> DiagnosticStatus | None:
    msg = probe.latest("/diagnostics")
    return statuses(msg).get("/hand_driver: driver") if msg else None


def bus_values(probe: Probe) -> dict[str, str]:
    return values(statuses(probe.latest("/diagnostics"))["/hand_driver: dynamixel/bus"])


def stamps_of(msgs) -> np.ndarray:
    return np.array([m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for m in msgs])


def test_dynamixel_driver_end_to_end(tmp_path):
    """Radians with calibration, goal ticks, activate-time registers, rate, limits, per-motor
    diagnostics, and every servo limp after --duration."""
    hand, cal = calibrated_hand(tmp_path)
    spec = load_hand_spec(hand)
    names = spec.joint_names
    q_true = np.clip(np.linspace(-0.3, 0.9, spec.n), spec.lower + 0.05, spec.upper - 0.05)
    with Emulator(tmp_path, hand) as emu, Probe("probe_dxl") as probe:
        for n, q in zip(names, q_true, strict=True):
            emu.ctl.set_position(dxl_id=cal[n][2], ticks=to_ticks(cal, n, q))
        probe.subscribe(JointState, "/joint_states", qos=500)
        probe.subscribe(DiagnosticArray, "/diagnostics")
        cmd = probe.publisher(JointState, "/joint_commands")
        with Launched("launch", "hand", "--hand", hand, "--backend", "dynamixel", "--port", emu.port,
                      "--duration", "17", "--params", params_file(tmp_path)) as launch:
            probe.wait_for("/joint_states", 20, timeout=30)
            first = probe.latest("/joint_states")
            assert list(first.name) == list(names)
            # Offsets and directions applied: the published radians are the emulated servo angles.
            np.testing.assert_allclose(positions(first, names), q_true, atol=1.01 * TICK)
            assert len(first.effort) == spec.n and np.all(np.isfinite(first.effort))

            # Activate configured every servo: mode 5, return delay 0, gains (x0.75 on the MCP-side
            # servos), I 0, goal current 350 mA, bus watchdog 500 ms = 25 units, torque on.
            servos = emu.servos()
            for s in servos:
                scale = 0.75 if s["id"] in (0, 4, 8) else 1.0
                assert (s["operating_mode"], s["return_delay_time"], s["position_i_gain"]) == (5, 0, 0), s
                assert (s["position_p_gain"], s["position_d_gain"]) == (round(800 * scale), round(200 * scale)), s
                assert (s["goal_current"], s["bus_watchdog"], s["torque_enable"]) == (350, 25, 1), s

            # Rate from the sample stamps over 2.5 s.
            probe.clear("/joint_states")
            time.sleep(2.5)
            stamps = stamps_of(probe.msgs["/joint_states"][:])
            rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
            assert 90.0 <= rate <= 110.0, f"joint_states at {rate:.1f} Hz (configured 100 Hz)"
            assert np.all(np.diff(stamps) > 0)

            # Two joints by name, one with an offset, one reversed: the exact goal ticks, motion within 1 s.
            before = positions(probe.latest("/joint_states"), names)
            j1, j2 = "if_mcp", "th_cmc"
            i1, i2 = spec.index_of([j1, j2])
            t1, t2 = float(before[i1] + 0.4), float(before[i2] - 0.3)
            for _ in range(5):
                cmd.publish(command([j2, j1], [t2, t1]))
                time.sleep(0.05)
            time.sleep(0.75)
            after = positions(probe.latest("/joint_states"), names)
            assert abs(after[i1] - t1) < 0.03 and abs(after[i2] - t2) < 0.03, (after[[i1, i2]], t1, t2)
            others = np.setdiff1d(np.arange(spec.n), [i1, i2])
            assert np.max(np.abs(after[others] - before[others])) < 0.02
            goals = {s["id"]: s["goal_position"] for s in emu.servos()}
            assert goals[cal[j1][2]] == to_ticks(cal, j1, t1)
            assert goals[cal[j2][2]] == to_ticks(cal, j2, t2)

            # Bad commands never reach the servos outside the limits; the driver keeps running.
            emu.ctl.reset_goal_range()
            probe.clear("/joint_states")
            bad = [command([j1], [math.nan]), command([j1, j2], [spec.upper[i1] + 5.0, spec.lower[i2] - 5.0]),
                   command(["no_such_joint"], [0.1]), command([j1, j2], [0.1]), command([j1], [math.inf])]
            for _ in range(3):
                for m in bad:
                    cmd.publish(m)
                    time.sleep(0.04)
            time.sleep(0.8)
            assert len(probe.msgs["/joint_states"]) > 80, "driver stopped publishing after bad commands"
            ranges = {int(k): v for k, v in emu.ctl.goal_range().items()}
            for n, lo, hi in zip(names, spec.lower, spec.upper, strict=True):
                a, b = sorted((to_ticks(cal, n, lo), to_ticks(cal, n, hi)))
                assert a <= ranges[cal[n][2]][0] <= ranges[cal[n][2]][1] <= b, (n, ranges[cal[n][2]], (a, b))
            # The clamped command put both joints exactly on their limits.
            goals = {s["id"]: s["goal_position"] for s in emu.servos()}
            assert goals[cal[j1][2]] == to_ticks(cal, j1, spec.upper[i1])
            assert goals[cal[j2][2]] == to_ticks(cal, j2, spec.lower[i2])

            # Per-motor and bus diagnostics from the backend, next to the driver's own status.
            time.sleep(1.2)
            st = statuses(probe.latest("/diagnostics"))
            for n in names:
                motor = st[f"/hand_driver: dynamixel/{n} (ID {cal[n][2]})"]
                assert motor.level == DiagnosticStatus.OK, (n, motor.message)
                assert float(values(motor)["temperature_c"]) == pytest.approx(30.0, abs=5.0)
                assert float(values(motor)["voltage_v"]) == pytest.approx(5.0)
            bus = st["/hand_driver: dynamixel/bus"]
            assert bus.message == "torque on" and int(values(bus)["fresh_reads"]) > 300
            drv = values(st["/hand_driver: driver"])
            assert int(drv["rejected_commands"]) >= 9 and int(drv["clamped_targets"]) >= 2

            assert launch.wait(40) == 0, launch.output
        # After --duration every servo is limp.
        assert emu.column("torque_enable") == [0] * spec.n, launch.output
    assert "torque off" in launch.output


def arrivals_between(probe: Probe, topic: str, t0: float, t1: float) -> int:
    return sum(1 for t in probe.arrivals[topic][:] if t0 <= t < t1)


def test_faults_reconnect_fault_state_and_reboot(tmp_path):
    """Dropped/corrupt replies, a 2 s unplug, a bus that stays down (fault state), an overheated
    servo: the driver keeps running, never publishes stale samples, never commands outside the
    limits, reconnects by itself, and ~/reboot_faulted brings it back. Ctrl-C leaves torque off."""
    spec = load_hand_spec("leap")
    names = spec.joint_names
    j = "if_mcp"
    i = int(spec.index_of([j])[0])
    lo_ticks, hi_ticks = (int(round((q + math.pi) / TICK)) for q in (spec.lower[i], spec.upper[i]))
    # Backoff 0.2 s doubling to 0.8 s, 6 attempts: a 2 s unplug is survived, a longer one ends in the fault state.
    params = params_file(tmp_path, {"dynamixel.reconnect_backoff_s": 0.2, "dynamixel.reconnect_backoff_max_s": 0.8,
                                    "dynamixel.max_reconnect_attempts": 6})
    with Emulator(tmp_path) as emu, Probe("probe_dxl_faults") as probe, \
            Launched("launch", "hand", "--backend", "dynamixel", "--port", emu.port, "--params", params) as launch:
        probe.subscribe(JointState, "/joint_states", qos=500)
        probe.subscribe(DiagnosticArray, "/diagnostics")
        cmd = probe.publisher(JointState, "/joint_commands")
        probe.wait_for("/joint_states", 20, timeout=30)

        # 10 % dropped and 10 % corrupt status packets while the joint sweeps past both of its limits.
        emu.ctl.set_faults(drop=0.1, corrupt=0.1)
        emu.ctl.reset_goal_range()
        probe.clear("/joint_states")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:
            target = 1.0 + 2.5 * math.sin(2.0 * math.pi * 0.5 * (time.monotonic() - t0))  # beyond [-0.31, 2.23]
            cmd.publish(command([j], [target]))
            time.sleep(0.02)
        msgs = probe.msgs["/joint_states"][:]
        faults = emu.ctl.fault_counts()
        assert faults.get("drop", 0) > 10 and faults.get("corrupt", 0) > 10, faults
        assert len(msgs) > 0.7 * 100 * 3.0, f"{len(msgs)} joint_states in 3 s under faults"
        assert np.all(np.diff(stamps_of(msgs)) > 0), "a sample was published twice"
        q = np.array([positions(m, names)[i] for m in msgs])
        assert q.max() > spec.upper[i] - 0.1 and q.min() < spec.lower[i] + 0.1  # it followed the sweep
        low, high = emu.ctl.goal_range()[str(1)]
        assert lo_ticks <= low and high <= hi_ticks, ((low, high), (lo_ticks, hi_ticks))
        assert low == lo_ticks and high == hi_ticks  # clamped onto the limits, not short of them

        # Unplugged for 2 s: nothing is published meanwhile (no stale sample passes as fresh),
        # diagnostics go on and say so, and the driver reconnects by itself.
        emu.ctl.clear_faults()
        cmd.publish(command([j], [0.5]))
        time.sleep(0.5)
        t_unplug = time.monotonic()
        emu.ctl.unplug(duration_s=2.0)
        time.sleep(1.5)
        assert emu.column("bus_watchdog") == [0xFF] * 16  # the servos stopped by themselves meanwhile
        time.sleep(0.5)
        assert arrivals_between(probe, "/joint_states", t_unplug + 0.1, t_unplug + 2.0) == 0
        assert arrivals_between(probe, "/diagnostics", t_unplug, t_unplug + 2.0) >= 1
        during = [m for m, t in zip(probe.msgs["/diagnostics"][:], probe.arrivals["/diagnostics"][:], strict=True)
                  if t_unplug + 0.5 < t < t_unplug + 2.0]
        assert any(statuses(m)["/hand_driver: driver"].level >= DiagnosticStatus.WARN
                   and "not published" in statuses(m)["/hand_driver: driver"].message for m in during)
        assert any("reconnecting" in statuses(m)["/hand_driver: dynamixel/bus"].message for m in during)
        probe.clear("/joint_states")
        probe.wait_for("/joint_states", 10, timeout=6.0)
        reconnects = wait_until(lambda: int(bus_values(probe)["reconnects"]), 3.0)
        assert reconnects >= 1
        assert emu.column("bus_watchdog") == [25] * 16 and emu.column("torque_enable") == [1] * 16  # re-armed
        cmd.publish(command([j], [1.2]))
        time.sleep(0.6)
        assert abs(positions(probe.latest("/joint_states"), names)[i] - 1.2) < 0.03

        # The bus stays down: the hand enters its fault state. The node survives, says ERROR and
        # keeps publishing diagnostics; no joint_states.
        emu.ctl.unplug(duration_s=30.0)
        status = wait_until(lambda: (s := driver_status(probe)) is not None and "fault state" in s.message and s,
                            timeout=10.0)
        assert status and status.level == DiagnosticStatus.ERROR, status
        t_fault = time.monotonic()
        time.sleep(2.2)
        assert arrivals_between(probe, "/diagnostics", t_fault, t_fault + 2.2) >= 2
        assert arrivals_between(probe, "/joint_states", t_fault, t_fault + 2.2) == 0
        assert launch.proc.poll() is None, launch.output
        # Replugged: ~/reboot_faulted leaves the fault state, torque off; ~/enable_torque holds again.
        emu.ctl.replug()
        resp = probe.call(Trigger, "/hand_driver/reboot_faulted", Trigger.Request())
        assert resp.success and "fault state" in resp.message, resp.message
        assert emu.column("torque_enable") == [0] * 16
        probe.clear("/joint_states")
        probe.wait_for("/joint_states", 10, timeout=5.0)
        assert probe.call(SetBool, "/hand_driver/enable_torque", SetBool.Request(data=True)).success
        assert emu.column("torque_enable") == [1] * 16

        # An overheated servo (ID 5): hardware error, whole hand torque off, torque on refused;
        # after cooling, ~/reboot_faulted reboots exactly that servo and torque can come back.
        emu.ctl.overheat(dxl_id=5, temperature_c=80.0)
        motor = "/hand_driver: dynamixel/mf_mcp (ID 5)"
        hot = wait_until(lambda: (m := probe.latest("/diagnostics")) and statuses(m)[motor].level
                         == DiagnosticStatus.ERROR and statuses(m)[motor], 5.0)
        assert hot and "overheating" in hot.message, hot
        assert emu.column("torque_enable") == [0] * 16
        resp = probe.call(SetBool, "/hand_driver/enable_torque", SetBool.Request(data=True))
        assert not resp.success and "hot" in resp.message, resp.message
        emu.ctl.cool(dxl_id=5)
        resp = probe.call(Trigger, "/hand_driver/reboot_faulted", Trigger.Request())
        assert resp.success and "['mf_mcp']" in resp.message, resp.message
        assert emu.column("hardware_error_status") == [0] * 16
        assert probe.call(SetBool, "/hand_driver/enable_torque", SetBool.Request(data=True)).success
        assert emu.column("torque_enable") == [1] * 16
        assert launch.proc.poll() is None

        assert launch.interrupt() == 0
        assert emu.column("torque_enable") == [0] * 16, launch.output  # Ctrl-C: limp


def test_sigkill_leaves_the_servos_to_their_bus_watchdog(tmp_path):
    """SIGKILL runs no cleanup: the armed bus watchdog (500 ms) stops every servo where it is, as an
    XC330 does (torque stays on, register 98 reads -1, goal writes refused until it is cleared)."""
    spec = load_hand_spec("leap")
    j = "if_mcp"
    i = int(spec.index_of([j])[0])
    target = 2.0
    with Emulator(tmp_path, "leap", "--time-constant", "1.5") as emu, Probe("probe_dxl_kill") as probe, \
            Launched("launch", "hand", "--backend", "dynamixel", "--port", emu.port,
                     "--params", params_file(tmp_path)) as launch:
        probe.subscribe(JointState, "/joint_states", qos=500)
        cmd = probe.publisher(JointState, "/joint_commands")
        probe.wait_for("/joint_states", 10, timeout=30)
        pid = int(re.search(r"started hand_driver \(pid (\d+)\)", launch.output).group(1))
        cmd.publish(command([j], [target]))
        assert wait_until(lambda: positions(probe.latest("/joint_states"), spec.joint_names)[i] > 0.2, 5.0)
        os.kill(pid, signal.SIGKILL)
        t_kill = time.monotonic()
        tripped = wait_until(lambda: emu.column("bus_watchdog") == [0xFF] * 16, 3.0)
        assert tripped, emu.column("bus_watchdog")
        assert time.monotonic() - t_kill > 0.3  # not before the 500 ms timeout (less the last packet's age)
        first = emu.column("position_ticks")
        time.sleep(0.5)
        second = emu.servos()
        assert [s["position_ticks"] for s in second] == first, "a servo kept moving after the watchdog fired"
        moving = second[1]  # ID 1 = if_mcp, stopped on its way to the target
        goal_ticks = int(round((target + math.pi) / TICK))
        assert moving["present_position"] < goal_ticks - 100, (moving, goal_ticks)
        assert moving["goal_position"] == moving["present_position"]
        assert [s["torque_enable"] for s in second] == [1] * 16  # the watchdog stops, it does not disable torque
        assert launch.wait(20) == 1  # the supervisor reports the dead required node
