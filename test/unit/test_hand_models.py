"""Hand models: URDF structure, MuJoCo import, fingertip forward kinematics and HandSpec orderings.

The fingertip references in test/data/fingertips_<hand>.yaml were computed independently of the URDFs (forward
kinematics written from the published body trees), so a wrong joint origin, axis, order or sign fails here.
"""

from __future__ import annotations

import copy
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import mujoco
import numpy as np
import pytest
import yaml

from dexndm.hand.spec import HandSpecError, load_hand_spec

HANDS = ("leap", "allegro")
DATA = Path(__file__).resolve().parents[1] / "data"
FK_TOL_M = 0.002

# LEAP: Dynamixel ID k drives this joint (LEAP_Hand_API; LEAP_Hand_Sim robot.urdf joint "k").
LEAP_BY_DYNAMIXEL_ID = [
    "if_rot", "if_mcp", "if_pip", "if_dip", "mf_rot", "mf_mcp", "mf_pip", "mf_dip",
    "rf_rot", "rf_mcp", "rf_pip", "rf_dip", "th_cmc", "th_axl", "th_mcp", "th_ipl",
]
# LEAP_Hand_Sim Isaac Gym DOF order (index, thumb, middle, ring; MCP-forward first).
LEAP_ISAAC = [
    "if_mcp", "if_rot", "if_pip", "if_dip", "th_cmc", "th_axl", "th_mcp", "th_ipl",
    "mf_mcp", "mf_rot", "mf_pip", "mf_dip", "rf_mcp", "rf_rot", "rf_pip", "rf_dip",
]
# LeapHandRot.yaml real_to_sim_indices: isaac slot i holds Dynamixel ID REAL_TO_SIM[i].
LEAP_REAL_TO_SIM = [1, 0, 2, 3, 12, 13, 14, 15, 5, 4, 6, 7, 9, 8, 10, 11]
LEAP_MENAGERIE = [
    "if_mcp", "if_rot", "if_pip", "if_dip", "mf_mcp", "mf_rot", "mf_pip", "mf_dip",
    "rf_mcp", "rf_rot", "rf_pip", "rf_dip", "th_cmc", "th_axl", "th_mcp", "th_ipl",
]
# DexNDM canonical palm-down pose, Isaac Gym order (paper App. A.1).
DEXNDM_GRASP_ISAAC = [1.244, 0.082, 0.265, 0.298, 1.163, 1.104, 0.953, -0.138,
                      1.096, 0.005, 0.08, 0.15, 1.337, 0.029, 0.285, 0.317]

ALLEGRO_COMMAND = [f"ah_joint{f}{j}" for f in "0123" for j in "0123"]
ALLEGRO_HORA = [f"ah_joint{f}{j}" for f in "1023" for j in "0123"]
ALLEGRO_MENAGERIE = [f"ah_joint{f}{j}" for f in "1230" for j in "0123"]
# HORA canonical grasp pose (HORA order) and deploy init pose (ROS 1 order = index, middle, ring, thumb).
HORA_GRASP = [0.082, 1.244, 0.265, 0.298, 1.104, 1.163, 0.953, -0.138,
              0.005, 1.096, 0.08, 0.15, 0.029, 1.337, 0.285, 0.317]
HORA_INIT_ROS1 = [0.0627, 1.2923, 0.3383, 0.1088, 0.0724, 1.1983, 0.1551, 0.1499,
                  0.1343, 1.1736, 0.5355, 0.2164, 1.1202, 1.1374, 0.8535, -0.0852]


# ---- fixtures / helpers ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=HANDS)
def hand(request):
    return request.param


_SPECS: dict = {}
_MODELS: dict = {}


def spec_of(hand):
    if hand not in _SPECS:
        _SPECS[hand] = load_hand_spec(hand)
    return _SPECS[hand]


def model_of(hand):
    if hand not in _MODELS:
        _MODELS[hand] = mujoco.MjModel.from_xml_path(str(spec_of(hand).urdf_path))
    return _MODELS[hand]


def urdf_root(hand):
    return ET.parse(spec_of(hand).urdf_path).getroot()


def qpos_joint_names(m):
    hinges = [i for i in range(m.njnt) if m.jnt_type[i] == mujoco.mjtJoint.mjJNT_HINGE]
    return [m.joint(i).name for i in sorted(hinges, key=lambda i: m.jnt_qposadr[i])]


def fingertips_in_root(m, d, spec, q_by_name):
    """Fingertip points (config) in the root-link frame, from MuJoCo kinematics of the URDF."""
    d.qpos[:] = 0.0
    for name, v in q_by_name.items():
        d.qpos[m.jnt_qposadr[m.joint(name).id]] = v
    mujoco.mj_kinematics(m, d)
    root = m.body(spec.root_link).id
    r_root, p_root = d.xmat[root].reshape(3, 3), d.xpos[root]
    out = {}
    for finger, tip in spec.fingertips.items():
        b = m.body(tip["link"]).id
        world = d.xpos[b] + d.xmat[b].reshape(3, 3) @ np.asarray(tip["pos"], float)
        out[finger] = r_root.T @ (world - p_root)
    return out


def reference(hand):
    with open(DATA / f"fingertips_{hand}.yaml") as f:
        return yaml.safe_load(f)


# ---- URDF ------------------------------------------------------------------------------------------------------
def test_urdf_has_16_revolute_joints_with_finite_limits(hand):
    root = urdf_root(hand)
    links = {ln.get("name") for ln in root.findall("link")}
    revolute = [j for j in root.findall("joint") if j.get("type") == "revolute"]
    assert len(revolute) == 16
    assert len({j.get("name") for j in revolute}) == 16
    for j in revolute:
        lim = j.find("limit")
        lo, hi = float(lim.get("lower")), float(lim.get("upper"))
        assert math.isfinite(lo) and math.isfinite(hi) and lo < hi, j.get("name")
        assert float(lim.get("effort")) > 0 and float(lim.get("velocity")) > 0
        assert j.find("parent").get("link") in links and j.find("child").get("link") in links
        axis = np.array([float(v) for v in j.find("axis").get("xyz").split()])
        assert np.isclose(np.linalg.norm(axis), 1.0)
    for ln in root.findall("link"):
        assert ln.find("inertial") is not None, ln.get("name")
        assert ln.findall("collision"), f"link {ln.get('name')} has no collision geometry"
        for c in ln.findall("collision"):
            assert c.get("name"), f"unnamed collision in {ln.get('name')}"


def test_urdf_joint_document_order_is_canonical(hand):
    revolute = [j.get("name") for j in urdf_root(hand).findall("joint") if j.get("type") == "revolute"]
    expected = LEAP_MENAGERIE if hand == "leap" else ALLEGRO_MENAGERIE
    assert revolute == expected == list(spec_of(hand).joint_names)


def test_leap_urdf_collision_and_limits():
    root = urdf_root("leap")
    assert len(root.findall("link/collision")) == 71  # 32 Playground boxes + 39 extra Menagerie boxes
    lim = {j.get("name"): j.find("limit") for j in root.findall("joint")}
    # Real LEAP API limits, not the Menagerie thumb ranges (th_axl [-0.349, 2.094], th_mcp [-0.47, 2.443]).
    assert (float(lim["th_axl"].get("lower")), float(lim["th_axl"].get("upper"))) == (-0.47, 2.443)
    assert (float(lim["th_mcp"].get("lower")), float(lim["th_mcp"].get("upper"))) == (-1.2, 1.9)
    assert all(float(v.get("effort")) == 0.95 and float(v.get("velocity")) == 8.48 for v in lim.values())


# ---- MuJoCo import -----------------------------------------------------------------------------------------------
def test_mujoco_compiles_with_qpos_in_sim_order(hand):
    spec, m = spec_of(hand), model_of(hand)
    assert m.nq == m.nv == 16
    assert qpos_joint_names(m) == list(spec.ordering("sim").names) == list(spec.joint_names)
    bodies = {m.body(i).name for i in range(m.nbody)}
    for ln in urdf_root(hand).findall("link"):
        assert ln.get("name") in bodies, f"URDF link {ln.get('name')} is not a MuJoCo body"
    assert m.body(spec.root_link).parentid[0] == 0
    # Joint limits survive the import.
    ids = [m.joint(n).id for n in spec.joint_names]
    np.testing.assert_allclose(m.jnt_range[ids], np.stack([spec.lower, spec.upper], axis=1))
    assert m.body_mass.sum() > 0.5


# ---- forward kinematics ------------------------------------------------------------------------------------------
def test_fingertips_match_independent_fk(hand):
    spec, m = spec_of(hand), model_of(hand)
    ref = reference(hand)
    assert ref["fingertips"] == {k: {"link": v["link"], "pos": list(v["pos"])} for k, v in spec.fingertips.items()}
    names = {c["name"] for c in ref["cases"]}
    assert len(ref["cases"]) >= 5 and {"zero", "home", "grasp"} <= names
    d = mujoco.MjData(m)
    worst = 0.0
    for case in ref["cases"]:
        assert set(case["q"]) == set(spec.joint_names), case["name"]
        got = fingertips_in_root(m, d, spec, case["q"])
        for finger, expected in case["expected"].items():
            err = float(np.linalg.norm(got[finger] - np.asarray(expected)))
            worst = max(worst, err)
            assert err < FK_TOL_M, f"{hand} case {case['name']} {finger}: {err * 1e3:.3f} mm"
    assert worst < FK_TOL_M


def test_fingertip_check_is_sensitive(hand):
    """Feeding the grasp pose in the wrong ordering (policy slots read as canonical) must miss by far more than 2 mm."""
    spec, m = spec_of(hand), model_of(hand)
    case = next(c for c in reference(hand)["cases"] if c["name"] == "grasp")
    q = np.array([case["q"][n] for n in spec.joint_names])
    scrambled = dict(zip(spec.joint_names, spec.ordering("policy").from_canonical(q), strict=True))
    got = fingertips_in_root(m, mujoco.MjData(m), spec, scrambled)
    errs = [np.linalg.norm(got[f] - np.asarray(p)) for f, p in case["expected"].items()]
    assert max(errs) > 10 * FK_TOL_M


def test_named_poses_match_reference_cases(hand):
    spec = spec_of(hand)
    cases = {c["name"]: c["q"] for c in reference(hand)["cases"]}
    for pose in ("home", "grasp"):
        np.testing.assert_allclose(spec.pose(pose), [cases[pose][n] for n in spec.joint_names], atol=1e-9)


# ---- palm frame --------------------------------------------------------------------------------------------------
def test_palm_frame_is_consistent_with_kinematics(hand):
    spec, m = spec_of(hand), model_of(hand)
    n = np.asarray(spec.palm_frame["normal"], float)
    f = np.asarray(spec.palm_frame["fingers"], float)
    c = np.asarray(spec.palm_frame["center"], float)
    assert np.isclose(np.linalg.norm(n), 1.0) and np.isclose(np.linalg.norm(f), 1.0) and abs(n @ f) < 1e-6
    d = mujoco.MjData(m)
    zero = dict.fromkeys(spec.joint_names, 0.0)
    grasp_tips = fingertips_in_root(m, d, spec, spec.by_name(spec.pose("grasp")))
    open_tips = fingertips_in_root(m, d, spec, zero)  # leaves d at q = 0 for the ray below
    for finger in ("index", "middle", "ring"):
        assert (open_tips[finger] - c) @ f > 0.1  # straight fingers point along `fingers`
        assert (grasp_tips[finger] - open_tips[finger]) @ n > 0.05  # flexing curls them toward `normal`
    # `center` lies on the palm's grasp-side collision surface: a ray shot back along -normal hits the palm there.
    geomid = np.zeros(1, np.int32)
    dist = mujoco.mj_ray(m, d, c + 0.05 * n, -n, None, 1, -1, geomid)
    assert m.geom_bodyid[geomid[0]] == m.body(spec.root_link).id
    assert abs(dist - 0.05) < 1e-6


# ---- HandSpec ----------------------------------------------------------------------------------------------------
def test_every_ordering_round_trips(hand):
    spec = spec_of(hand)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, spec.n))
    assert {"hardware", "policy", "sim", "canonical"} <= set(spec.orderings)
    for name, o in spec.orderings.items():
        assert sorted(o.index.tolist()) == list(range(spec.n)), name
        np.testing.assert_array_equal(o.to_canonical(o.from_canonical(x)), x, err_msg=name)
        np.testing.assert_array_equal(o.from_canonical(o.to_canonical(x)), x, err_msg=name)
        # slot k of the ordering holds joint names[k]
        np.testing.assert_array_equal(o.from_canonical(x)[0], x[0, spec.index_of(o.names)], err_msg=name)


def test_leap_hardware_and_policy_orderings():
    spec = spec_of("leap")
    hw = spec.ordering("hardware")
    assert list(hw.names) == LEAP_BY_DYNAMIXEL_ID
    dxl = spec.hardware["dynamixel"]
    assert dxl["model"] == "XC330-M288-T"
    assert dxl["ids"] == {n: k for k, n in enumerate(LEAP_BY_DYNAMIXEL_ID)}
    canon = np.arange(spec.n, dtype=float)
    for k, name in enumerate(LEAP_BY_DYNAMIXEL_ID):  # hardware slot k carries the value of joint `name`
        assert hw.from_canonical(canon)[k] == spec.joint_names.index(name)
    assert list(spec.ordering("policy").names) == LEAP_ISAAC
    assert [dxl["ids"][n] for n in spec.ordering("policy").names] == LEAP_REAL_TO_SIM
    assert list(spec.ordering("menagerie").names) == LEAP_MENAGERIE
    assert set(dxl["calibration"]) == set(spec.joint_names)
    for cal in dxl["calibration"].values():
        assert cal["offset"] == pytest.approx(math.pi) and cal["direction"] == 1
    assert {dxl["ids"][n] for n in dxl["gain_scale"]} == {0, 4, 8}
    np.testing.assert_allclose(spec.ordering("policy").from_canonical(spec.pose("grasp")), DEXNDM_GRASP_ISAAC)


def test_allegro_hardware_and_policy_orderings():
    spec = spec_of("allegro")
    assert list(spec.ordering("hardware").names) == ALLEGRO_COMMAND
    assert list(spec.ordering("policy").names) == ALLEGRO_HORA
    assert list(spec.ordering("ros1").names) == ALLEGRO_MENAGERIE
    assert spec.hardware["allegro_bridge"]["command_topic"] == "/allegro_hand_position_controller/commands"
    np.testing.assert_allclose(spec.ordering("policy").from_canonical(spec.pose("grasp")), HORA_GRASP)
    np.testing.assert_allclose(spec.ordering("ros1").from_canonical(spec.pose("home")), HORA_INIT_ROS1)


def test_limits_equal_urdf(hand):
    spec = spec_of(hand)
    lim = {j.get("name"): j.find("limit") for j in urdf_root(hand).findall("joint") if j.get("type") == "revolute"}
    for j in spec.joints:
        assert j.lower == float(lim[j.name].get("lower")) and j.upper == float(lim[j.name].get("upper")), j.name
        assert j.effort == float(lim[j.name].get("effort")) and j.velocity == float(lim[j.name].get("velocity"))


def test_poses_within_limits(hand):
    spec = spec_of(hand)
    assert {"open", "home", "grasp"} <= set(spec.poses)
    for name, q in spec.poses.items():
        assert q.shape == (spec.n,)
        assert np.all(q >= spec.lower - 1e-9) and np.all(q <= spec.upper + 1e-9), name
    # open = zeros, clamped into the limits
    np.testing.assert_allclose(spec.pose("open"), spec.clamp(np.zeros(spec.n)))


def test_sim_section_names_real_bodies(hand):
    spec, m = spec_of(hand), model_of(hand)
    for a, b in spec.sim["contact_excludes"]:
        assert m.body(a).id >= 0 and m.body(b).id >= 0
    assert len(spec.sim["fingertip_friction"]) == 3 and len(spec.sim["geom_friction"]) == 3
    assert set(spec.fingertips) == {"index", "middle", "ring", "thumb"}


# ---- HandSpec errors ---------------------------------------------------------------------------------------------
def _write_cfg(tmp_path, cfg, name):
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture
def leap_cfg():
    with open(spec_of("leap").source) as f:
        cfg = yaml.safe_load(f)
    cfg["urdf"] = str(spec_of("leap").urdf_path.resolve())  # absolute: the temp YAML lives outside the share dir
    return cfg


def test_temp_config_loads(tmp_path, leap_cfg):
    spec = load_hand_spec(_write_cfg(tmp_path, leap_cfg, "ok"))
    assert spec.joint_names == spec_of("leap").joint_names


def test_misspelled_ordering_name_is_rejected(tmp_path, leap_cfg):
    cfg = copy.deepcopy(leap_cfg)
    cfg["orderings"]["hardwre"] = cfg["orderings"].pop("hardware")
    with pytest.raises(HandSpecError, match=r"orderings\.hardware"):
        load_hand_spec(_write_cfg(tmp_path, cfg, "bad_key"))


def test_misspelled_joint_in_ordering_is_rejected(tmp_path, leap_cfg):
    cfg = copy.deepcopy(leap_cfg)
    cfg["orderings"]["policy"][0] = "if_mpc"
    with pytest.raises(HandSpecError, match=r"orderings\.policy") as e:
        load_hand_spec(_write_cfg(tmp_path, cfg, "bad_joint"))
    assert "if_mpc" in str(e.value)


@pytest.mark.parametrize("mutation", ["duplicate", "missing"])
def test_non_permutation_ordering_is_rejected(tmp_path, leap_cfg, mutation):
    cfg = copy.deepcopy(leap_cfg)
    sim = cfg["orderings"]["sim"]
    if mutation == "duplicate":
        sim[1] = sim[0]
    else:
        sim.pop()
    with pytest.raises(HandSpecError, match=r"orderings\.sim"):
        load_hand_spec(_write_cfg(tmp_path, cfg, mutation))
