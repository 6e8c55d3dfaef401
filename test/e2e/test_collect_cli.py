"""`dexndm collect` from the command line: per-wrist blocks in the simulator, and a real Dynamixel bus
(the dynamixel-sdk against the servo emulator on a pty)."""

import json
import subprocess
import sys

import numpy as np
from rosgraph import REPO, Launched

from dexndm.bag.io import joint_states_arrays, load_metadata
from dexndm.collect.chaos_box import finished_episodes
from dexndm.hand.spec import load_hand_spec


def _collect(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "dexndm.cli", "collect", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def _meta(path):
    return json.loads(load_metadata(path)["custom_data"]["dexndm"])


def test_sim_collects_one_block_per_wrist(tmp_path):
    out = tmp_path / "bags"
    r = _collect("--mode", "base_waves", "--wrists", "palm_up,palm_down", "--episodes", "2", "--steps", "10",
                 "--reality", "leap_default", "--out", str(out))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    eps = finished_episodes(out)
    assert [_meta(p)["wrist"] for p in eps] == ["palm_up", "palm_up", "palm_down", "palm_down"]
    assert [_meta(p)["load"] for p in eps] == ["fingertip_ball"] * 2 + ["chaos_box"] * 2
    assert "collected 4 episode(s)" in r.stdout
    # A wrist the hand does not know, and --wrists without an arm to turn the hand, are refused by name.
    bad = _collect("--mode", "base_waves", "--wrists", "palm_up,sideways", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "sideways" in bad.stdout
    hw = _collect("--backend", "dynamixel", "--port", "/dev/null", "--wrists", "palm_up,palm_down", "--mode",
                  "base_waves", "--out", str(tmp_path / "y"))
    assert hw.returncode == 2 and "--backend ros" in hw.stdout
    gain = _collect("--mode", "base_waves", "--ff-gain", "9", "--out", str(tmp_path / "z"))
    assert gain.returncode == 2 and "--ff-gain" in gain.stdout and not (tmp_path / "z").exists()


def test_dynamixel_collection_through_the_sdk_and_the_servo_emulator(tmp_path):
    spec = load_hand_spec("leap")
    port, ctl = str(tmp_path / "bus"), str(tmp_path / "bus.ctl")
    with Launched("emulate-bus", "--hand", "leap", "--link", port, "--control", ctl) as emu:
        assert emu.wait_output("Control socket", 30), emu.output
        r = _collect("--backend", "dynamixel", "--port", port, "--mode", "base_waves", "--episodes", "1", "--steps",
                     "20", "--out", str(tmp_path / "bags"))
        emu.interrupt()
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    ep = finished_episodes(tmp_path / "bags")[0]
    meta = _meta(ep)
    assert meta["backend"] == "dynamixel" and meta["reality"] == "hardware"
    cmd = joint_states_arrays(ep, "/joint_commands", spec.joint_names).position
    st = joint_states_arrays(ep, "/joint_states", spec.joint_names)
    assert cmd.shape == (20, 16) and st.position.shape == (21, 16)
    assert np.all(cmd >= spec.lower) and np.all(cmd <= spec.upper)
    # The emulated servos follow the commands read back through the SDK, on the wall clock at 20 Hz.
    assert np.abs(st.position[1:] - cmd).mean() < 0.1
    assert 0.04 < np.median(np.diff(st.t)) < 0.07
