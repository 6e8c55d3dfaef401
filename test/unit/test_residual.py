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
from dexndm.ndm.residual import (
    JointResidualNet,
    library_observations,
    load_residual,
    policy_mismatch,
    save_residual,
    train_residual,
    train_residual_rollout,
)
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
                            stack("axis"), list(spec.joint_names), [{"wrist": "palm_up"}] * 3, {}, stack("torque"))
    return path, pol, lib, stack("obs")


def test_library_observations_equal_what_the_policy_saw(setup, spec):
    _, pol, lib, obs = setup
    rebuilt = library_observations(lib, spec, pol.joint_order, pol.history)
    np.testing.assert_allclose(rebuilt, obs, atol=1e-6)  # float32 storage of the library


def test_residual_training_lowers_the_objective_and_round_trips(setup, spec, real_ndm, tmp_path):
    path, pol, lib, _ = setup
    net, rep = train_residual(lib, real_ndm, spec, pol.joint_order, pol.history, bound=0.1, hidden=(32,), epochs=3,
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


@pytest.fixture(scope="module")
def real_ndm(spec):
    from dexndm.ndm.data import make_dataset

    torch.manual_seed(0)
    ds = make_dataset(simulate_episodes("leap", "leap_default", n_episodes=4, T=60, seed=1), 10)
    ndm = build_ndm("joint", spec.n, 10, hidden=(32,))
    ndm.fit_normalizer(ds.q_win, ds.a_win, ds.q_next)
    return ndm


def test_joint_residual_rollout_training_lowers_the_objective_and_round_trips(setup, spec, real_ndm, tmp_path):
    from dexndm.ndm.pipeline import residual_metadata

    path, pol, lib, _ = setup
    net, rep = train_residual_rollout(lib, real_ndm, spec, bound=0.1, hidden=(16,), horizon=8, epochs=3, starts=64,
                                      batch=32, log=lambda *_: None)
    assert rep.objective == "8-step rollout" and rep.horizon == 8
    assert rep.val_loss < rep.val_loss_no_correction
    assert 0 < rep.mean_abs_correction <= 0.1
    art = load_residual(save_residual(tmp_path / "j.pt", net, residual_metadata(spec, pol, real_ndm, 0.1, rep, "t",
                                                                                 "joint", net)))
    assert isinstance(art.net, JointResidualNet) and art.metadata["arch"]["type"] == "joint_wise"
    qw, aw = torch.randn(3, 10, spec.n), torch.randn(3, 10, spec.n)
    assert torch.equal(art.net(qw, aw), net(qw, aw))
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        train_residual_rollout(lib, real_ndm, spec, horizon=0, epochs=1, log=lambda *_: None)
    with pytest.raises(ValueError, match="horizon 60 too long"):
        train_residual_rollout(lib, real_ndm, spec, horizon=60, epochs=1, log=lambda *_: None)


def test_correction_penalty_shrinks_the_joint_residual(setup, spec, real_ndm):
    _, _, lib, _ = setup
    kw = dict(bound=0.1, hidden=(16,), horizon=8, epochs=3, starts=64, batch=32, log=lambda *_: None)
    _, free = train_residual_rollout(lib, real_ndm, spec, reg=0.0, **kw)
    _, small = train_residual_rollout(lib, real_ndm, spec, reg=100.0, **kw)
    assert small.mean_abs_correction < 0.5 * free.mean_abs_correction


def test_rollout_weights_select_what_the_residual_matches(setup, spec, real_ndm):
    _, _, lib, _ = setup
    kw = dict(bound=0.1, hidden=(16,), horizon=8, epochs=2, starts=64, batch=32, log=lambda *_: None)
    net_a, rep_a = train_residual_rollout(lib, real_ndm, spec, **kw)
    net_b, rep_b = train_residual_rollout(lib, real_ndm, spec, weights=np.ones_like(lib.q_true), **kw)
    assert rep_a.val_loss == rep_b.val_loss  # all-ones weights: the plain objective
    qw, aw = torch.randn(2, 10, spec.n), torch.randn(2, 10, spec.n)
    assert torch.equal(net_a(qw, aw), net_b(qw, aw))
    # joint 3 weighted 0 everywhere: nothing asks it to match, so its error is left out of the objective
    w = np.ones_like(lib.q_true)
    w[:, :, 3] = 0.0
    _, rep_c = train_residual_rollout(lib, real_ndm, spec, weights=w, **kw)
    assert rep_c.val_loss_no_correction < rep_a.val_loss_no_correction
    with pytest.raises(ValueError, match="weights shape"):
        train_residual_rollout(lib, real_ndm, spec, weights=np.ones((1, 2, 3)), **kw)


def test_library_keeps_the_simulated_torques_and_masks_what_a_capped_servo_cannot_do(setup, tmp_path):
    from dexndm.ndm.residual import torque_mask

    _, _, lib, _ = setup
    assert lib.torque.shape == lib.actions.shape and np.all(lib.torque >= 0) and lib.torque.max() > 0
    back = TrajectoryLibrary.load(lib.save(tmp_path / "lib.npz"))
    np.testing.assert_allclose(back.torque, lib.torque, atol=1e-6)
    cap = np.full(lib.torque.shape[2], np.median(lib.torque))
    w = torque_mask(lib, cap)
    assert w.shape == lib.q_true.shape and np.all(w[:, 0] == 1)
    np.testing.assert_array_equal(w[:, 1:] == 0, lib.torque > cap)
    assert 0 < (w == 0).mean() < 1
    with pytest.raises(ValueError, match="positive"):
        torque_mask(lib, -1.0)
    old = TrajectoryLibrary(lib.actions, lib.q, lib.q_true, lib.a0, lib.wrist_quat, lib.axis, lib.joint_names,
                            lib.meta, {})
    old_path = old.save(tmp_path / "old.npz")
    assert TrajectoryLibrary.load(old_path).torque is None
    with pytest.raises(ValueError, match="rebuild it"):
        torque_mask(TrajectoryLibrary.load(old_path), 0.3)


def test_train_residual_cli_torque_cap_errors_name_the_cause(setup, real_ndm, spec, tmp_path, capsys):
    from dexndm.cli import main
    from dexndm.ndm.models import save_ndm

    path, _, lib, _ = setup
    ndm_path = tmp_path / "ndm.pt"
    save_ndm(ndm_path, real_ndm, {"hand": "leap", "joint_order": list(spec.joint_names)})
    old = TrajectoryLibrary(lib.actions, lib.q, lib.q_true, lib.a0, lib.wrist_quat, lib.axis, lib.joint_names,
                            lib.meta, {}).save(tmp_path / "old.npz")
    new = lib.save(tmp_path / "new.npz")
    out = tmp_path / "r.pt"
    base = ["train-residual", "--ndm", str(ndm_path), "--policy", str(path), "--out", str(out)]
    assert main([*base, "--library", str(old), "--torque-cap", "0.3"]) == 2
    assert "records no joint torques" in capsys.readouterr().out
    assert main([*base, "--library", str(new), "--torque-cap", "no_such_profile"]) == 2
    assert "--torque-cap no_such_profile" in capsys.readouterr().out
    assert main([*base, "--library", str(new), "--torque-cap", "ideal"]) == 2
    assert "no servo cap" in capsys.readouterr().out
    assert main([*base, "--library", str(new), "--torque-cap", "0.3", "--arch", "obs"]) == 2
    assert "need the joint residual" in capsys.readouterr().out
    assert not out.exists()
    assert main([*base, "--library", str(new), "--torque-cap", "leap_default", "--epochs", "1", "--horizon", "4"]) == 0
    assert "left out (simulated torque above the cap)" in capsys.readouterr().out
    md = load_residual(out).metadata
    assert "--torque-cap leap_default" in md["command"]
    assert "above leap_default left out" in out.with_suffix(".md").read_text()
    # the joint residual's default correction penalty, recorded and on the card
    assert md["metrics"]["reg"] == 3.0 and "correction penalty 3." in out.with_suffix(".md").read_text()


def test_train_residual_cli_refuses_a_negative_penalty(tmp_path, capsys):
    from dexndm.cli import main

    out = tmp_path / "r.pt"
    assert main(["train-residual", "--library", "lib.npz", "--ndm", "x.pt", "--reg", "-1", "--out", str(out)]) == 2
    assert "--reg must be a finite number >= 0, got -1.0" in capsys.readouterr().out and not out.exists()


def test_joint_residual_is_joint_wise():
    net = JointResidualNet(16, 10, (8,), 0.1)
    for p in net.parameters():  # random, non-zero weights
        torch.nn.init.normal_(p, 0, 0.5)
    qw, aw = torch.randn(1, 10, 16), torch.randn(1, 10, 16)
    base = net(qw, aw)
    qw2 = qw.clone()
    qw2[0, :, 3] += 0.3  # only joint 3's history changes
    diff = (net(qw2, aw) - base).abs()[0]
    assert diff[3] > 0 and torch.all(diff[torch.arange(16) != 3] == 0)


def test_joint_residual_adapter_sees_the_training_windows(setup, spec, real_ndm, tmp_path):
    """Live, the adapter's window for step t is (measured q_{t-W+1..t}, base targets a_{t-W+1..t}): the window the
    rollout objective starts from in the library."""
    from dexndm.ndm.pipeline import residual_metadata

    path, pol, lib, _ = setup
    net = JointResidualNet(spec.n, 10, (8,), 0.1)
    for p in net.parameters():
        torch.nn.init.normal_(p, 0, 0.3)
    _, rep = train_residual_rollout(lib, real_ndm, spec, hidden=(8,), horizon=2, epochs=1, starts=8, batch=8,
                                    log=lambda *_: None)
    rpath = save_residual(tmp_path / "r.pt", net, residual_metadata(spec, pol, real_ndm, 0.1, rep, "t", "joint", net))
    ctrl = AdaptedController(str(path), "residual", residual=str(rpath), bound=0.1)
    env = RotationEnv(EnvConfig(episode_steps=30, joint_order=tuple(pol.joint_order)), seed=4)
    obs = env.reset()
    ctrl.reset()
    o = env.order
    qs, bases, corrs = [], [], []
    for _ in range(30):
        qs.append(o.to_canonical(env.history.last_q()))
        sent, base = ctrl.act_targets(obs, env)
        bases.append(o.to_canonical(base))
        corrs.append(o.to_canonical(sent - base))
        obs, _, done, _ = env.step_targets(sent, base)
    qs, bases, corrs = np.array(qs), np.array(bases), np.array(corrs)
    for t in range(9, 30):  # full windows
        with torch.no_grad():
            want = net(torch.tensor(qs[None, t - 9:t + 1], dtype=torch.float32),
                       torch.tensor(bases[None, t - 9:t + 1], dtype=torch.float32))[0].numpy()
        clamped = np.clip(bases[t] + want, spec.lower, spec.upper) - bases[t]
        np.testing.assert_allclose(corrs[t], clamped, atol=1e-6)


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


def test_a_residual_behind_another_policy_is_named(tmp_path):
    import shutil

    from dexndm.artifacts import file_digest

    mine = random_policy(tmp_path / "policy-a.pt", seed=0)
    other = random_policy(tmp_path / "policy-b.pt", seed=1)
    copy = shutil.copy(mine, tmp_path / "policy-a-copy.pt")
    md = {"policy": str(mine), "policy_sha256": file_digest(mine)}
    assert policy_mismatch(md, mine) == "" and policy_mismatch(md, copy) == ""  # same bytes, any path
    warning = policy_mismatch(md, other)
    assert str(mine) in warning and str(other) in warning and file_digest(other) in warning
    assert "dexndm pipeline" in warning  # says how to refit
    assert policy_mismatch({"policy": str(mine)}, other) == ""  # residuals from before the digest: unknown
