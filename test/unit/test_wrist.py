"""Wrist core without ROS: URDF FK, stored arm poses, bounded-speed slerp, limits, teleop mapping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from dexndm.hand.sim.scene import wrist_rotation
from dexndm.hand.spec import load_hand_spec
from dexndm.ros.bringup import _wrist_nodes, resolve_args
from dexndm.wrist.arm import arm_config_path, load_arm_config
from dexndm.wrist.backends import JointTrajectoryWrist, PoseWrist, SimWrist, TrajectoryCommand
from dexndm.wrist.kinematics import (
    UrdfChain,
    UrdfError,
    mat_to_quat,
    quat_angle,
    quat_to_mat,
    rot_x,
    rot_z,
)
from dexndm.wrist.poses import (
    WRIST_POSE_NAMES,
    Freshness,
    OrientationLimit,
    SlerpMover,
    WristLimitError,
    named_orientations,
)
from dexndm.wrist.teleop import TeleopConfigError, TeleopMapper, load_teleop_config, teleop_config_from_dict

TOY_URDF = """<robot name="toy">
  <link name="base"/><link name="l1"/><link name="l2"/><link name="l3"/><link name="l4"/><link name="tip"/>
  <link name="elsewhere"/>
  <joint name="j1" type="revolute"><parent link="base"/><child link="l1"/>
    <origin xyz="0 0 1"/><axis xyz="0 0 1"/><limit lower="-3" upper="3" velocity="1"/></joint>
  <joint name="j2" type="prismatic"><parent link="l1"/><child link="l2"/>
    <origin xyz="0.5 0 0"/><axis xyz="1 0 0"/><limit lower="0" upper="1" velocity="1"/></joint>
  <joint name="j3" type="fixed"><parent link="l2"/><child link="l3"/>
    <origin xyz="0 0 0.2" rpy="1.5707963267948966 0 0"/></joint>
  <joint name="j4" type="continuous"><parent link="l3"/><child link="l4"/>
    <origin xyz="0 0 0.1"/><axis xyz="0 1 0"/></joint>
  <joint name="j5" type="fixed"><parent link="l4"/><child link="tip"/><origin xyz="0 0 0.05"/></joint>
  <joint name="j6" type="fixed"><parent link="base"/><child link="elsewhere"/></joint>
</robot>"""


def test_urdf_fk_matches_hand_computed_transforms(tmp_path):
    path = tmp_path / "toy.urdf"
    path.write_text(TOY_URDF)
    chain = UrdfChain.from_urdf(path, "base", "tip")
    assert chain.joint_names == ("j1", "j2", "j4")
    # q = 0: translations add up, no rotation but the fixed rpy (roll 90 deg).
    T0 = chain.fk([0.0, 0.0, 0.0])
    np.testing.assert_allclose(T0[:3, 3], [0.5, -0.15, 1.2], atol=1e-12)
    np.testing.assert_allclose(T0[:3, :3], [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-12)
    # j1 = 90 deg about z, j2 = 0.3 m, j4 = 90 deg about the (rolled) y axis, worked by hand:
    # p = (0,0,1) + Rz90 (0.8,0,0) + (0,0,0.2) + Rz90 Rx90 (0,0,0.1) + R_tip (0,0,0.05)
    T = chain.fk({"j1": math.pi / 2, "j2": 0.3, "j4": math.pi / 2})
    np.testing.assert_allclose(T[:3, :3], [[-1, 0, 0], [0, 0, 1], [0, 1, 0]], atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], [0.1, 0.85, 1.2], atol=1e-12)
    # Geometric Jacobian = finite differences of FK.
    q = np.array([0.4, 0.2, -0.7])
    J = chain.jacobian(q)
    for i in range(3):
        dq = np.zeros(3)
        dq[i] = 1e-6
        dp = (chain.fk(q + dq)[:3, 3] - chain.fk(q - dq)[:3, 3]) / 2e-6
        np.testing.assert_allclose(J[:3, i], dp, atol=1e-6)
    with pytest.raises(UrdfError, match="'elsewhere' is not below 'l1'"):
        UrdfChain.from_urdf(path, "l1", "elsewhere")
    with pytest.raises(UrdfError, match="tip link 'nope' not in the URDF"):
        UrdfChain.from_urdf(path, "base", "nope")
    with pytest.raises(ValueError, match="missing"):
        chain.fk({"j1": 0.0})


def test_franka_fk_zero_and_quaternion_roundtrip():
    arm = load_arm_config("franka_panda")
    assert len(arm.joint_names) == 7
    # All joints at zero: the flange 0.088 m forward, at 0.333 + 0.316 + 0.384 - 0.107 m, pointing down.
    T = arm.chain.fk(np.zeros(7))
    np.testing.assert_allclose(T[:3, 3], [0.088, 0.0, 0.926], atol=1e-9)
    np.testing.assert_allclose(T[:3, :3], np.diag([1.0, -1.0, -1.0]), atol=1e-9)
    rng = np.random.default_rng(0)
    for _ in range(20):
        R = rot_z(rng.uniform(-3, 3)) @ rot_x(rng.uniform(-3, 3)) @ rot_z(rng.uniform(-3, 3))
        np.testing.assert_allclose(quat_to_mat(mat_to_quat(R)), R, atol=1e-12)


@pytest.mark.parametrize("name", WRIST_POSE_NAMES)
def test_stored_franka_poses_give_the_named_hand_orientations(name):
    arm = load_arm_config("franka_panda")
    spec = load_hand_spec(arm.hand)
    q = arm.poses[name]
    arm.check_limits(q, name)  # inside the configured command limits
    R = arm.hand_rotation(q)
    err = quat_angle(mat_to_quat(R), mat_to_quat(wrist_rotation(spec, name)))
    assert math.degrees(err) < 3.0, f"{name}: FK is {math.degrees(err):.2f} deg off"


def test_slerp_speed_bound_and_arrival():
    named = named_orientations("leap")
    mover = SlerpMover(1.0)
    mover.start(named["palm_up"], named["palm_down"])
    total = quat_angle(named["palm_up"], named["palm_down"])
    assert total == pytest.approx(math.pi, abs=1e-6)
    prev, steps = named["palm_up"], 0
    while mover.moving:
        q = mover.step(0.02)
        assert quat_angle(prev, q) <= 0.02 + 1e-9
        prev, steps = q, steps + 1
    assert steps == math.ceil(total / 0.02)
    assert quat_angle(prev, named["palm_down"]) < 1e-9
    # The sim backend streams the same bounded steps; a re-request mid-way continues from where it is.
    sim = SimWrist(named, OrientationLimit(named["palm_up"]), max_angular_speed=2.0)
    with pytest.raises(ValueError, match="no measured"):
        sim.request("palm_down")
    sim.measure(named["palm_up"])
    acc = sim.request("thumb_up")
    assert acc.label == "thumb_up" and "rad/s" in acc.message
    cmds = [sim.tick(0.02) for _ in range(10)]
    sim.request("palm_down")
    cmds += [sim.tick(0.02) for _ in range(200)]
    qs = [named["palm_up"]] + [c.quat for c in cmds if c is not None]
    assert max(quat_angle(a, b) for a, b in zip(qs, qs[1:], strict=False)) <= 0.04 + 1e-9
    assert quat_angle(qs[-1], named["palm_down"]) < 1e-9
    # Hold: stops streaming, commands the measured orientation.
    sim.request("base_up")
    sim.tick(0.02)
    held = sim.hold()
    assert quat_angle(held.quat, named["palm_up"]) < 1e-9 and sim.tick(0.02) is None and not sim.moving
    with pytest.raises(ValueError, match="neither a named pose"):
        sim.request("sideways")
    with pytest.raises(ValueError, match="not all zero"):
        sim.request("0,0,0,0")


def test_orientation_and_joint_limits_refuse_and_keep_the_motion(tmp_path):
    named = named_orientations("leap")
    sim = SimWrist(named, OrientationLimit(named["palm_up"], math.radians(125), "palm_up"), 1.0)
    sim.measure(named["palm_up"])
    sim.request("thumb_up")  # 120 deg: allowed
    with pytest.raises(WristLimitError, match=r"orientation limit: palm_down is 180.0 deg from the reference "
                                              r"'palm_up', beyond max_angle_deg 125.0"):
        sim.request("palm_down")
    assert sim.target_label == "thumb_up" and sim.mover.moving  # the refused request changed nothing

    # Joint limits: a copy of the Franka config whose joint 4 range excludes the stored palm_down.
    cfg = yaml.safe_load(arm_config_path("franka_panda").read_text())
    q4 = cfg["poses"]["palm_down"][3]
    cfg["limits"]["panda_joint4"] = [-3.0218, q4 - 0.05]  # palm_down has the highest joint 4 of all poses
    cfg["urdf"] = str(arm_config_path("franka_panda").parents[2] / cfg["urdf"])
    path = tmp_path / "tight.yaml"
    path.write_text(yaml.safe_dump(cfg))
    arm = load_arm_config(path)
    jt = JointTrajectoryWrist(arm, OrientationLimit(named["palm_up"]), 1.0, 0.5)
    jt.measure(list(arm.joint_names) + ["if_mcp"], list(arm.poses["palm_up"]) + [0.3])
    with pytest.raises(WristLimitError, match=r"joint limit: palm_down puts panda_joint4 at -1.9987 rad, outside "
                                              r"its limit \[-3.0218, -2.0487\]"):
        jt.request("palm_down")
    with pytest.raises(ValueError, match="moves between the named poses"):
        jt.request("1,0,0,0")
    # Within limits: one trajectory point; duration from the joint speed bound; hold = measured joints.
    cmd = jt.request("thumb_up").command
    assert isinstance(cmd, TrajectoryCommand) and cmd.joint_names == arm.joint_names
    np.testing.assert_array_equal(cmd.positions, arm.poses["thumb_up"])
    dq = np.abs(arm.poses["thumb_up"] - arm.poses["palm_up"])
    assert cmd.duration == pytest.approx(max(np.max(dq) / 0.5, 0.5))
    assert jt.moving and not jt.reached()
    np.testing.assert_array_equal(jt.hold().positions, arm.poses["palm_up"])
    assert not jt.moving
    # A JointState without all arm joints is not a measurement.
    assert not jt.measure(["panda_joint1"], [0.0])
    assert quat_angle(jt.orientation(), named["palm_up"]) < math.radians(3)

    # Pose backend: flange targets that put the hand at the named orientation, position held.
    pw = PoseWrist(named, OrientationLimit(named["palm_up"]), 1.0, arm)
    pw.measure([0.4, 0.0, 0.5], arm.flange_quat_for(named["palm_up"]))
    assert quat_angle(pw.orientation(), named["palm_up"]) < 1e-9
    pw.request("palm_down")
    last = None
    for _ in range(400):
        last = pw.tick(0.02) or last
    np.testing.assert_allclose(last.position, [0.4, 0.0, 0.5])
    assert quat_angle(arm.hand_quat_from_flange(last.quat), named["palm_down"]) < 1e-9


def test_freshness_reports_stale_once():
    f = Freshness("hand", 0.5)
    assert f.fresh(0.0) is False and not f.went_stale(10.0)  # never heard: not "went stale"
    f.seen(1.0)
    assert f.fresh(1.4) and not f.went_stale(1.4)
    assert f.went_stale(1.6) and not f.went_stale(1.7)
    f.seen(2.0)
    assert f.went_stale(3.0)
    assert Freshness("off", 0.0).fresh(100.0)


def _joy(n_buttons=15, n_axes=6, pressed=(), axes=None):
    b = [0] * n_buttons
    for i in pressed:
        b[i] = 1
    a = [0.0] * n_axes
    for i, v in (axes or {}).items():
        a[i] = v
    return b, a


def test_teleop_buttons_stick_deadman():
    cfg = load_teleop_config("gamepad")
    m = TeleopMapper(cfg)
    assert m.axis is None and not m.enabled(0.0)
    # Buttons select fixed axes on press; the selection stays after release.
    assert m.update(*_joy(pressed=[3]), now=0.0)
    np.testing.assert_array_equal(m.axis, [0, 0, 1])
    assert not m.update(*_joy(), now=0.05)
    np.testing.assert_array_equal(m.axis, [0, 0, 1])
    for btn, want in ((0, [0, 0, -1]), (1, [1, 0, 0]), (2, [-1, 0, 0]), (11, [0, 1, 0]), (12, [0, -1, 0])):
        m.update(*_joy(), now=0.1)
        assert m.update(*_joy(pressed=[btn]), now=0.15)
        np.testing.assert_array_equal(m.axis, want)
    # Held button does not re-trigger; a second newly pressed one does.
    assert not m.update(*_joy(pressed=[12]), now=0.2)
    assert m.update(*_joy(pressed=[12, 3]), now=0.25)
    np.testing.assert_array_equal(m.axis, [0, 0, 1])
    # Stick (right stick, plane mode): pushed up -> +x, left -> +y, diagonal -> normalised.
    assert m.update(*_joy(axes={3: 1.0}), now=0.3)
    np.testing.assert_allclose(m.axis, [1, 0, 0])
    m.update(*_joy(axes={2: 0.7, 3: -0.7}), now=0.35)
    np.testing.assert_allclose(m.axis, [-math.sqrt(0.5), math.sqrt(0.5), 0])
    # Inside the dead zone (release): kept.
    assert not m.update(*_joy(axes={2: 0.1, 3: 0.2}), now=0.4)
    np.testing.assert_allclose(m.axis, [-math.sqrt(0.5), math.sqrt(0.5), 0])
    # Dead-man: held -> enabled while Joy keeps coming; released or Joy silent -> disabled.
    m.update(*_joy(pressed=[9]), now=1.0)
    assert m.enabled(1.0) and m.enabled(1.4) and not m.enabled(1.6)
    m.update(*_joy(), now=2.0)
    assert not m.enabled(2.0)


def test_teleop_hemisphere_axis_deadman_and_bad_configs():
    cfg = teleop_config_from_dict({
        "stick": {"axes": [0, 1], "x_direction": [1, 0, 0], "y_direction": [0, 1, 0], "mode": "hemisphere",
                  "center": [0, 0, 1], "deadzone": 0.2, "button": 4},
        "deadman": {"axis": 5, "threshold": -0.5},
    })
    m = TeleopMapper(cfg, initial_axis=[0, 0, 2])
    np.testing.assert_array_equal(m.axis, [0, 0, 1])
    assert not m.update(*_joy(axes={0: 0.5}), now=0.0)  # stick button not held
    assert m.update(*_joy(pressed=[4], axes={0: 0.5}), now=0.1)
    np.testing.assert_allclose(m.axis, [0.5, 0.0, math.sqrt(0.75)])
    assert not m.enabled(0.1)
    m.update(*_joy(axes={5: -0.9}), now=0.2)
    assert m.enabled(0.2)
    m.update(*_joy(axes={5: 1.0}), now=0.3)
    assert not m.enabled(0.3)
    # Short Joy messages read as released, counted.
    m.update([0], [0.0], now=0.4)
    assert m.short_messages == 1 and not m.enabled(0.4)
    for bad, msg in (
        ({"buttons": {"+w": 1}}, "buttons"),
        ({"buttons": {"0,0,0": 1}}, "zero"),
        ({"stick": {"axes": [0, 1], "x_direction": [1, 0, 0], "y_direction": [2, 0, 0]}}, "parallel"),
        ({"stick": {"axes": [0], "x_direction": [1, 0, 0], "y_direction": [0, 1, 0]}}, "two Joy axis"),
        ({"deadman": {"button": 1, "axis": 2}}, "exactly one"),
        ({"buttons": {"+x": -1}}, "non-negative"),
        ({"bogus": 1}, "unknown key"),
        ({}, "maps nothing"),
    ):
        with pytest.raises(TeleopConfigError, match=msg):
            teleop_config_from_dict(bad)


def test_teleop_never_emits_zero_or_nan():
    m = TeleopMapper(load_teleop_config("gamepad"))
    rng = np.random.default_rng(1)
    specials = [0.0, -0.0, math.nan, math.inf, -math.inf, 1.0, -1.0, 1e-12]
    for k in range(3000):
        axes = [float(rng.choice(specials)) if rng.random() < 0.5 else float(rng.uniform(-1.5, 1.5))
                for _ in range(int(rng.integers(0, 8)))]
        buttons = [int(rng.random() < 0.2) for _ in range(int(rng.integers(0, 16)))]
        m.update(buttons, axes, now=k * 0.01)
        if m.axis is not None:
            assert np.all(np.isfinite(m.axis)) and abs(np.linalg.norm(m.axis) - 1.0) < 1e-9


def test_wrist_nodes_in_the_launch_table():
    assert _wrist_nodes(resolve_args()) == []
    (w,) = _wrist_nodes(resolve_args({"wrist_backend": "sim", "wrist_pose": "palm_down"}))
    assert w.name == "wrist" and w.parameters == {"backend": "sim", "hand": "leap", "pose": "palm_down"}
    w, t = _wrist_nodes(resolve_args({"wrist_backend": "joint_trajectory", "teleop": "gamepad", "axis": "-y"}))
    assert w.parameters["arm"] == "franka_panda" and t.parameters == {"controller": "gamepad", "axis": "-y"}
    with pytest.raises(ValueError, match="wrist_backend 'arm' unknown"):
        _wrist_nodes(resolve_args({"wrist_backend": "arm"}))
    with pytest.raises(ValueError, match="turns the simulated hand"):
        _wrist_nodes(resolve_args({"wrist_backend": "sim", "backend": "dynamixel"}))
