"""`dexndm pipeline` end to end at toy scale: every stage runs, the report has every method, re-runs resume."""

import json
import subprocess
import sys

import numpy as np
from policy_fixtures import random_policy
from rosgraph import Launched

from dexndm.bag.io import load_metadata
from dexndm.ndm.pipeline import METHODS


def test_pipeline_runs_every_stage_and_resumes(tmp_path):
    pol = random_policy(tmp_path / "policy-leap-t.pt")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "dexndm.cli", "pipeline", "--reality", "leap_default", "--policy", str(pol),
           "--episodes", "2", "--library-episodes", "2", "--eval-episodes", "1", "--ndm-epochs", "1",
           "--residual-epochs", "1", "--residual-horizon", "10", "--workers", "1", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads((out / "report.json").read_text())
    for m in METHODS:
        assert {"rot_rad", "ttf_s"} <= set(rep[m])
    for m in ("whole_hand", "joint_wise", "inversion"):
        assert rep[m]["ndm_error"] > 0
    for f in ("library.npz", "ndm-leap-real-joint.pt", "ndm-leap-real-whole.pt", "residual-leap-joint.pt",
              "residual-leap-whole.pt", "report.png", "report.md", "ndm-leap-real-joint.png"):
        assert (out / f).is_file(), f
    card = (out / "residual-leap-joint.md").read_text()  # the card carries the command, data and evaluation
    assert "dexndm pipeline" in card and "library.npz" in card and "## Evaluation" in card and "joint_wise" in card
    # by default the residuals' objective leaves out the steps the leap_default servos cannot reproduce, and
    # penalises the corrections
    assert "steps with simulated torque above leap_default left out" in card
    assert "% of (step, joint) pairs left out" in r.stdout
    assert rep["config"]["torque_cap"] == "leap_default" and rep["config"]["residual_reg"] == 3.0
    assert "correction penalty 3" in card
    assert len(list((out / "bags").glob("episode_*"))) == 2
    # A second run reuses every stage.
    r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0
    assert "reusing" in r2.stdout and "[collect] episode" not in r2.stdout
    # One adapter-in-the-loop round on top: the first fit is reused, the round's data is collected with the
    # joint-wise residual correcting every target, and the NDMs and residuals are refitted on all of it.
    r3 = subprocess.run(cmd + ["--rounds", "1", "--round-episodes", "2"], capture_output=True, text=True, timeout=600)
    assert r3.returncode == 0, r3.stdout[-3000:] + r3.stderr[-3000:]
    rounds = json.loads((out / "report.json").read_text())["summary"]["rounds"]
    assert [r["episodes"] for r in rounds] == [2, 4]
    bags = sorted((out / "bags-r1").glob("episode_*"))
    assert len(bags) == 2
    meta = json.loads(load_metadata(bags[0])["custom_data"]["dexndm"])
    assert meta["adapter"] == {"residual": str(out / "residual-leap-joint.pt"), "round": 1}
    for f in ("ndm-leap-real-joint-r1.pt", "ndm-leap-real-whole-r1.pt", "residual-leap-joint-r1.pt",
              "residual-leap-whole-r1.pt", "eval_joint_wise-r1.json", "eval_inversion-r1.json"):
        assert (out / f).is_file(), f


def test_pipeline_on_a_dynamixel_hand_through_the_sdk_and_the_servo_emulator(tmp_path):
    """--backend dynamixel: the library in the ideal simulator, Chaos Box collection on the hand (the real
    dynamixel-sdk against the servo emulator on a pty, 20 Hz wall clock), NDM finetunes and residuals; only
    the ideal reference is evaluated here, the other methods carry the live command that evaluates them."""
    pol = random_policy(tmp_path / "policy-leap-t.pt")
    out, port = tmp_path / "run", str(tmp_path / "bus")
    with Launched("emulate-bus", "--hand", "leap", "--link", port, "--control", str(tmp_path / "bus.ctl")) as emu:
        assert emu.wait_output("Control socket", 30), emu.output
        r = subprocess.run([sys.executable, "-m", "dexndm.cli", "pipeline", "--backend", "dynamixel", "--port", port,
                            "--policy", str(pol), "--episodes", "3", "--steps", "30", "--library-episodes", "2",
                            "--eval-episodes", "1", "--ndm-epochs", "1", "--residual-epochs", "1",
                            "--residual-horizon", "10", "--workers", "1", "--out", str(out)],
                           capture_output=True, text=True, timeout=600)
        emu.interrupt()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["ideal"]["rot_rad"] is not None and rep["config"]["backend"] == "dynamixel"
    for m in ("direct", "whole_hand", "joint_wise", "inversion"):
        assert rep[m]["rot_rad"] is None and f"--backend dynamixel --port {port}" in rep[m]["live_eval"]
    for m in ("whole_hand", "joint_wise", "inversion"):
        assert rep[m]["ndm_error"] > 0
    assert str(out / "residual-leap-joint.pt") in rep["joint_wise"]["live_eval"]
    assert rep["summary"]["recovered_fraction"] is None
    bags = sorted((out / "bags").glob("episode_*"))
    assert len(bags) == 3
    assert json.loads(load_metadata(bags[0])["custom_data"]["dexndm"])["backend"] == "dynamixel"
    assert "live" in (out / "report.md").read_text() and (out / "report.png").is_file()
    assert "On the hand: `dexndm launch rotate --backend dynamixel" in (out / "residual-leap-joint.md").read_text()
    # no profile to take servo caps from: the residual objective counts every step unless told N*m
    assert rep["config"]["torque_cap"] == "" and "no torque cap in the residual objective" in r.stdout


def test_pipeline_torque_cap_refuses_a_reused_library_without_torques(tmp_path):
    from dexndm.collect.trajectories import TrajectoryLibrary
    from dexndm.hand.spec import load_hand_spec

    names = list(load_hand_spec("leap").joint_names)
    n = len(names)
    out = tmp_path / "run"
    lib = TrajectoryLibrary(np.zeros((1, 20, n)), np.zeros((1, 21, n)), np.zeros((1, 21, n)), np.zeros((1, n)),
                            np.array([[1.0, 0, 0, 0]]), np.array([[0, 0, 1.0]]), names, [{"wrist": "palm_up"}], {})
    lib.save(out / "library.npz")
    r = subprocess.run([sys.executable, "-m", "dexndm.cli", "pipeline", "--reality", "leap_default", "--torque-cap",
                        "reality", "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "records none" in r.stdout and "library.npz" in r.stdout, r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["library.npz"]  # nothing started
    # The default ('auto') does without the cap there, and says why.
    from dexndm.tools.pipeline import resolve_torque_cap

    cap, note = resolve_torque_cap("auto", "leap_default", "joint", str(out))
    assert cap == "" and "records no simulated torques" in note
    assert resolve_torque_cap("auto", "leap_default", "joint", str(tmp_path / "fresh"))[0] == "leap_default"
    assert resolve_torque_cap("auto", "leap_default", "obs", str(tmp_path / "fresh"))[0] == ""
    assert resolve_torque_cap("none", "leap_default", "joint", str(out)) == ("", "")
    assert resolve_torque_cap("0.25", "", "joint", str(tmp_path / "fresh")) == ("0.25", "")


def test_pipeline_rejects_missing_reality(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dexndm.cli", "pipeline", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--reality" in r.stdout
    r = subprocess.run([sys.executable, "-m", "dexndm.cli", "pipeline", "--reality", "leap_default", "--ff-fraction", "2",
                        "--out", str(tmp_path / "y")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--ff-fraction" in r.stdout and not (tmp_path / "y").exists()
    for bad, named in ((["--backend", "dynamixel"], "--port"),
                       (["--backend", "dynamixel", "--port", "/dev/ttyUSB0", "--reality", "leap_default"], "--port"),
                       (["--reality", "leap_default", "--steps", "5"], "--steps"),
                       (["--backend", "dynamixel", "--port", "/dev/ttyUSB0", "--torque-cap", "reality"], "N*m"),
                       (["--reality", "leap_default", "--torque-cap", "no_such_profile"], "--torque-cap no_such_profile"),
                       (["--reality", "leap_default", "--torque-cap", "0"], "positive"),
                       (["--reality", "leap_default", "--residual-reg", "-1"], "--residual-reg")):
        r = subprocess.run([sys.executable, "-m", "dexndm.cli", "pipeline", *bad, "--out", str(tmp_path / "z")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and named in r.stdout, (bad, r.stdout)
        assert not (tmp_path / "z").exists()
