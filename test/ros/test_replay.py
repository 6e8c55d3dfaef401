"""Live graph vs `dexndm replay`: the same input gives identical actions; recordings are byte-faithful.

The rotate launch and the recorder run as real processes; the policy waits for the wrist orientation,
which the probe sends only once the recorder is subscribed to every topic, so the bag holds the
session from the policy's first action.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from geometry_msgs.msg import QuaternionStamped, Vector3Stamped
from policy_fixtures import random_policy, random_residual
from rosgraph import Launched, Probe
from sensor_msgs.msg import JointState

from dexndm.bag.io import BagReader, read_messages
from dexndm.hand.sim.scene import mat_to_quat, wrist_rotation
from dexndm.hand.spec import load_hand_spec
from dexndm.policy import replay
from dexndm.policy.exported import load_policy

pytestmark = pytest.mark.ros

TOPICS = ("/joint_states", "/dexndm/policy_action", "/joint_commands", "/dexndm/wrist_orientation",
          "/dexndm/rotation_axis")


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


def _by_stamp(bag, topic: str, names) -> dict[int, np.ndarray]:
    out = {}
    with BagReader(bag) as reader:
        for m in reader.messages([topic]):
            msg = reader.decode(m)
            pos = dict(zip(msg.name, msg.position, strict=True))
            out[msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec] = np.array([pos[n] for n in names])
    return out


def test_live_graph_and_replay_give_identical_actions(tmp_path):
    spec = load_hand_spec("leap")
    path = random_policy(tmp_path / "policy-leap-test.pt")
    residual = random_residual(tmp_path / "residual-leap-test.pt", path)
    params = tmp_path / "params.yaml"
    params.write_text("policy:\n  ros__parameters:\n    wrist: ''\n")
    bag = tmp_path / "bag"
    with Probe("probe_replay") as probe, \
            Launched("launch", "rotate", "--policy", str(path), "--params", str(params), "--duration", "15",
                     "--wrist-backend", "off",
                     "--adapter", "residual", "--residual", str(residual)) as lc, \
            Launched("record", "-o", str(bag), *TOPICS) as rec:
        probe.subscribe(JointState, "/dexndm/policy_action", qos=500)
        axis_pub = probe.publisher(Vector3Stamped, "/dexndm/rotation_axis")
        wrist_pub = probe.publisher(QuaternionStamped, "/dexndm/wrist_orientation")
        # The recorder subscribes once it sees a publisher: wait until it holds every topic and the probe's
        # publishers match it, the policy and the adaptation.
        _wait(lambda: all(f"Subscribed to {t} " in rec.output for t in TOPICS)
              and wrist_pub.get_subscription_count() >= 3 and axis_pub.get_subscription_count() >= 3
              and probe.node.count_subscribers("/dexndm/policy_action") >= 3, 40,
              f"graph not up:\n{rec.output}\n{lc.output}")
        time.sleep(1.5)
        axis = Vector3Stamped()
        axis.vector.x, axis.vector.y, axis.vector.z = 0.3, 0.1, 1.0  # not the launch's default z
        axis_pub.publish(axis)
        time.sleep(0.3)
        wmsg = QuaternionStamped()
        wq = mat_to_quat(wrist_rotation(spec, "palm_up"))
        wmsg.quaternion.w, wmsg.quaternion.x, wmsg.quaternion.y, wmsg.quaternion.z = (float(v) for v in wq)
        wrist_pub.publish(wmsg)
        probe.wait_for("/dexndm/policy_action", 40, timeout=30)
        axis_pub.publish(Vector3Stamped())  # a zero axis: rejected live and in replay alike
        assert lc.wait(40) == 0, lc.output
        time.sleep(0.3)
        assert rec.interrupt() == 0, rec.output
    live = _by_stamp(bag, "/dexndm/policy_action", spec.joint_names)
    commands = _by_stamp(bag, "/joint_commands", spec.joint_names)
    assert len(live) > 60 and len(commands) >= len(live) - 2

    out = tmp_path / "replay"
    proc = Launched("replay", str(bag), "--through", "policy,adaptation", "--policy", str(path), "--out", str(out),
                    "--adapter", "residual", "--residual", str(residual),
                  "--check")
    assert proc.wait(60) == 0, proc.output
    doc = json.loads((out / "actions.json").read_text())
    s = doc["summary"]
    print(proc.output)
    print(lc.output[-4000:])  # shown on failure: the live nodes' warnings (fallbacks, stale samples)
    if s["policy"]["missing_samples"]:
        pytest.skip("the recorder missed a joint_states sample the policy used (machine overloaded)")
    if "forwarding uncorrected" in lc.output:
        # The live adaptation node waited sample_wait for a joint_states sample and forwarded an action
        # uncorrected (its documented fallback); the replay, which has every sample, cannot reproduce that.
        pytest.skip("the live adaptation node fell back on a late joint_states sample (machine overloaded)")
    assert s["timing"] == "recorded" and s["ticks"] == len(live)
    # Every recorded action, bit for bit (JSON floats round-trip exactly), in the order they were sent.
    replayed = {t["stamp_ns"]: t for t in doc["ticks"]}
    assert sorted(replayed) == sorted(live)
    for stamp, a in live.items():
        assert replayed[stamp]["sample_stamp_ns"] == stamp
        np.testing.assert_array_equal(np.array(replayed[stamp]["policy"]), a)
    assert {t["phase"] for t in doc["ticks"]} == {"approach", "settle", "run"}
    assert s["policy"]["compared"] == len(live) and s["policy"]["max_abs_diff"] == 0.0
    # The adaptation's outputs (base action + trained residual) equal the recorded joint_commands.
    assert s["adaptation"]["mode"] == "residual" and s["adaptation"]["fallbacks"] == 0
    assert max(np.max(np.abs(t["correction"])) for t in doc["ticks"]) > 1e-3
    for stamp, c in commands.items():
        np.testing.assert_array_equal(np.array(replayed[stamp]["adapted"]), c)
    assert s["adaptation"]["compared"] == len(commands) and s["adaptation"]["max_abs_diff"] == 0.0
    assert "policy: " in proc.output and "identical" in proc.output
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{f}.png" for f in spec.fingers)
    # The recorded axis was in force: replayed with the launch's default axis instead, the run differs.
    recording = replay.load_recording(bag)
    recording.axis.clear()
    other = replay.replay(recording, spec, load_policy(path)).summary()["policy"]
    assert other["compared"] == len(live) and other["max_abs_diff"] > 0


def test_recorded_hand_joint_states_are_byte_identical_and_in_order(tmp_path):
    got: list[bytes] = []
    lock = threading.Lock()

    def on_raw(raw):
        with lock:
            got.append(bytes(raw))

    bag = tmp_path / "hand"
    with Probe("probe_raw") as probe, Launched("launch", "hand", "--backend", "sim", "--duration", "7") as lc:
        probe.node.create_subscription(JointState, "/joint_states", on_raw, 2000, raw=True)
        _wait(lambda: probe.node.count_publishers("/joint_states") >= 1, 40, f"no driver:\n{lc.output}")
        with Launched("record", "-o", str(bag), "/joint_states") as rec:
            assert rec.wait_output("Subscribed to /joint_states", 20), rec.output
            assert lc.wait(40) == 0, lc.output
            time.sleep(0.3)
            assert rec.interrupt() == 0, rec.output
    stored = list(read_messages(bag, ["/joint_states"]))
    with lock:
        wire = list(got)
    assert len(stored) > 150, len(stored)
    raws = [m.rawdata for m in stored]
    # The probe listened from before the recorder started until the driver stopped: the bag is one
    # contiguous run of what went over the wire, byte for byte, in order.
    assert raws[0] in wire
    i = wire.index(raws[0])
    assert wire[i:i + len(raws)] == raws
    assert len(wire) - (i + len(raws)) <= 2  # the driver's last messages as it shut down
    t = np.array([m.t_ns for m in stored])
    assert np.all(np.diff(t) >= 0)
