"""`dexndm collect --backend ros`: Chaos Box collection through a running hand driver and wrist node,
one block of episodes per wrist orientation (`dexndm launch collect`)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from rosgraph import REPO, Launched

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
