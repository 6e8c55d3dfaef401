"""Policy core: history layout, action integration, metrics, artifacts, environment, runner."""

import json

import mujoco
import numpy as np
import pytest
import torch
from policy_fixtures import random_policy

from dexndm.hand.sim.objects import resolve_objects
from dexndm.hand.spec import load_hand_spec
from dexndm.policy.actions import delta_for, integrate
from dexndm.policy.env import EnvConfig, RotationEnv
from dexndm.policy.exported import PolicyLoadError, load_policy
from dexndm.policy.history import ProprioHistory, observation
from dexndm.policy.metrics import RotationTracker, axis_label, parse_axis
from dexndm.policy.runner import PolicyRunner, validate_axis


def test_history_layout_oldest_first_q_then_a_prev():
    h = ProprioHistory(3, 2)
    h.reset(np.array([0.0, 0.0]), np.array([9.0, 9.0]))
    h.push(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    h.push(np.array([5.0, 6.0]), np.array([7.0, 8.0]))
    np.testing.assert_array_equal(h.vector(), [0, 0, 9, 9, 1, 2, 3, 4, 5, 6, 7, 8])
    obs = observation(h, np.array([1, 0, 0, 0]), np.array([0, 0, 1]))
    assert obs.shape == (3 * 4 + 7,) and obs[-3:].tolist() == [0, 0, 1]


def test_integrate_bounds_step_and_limits():
    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    a = integrate(np.array([0.0, 0.99]), np.array([5.0, 1.0]), 1 / 24, lo, hi)
    np.testing.assert_allclose(a, [1 / 24, 1.0])  # delta clipped to 1, then the joint limit
    a = integrate(np.array([0.0, 0.0]), np.array([np.nan, -np.inf]), 1 / 24, lo, hi)
    np.testing.assert_array_equal(a, [0.0, 0.0])  # non-finite outputs move nothing
    np.testing.assert_allclose(delta_for(np.zeros(2), np.array([0.02, -1.0]), 1 / 24), [0.48, -1.0])


@pytest.mark.parametrize("text, vec", [("z", [0, 0, 1]), ("-x", [-1, 0, 0]), ("+y", [0, 1, 0]),
                                       ("1,1,0", [0.7071068, 0.7071068, 0])])
def test_parse_axis(text, vec):
    np.testing.assert_allclose(parse_axis(text), vec, atol=1e-6)


@pytest.mark.parametrize("bad", ["w", "0,0,0", "1,2", "nan,0,1"])
def test_parse_axis_rejects(bad):
    with pytest.raises(ValueError, match="axis"):
        parse_axis(bad)


def test_rotation_tracker_integrates_about_axis():
    tr = RotationTracker(np.array([0, 0, 1.0]), 0.05)
    total = 0.0
    for k in range(40):
        q = np.zeros(4)
        mujoco.mju_axisAngle2Quat(q, np.array([0, 0, 1.0]), 0.1 * k)
        total = tr.update(q) + total
    assert tr.rot == pytest.approx(3.9, abs=1e-9)
    assert tr.rotp == pytest.approx(0.0, abs=1e-9)
    assert axis_label(np.array([0, 0, -1.0])) == "-z"


def test_artifact_round_trip_and_bad_files(tmp_path):
    p = random_policy(tmp_path / "p.pt")
    art = load_policy(p)
    obs = np.random.default_rng(0).normal(size=art.obs_size)
    a1, a2 = art.act(obs), art.act(obs)
    assert a1.shape == (16,) and np.all(np.abs(a1) <= 1) and np.array_equal(a1, a2)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(PolicyLoadError, match="junk.pt"):
        load_policy(tmp_path / "junk.pt")
    blob = torch.load(p, weights_only=True)
    del blob["metadata"]["joint_order"]
    torch.save(blob, tmp_path / "nometa.pt")
    with pytest.raises(PolicyLoadError, match="joint_order"):
        load_policy(tmp_path / "nometa.pt")
    with pytest.raises(PolicyLoadError, match="does not exist"):
        load_policy(tmp_path / "missing.pt")


def test_artifacts_record_the_simulator_version_and_eval_warns_on_another(tmp_path):
    import mujoco

    from dexndm.artifacts import version_mismatch

    p = random_policy(tmp_path / "p.pt")
    md = load_policy(p).metadata
    assert md["software"]["mujoco"] == mujoco.__version__ and version_mismatch(md, "policy") == ""
    blob = torch.load(p, weights_only=True)
    blob["metadata"]["software"]["mujoco"] = "3.1.0"
    torch.save(blob, tmp_path / "old.pt")
    warning = version_mismatch(load_policy(tmp_path / "old.pt").metadata, "policy old.pt")
    assert "MuJoCo 3.1.0" in warning and f"MuJoCo {mujoco.__version__}" in warning and "mujoco==3.1.0" in warning


def test_env_is_seeded_and_reports_metrics():
    def run(seed):
        env = RotationEnv(EnvConfig(episode_steps=20), seed=seed)
        obs = env.reset()
        rng = np.random.default_rng(1)
        for _ in range(20):
            obs, r, done, info = env.step(rng.uniform(-1, 1, 16))
        return obs, info

    (o1, i1), (o2, i2) = run(3), run(3)
    np.testing.assert_array_equal(o1, o2)
    assert i1.rot == i2.rot and i1.steps == 20 and i1.ttf == pytest.approx(1.0)
    assert o1.shape == (327,)


def test_env_actions_respect_limits_and_rate():
    env = RotationEnv(EnvConfig(episode_steps=30))
    env.reset()
    prev = env.a_prev.copy()
    for _ in range(30):
        env.step(np.full(16, 1.0))
        assert np.all(env.a_prev <= env.upper + 1e-12)
        assert np.max(np.abs(env.a_prev - prev)) <= 1 / 24 + 1e-12
        prev = env.a_prev.copy()


def test_runner_holds_then_approaches_settles_and_runs(tmp_path):
    spec = load_hand_spec("leap")
    art = load_policy(random_policy(tmp_path / "p.pt"))
    start = spec.pose("grasp")
    r = PolicyRunner(art, spec, stale_after=0.1, start_pose=start, settle_ticks=3)
    wq, ax = np.array([1.0, 0, 0, 0]), np.array([0, 0, 1.0])
    assert r.tick(0, wq, ax).reason.startswith("no joint_states")
    q0 = spec.pose("home")
    r.update_joint_state(list(reversed(spec.joint_names)), list(reversed(q0)), 1_000_000_000)
    t = r.tick(1_050_000_000, wq, ax)
    assert t.phase == "approach" and t.stamp_ns == 1_000_000_000
    assert np.max(np.abs(t.targets - q0)) <= 1 / 24 + 1e-12  # one bounded step from the measured pose
    assert r.tick(1_300_000_000, wq, ax).reason.startswith("joint_states stale")
    phases = []
    for k in range(200):
        r.update_joint_state(spec.joint_names, q0, 2_000_000_000 + k)
        tk = r.tick(2_000_000_000 + k, wq, ax)
        phases.append(tk.phase)
        assert np.all(tk.targets >= spec.lower) and np.all(tk.targets <= spec.upper)
    assert phases.count("settle") == 3 and phases[-1] == "run"
    with pytest.raises(ValueError, match="lacks joints"):
        r.update_joint_state(["if_mcp"], [0.0], 0)


def test_axis_validation():
    np.testing.assert_allclose(validate_axis([0, 0, 2]), [0, 0, 1])
    for bad in ([0, 0, 0], [np.nan, 0, 1], [1, 2]):
        with pytest.raises(ValueError):
            validate_axis(bad)


def test_evaluation_means_leave_out_simulator_blow_ups():
    from dexndm.policy.evaluate import _means

    eps = [{"rot_rad": 2.0, "ttf_s": 20.0, "rotp": 0.1, "fell": False, "unstable": False},
           {"rot_rad": 1.0, "ttf_s": 10.0, "rotp": 0.3, "fell": True, "unstable": False},
           {"rot_rad": 0.1, "ttf_s": 0.5, "rotp": 0.9, "fell": False, "unstable": True}]
    m = _means(eps)
    assert m == {"rot_rad": 1.5, "ttf_s": 15.0, "rotp": 0.2, "drop_rate": 0.5, "unstable": 1}
    assert np.isnan(_means(eps[2:])["rot_rad"])


def test_evaluation_does_not_depend_on_the_number_of_workers():
    from dexndm.paths import shipped_model
    from dexndm.policy.evaluate import ArtifactFactory, EvalConfig, evaluate

    # One object: every episode after the first reuses the same cached simulated hand.
    cfg = EvalConfig(episodes=4, episode_steps=30, world="leap_default", seed=3, objects="cylinder_50")
    runs = [evaluate(ArtifactFactory(shipped_model("policy-leap-*.pt")), EvalConfig(**{**cfg.__dict__, "workers": w}),
                     log=lambda *_: None) for w in (1, 2)]
    key = [(e["seed"], e["rot_rad"], e["ttf_s"]) for e in runs[0]["episodes"]]
    assert sorted(key) == sorted((e["seed"], e["rot_rad"], e["ttf_s"]) for e in runs[1]["episodes"])


def test_specialist_search_stages_nominal_object_and_joined_history():
    from dexndm.policy.env import EnvConfig
    from dexndm.policy.train.pipeline import _joined, nominal_config

    nom = nominal_config(EnvConfig(objects="regular"), "cylinders")
    # The group's middle object, nothing randomised: the first stage is deterministic.
    assert nom.objects == "cylinder_50" and not nom.randomize
    assert nom.disturbance_scale == 0.0 and nom.obs_noise == 0.0
    assert nominal_config(EnvConfig(), "cube_50").objects == "cube_50"
    # Jittered: the same object, its mass and friction within +-10 %, size +-2 %; still no disturbance or noise.
    jit = nominal_config(EnvConfig(objects="regular"), "cylinders", jitter=0.1)
    assert jit.objects == "cylinder_50" and jit.randomize
    assert jit.mass_range == pytest.approx((0.027, 0.033)) and jit.friction_range == pytest.approx((0.9, 1.1))
    assert jit.size_scale_range == pytest.approx((0.98, 1.02))
    assert jit.disturbance_scale == 0.0 and jit.obs_noise == 0.0
    with pytest.raises(ValueError, match="jitter"):
        nominal_config(EnvConfig(), "cylinders", jitter=1.5)
    # The optional shape stage: every object of the group, only the size randomised.
    from dexndm.policy.train.pipeline import shapes_config

    sh = shapes_config(EnvConfig(objects="regular"), "cylinders")
    assert sh.objects == "cylinders" and sh.randomize and sh.size_scale_range == (0.95, 1.05)
    assert sh.mass_range == (0.03, 0.03) and sh.friction_range == (1.0, 1.0)
    assert sh.disturbance_scale == 0.0 and sh.obs_noise == 0.0
    h1 = {"gen": [0, 1], "best": [1.0, 2.0], "mean": [0.5, 1.0], "sigma": [0.3, 0.2], "final": [2.0], "x": [0.1]}
    h2 = {"gen": [0, 1, 2], "best": [3.0, 4.0, 5.0], "mean": [1, 2, 3], "sigma": [0.1] * 3, "final": [4.5],
          "x": [0.2]}
    j = _joined([h1, h2])
    assert j["gen"] == [0, 1, 2, 3, 4] and j["best"] == [1.0, 2.0, 3.0, 4.0, 5.0] and j["stages"] == [2, 3]
    assert j["final"] == [4.5] and j["x"] == [0.2]


def test_runner_start_pose_depends_on_the_wrist_at_the_first_tick(tmp_path):
    """'trained' start: the initial pose palm up; the hold pose at other wrists (the grip training episodes
    there start from)."""
    from dexndm.hand.sim.scene import mat_to_quat, wrist_rotation
    from dexndm.policy.replay import make_runner

    spec = load_hand_spec("leap")
    art = load_policy(random_policy(tmp_path / "p.pt"))
    ax = np.array([0, 0, 1.0])
    for wrist, pose in (("palm_up", "grasp"), ("palm_down", "hold"), ("base_up", "hold")):
        r = make_runner(spec, art, "trained", 0.1)
        wq = mat_to_quat(wrist_rotation(spec, wrist))
        for k in range(60):
            r.update_joint_state(spec.joint_names, spec.pose("home"), k)
            tk = r.tick(k, wq, ax)
            if tk.phase != "approach":
                break
        assert tk.phase == "settle"
        np.testing.assert_allclose(tk.targets, spec.pose(pose), atol=1e-9)
    # An explicit start pose applies at every wrist.
    r = make_runner(spec, art, "open", 0.1)
    assert r.tick(0, np.array([1.0, 0, 0, 0]), ax).phase == "wait"
    np.testing.assert_allclose(r.order.to_canonical(r._start_turned), spec.pose("open"))


def test_live_rotation_report_stops_counting_after_a_drop():
    """The driver's Rot/TTF report: rotation after the object left the hand does not count."""
    from types import SimpleNamespace

    from dexndm.policy.metrics import ObjectRotationReport

    pos = np.zeros(3)
    quat = np.array([1.0, 0, 0, 0])
    hand = SimpleNamespace(object_pose=lambda: (pos, quat), object_in_hand=lambda d: bool(np.linalg.norm(pos) <= d))
    rep = ObjectRotationReport(hand, np.array([0, 0, 1.0]), 0.05)
    for k in range(1, 11):  # 0.1 rad per step about z, in hand
        quat = np.array([np.cos(0.05 * k), 0, 0, np.sin(0.05 * k)])
        rep.update()
    pos = np.array([0, 0, -0.5])  # dropped
    for k in range(11, 40):
        quat = np.array([np.cos(0.05 * k), 0, 0, np.sin(0.05 * k)])
        rep.update()
    assert abs(rep.tracker.rot - 0.9) < 1e-6  # 10 orientations in hand: 9 steps of 0.1 rad
    assert rep.ttf == pytest.approx(11 * 0.05) and "(dropped)" in rep.summary()


def test_live_rotation_report_counts_one_window_from_the_first_command():
    """Before the first joint_commands the hand only holds; after window_s the report is frozen, so a live run
    longer than an episode (the nodes take seconds to come up) reports one episode's worth."""
    from types import SimpleNamespace

    from dexndm.policy.metrics import ObjectRotationReport

    step = {"k": 0}

    def pose():
        a = 0.05 * step["k"]
        return np.zeros(3), np.array([np.cos(a), 0, 0, np.sin(a)])

    hand = SimpleNamespace(object_pose=pose, object_in_hand=lambda d: True)
    rep = ObjectRotationReport(hand, np.array([0, 0, 1.0]), 0.05, window_s=1.0)
    for k in range(1, 6):  # the hand holding, before any command (the object turns anyway, here)
        step["k"] = k
        rep.update()
    assert "(no joint_commands)" in rep.summary()
    rep.start()
    for k in range(6, 60):  # 0.1 rad per 0.05 s step
        step["k"] = k
        rep.update()
    assert rep.elapsed == pytest.approx(1.0) and rep.tracker.rot == pytest.approx(1.9)  # 20 steps, the first sets
    assert "in 1.0 s since the first joint_commands" in rep.summary()


def test_shipped_policy_is_chosen_by_wrist_and_axis(tmp_path, monkeypatch):
    """Several shipped policies: the launch takes the one trained for its wrist and axis; everything else (and
    an uncovered wrist) gets the palm-up generalist, whatever the file names sort as."""
    import dexndm.paths
    from dexndm.policy.exported import shipped_policy

    models = tmp_path / "share" / "models"
    models.mkdir(parents=True)
    general = random_policy(models / "policy-leap-palmup.pt", axes=("+z", "-z"))
    down = random_policy(models / "policy-leap-palmdown-x.pt", wrists=("palm_down",), axes=("+x", "-x"))
    share = dexndm.paths.share_dir()
    monkeypatch.setattr(dexndm.paths, "share_path",
                        lambda *p: models.parent.joinpath(*p) if p[:1] == ("models",) else share.joinpath(*p))
    assert shipped_policy("allegro") == ""
    assert shipped_policy() == str(general)
    assert shipped_policy("leap", "palm_down", "x") == str(down)
    assert shipped_policy("leap", "palm_down", "-x") == str(down)
    assert shipped_policy("leap", "palm_down", "z") == str(general)  # not covered: the generalist
    assert shipped_policy("leap", "palm_up", "-z") == str(general)
    # A policy trained on some (wrist, axis) pairs is picked for those pairs only, not every wrist with every axis.
    import torch

    side = random_policy(models / "policy-leap-side.pt", wrists=("base_up", "thumb_up"), axes=("+x", "+y"))
    blob = torch.load(side, weights_only=True)
    blob["metadata"]["trained_on"]["slots"] = [["base_up", "+x"], ["thumb_up", "+y"]]
    torch.save(blob, side)
    assert shipped_policy("leap", "base_up", "x") == str(side)
    assert shipped_policy("leap", "thumb_up", "y") == str(side)
    assert shipped_policy("leap", "base_up", "y") == str(general)
    # A wider policy that also covers the generalist's pairs (sorting first) does not take them over.
    wide = random_policy(models / "policy-leap-aaa.pt", wrists=("palm_up", "base_up"), axes=("+z", "-z", "+x"))
    assert shipped_policy("leap", "palm_up", "z") == str(general)
    assert shipped_policy("leap", "base_up", "x") == str(wide)
    wide.unlink()
    side.unlink()
    from dexndm.ros.bringup import _policy_path, resolve_args

    assert _policy_path(resolve_args({"wrist": "palm_down", "axis": "x"})) == str(down)
    assert _policy_path(resolve_args({})) == str(general)


def test_observed_wrist_quaternion_has_one_sign_per_orientation():
    """q and -q are one orientation: the observation carries the same four numbers for both, and the same
    for a pose reached with float noise on either side of w = 0 (palm up on LEAP is [0, 1, 0, 0])."""
    from dexndm.hand.sim.scene import WRIST_POSES, mat_to_quat, wrist_rotation
    from dexndm.policy.history import ProprioHistory, canonical_wrist_quat, observation

    h = ProprioHistory(2, 3)
    h.reset(np.zeros(3), np.zeros(3))
    axis = np.array([0.0, 0.0, 1.0])
    for hand in ("leap", "allegro"):
        spec = load_hand_spec(hand)
        for w in WRIST_POSES:
            q = mat_to_quat(wrist_rotation(spec, w))
            for tilt in (1e-9, -1e-9, 0.05, -0.05):  # small rotations about x on either side of the pose
                qt = np.array([np.cos(tilt / 2), np.sin(tilt / 2), 0, 0])
                w_, x, y, z = q
                a, b, c, d = qt
                turned = np.array([w_ * a - x * b - y * c - z * d, w_ * b + x * a + y * d - z * c,
                                   w_ * c - x * d + y * a + z * b, w_ * d + x * c - y * b + z * a])
                o1 = observation(h, turned, axis)[-7:-3]
                o2 = observation(h, -3.0 * turned, axis)[-7:-3]
                assert np.allclose(o1, o2), (hand, w, tilt)
                assert np.allclose(o1, canonical_wrist_quat(q), atol=0.03), (hand, w, tilt)
    # The shipped palm-up policy saw [0, 1, 0, 0] from the simulator: the observation keeps it.
    assert np.allclose(canonical_wrist_quat([0, 1, 0, 0]), [0, 1, 0, 0])
    with pytest.raises(ValueError, match="wrist orientation"):
        canonical_wrist_quat([0, 0, 0, 0])


def test_gait_family_picks_each_episodes_gait_from_the_objects_size_and_friction():
    """A specialist gait family: the reference object gets the base gait; a bigger or grippier object gets
    base + feature * slope; reversal and JSON keep every member; GaitPolicy re-picks at every reset."""
    from dexndm.policy.train.gait import Gait, GaitFamily, GaitPolicy, gait_from_json

    n = 16
    d = 3 * n + 1
    rng = np.random.default_rng(3)
    base, slopes = rng.uniform(-0.5, 0.5, d), rng.uniform(-0.5, 0.5, (2, d))
    fam = GaitFamily(base, slopes, ("size", "friction"), ref_size=0.04, ref_friction=1.0, n=n)
    ref = fam.gait_for(0.04, 1.0)
    assert np.allclose(ref.to_vector(), Gait.from_vector(base, n).to_vector())
    # +10 % size and x3 friction are one unit of each feature.
    big = fam.gait_for(0.044, 3.0)
    assert np.allclose(big.center, Gait.from_vector(base + slopes[0] + slopes[1], n).center)
    assert np.allclose(fam.reversed().gait_for(0.044, 3.0).amplitude, big.reversed().amplitude)
    assert np.allclose(fam.reversed().gait_for(0.044, 3.0).phase, big.reversed().phase)
    back = gait_from_json(json.loads(json.dumps(fam.to_json())))
    assert isinstance(back, GaitFamily) and np.allclose(back.gait_for(0.05, 0.5).center, fam.gait_for(0.05, 0.5).center)
    with pytest.raises(ValueError, match="choose from"):
        GaitFamily(base, slopes[:1], ("colour",), 0.04, 1.0, n)

    env = RotationEnv(EnvConfig(objects="cylinders", disturbance_scale=0.0, obs_noise=0.0))
    fam = GaitFamily(np.zeros(d), np.zeros((1, d)), ("size",), env.nominal_size(resolve_objects("cylinder_50")[0]),
                     1.0, n)
    fam.slopes[0, :n] = 0.3  # centre offset grows with size
    pol = GaitPolicy(fam, env)
    with pytest.raises(RuntimeError, match="reset"):
        pol.target()
    targets = {}
    for name in ("cylinder_45", "cylinder_55"):
        env.reset(wrist="palm_up", axis=np.array([0.0, 0.0, 1.0]), obj=resolve_objects(name)[0])
        pol.reset()
        targets[name] = pol.target() - env.a_prev
    assert env.info.size > 0
    # The bigger object's gait sits further in (joints at a limit aside).
    assert np.all(targets["cylinder_55"] >= targets["cylinder_45"])
    assert np.sum(targets["cylinder_55"] > targets["cylinder_45"] + 0.01) >= 8
