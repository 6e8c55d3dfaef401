"""Neural dynamics model: batched joint-wise == per-joint loop, independence structure, learning on sim data,
fine-tuning, artifacts, episode split and windowing, bad files."""

import json
import os

import numpy as np
import pytest
import torch

from dexndm.hand.spec import load_hand_spec
from dexndm.ndm.data import (
    Episode,
    EpisodeFileError,
    load_episodes,
    load_windowed,
    make_dataset,
    save_episodes,
    simulate_episodes,
    split_episodes,
    windows,
)
from dexndm.ndm.models import (
    FingerWiseNDM,
    JointWiseNDM,
    JointWiseNDMLoop,
    NDMLoadError,
    WholeHandNDM,
    build_ndm,
    load_ndm,
    save_ndm,
)
from dexndm.ndm.train import train_ndm

N, W = 16, 6
UNEVEN_FINGERS = {"a": [0, 1, 2], "b": [3, 4, 5, 6, 7], "c": [8, 9, 10, 11], "d": [12, 13, 14, 15]}


def _random_normalizer(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = 2 * model.window
    model.set_normalizer({"in_mean": torch.randn(N, f, generator=g) * 0.1,
                          "in_std": torch.rand(N, f, generator=g) + 0.05,
                          "out_mean": torch.randn(N, generator=g) * 0.01,
                          "out_std": torch.rand(N, generator=g) * 0.05 + 0.01})


def _inputs(batch=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, W, N, generator=g), torch.randn(batch, W, N, generator=g)


@pytest.fixture(scope="module")
def sim_split():
    eps = simulate_episodes("leap", "ideal", n_episodes=10, T=100, seed=3)
    tr, va = split_episodes(eps, 0.1, seed=0)
    return make_dataset(tr, 10), make_dataset(va, 10)


def test_batched_joint_model_equals_per_joint_loop():
    torch.manual_seed(0)
    model = JointWiseNDM(N, W, hidden=(24, 16))
    _random_normalizer(model)
    ref = JointWiseNDMLoop.from_batched(model)
    q, a = _inputs()
    out, out_ref = model(q, a), ref(q, a)
    assert out.shape == (7, N)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-6)
    # Gradients agree too (the residual trainer backpropagates through the model into the targets).
    a1, a2 = a.clone().requires_grad_(), a.clone().requires_grad_()
    model(q, a1).sum().backward()
    ref(q, a2).sum().backward()
    torch.testing.assert_close(a1.grad, a2.grad, rtol=1e-4, atol=1e-6)


def _changed_outputs(model, j):
    """Which outputs change when only joint j's window (positions and targets) changes."""
    q, a = _inputs(batch=5)
    q2, a2 = q.clone(), a.clone()
    q2[:, :, j] += torch.linspace(0.1, 0.5, W)
    a2[:, :, j] -= 0.3
    with torch.no_grad():
        d = (model(q2, a2) - model(q, a)).abs().amax(0)
    return set(torch.nonzero(d > 0).flatten().tolist())


@pytest.mark.parametrize("j", range(N))
def test_joint_wise_prediction_depends_on_own_joint_only(j):
    torch.manual_seed(0)
    model = JointWiseNDM(N, W, hidden=(16, 16))
    _random_normalizer(model)
    assert _changed_outputs(model, j) == {j}


@pytest.mark.parametrize("fingers", [UNEVEN_FINGERS, None], ids=["uneven", "leap"])
def test_finger_wise_prediction_depends_on_own_finger_only(fingers):
    fingers = fingers or load_hand_spec("leap").fingers
    torch.manual_seed(0)
    model = FingerWiseNDM(N, fingers, W, hidden=(16,))
    _random_normalizer(model)
    for idx in fingers.values():
        for j in idx:
            assert _changed_outputs(model, j) == set(idx), f"joint {j}"


def test_whole_hand_prediction_couples_joints():
    torch.manual_seed(0)
    model = WholeHandNDM(N, W, hidden=(16,))
    assert _changed_outputs(model, 3) == set(range(N))  # the independence check above can see coupling


def test_windows_by_hand():
    q = np.arange(10, dtype=float).reshape(5, 2)  # T=5, n=2
    a = q + 100
    ep = Episode(q, a, ("x", "y"), {})
    qw, aw, qn = windows([ep], 2)
    assert qw.shape == (3, 2, 2) and qn.shape == (3, 2)
    np.testing.assert_array_equal(qw[0], q[0:2])
    np.testing.assert_array_equal(aw[0], a[0:2])
    np.testing.assert_array_equal(qn[0], q[2])
    np.testing.assert_array_equal(qw[2], q[2:4])
    np.testing.assert_array_equal(qn[2], q[4])
    # A different requested order permutes columns by name.
    ds = make_dataset([ep], 2, joint_names=("y", "x"))
    np.testing.assert_array_equal(ds.q_next[:, 0], q[2:, 1])
    assert len(make_dataset([Episode(q[:2], a[:2], ("x", "y"))], 2)) == 0  # too short: no windows


def test_split_by_episode_never_leaks():
    eps = [Episode(np.full((12, 2), k, float), np.full((12, 2), k, float), ("x", "y"), {"id": k}) for k in range(23)]
    tr, va = split_episodes(eps, 0.1, seed=5)
    ids_tr, ids_va = {e.meta["id"] for e in tr}, {e.meta["id"] for e in va}
    assert not ids_tr & ids_va and ids_tr | ids_va == set(range(23)) and len(ids_va) == 2
    assert [e.meta["id"] for e in split_episodes(eps, 0.1, seed=5)[1]] == [e.meta["id"] for e in va]  # seeded
    # Every window's values identify its episode: none of the held-out ones appear in training.
    dtr, dva = make_dataset(tr, 4), make_dataset(va, 4)
    assert not set(np.unique(dtr.q_win)) & set(np.unique(dva.q_win))
    assert {m["id"] for m in dva.episode_meta} == ids_va


def test_training_beats_no_change_baseline(sim_split, tmp_path):
    train, val = sim_split
    lines = []
    model, rep = train_ndm(train, val, arch="joint", epochs=8, batch=64, lr=3e-3, seed=0, hidden=(32, 32),
                           png=tmp_path / "heldout.png", log=lines.append)
    assert rep["baseline_rmse_rad"] > 0.005
    assert rep["rmse_rad"] < 0.5 * rep["baseline_rmse_rad"], rep
    assert set(rep["rmse_per_joint_rad"]) == set(train.joint_names)
    assert rep["curves"]["val_rmse_rad"][rep["best_epoch"]] == pytest.approx(rep["rmse_rad"], rel=1e-5)
    assert (tmp_path / "heldout.png").stat().st_size > 10_000
    assert any("ETA" in s for s in lines)


def test_training_is_deterministic(sim_split):
    train, val = sim_split
    kw = dict(arch="finger", epochs=2, batch=128, seed=4, hidden=(16,), log=lambda s: None)
    m1, r1 = train_ndm(train, val, **kw)
    m2, r2 = train_ndm(train, val, **kw)
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(v1, v2), k
    assert r1["rmse_rad"] == r2["rmse_rad"]


def test_finetuning_starts_from_init(sim_split, tmp_path):
    train, val = sim_split
    pre, rep = train_ndm(train, val, arch="joint", epochs=2, batch=128, seed=1, hidden=(16, 16), log=lambda s: None)
    path = save_ndm(tmp_path / "pre.pt", pre, {"hand": "leap", "joint_order": list(train.joint_names)})
    # No epochs: the initial weights are returned untouched (normaliser included).
    same, rep0 = train_ndm(train, val, arch="joint", init=path, epochs=0, seed=9, log=lambda s: None)
    for (k, v1), v2 in zip(pre.state_dict().items(), same.state_dict().values(), strict=True):
        assert torch.equal(v1, v2), k
    torch.testing.assert_close(same.in_std, pre.in_std)
    assert rep0["rmse_rad"] == pytest.approx(rep["rmse_rad"], rel=1e-6)
    # Training on: the start is the pretrained model's error, not a fresh network's, and it never gets worse.
    fresh = train_ndm(train, val, arch="joint", epochs=0, seed=9, hidden=(16, 16), log=lambda s: None)[1]
    tuned, rep1 = train_ndm(train, val, arch="joint", init=path, epochs=2, seed=9, log=lambda s: None)
    assert rep1["curves"]["val_rmse_rad"][0] == pytest.approx(rep["rmse_rad"], rel=1e-6)
    assert abs(fresh["rmse_rad"] - rep["rmse_rad"]) > 1e-4
    assert rep1["rmse_rad"] <= rep["rmse_rad"] + 1e-9
    with pytest.raises(ValueError, match="pre.pt"):
        train_ndm(train, val, arch="whole", init=path, epochs=0, log=lambda s: None)


@pytest.mark.parametrize("arch", ["joint", "finger", "whole"])
def test_save_load_round_trip(arch, tmp_path):
    spec = load_hand_spec("leap")
    torch.manual_seed(0)
    model = build_ndm(arch, spec.n, 10, fingers=spec.fingers)  # default (full) sizes
    g = torch.Generator().manual_seed(0)
    q, a = torch.randn(200, 10, N, generator=g), torch.randn(200, 10, N, generator=g)
    model.fit_normalizer(q, a, q[:, -1] + 0.01 * torch.randn(200, N, generator=g))
    md = {"hand": "leap", "joint_order": list(spec.joint_names), "seed": 3, "command": "x", "metrics": {"rmse": 1.0}}
    path = save_ndm(tmp_path / f"{arch}.pt", model, md)
    assert path.stat().st_size < 20e6
    back = load_ndm(path)
    assert type(back) is type(model) and not back.training
    torch.testing.assert_close(back(q, a), model.eval()(q, a), rtol=0, atol=0)
    assert back.metadata["joint_order"] == list(spec.joint_names) and back.metadata["window"] == 10
    assert back.metadata["arch"]["type"] == arch and back.metadata["metrics"] == {"rmse": 1.0}
    json.dumps(back.metadata)  # plain data only
    with pytest.raises(ValueError, match="joint_order"):
        save_ndm(tmp_path / "bad.pt", model, {"hand": "leap", "joint_order": ["a"]})


def test_bad_model_files_name_the_file(tmp_path):
    missing = tmp_path / "none.pt"
    with pytest.raises(NDMLoadError, match="none.pt"):
        load_ndm(missing)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(NDMLoadError, match="junk.pt"):
        load_ndm(junk)
    other = tmp_path / "policy.pt"
    torch.save({"format": "dexndm-policy/1", "metadata": {}, "state_dict": {}}, other)
    with pytest.raises(NDMLoadError, match="policy.pt.*dexndm-ndm/1"):
        load_ndm(other)
    model = JointWiseNDM(N, W, hidden=(8,))
    good = save_ndm(tmp_path / "good.pt", model, {"hand": "leap", "joint_order": [f"j{i}" for i in range(N)]})
    blob = torch.load(good, weights_only=True)
    blob["metadata"]["arch"]["hidden"] = [9]
    torch.save(blob, tmp_path / "mismatch.pt")
    with pytest.raises(NDMLoadError, match="mismatch.pt.*weights do not match"):
        load_ndm(tmp_path / "mismatch.pt")


def test_episode_files_round_trip_and_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    eps = [Episode(rng.normal(size=(t, 3)), rng.normal(size=(t, 3)), ("a", "b", "c"), {"id": t}) for t in (5, 9)]
    path = save_episodes(tmp_path / "eps.npz", eps)
    back = load_episodes(path)
    assert [e.meta["id"] for e in back] == [5, 9] and back[1].meta["file"] == "eps.npz"
    np.testing.assert_array_equal(back[1].q, eps[1].q)
    np.testing.assert_array_equal(back[0].a, eps[0].a)
    with pytest.raises(EpisodeFileError, match="nothere.npz"):
        load_episodes(tmp_path / "nothere.npz")
    (tmp_path / "garbage.npz").write_bytes(b"\x00garbage")
    with pytest.raises(EpisodeFileError, match="garbage.npz"):
        load_episodes(tmp_path / "garbage.npz")
    np.savez(tmp_path / "plain.npz", q=np.zeros((3, 2)))
    with pytest.raises(EpisodeFileError, match="plain.npz.*dexndm-episodes/1"):
        load_episodes(tmp_path / "plain.npz")
    with np.load(path) as z:
        arrays = dict(z)
    arrays["lengths"] = np.array([5, 10])
    np.savez(tmp_path / "short.npz", **arrays)
    with pytest.raises(EpisodeFileError, match="short.npz.*inconsistent"):
        load_episodes(tmp_path / "short.npz")


def test_window_cache_keyed_by_files(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(2):
        save_episodes(tmp_path / f"e{k}.npz",
                      [Episode(rng.normal(size=(20, 2)), rng.normal(size=(20, 2)), ("a", "b"), {}) for _ in range(3)])
    srcs = [tmp_path / "e0.npz", tmp_path / "e1.npz"]
    logs = []
    tr, va = load_windowed(srcs, 4, cache_dir=tmp_path / "cache", log=logs.append)
    tr2, va2 = load_windowed(srcs, 4, cache_dir=tmp_path / "cache", log=logs.append)
    assert "cached" in logs[-1]
    np.testing.assert_array_equal(tr.q_win, tr2.q_win)
    np.testing.assert_array_equal(va.q_next, va2.q_next)
    assert len(tr) + len(va) == 6 * 16 and len(va) == 16
    st = os.stat(srcs[1])
    os.utime(srcs[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same content, new mtime: rebuilt
    load_windowed(srcs, 4, cache_dir=tmp_path / "cache", log=logs.append)
    assert "cached" not in logs[-1]
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2
