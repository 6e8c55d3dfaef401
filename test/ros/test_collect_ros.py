"""`dexndm collect --backend ros`: Chaos Box collection through a running hand driver and wrist node,
one block of episodes per wrist orientation (`dexndm launch collect`)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rosgraph import REPO, Emulator, Launched, Probe, statuses, values

from dexndm.bag.io import joint_states_arrays, load_metadata
from dexndm.collect.chaos_box import finished_episodes
from dexndm.hand.spec import load_hand_spec
from dexndm.wrist.kinematics import quat_angle
from dexndm.wrist.poses import named_orientations

pytestmark = pytest.mark.ros


def _collect(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "dexndm.cli", "collect", "--backend", "ros", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_collects_one_block_per_wrist_through_the_wrist_node(tmp_path):
    spec = load_hand_spec("leap")
    named = named_orientations("leap")
    out = tmp_path / "bags"
    with Launched("launch", "collect", "--backend", "sim", "--wrist-backend", "sim", "--duration", "150") as launch:
        r = _collect("--mode", "base_waves", "--wrists", "palm_up,palm_down", "--episodes", "1", "--steps", "20",
                     "--out", str(out))
        launch.interrupt()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:] + launch.output[-3000:]
    eps = finished_episodes(out)
    assert [p.name for p in eps] == ["episode_000000", "episode_000001"]
    metas = [json.loads(load_metadata(p)["custom_data"]["dexndm"]) for p in eps]
    assert [m["wrist"] for m in metas] == ["palm_up", "palm_down"]
    assert all(m["backend"] == "ros" for m in metas)
    # The orientation the wrist node measured when the block started is the requested one.
    for m in metas:
        assert quat_angle(m["wrist_quat"], named[m["wrist"]]) < math.radians(2)
    for p in eps:
        cmd = joint_states_arrays(p, "/joint_commands", spec.joint_names).position
        st = joint_states_arrays(p, "/joint_states", spec.joint_names).position
        assert cmd.shape == (20, 16) and st.shape == (21, 16)
        assert np.all(cmd >= spec.lower) and np.all(cmd <= spec.upper)
        # The driver's hand followed the collector's commands (one 50 ms step later, loaded fingers).
        assert np.abs(st[1:] - cmd).mean() < 0.1
        assert np.abs(np.diff(st, axis=0)).max() > 0  # a live hand, not a frozen sample
    assert "wrist -> palm_down" in r.stdout


def test_without_a_hand_driver_the_collector_says_what_to_start(tmp_path):
    r = _collect("--mode", "base_waves", "--episodes", "1", "--out", str(tmp_path / "x"), "--ros-timeout", "3", timeout=120)
    assert r.returncode == 2
    assert "no joint_states" in r.stdout and "dexndm launch collect" in r.stdout


def _reports_hot(msg, temperature_c: float) -> bool:
    if msg is None:
        return False
    temps = [values(st).get("temperature_c") for st in statuses(msg).values()]
    return any(t is not None and float(t) >= temperature_c for t in temps)


def test_pauses_with_torque_off_on_a_hot_motor_and_resumes_when_it_cooled(tmp_path):
    """A LEAP hand on the Dynamixel bus (emulated servos) under the driver node: one motor held at 62 degC
    (above --max-temperature 60, below the servos' own 70 degC limit). The collector reads the temperature
    from the driver's diagnostics, turns torque off through the driver and waits; once the motor has cooled
    it turns torque on again and records every episode."""
    hot_id = 5
    out = tmp_path / "bags"
    with Emulator(tmp_path) as emu, \
            Launched("launch", "hand", "--backend", "dynamixel", "--port", emu.port) as driver:
        assert driver.wait_output("active: torque on", 60), driver.output[-3000:]
        emu.ctl.overheat(dxl_id=hot_id, temperature_c=62.0)
        with Probe("probe_thermal") as probe:  # the driver reports the hot motor before the collector starts
            probe.subscribe(DiagnosticArray, "/diagnostics")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not _reports_hot(probe.latest("/diagnostics"), 62.0):
                time.sleep(0.1)
            assert _reports_hot(probe.latest("/diagnostics"), 62.0), driver.output[-3000:]
        with Launched("collect", "--backend", "ros", "--mode", "base_waves", "--episodes", "2", "--steps", "20",
                      "--out", str(out), "--max-temperature", "60", "--resume-temperature", "50") as col:
            assert col.wait_output("pausing until", 60), col.output[-3000:] + driver.output[-3000:]
            # While paused every servo is limp, and nothing is recorded for the episode not yet started.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(s["torque_enable"] for s in emu.servos()):
                time.sleep(0.1)
            assert not any(s["torque_enable"] for s in emu.servos())
            n_paused = len(finished_episodes(out)) if out.exists() else 0
            time.sleep(3.0)
            assert "resuming" not in col.output
            assert (len(finished_episodes(out)) if out.exists() else 0) == n_paused
            emu.ctl.cool(dxl_id=hot_id)  # back to ambient
            rc = col.wait(120)
            assert rc == 0, col.output[-3000:]
        assert "cooled to" in col.output and "resuming" in col.output
        servos = emu.servos()
        assert all(s["torque_enable"] for s in servos), (  # torque back on after the pause
            [(s["id"], s["torque_enable"], s["hardware_error_status"], s["present_temperature"]) for s in servos],
            col.output[-2000:], driver.output[-3000:])
    assert [p.name for p in finished_episodes(out)] == ["episode_000000", "episode_000001"]
