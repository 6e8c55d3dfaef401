"""Reality profile schema: every key required, unknown keys rejected by name, values validated."""

import pytest
import yaml

from dexndm.hand.sim.profiles import IdealProfile, ProfileError, RealityProfile, load_profile, schema_markdown
from dexndm.paths import share_path

DEFAULT = share_path("config", "reality", "leap_default.yaml")


def _write(tmp_path, cfg):
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_shipped_profile_loads_with_servo_grounded_values():
    p = load_profile("leap_default")
    assert isinstance(p, RealityProfile)
    assert p.kp == pytest.approx(800 * 0.00263)  # ~2.1 N*m/rad
    assert p.torque_limit == pytest.approx(0.5 * 0.517)  # 500 mA -> ~0.26 N*m
    assert isinstance(load_profile("ideal"), IdealProfile)
    assert isinstance(load_profile(None), IdealProfile)


def test_per_joint_gains_apply_scale_and_seeded_scatter():
    from dexndm.hand.spec import load_hand_spec

    p = load_profile("leap_default")
    names = load_hand_spec("leap").joint_names[:3]  # if_mcp, if_rot, if_pip
    a, b = p.per_joint(load_hand_spec("leap").joint_names), p.per_joint(load_hand_spec("leap").joint_names)
    assert (a["kp"] == b["kp"]).all()  # seeded
    ratio = a["kp"] / p.kp
    assert 0.75 * 0.8 <= ratio[1] <= 0.75 * 1.2  # MCP-side factor
    assert 0.8 <= ratio[0] <= 1.2
    assert names[1] == "if_rot"
    with pytest.raises(ProfileError, match="unknown joint"):
        p.per_joint(("a", "b"))


@pytest.mark.parametrize("path, key", [(("latency_s",), "latency_s"), (("servo", "p_gain"), "servo.p_gain"),
                                       (("sensor", "quantization_rad"), "sensor.quantization_rad")])
def test_missing_key_is_named(tmp_path, path, key):
    cfg = yaml.safe_load(DEFAULT.read_text())
    d = cfg
    for k in path[:-1]:
        d = d[k]
    del d[path[-1]]
    with pytest.raises(ProfileError, match=f"missing required key '{key}'"):
        load_profile(_write(tmp_path, cfg))


def test_misspelled_key_is_named(tmp_path):
    cfg = yaml.safe_load(DEFAULT.read_text())
    cfg["joint"]["backlash"] = cfg["joint"].pop("backlash_rad")
    with pytest.raises(ProfileError, match="unknown key 'joint.backlash'"):
        load_profile(_write(tmp_path, cfg))


@pytest.mark.parametrize("section, key, value, msg", [
    ("servo", "current_limit_ma", -5, "> 0"),
    ("servo", "p_gain", "high", "must be float"),
    (None, "gain_scatter", 1.5, r"\[0, 1\)"),
    ("servo", "gain_scale", {"if_rot": 7}, "gain_scale.if_rot"),
])
def test_bad_values_are_named(tmp_path, section, key, value, msg):
    cfg = yaml.safe_load(DEFAULT.read_text())
    (cfg[section] if section else cfg)[key] = value
    with pytest.raises(ProfileError, match=msg):
        load_profile(_write(tmp_path, cfg))


def test_unknown_profile_lists_shipped_ones():
    with pytest.raises(ProfileError, match="leap_default"):
        load_profile("no_such_profile")


def test_schema_doc_lists_every_key():
    doc = schema_markdown()
    for key in ("servo.p_gain", "latency_s", "joint.backlash_rad", "object.mass_scale", "sensor.position_noise_std"):
        assert f"`{key}`" in doc
