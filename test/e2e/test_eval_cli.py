"""`dexndm eval` from the command line: one table row per (wrist, axis), the JSON layout, the shipped adapter
models as defaults, and bad arguments refused by name."""

import json
import subprocess
import sys

from rosgraph import REPO


def _eval(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "dexndm.cli", "eval", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_rows_per_axis_and_the_json_layout(tmp_path):
    out = tmp_path / "eval.json"
    r = _eval("--axis=z,-z", "--episodes", "2", "--workers", "1", "--objects", "cylinder_50", "--json", str(out))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "+z" in r.stdout and "-z" in r.stdout and "sim blow-ups" in r.stdout
    res = json.loads(out.read_text())
    assert {"rot_rad", "ttf_s", "rotp", "episodes", "config", "rows"} <= set(res)
    assert [(row["axis"], row["episodes"]) for row in res["rows"]] == [("+z", 2), ("-z", 2)]
    assert len(res["episodes"]) == 4 and all(0 < e["ttf_s"] <= 20.0 for e in res["episodes"])
    assert res["config"]["world"] == "ideal"


def test_the_residual_adapter_defaults_to_the_shipped_model(tmp_path):
    out = tmp_path / "eval.json"
    r = _eval("--world", "leap_default", "--adapter", "residual", "--episodes", "1", "--workers", "1",
              "--objects", "cylinder_50", "--json", str(out))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    config = json.loads(out.read_text())["config"]
    assert config["adapter"] == "residual" and config["residual"].endswith(".pt")
    # the shipped residual was trained for the shipped policy: no warning
    assert config["residual_policy_mismatch"] == "" and "warning" not in r.stderr


def test_bad_arguments_are_named():
    r = _eval("--axis", "sideways", "--episodes", "1")
    assert r.returncode == 2 and "sideways" in r.stdout
    r = _eval("--world", "no_such_profile", "--episodes", "1")
    assert r.returncode == 2 and "no_such_profile" in r.stdout


def test_a_policy_made_under_another_mujoco_is_evaluated_with_a_warning(tmp_path):
    import mujoco
    import torch

    blob = torch.load(REPO / "models" / "policy-leap-palmup.pt", weights_only=True)
    blob["metadata"]["software"] = {"mujoco": "3.1.0"}
    torch.save(blob, tmp_path / "old.pt")
    out = tmp_path / "eval.json"
    r = _eval("--policy", str(tmp_path / "old.pt"), "--episodes", "1", "--workers", "1", "--objects", "cylinder_50",
              "--json", str(out))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "warning" in r.stderr and "MuJoCo 3.1.0" in r.stderr and "mujoco==3.1.0" in r.stderr
    assert json.loads(out.read_text())["config"]["software"]["mujoco"] == mujoco.__version__
