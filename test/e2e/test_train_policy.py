"""`dexndm train-policy --smoke` end to end: specialists, behaviour cloning, evaluation, artifact + card + PNG."""

import json
import subprocess
import sys

import numpy as np

from dexndm.policy.exported import load_policy


def test_smoke_training_writes_a_loadable_policy_with_its_metadata(tmp_path):
    out = tmp_path / "policy-leap-smoke.pt"
    r = subprocess.run([sys.executable, "-m", "dexndm.cli", "train-policy", "--smoke", "--shape-generations", "1",
                        "--gait-family", "size,friction", "--nominal-jitter", "0.1", "--out", str(out), "--work-dir", str(tmp_path / "work")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "[bc train] epoch 1/" in r.stdout and "ETA" in r.stdout
    # Each specialist: a nominal stage on one object (mass and friction jittered), then the randomised group.
    assert "stage 1 on cylinder_55 (mass and friction +-10 %)" in r.stdout
    assert "shape stage on 'cylinder_55' (size randomisation only)" in r.stdout
    assert "stage 2 on 'cylinder_55' with domain randomisation" in r.stdout
    for suffix in (".md", ".png", ".eval.json"):
        assert out.with_suffix(suffix).is_file(), suffix
    pol = load_policy(out)
    md = pol.metadata
    assert md["seed"] == 0 and "train-policy" in md["command"] and md["history"] == 10
    assert md["train_config"]["nominal_generations"] == 1 and md["train_config"]["shape_generations"] == 1
    assert md["trained_on"]["hold_pose"] == "hold"
    card = out.with_suffix(".md").read_text()
    assert "1 generations on the group's objects with size randomisation" in card
    assert "middle object with its mass and friction within +-10 % and size within +-2 %" in card
    assert md["train_config"]["nominal_jitter"] == 0.1
    # The specialists are gait families over the object's size and friction.
    assert list(md["train_config"]["family_features"]) == ["size", "friction"]
    assert "linear in the episode object's size and friction" in card
    spec_json = json.loads(next((tmp_path / "work" / "gait").glob("*.json")).read_text())
    assert spec_json["gait"]["family"]["features"] == ["size", "friction"]
    assert len(md["joint_order"]) == 16 and md["action_scale"] > 0 and md["trained_on"]
    pol.reset()
    act = pol.act(np.zeros(pol.obs_size))
    assert act.shape == (16,) and np.all(np.isfinite(act))


def test_candidates_from_an_earlier_run_compete_on_held_out_episodes(tmp_path):
    import re

    first = tmp_path / "first"
    for work, extra in ((first, ()), (tmp_path / "second", ("--candidates", str(first)))):
        r = subprocess.run([sys.executable, "-m", "dexndm.cli", "train-policy", "--smoke", "--seed", "3", *extra,
                            "--out", str(work / "p.pt"), "--work-dir", str(work)], capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = [x for x in r.stdout.splitlines() if "specialist candidates on 2 held-out episodes" in x]
    md = load_policy(tmp_path / "second" / "p.pt").metadata
    assert lines and len(lines) == len(md["specialist_sources"])
    for line in lines:
        slot = line.split("] ", 1)[1].split(":", 1)[0]
        scores = {src: float(v) for src, v in re.findall(r"(\S+) (-?\d+\.\d+)", line.split(": ", 1)[1].split(";")[0])}
        assert len(scores) == 2 and any(str(first) in src for src in scores), line
        kept = line.rsplit("keeping ", 1)[1]
        assert scores[kept] == max(scores.values()), line
        assert md["specialist_sources"][slot] == kept
    assert "Specialists compared with earlier runs' on 2 held-out episodes" in (tmp_path / "second" / "p.md").read_text()
    # A damaged candidate file is refused by name, not half-used.
    broken = next((first / "gait").glob("*.json"))
    broken.write_text("{}")
    r = subprocess.run([sys.executable, "-m", "dexndm.cli", "train-policy", "--smoke", "--seed", "3", "--candidates",
                        str(first), "--out", str(tmp_path / "third" / "p.pt"), "--work-dir", str(tmp_path / "second")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and f"{broken} is not a cached specialist" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


def test_search_sizes_out_of_range_are_refused_by_name(tmp_path):
    for flag, value in (("--generations", "0"), ("--nominal-generations", "-1"), ("--shape-generations", "-1"),
                        ("--popsize", "1"), ("--gait-family", "size,colour"), ("--nominal-jitter", "1.5"),
                        ("--candidates", str(tmp_path / "nowhere"))):
        r = subprocess.run([sys.executable, "-m", "dexndm.cli", "train-policy", flag, value, "--out",
                            str(tmp_path / "p.pt"), "--work-dir", str(tmp_path / "work")], capture_output=True,
                           text=True, timeout=120)
        expected = {"--gait-family": "give distinct features from size, friction",
                    "--nominal-jitter": "--nominal-jitter must be in [0, 1), got 1.5",
                    "--candidates": "nowhere: not a train-policy work directory"}.get(flag, f"{flag} must be >=")
        assert r.returncode == 2 and expected in r.stdout, r.stdout + r.stderr
        assert not (tmp_path / "work").exists()


def test_a_teacher_policy_keeps_its_slots_while_specialists_teach_new_ones(tmp_path):
    from policy_fixtures import random_policy

    teacher = random_policy(tmp_path / "teacher.pt", wrists=("palm_up",), axes=("+z",))
    out = tmp_path / "p.pt"
    r = subprocess.run([sys.executable, "-m", "dexndm.cli", "train-policy", "--smoke", "--axes=-z",
                        "--specialist-objects", "cylinder_50", "--teacher", str(teacher), "--out", str(out),
                        "--work-dir", str(tmp_path / "work")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"teacher {teacher} for palm_up +z on 'regular'" in r.stdout
    md = load_policy(out).metadata
    assert md["trained_on"]["slots"] == [["palm_up", "-z"], ["palm_up", "+z"]]
    assert md["teachers"][0]["slots"] == [["palm_up", "+z"]] and md["teachers"][0]["sha256"]
    assert [(row["wrist"], row["axis"]) for row in md["metrics"]["rows"]] == [("palm_up", "-z"), ("palm_up", "+z")]
    assert list(md["metrics"]["specialists"]) == ["palm_up -z cylinder_50"]  # the teacher is not a gait
    assert "Teachers (trained policies" in out.with_suffix(".md").read_text()
    # A slot both a teacher and this run's specialists would teach is refused before any search.
    r = subprocess.run([sys.executable, "-m", "dexndm.cli", "train-policy", "--smoke", "--axes=z,-z", "--teacher",
                        str(teacher), "--out", str(tmp_path / "q.pt"), "--work-dir", str(tmp_path / "work2")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "slot(s) palm_up +z already taught" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    assert not (tmp_path / "work2" / "gait").exists()
    r = subprocess.run([sys.executable, "-m", "dexndm.cli", "train-policy", "--smoke", "--teacher",
                        str(tmp_path / "missing.pt"), "--out", str(tmp_path / "q.pt"), "--work-dir", str(tmp_path / "w3")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "missing.pt" in r.stdout and "does not exist" in r.stdout, r.stdout + r.stderr
    # A teacher that acts on another scale than the generalist it would teach is refused by field.
    import torch

    blob = torch.load(teacher, weights_only=True)
    blob["metadata"]["action_scale"] = 0.1
    torch.save(blob, tmp_path / "other.pt")
    r = subprocess.run([sys.executable, "-m", "dexndm.cli", "train-policy", "--smoke", "--axes=-z", "--teacher",
                        str(tmp_path / "other.pt"), "--out", str(tmp_path / "q.pt"), "--work-dir", str(tmp_path / "w4")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "its action_scale 0.1 differs" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
