"""dexndm.policy.replay on bags written directly with BagWriter (no ROS graph)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from policy_fixtures import random_policy

from dexndm.bag.io import BagWriter
from dexndm.hand.spec import load_hand_spec
from dexndm.ndm.adaptation import AdaptationRunner, build_adapter
from dexndm.policy import replay as rp
from dexndm.policy.exported import load_policy
from dexndm.policy.runner import PolicyRunner
from dexndm.tools import replay as replay_tool

JS = "sensor_msgs/msg/JointState"
QS = "geometry_msgs/msg/QuaternionStamped"
VS = "geometry_msgs/msg/Vector3Stamped"
T0 = 1_700_000_000_000_000_000
MS = 1_000_000
SPEC = load_hand_spec("leap")


@pytest.fixture(scope="module")
def policy_path(tmp_path_factory):
    return random_policy(tmp_path_factory.mktemp("policy") / "policy-leap-test.pt")


def positions(i: int) -> np.ndarray:
    return SPEC.pose("grasp") + 0.02 * np.sin(0.05 * i + np.arange(SPEC.n))


def state_msg(stamp: int, q) -> dict:
    # Joints in reverse order plus an unrelated one: the replay must go by name.
    names = list(SPEC.joint_names)[::-1] + ["wrist_joint"]
    return {"header": {"stamp": stamp}, "name": names, "position": list(np.asarray(q)[::-1]) + [0.5]}


def write(path, messages):
    """messages: (topic, type, t_ns, dict); written in bag-time order."""
    with BagWriter(path) as bag:
        for topic, typ in sorted({(m[0], m[1]) for m in messages}):
            bag.add_topic(topic, typ)
        for topic, _typ, t, msg in sorted(messages, key=lambda m: m[2]):
            bag.write_msg(topic, t, msg)
    return path


def states(n: int, gap: tuple[int, int] | None = None) -> list[tuple[int, int, np.ndarray]]:
    """(stamp, bag time, q) at 100 Hz; samples with index in [gap) are missing (a stalled driver)."""
    out = []
    for i in range(n):
        if gap and gap[0] <= i < gap[1]:
            continue
        out.append((T0 + i * 10 * MS, T0 + i * 10 * MS + 300_000, positions(i)))
    return out


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    replay_tool.add_arguments(parser)
    return replay_tool.run(parser.parse_args([str(a) for a in argv]))


def test_without_recorded_actions_ticks_at_20hz_and_refuses_stale_samples(tmp_path, policy_path):
    samples = states(200, gap=(100, 130))  # 2 s at 100 Hz, 300 ms without samples in the middle
    bag = write(tmp_path / "bag", [("/joint_states", JS, t, state_msg(s, q)) for s, t, q in samples])
    policy = load_policy(policy_path)
    result = rp.replay(rp.load_recording(bag), SPEC, policy)
    assert result.timing == "rate"
    now = np.array([t.now_ns for t in result.ticks])
    assert now[0] == T0 and np.all(np.diff(now) == 50 * MS) and now[-1] <= samples[-1][0]
    assert len(now) == 40
    stale = [t for t in result.ticks if t.policy is None]
    assert stale and all("stale" in t.reason for t in stale)
    # Refused exactly where the newest sample was older than the node's stale timeout (0.1 s).
    for t in result.ticks:
        assert (t.policy is None) == (t.now_ns - t.sample_ns > rp.DEFAULT_STALE_TIMEOUT * 1e9)
    # Same as the runner driven by hand at 20 Hz with the node's settings.
    runner = PolicyRunner(policy, SPEC, stale_after=0.1, start_pose=SPEC.pose("grasp"))
    wq, axis = rp.wrist_quat_from_text(SPEC, "palm_up"), rp.axis_from_text("z")
    k = 0
    for t in result.ticks:
        while k < len(samples) and samples[k][0] <= t.now_ns:
            runner.update_joint_state(SPEC.joint_names, samples[k][2], samples[k][0])
            k += 1
        want = runner.tick(t.now_ns, wq, axis)
        if want.targets is None:
            assert t.policy is None
        else:
            np.testing.assert_array_equal(t.policy, want.targets)
    assert {t.phase for t in result.ticks} >= {"approach", "settle", "run"}
    assert result.summary()["policy"]["compared"] == 0


def test_recorded_actions_drive_the_ticks_with_the_wrist_and_axis_in_force(tmp_path, policy_path):
    """A synthetic 'live' session: the policy ticks every 50 ms on the newest sample, the wrist and axis
    change mid-run (one invalid axis is ignored), adaptation 'off' forwards the actions."""
    policy = load_policy(policy_path)
    samples = states(300)
    msgs = [("/joint_states", JS, t, state_msg(s, q)) for s, t, q in samples]
    wrists = [(T0 + 5 * MS, "palm_up"), (T0 + 1_207 * MS, "palm_down")]
    axes = [(T0 + 2 * MS, (0.3, 0.1, 1.0)), (T0 + 1_503 * MS, (0.0, 0.0, 0.0)), (T0 + 2_008 * MS, (1.0, 0.0, 0.0))]
    for t, name in wrists:
        q = rp.wrist_quat_from_text(SPEC, name)
        msgs.append(("/dexndm/wrist_orientation", QS, t, {"quaternion": dict(zip("wxyz", q, strict=True))}))
    for t, v in axes:
        msgs.append(("/dexndm/rotation_axis", VS, t, {"vector": dict(zip("xyz", v, strict=True))}))
    live = PolicyRunner(policy, SPEC, stale_after=0.1, start_pose=SPEC.pose("grasp"))
    adapt = AdaptationRunner(SPEC, build_adapter("off", SPEC))
    wq, ax = None, None
    recorded = []
    k = 0
    for tick_t in range(T0 + 23 * MS, samples[-1][1], 50 * MS):  # timer phase unrelated to the samples
        while k < len(samples) and samples[k][1] <= tick_t:
            live.update_joint_state(SPEC.joint_names, samples[k][2], samples[k][0])
            adapt.on_joint_state(SPEC.joint_names, samples[k][2], samples[k][0])
            k += 1
        wq = next((rp.wrist_quat_from_text(SPEC, n) for t, n in reversed(wrists) if t <= tick_t), None)
        valid = [v for t, v in axes if t <= tick_t and any(v)]
        ax = rp.axis_from_text(",".join(map(str, valid[-1]))) if valid else rp.axis_from_text("z")
        out = live.tick(tick_t, wq, ax)
        sent = adapt.on_action(SPEC.joint_names, out.targets, out.stamp_ns, wq, ax).sent
        msgs.append(("/dexndm/policy_action", JS, tick_t + 2 * MS,
                     {"header": {"stamp": out.stamp_ns}, "name": SPEC.joint_names, "position": out.targets}))
        msgs.append(("/joint_commands", JS, tick_t + 3 * MS,
                     {"header": {"stamp": out.stamp_ns}, "name": SPEC.joint_names, "position": sent}))
        recorded.append(out.targets)
    bag = write(tmp_path / "bag", msgs)

    out_dir = tmp_path / "out"
    assert run_cli(bag, "--through", "policy,adaptation", "--policy", policy_path, "--out", out_dir, "--check") == 0
    doc = json.loads((out_dir / "actions.json").read_text())
    s = doc["summary"]
    assert s["timing"] == "recorded" and s["ticks"] == len(recorded)
    assert s["policy"]["compared"] == len(recorded) and s["policy"]["max_abs_diff"] == 0.0
    assert s["adaptation"]["compared"] == len(recorded) and s["adaptation"]["max_abs_diff"] == 0.0
    assert any("rejected" in n for n in s["notes"])
    assert [t["policy"] for t in doc["ticks"]] == [list(r) for r in recorded]  # bit for bit through JSON
    header = (out_dir / "actions.csv").read_text().splitlines()[0].split(",")
    assert "policy.if_mcp" in header and "recorded_command.if_mcp" in header
    assert sorted(p.name for p in out_dir.glob("*.png")) == sorted(f"{f}.png" for f in SPEC.fingers)

    # Without the recorded wrist/axis (defaults palm_up, z) the run phase differs from the recording.
    rec = rp.load_recording(bag)
    rec.axis.clear()
    result = rp.replay(rec, SPEC, policy)
    assert result.summary()["policy"]["max_abs_diff"] > 0
    # A tampered recording is reported, and --check fails.
    msgs2 = [m for m in msgs if m[0] != "/dexndm/policy_action"]
    for m in msgs:
        if m[0] == "/dexndm/policy_action":
            pos = np.array(m[3]["position"]) + (1e-12 if m[2] > T0 + 2_500 * MS else 0.0)
            msgs2.append((m[0], m[1], m[2], {**m[3], "position": pos}))
    bag2 = write(tmp_path / "bag2", msgs2)
    assert run_cli(bag2, "--policy", policy_path, "--out", tmp_path / "out2", "--no-plots", "--check") == 1
    s2 = json.loads((tmp_path / "out2" / "actions.json").read_text())["summary"]["policy"]
    assert 0 < s2["max_abs_diff"] < 1e-9 and 0 < s2["identical"] < s2["compared"]


def test_bad_input_is_one_line_naming_the_file_or_topic(tmp_path, policy_path, capsys):
    def err_of(*argv, policy=policy_path) -> str:
        assert run_cli(*argv, "--policy", policy, "--out", tmp_path / "o", "--no-plots") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("dexndm replay: error: ")
        return err

    assert str(tmp_path / "nope") in err_of(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    assert "file.txt" in err_of(tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    assert "metadata.yaml" in err_of(tmp_path / "empty")
    other = write(tmp_path / "other", [("/chatter", "std_msgs/msg/String", T0, {"data": "hi"})])
    assert "/joint_states" in err_of(other) and "/chatter" in err_of(other)
    wrong = write(tmp_path / "wrong", [("/joint_states", "std_msgs/msg/String", T0, {"data": "hi"})])
    assert "/joint_states" in err_of(wrong) and "std_msgs/msg/String" in err_of(wrong)
    ok = write(tmp_path / "ok", [("/joint_states", JS, t, state_msg(s, q)) for s, t, q in states(20)])
    assert "policy_action" in err_of(ok, "--through", "adaptation")
    assert "--through" in err_of(ok, "--through", "planner")
    assert "missing.pt" in err_of(ok, policy=tmp_path / "missing.pt")
    assert "residual" in err_of(ok, "--through", "policy,adaptation", "--adapter", "residual",
                                "--residual", tmp_path / "r.pt")
