"""Residual adaptation: observations rebuilt from a library equal the policy's, training through a
frozen NDM lowers the objective, the live adapter sees the policy's exact observation."""

import numpy as np
import pytest
import torch
from policy_fixtures import random_policy

from dexndm.collect.trajectories import TrajectoryLibrary, rollout_policy
from dexndm.hand.spec import load_hand_spec
from dexndm.ndm.adaptation import AdaptationRunner, build_adapter
from dexndm.ndm.adapters import ResidualAdapter
from dexndm.ndm.data import simulate_episodes
from dexndm.ndm.models import build_ndm
from dexndm.ndm.residual import library_observations, load_residual, save_residual, train_residual
from dexndm.policy.env import EnvConfig, RotationEnv
from dexndm.policy.evaluate import AdaptedController
from dexndm.policy.exported import load_policy
from dexndm.policy.metrics import parse_axis


@pytest.fixture(scope="module")
def spec():
    return load_hand_spec("leap")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, spec):
    tmp = tmp_path_factory.mktemp("res")
    path = random_policy(tmp / "p.pt")
    pol = load_policy(path)
    env = RotationEnv(EnvConfig(episode_steps=40, joint_order=tuple(pol.joint_order)), seed=0)
    rolls = [rollout_policy(env, pol, "palm_up", parse_axis("z")) for _ in range(3)]

    def stack(k):
        return np.array([r[k] for r in rolls])

    lib = TrajectoryLibrary(stack("actions"), stack("q"), stack("q_true"), stack("a0"), stack("wrist_quat"),
                            stack("axis"), list(spec.joint_names), [{"wrist": "palm_up"}] * 3, {})
    return path, pol, lib, stack("obs")


def test_library_observations_equal_what_the_policy_saw(setup, spec):
    _, pol, lib, obs = setup
    rebuilt = library_observations(lib, spec, pol.joint_order, pol.history)
    np.testing.assert_allclose(rebuilt, obs, atol=1e-6)  # float32 storage of the library


def test_residual_training_lowers_the_objective_and_round_trips(setup, spec, tmp_path):
    path, pol, lib, _ = setup
    torch.manual_seed(0)
    eps = simulate_episodes("leap", "leap_default", n_episodes=4, T=60, seed=1)
    from dexndm.ndm.data import make_dataset

    ds = make_dataset(eps, 10)
    ndm = build_ndm("joint", spec.n, 10, hidden=(32,))
    ndm.fit_normalizer(ds.q_win, ds.a_win, ds.q_next)
    net, rep = train_residual(lib, ndm, spec, pol.joint_order, pol.history, bound=0.1, hidden=(32,), epochs=3,
                              log=lambda *_: None)
    assert rep.val_loss < rep.val_loss_no_correction
    assert 0 < rep.mean_abs_correction <= 0.1
    md = {"hand": "leap", "obs_joint_order": pol.joint_order, "joint_names": list(spec.joint_names),
          "history": pol.history, "bound": 0.1, "normalizer": {}, "arch": {"obs_size": 327, "hidden": [32]}}
    art = load_residual(save_residual(tmp_path / "r.pt", net, md))
    o, a = torch.randn(2, 327), torch.randn(2, 16)
    assert torch.equal(art.net(o, a), net(o, a))


def test_adapter_observation_equals_policy_observation(setup, spec, tmp_path):
    path, pol, lib, _ = setup
    net_md = {"hand": "leap", "obs_joint_order": pol.joint_order, "joint_names": list(spec.joint_names),
              "history": pol.history, "bound": 0.05, "normalizer": {}, "arch": {"obs_size": 327, "hidden": [8]}}
    from dexndm.ndm.residual import ResidualNet

    rpath = save_residual(tmp_path / "r.pt", ResidualNet(327, 16, (8,), 0.05), net_md)
    ctrl = AdaptedController(str(path), "residual", residual=str(rpath), bound=0.05)
    adapter: ResidualAdapter = ctrl.runner.adapter
    seen = []
    orig = adapter.correct

    def spy(q, a, w, ax):
        out = orig(q, a, w, ax)
        from dexndm.policy.history import observation

        seen.append(observation(adapter.history, w, ax))
        return out

    adapter.correct = spy
    env = RotationEnv(EnvConfig(episode_steps=25, joint_order=tuple(pol.joint_order)), seed=2)
    obs = env.reset()
    ctrl.reset()
    policy_obs = []
    for _ in range(25):
        policy_obs.append(obs)
        sent, base = ctrl.act_targets(obs, env)
        assert np.max(np.abs(sent - base)) <= 0.05 + 1e-12
        obs, _, done, _ = env.step_targets(sent, base)
    np.testing.assert_array_equal(np.array(seen), np.array(policy_obs))


def test_runner_falls_back_when_the_sample_is_missing(spec):
    r = AdaptationRunner(spec, build_adapter("off", spec), bound=0.1)
    q = spec.pose("grasp")
    out = r.on_action(spec.joint_names, q + 10.0, 123, np.array([1.0, 0, 0, 0]), np.array([0, 0, 1.0]))
    assert "stale" in out.fallback and np.all(out.sent <= spec.upper)
    r.on_joint_state(spec.joint_names, q, 5)
    out = r.on_action(spec.joint_names, q, 5, np.array([1.0, 0, 0, 0]), np.array([0, 0, 1.0]))
    assert out.fallback == "" and np.array_equal(out.sent, q)
    with pytest.raises(ValueError, match="unknown"):
        build_adapter("magic", spec)
    with pytest.raises(ValueError, match="residual artifact"):
        build_adapter("residual", spec)


def test_inversion_matches_the_sim_prediction(spec):
    from dexndm.ndm.adapters import InversionAdapter

    torch.manual_seed(3)
    real = build_ndm("joint", spec.n, 10, hidden=(16,))
    sim = build_ndm("joint", spec.n, 10, hidden=(16,))
    same = InversionAdapter(sim, sim, spec, bound=0.1)
    inv = InversionAdapter(real, sim, spec, bound=0.1)
    rng = np.random.default_rng(0)
    q = spec.pose("grasp")
    wq, ax = np.array([1.0, 0, 0, 0]), np.array([0, 0, 1.0])
    before, after = [], []
    for _ in range(12):
        a = spec.clamp(q + rng.normal(0, 0.05, spec.n))
        c0 = same.correct(q, a, wq, ax)
        assert np.max(np.abs(c0)) < 0.01  # identical models: nothing to correct
        same.sent(a + c0)
        c = inv.correct(q, a, wq, ax)
        assert np.all(np.abs(c) <= 0.1 + 1e-9)
        qw = torch.tensor(np.array(inv.q_hist), dtype=torch.float32)[None]
        past = torch.tensor(np.array(inv.a_hist), dtype=torch.float32)[None]
        with torch.no_grad():
            y = sim(qw, torch.cat([past, torch.tensor(a, dtype=torch.float32)[None, None]], 1))[0].numpy()
            f0 = real(qw, torch.cat([past, torch.tensor(a, dtype=torch.float32)[None, None]], 1))[0].numpy()
            f1 = real(qw, torch.cat([past, torch.tensor(a + c, dtype=torch.float32)[None, None]], 1))[0].numpy()
        before.append(np.abs(f0 - y))
        after.append(np.abs(f1 - y))
        inv.sent(a + c)
        q = q + rng.normal(0, 0.01, spec.n)
    before, after = np.array(before), np.array(after)
    assert np.all(after <= before + 1e-6)  # never worse than no correction, joint by joint
    assert after.mean() < before.mean()  # (random models: most of the gap is beyond the 0.1 rad bound)
