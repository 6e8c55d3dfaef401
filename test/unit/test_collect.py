"""Chaos Box collection: bags per episode, noise mask, resume after a crash, sim loads."""

import json

import numpy as np
import pytest

from dexndm.bag.io import joint_states_arrays, load_metadata
from dexndm.collect.chaos_box import CollectConfig, SimStepper, collect, finished_episodes, ou_offsets
from dexndm.collect.trajectories import base_wave
from dexndm.hand.sim.mujoco_hand import MujocoHand
from dexndm.hand.sim.scene import SceneConfig
from dexndm.hand.spec import load_hand_spec


@pytest.fixture(scope="module")
def spec():
    return load_hand_spec("leap")


def _hand(spec, load="fingertip_ball"):
    h = MujocoHand(spec, SceneConfig(wrist="palm_up", object=None, load=load), initial_pose="grasp")
    h.connect()
    return h


def _traj(spec, steps=30):
    base = spec.pose("grasp")

    def make(k, rng):
        t = np.arange(steps)[:, None] * 0.05
        return spec.clamp(base + 0.2 * np.sin(2 * np.pi * 0.5 * t + k)), {"source": "test", "k": k}

    return make


def test_bags_hold_commands_states_and_metadata(tmp_path, spec):
    h = _hand(spec)
    cfg = CollectConfig(episodes=2, steps=30, settle_steps=3, seed=4, meta={"reality": "ideal"})
    summary = collect(h, SimStepper(h), spec, cfg, tmp_path, _traj(spec))
    assert summary["written"] == 2
    eps = finished_episodes(tmp_path)
    assert [p.name for p in eps] == ["episode_000000", "episode_000001"]
    meta = json.loads(load_metadata(eps[1])["custom_data"]["dexndm"])
    assert meta["episode"] == 1 and meta["reality"] == "ideal" and len(meta["noise_mask"]) == 30
    cmd = joint_states_arrays(eps[1], "/joint_commands", spec.joint_names)
    st = joint_states_arrays(eps[1], "/joint_states", spec.joint_names)
    assert cmd.position.shape == (30, 16) and st.position.shape == (31, 16)
    clean, _ = _traj(spec)(1, None)
    mask = np.array(meta["noise_mask"], bool)
    diff = np.abs(cmd.position - clean).max(axis=1)
    assert np.all(diff[~mask] < 1e-9)  # un-noised steps are the library actions exactly
    assert np.all(diff[mask] > 0) and np.all(diff[mask] < 0.06)  # noised ones moved by ~N(0, 0.01)
    assert np.all(cmd.position >= spec.lower) and np.all(cmd.position <= spec.upper)
    # The measured joints follow the commands (one step later).
    err = np.abs(st.position[1:] - cmd.position).mean()
    assert err < 0.1


def test_crash_loses_only_the_episode_in_flight_and_resume_finishes(tmp_path, spec):
    h = _hand(spec, load="none")
    make = _traj(spec)

    def crashing(k, rng):
        if k == 2:
            raise RuntimeError("power cut")
        return make(k, rng)

    cfg = CollectConfig(episodes=4, steps=20, settle_steps=2)
    with pytest.raises(RuntimeError, match="power cut"):
        collect(h, SimStepper(h), spec, cfg, tmp_path, crashing)
    assert [p.name for p in finished_episodes(tmp_path)] == ["episode_000000", "episode_000001"]
    with pytest.raises(FileExistsError, match="--resume"):
        collect(h, SimStepper(h), spec, cfg, tmp_path, make)
    s = collect(h, SimStepper(h), spec, cfg, tmp_path, make, resume=True)
    assert s["written"] == 2 and s["skipped"] == 2
    assert len(finished_episodes(tmp_path)) == 4


def test_loads_change_the_dynamics(spec):
    def run(load):
        h = _hand(spec, load=load)
        h.set_torque(True)
        errs = []
        for i in range(40):
            tgt = spec.clamp(spec.pose("grasp") + 0.2 * np.sin(i / 3))
            errs.append(np.abs(h.step_control(tgt).position - tgt).mean())
        return float(np.mean(errs[10:]))

    free, ball = run("none"), run("fingertip_ball")
    assert ball > 1.3 * free, (free, ball)


def test_base_waves_are_single_joint_and_within_limits(spec):
    rng = np.random.default_rng(0)
    center = spec.pose("grasp")
    a, info = base_wave(spec, rng, 100, 0.05, center)
    moved = np.flatnonzero(np.abs(a - center).max(axis=0) > 1e-9)
    assert len(moved) == 1 and spec.joint_names[moved[0]] == info["joint"]
    assert np.all(a >= spec.lower) and np.all(a <= spec.upper)


def test_slow_offsets_are_held_and_recorded(tmp_path, spec):
    x = ou_offsets(np.random.default_rng(0), (20000, 16), 0.05, 0.5)
    assert abs(x.std() - 0.05) < 0.005  # stationary at the asked std
    lag1 = np.mean(x[1:] * x[:-1]) / x.var()
    assert abs(lag1 - np.exp(-0.05 / 0.5)) < 0.02  # correlated over the 0.5 s time constant, not white
    assert not ou_offsets(np.random.default_rng(0), (5, 3), 0.0, 0.5).any()
    with pytest.raises(ValueError, match="offset_std"):
        CollectConfig(episodes=1, offset_std=0.9)
    h = _hand(spec)
    cfg = CollectConfig(episodes=2, steps=30, settle_steps=3, seed=4, noise_prob=0.0, offset_std=0.1)
    collect(h, SimStepper(h), spec, cfg, tmp_path, _traj(spec))
    ep = finished_episodes(tmp_path)[0]
    meta = json.loads(load_metadata(ep)["custom_data"]["dexndm"])
    assert 0 < meta["offset_std"] <= 0.1
    cmd = joint_states_arrays(ep, "/joint_commands", spec.joint_names).position
    clean, _ = _traj(spec)(0, None)
    off = cmd - clean
    inside = (cmd > spec.lower + 1e-6) & (cmd < spec.upper - 1e-6)
    assert np.abs(off[inside]).max() > 0  # offsets were added ...
    assert np.all(cmd >= spec.lower) and np.all(cmd <= spec.upper)  # ... and clamped to the limits


class _Feedforward:
    """A stiffness feed-forward k * (a - q): a correction computed from the measured state, like a residual's."""

    bound = 0.05

    def __init__(self):
        self.resets = 0

    def reset(self):
        self.resets += 1

    def correct(self, q, a_base, wrist_quat, axis):
        return 0.8 * (a_base - q)


def test_adapter_in_the_loop_corrects_from_the_measured_state_within_bound_and_limits(tmp_path, spec):
    h = _hand(spec)
    ad = _Feedforward()
    cfg = CollectConfig(episodes=2, steps=30, settle_steps=3, noise_prob=0.0, seed=2)
    collect(h, SimStepper(h), spec, cfg, tmp_path, _traj(spec), adapter=ad, adapter_info={"residual": "ff", "round": 1})
    assert ad.resets == 2  # a fresh window every episode
    ep = finished_episodes(tmp_path)[1]
    meta = json.loads(load_metadata(ep)["custom_data"]["dexndm"])
    assert meta["adapter"] == {"residual": "ff", "round": 1}
    cmd = joint_states_arrays(ep, "/joint_commands", spec.joint_names).position
    q = joint_states_arrays(ep, "/joint_states", spec.joint_names).position
    base, _ = _traj(spec)(1, None)
    expected = np.clip(base + np.clip(0.8 * (base - q[:-1]), -0.05, 0.05), spec.lower, spec.upper)
    np.testing.assert_allclose(cmd, expected, atol=1e-9)  # recorded = what was sent = base + bounded correction
    assert np.abs(cmd - base).max() > 0.04  # the correction was active (and bounded)
    assert np.abs(cmd - base).max() <= 0.05 + 1e-9


def test_feedforward_gain_exploration_is_recorded_and_reproducible_from_metadata(tmp_path, spec):
    h = _hand(spec)
    cfg = CollectConfig(episodes=3, steps=30, settle_steps=3, noise_prob=0.0, ff_gain=1.5, ff_fraction=1.0, seed=3)
    collect(h, SimStepper(h), spec, cfg, tmp_path, _traj(spec))
    ep = finished_episodes(tmp_path)[2]
    ff = json.loads(load_metadata(ep)["custom_data"]["dexndm"])["adapter"]
    kp, kd = np.array(ff["kp"]), np.array(ff["kd"])
    assert ff["kind"] == "feedforward" and kp.shape == (16,) and 0 <= kp.min() and kp.max() <= 1.5
    assert 0 <= kd.min() and kd.max() <= 0.15
    cmd = joint_states_arrays(ep, "/joint_commands", spec.joint_names).position
    q = joint_states_arrays(ep, "/joint_states", spec.joint_names).position[:-1]
    base, _ = _traj(spec)(2, None)
    dq = np.vstack([np.zeros((1, 16)), np.diff(q, axis=0) / 0.05])
    expected = np.clip(base + np.clip(kp * (base - q) + kd * dq, -0.15, 0.15), spec.lower, spec.upper)
    np.testing.assert_allclose(cmd, expected, atol=1e-9)
    # ff_fraction 0 collects plain replays; bad values are refused by name.
    h2 = _hand(spec)
    collect(h2, SimStepper(h2), spec, CollectConfig(episodes=1, steps=10, settle_steps=1, noise_prob=0.0, ff_gain=1.5,
                                                    ff_fraction=0.0), tmp_path / "plain", _traj(spec, 10))
    assert json.loads(load_metadata(finished_episodes(tmp_path / "plain")[0])["custom_data"]["dexndm"])["adapter"] is None
    with pytest.raises(ValueError, match="ff_gain"):
        CollectConfig(episodes=1, ff_gain=-1)


def test_thermal_thresholds_out_of_order_are_refused_by_name(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "dexndm.cli", "collect", "--mode", "base_waves", "--max-temperature", "45",
                        "--resume-temperature", "50", "--out", str(tmp_path / "bags")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--resume-temperature (50) < --max-temperature (45)" in r.stdout
    assert not (tmp_path / "bags").exists()


def test_empty_driver_name_is_refused_by_name(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "dexndm.cli", "collect", "--backend", "ros", "--mode", "base_waves",
                        "--driver", "/", "--out", str(tmp_path / "bags")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--driver must name the hand driver node" in r.stdout
