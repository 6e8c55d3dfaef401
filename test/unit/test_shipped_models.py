"""Every shipped model loads with its loader, is small, and has a model card with command, seed and metrics."""

import re

import pytest

from dexndm.hand.spec import load_hand_spec
from dexndm.ndm.models import load_ndm
from dexndm.ndm.residual import load_residual
from dexndm.paths import share_path
from dexndm.policy.exported import load_policy

MODELS = sorted(share_path("models").glob("*.pt"))
LOADERS = {"policy": load_policy, "ndm": load_ndm, "residual": load_residual}


@pytest.mark.parametrize("path", MODELS, ids=[p.name for p in MODELS])
def test_shipped_model_loads_is_small_and_has_a_card(path):
    assert path.stat().st_size < 20 * 2**20, f"{path.name}: over 20 MB"
    kind = path.name.split("-")[0]
    art = LOADERS[kind](path)
    md = art.metadata
    spec = load_hand_spec(md["hand"])
    order = md.get("joint_names", md.get("joint_order"))
    assert sorted(order) == sorted(spec.joint_names)  # every joint by name (the policy keeps its own order)
    card = path.with_suffix(".md").read_text()
    assert re.search(r"Command: `dexndm [a-z-]+ ", card), f"{path.name}: card names no command"
    assert "Seed" in card or "seed" in card
    assert "RMSE" in card or "Rot" in card or "metrics" in card.lower()


def test_the_adapters_have_shipped_models():
    # `dexndm launch rotate --adapter residual|inversion` and `dexndm eval --adapter ...` default to these.
    for pattern in ("policy-leap-*.pt", "residual-leap-*.pt", "ndm-leap-real*.pt", "ndm-leap-sim*.pt"):
        assert list(share_path("models").glob(pattern)), pattern


def test_the_shipped_residual_was_trained_for_the_shipped_policy():
    # A residual corrects one policy's actions: shipping it next to another policy would cost rotation.
    from dexndm.ndm.residual import load_residual, policy_mismatch

    policy = next(share_path("models").glob("policy-leap-*.pt"))
    for path in share_path("models").glob("residual-leap-*.pt"):
        md = load_residual(path).metadata
        assert "policy_sha256" in md, f"{path.name} does not record its policy's digest"
        assert policy_mismatch(md, policy) == "", policy_mismatch(md, policy)


def test_artifacts_record_shipped_files_relative_to_the_share_directory(tmp_path):
    # A residual trained without --policy records the shipped policy; an absolute path would name this machine.
    from dexndm.paths import portable_path, share_dir

    shipped = share_dir() / "models" / "policy-leap-palmup.pt"
    assert portable_path(shipped) == "models/policy-leap-palmup.pt"
    assert portable_path(str(shipped.resolve())) == "models/policy-leap-palmup.pt"
    elsewhere = tmp_path / "p.pt"
    assert portable_path(elsewhere) == str(elsewhere)


def test_the_installed_mujoco_is_the_one_the_shipped_policy_was_measured_under():
    # Contact outcomes change between MuJoCo releases (4.0.1 costs the shipped policy 40 % of its rotation):
    # setup.py pins the release the policy card's evaluation ran under.
    import json

    import mujoco

    ev = json.loads(share_path("models/policy-leap-palmup.eval.json").read_text())
    assert ev["config"]["software"]["mujoco"] == mujoco.__version__
