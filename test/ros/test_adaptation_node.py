"""adaptation node in the live rotate graph: bounded corrections on every policy action, fallbacks."""

from __future__ import annotations

import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from policy_fixtures import random_policy, random_residual
from rosgraph import Launched, Probe
from sensor_msgs.msg import JointState

from dexndm.hand.spec import load_hand_spec
from dexndm.ros.conversions import stamp_ns

pytestmark = pytest.mark.ros


def _run(tmp_path, *extra):
    # Stopped by Ctrl-C once enough commands came, not by a fixed --duration: on a loaded machine the nodes'
    # start-up (torch, MuJoCo, the models) can take most of a short run.
    with Probe("probe_adapt") as probe, Launched("launch", "rotate", *extra, "--duration", "90") as lc:
        probe.subscribe(JointState, "/dexndm/policy_action", qos=500)
        probe.subscribe(JointState, "/joint_commands", qos=500)
        probe.subscribe(DiagnosticArray, "/diagnostics", qos=100)
        probe.wait_for("/joint_commands", 80, timeout=70)
        time.sleep(1.5)
        assert lc.interrupt(40) == 0, lc.output[-4000:]
        lc.wait(5)  # joins the output pump
    acts = {stamp_ns(m.header.stamp): np.array(m.position) for m in probe.msgs["/dexndm/policy_action"]}
    cmds = {stamp_ns(m.header.stamp): np.array(m.position) for m in probe.msgs["/joint_commands"]}
    diag = {}
    for d in probe.msgs["/diagnostics"]:
        for st in d.status:
            if st.name.endswith("adaptation"):
                diag = {"level": st.level, "message": st.message, **{v.key: v.value for v in st.values}}
    return acts, cmds, diag, lc.output


def test_residual_mode_adds_bounded_corrections(tmp_path):
    spec = load_hand_spec("leap")
    pol = random_policy(tmp_path / "policy-leap-t.pt")
    # trained (here: made) for another policy: the node runs it and says so in a warning
    trained_for = random_policy(tmp_path / "policy-leap-older.pt", seed=3)
    res = random_residual(tmp_path / "residual.pt", trained_for, bound=0.05)
    acts, cmds, diag, _ = _run(tmp_path, "--policy", str(pol), "--adapter", "residual", "--residual", str(res))
    common = sorted(set(acts) & set(cmds))
    assert len(common) > 50
    diffs = np.array([cmds[s] - acts[s] for s in common])
    assert np.max(np.abs(diffs)) <= 0.05 + 1e-9  # the bound holds
    assert np.mean(np.abs(diffs)) > 1e-3  # and the residual does act
    sent = np.array([cmds[s] for s in common])
    assert np.all(sent >= spec.lower) and np.all(sent <= spec.upper)
    assert diag["mode"] == "residual" and float(diag["abs_correction.max"]) > 0
    # WARN at least (a stale-history fallback on a loaded machine may take the message)
    assert diag["policy_match"] == "no" and diag["level"] >= DiagnosticStatus.WARN
    assert "policy-leap-older.pt" in diag["policy_warning"] and "policy-leap-t.pt" in diag["policy_warning"]


def test_unloadable_model_falls_back_to_forwarding(tmp_path):
    pol = random_policy(tmp_path / "policy-leap-t.pt")
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"garbage")
    acts, cmds, diag, out = _run(tmp_path, "--policy", str(pol), "--adapter", "residual", "--residual", str(bad))
    common = sorted(set(acts) & set(cmds))
    assert len(common) > 50
    for s in common:
        np.testing.assert_array_equal(cmds[s], acts[s])
    assert diag["mode"] == "off" and diag["requested_mode"] == "residual"
    assert diag["level"] == DiagnosticStatus.ERROR and "broken.pt" in diag["message"]
    assert "falling back to 'off'" in out
