"""Training the neural dynamics model: one-step L2 on the next position, best held-out checkpoint kept.

The loss is the mean squared error of the standardised residual (q_{t+1} - q_t, per joint), i.e. an L2 on the
next position with each joint weighted by its residual scale; the held-out checkpoint with the lowest loss is
kept (the initial weights count, so fine-tuning never returns something worse than what it started from).
Reported metrics are in radians: per-joint and overall one-step RMSE on the held-out windows, next to the
"no change" baseline q_{t+1} = q_t.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dexndm.hand.spec import HandSpec, load_hand_spec
from dexndm.ndm.data import WindowDataset, check_joint_order
from dexndm.ndm.models import NDM, build_ndm, count_parameters, load_ndm

ARCH_NAMES = {"joint": "joint-wise", "finger": "finger-wise", "whole": "whole-hand"}


def _tensors(ds: WindowDataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.as_tensor(np.asarray(ds.q_win, np.float32)), torch.as_tensor(np.asarray(ds.a_win, np.float32)),
            torch.as_tensor(np.asarray(ds.q_next, np.float32)))


@torch.no_grad()
def predict(model: NDM, q_win: torch.Tensor, a_win: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Model predictions (N, n) rad for windows (N, W, n), evaluated in chunks."""
    model.eval()
    if q_win.shape[0] == 0:
        return q_win.new_zeros(0, q_win.shape[2])
    return torch.cat([model(q_win[k:k + chunk], a_win[k:k + chunk]) for k in range(0, q_win.shape[0], chunk)])


def evaluate(model: NDM, ds: WindowDataset) -> dict[str, Any]:
    """Held-out metrics (rad): overall and per-joint one-step RMSE, the no-change baseline, and the loss."""
    qw, aw, qn = _tensors(ds)
    if qw.shape[0] == 0:
        raise ValueError("no held-out windows to evaluate on (episodes shorter than the window?)")
    err = predict(model, qw, aw) - qn
    base = qn - qw[:, -1, :]
    loss = torch.mean((err / model.out_std) ** 2).item()
    per = err.pow(2).mean(0).sqrt()
    per_base = base.pow(2).mean(0).sqrt()
    names = ds.joint_names
    return {
        "loss": loss,
        "rmse_rad": float(err.pow(2).mean().sqrt()),
        "rmse_per_joint_rad": {n: float(v) for n, v in zip(names, per, strict=True)},
        "baseline_rmse_rad": float(base.pow(2).mean().sqrt()),
        "baseline_per_joint_rad": {n: float(v) for n, v in zip(names, per_base, strict=True)},
        "windows": int(qw.shape[0]),
    }


def train_step(model: NDM, opt: torch.optim.Optimizer, q_win: torch.Tensor, a_win: torch.Tensor,
               q_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a batch (B, W, n), (B, W, n), (B, n) rad; returns (loss, standardised error (B, n))."""
    err = model.predict_standardized(q_win, a_win) - model.standardize_target(q_win, q_next)
    loss = err.pow(2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss, err.detach()


def _resolve_spec(spec: HandSpec | str | None, ds: WindowDataset) -> HandSpec | None:
    if isinstance(spec, HandSpec):
        return spec
    name = spec or ds.hand
    return load_hand_spec(name) if name else None


def train_ndm(train_data: WindowDataset, val_data: WindowDataset, arch: str = "joint", init: str | Path | None = None,
              epochs: int = 20, batch: int = 256, lr: float = 1e-3, seed: int = 0,
              hidden: Sequence[int] | None = None, weight_decay: float = 0.0, spec: HandSpec | str | None = None,
              png: str | Path | None = None, log: Callable[[str], None] = print,
              log_every_s: float = 30.0) -> tuple[NDM, dict[str, Any]]:
    """Fit an NDM on windowed data; returns (best model in eval mode, report).

    train_data / val_data: windows of disjoint episodes, canonical joint order (see ``split_episodes``).
    arch: 'joint' | 'finger' | 'whole'. init: path of an NDM artifact to fine-tune (e.g. sim-pretrained); its
    arch, window, joint order and normaliser are kept. hidden: None = the arch default. spec: the hand (default:
    the data's ``hand``), needed for the finger-wise model and the per-finger plot. png: where to draw prediction
    vs truth on one held-out episode. Deterministic for a given seed and thread count.

    Report keys: rmse_rad, rmse_per_joint_rad, baseline_rmse_rad, baseline_per_joint_rad (held-out, best model),
    train_rmse_rad, best_epoch (0 = initial weights), curves, samples_per_s, train_seconds, png, parameters.
    """
    if train_data.joint_names != val_data.joint_names or train_data.window != val_data.window:
        raise ValueError("train and held-out data differ in joint order or window length")
    if len(train_data) == 0:
        raise ValueError("no training windows (episodes shorter than the window?)")
    hand = _resolve_spec(spec, train_data)
    if hand is not None:
        check_joint_order(train_data, hand.joint_names, f"hand '{hand.name}'")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if init is not None:
        model = load_ndm(init)
        if model.arch != arch:
            raise ValueError(f"{init}: is a {model.arch}-wise model, --arch asks for {arch}")
        if model.window != train_data.window:
            raise ValueError(f"{init}: window {model.window} differs from the data's {train_data.window}")
        check_joint_order(train_data, model.metadata["joint_order"], f"model {init}")
        model.metadata = {}
        log(f"[train-ndm] fine-tuning {init} ({count_parameters(model)} parameters)")
    else:
        fingers = hand.fingers if (arch == "finger" and hand is not None) else None
        model = build_ndm(arch, train_data.n, train_data.window, hidden, fingers=fingers)
        model.fit_normalizer(train_data.q_win, train_data.a_win, train_data.q_next)
    qw, aw, qn = _tensors(train_data)
    n_train = qw.shape[0]
    steps_per_epoch = math.ceil(n_train / batch)
    total_steps = max(1, epochs * steps_per_epoch)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))

    ev = evaluate(model, val_data)
    best = (ev["loss"], 0, copy.deepcopy(model.state_dict()))
    curves: dict[str, list[float]] = {"epoch": [0], "train_rmse_rad": [math.nan], "val_rmse_rad": [ev["rmse_rad"]]}
    log(f"[train-ndm] {ARCH_NAMES[arch]} NDM, {count_parameters(model)} parameters, {n_train} train / "
        f"{len(val_data)} held-out windows, W={train_data.window}; held-out RMSE {ev['rmse_rad']:.5f} rad at start, "
        f"no-change baseline {ev['baseline_rmse_rad']:.5f} rad")
    t0 = time.monotonic()
    last_log = t0
    step = 0
    for ep in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(n_train, generator=gen)
        sq_sum = torch.zeros(())
        for k in range(0, n_train, batch):
            idx = perm[k:k + batch]
            loss, err = train_step(model, opt, qw[idx], aw[idx], qn[idx])
            sched.step()
            step += 1
            with torch.no_grad():
                sq_sum += (err * model.out_std).pow(2).sum()
            now = time.monotonic()
            if now - last_log > log_every_s:
                last_log = now
                rate = step * batch / (now - t0)
                log(f"[train-ndm] epoch {ep}/{epochs} step {step}/{total_steps} loss {loss.item():.4f} "
                    f"{rate:.0f} samples/s ETA {_eta((total_steps - step) * batch / rate)}")
        train_rmse = math.sqrt(sq_sum.item() / (n_train * model.n_joints))
        ev = evaluate(model, val_data)
        if ev["loss"] < best[0]:
            best = (ev["loss"], ep, copy.deepcopy(model.state_dict()))
        curves["epoch"].append(ep)
        curves["train_rmse_rad"].append(train_rmse)
        curves["val_rmse_rad"].append(ev["rmse_rad"])
        el = time.monotonic() - t0
        log(f"[train-ndm] epoch {ep}/{epochs} train RMSE {train_rmse:.5f} held-out {ev['rmse_rad']:.5f} rad "
            f"(best epoch {best[1]}) {step * batch / el:.0f} samples/s ETA {_eta(el / ep * (epochs - ep))}")
        last_log = time.monotonic()
    seconds = time.monotonic() - t0
    model.load_state_dict(best[2])
    model.eval()
    report = evaluate(model, val_data)
    report.pop("windows")
    report.update(
        arch=arch, init=str(init) if init else None, epochs=epochs, best_epoch=best[1], batch=batch, lr=lr,
        seed=seed, weight_decay=weight_decay, hidden=list(model.hidden), parameters=count_parameters(model),
        train_rmse_rad=curves["train_rmse_rad"][best[1]] if best[1] else None,
        train_windows=n_train, val_windows=len(val_data), train_episodes=len(train_data.episode_meta),
        val_episodes=len(val_data.episode_meta), curves=curves, train_seconds=seconds,
        samples_per_s=step * batch / seconds if seconds > 0 else math.nan, png=None,
    )
    if png is not None:
        report["png"] = str(plot_heldout(model, val_data, png, hand))
    log(f"[train-ndm] done in {_eta(seconds)}: held-out RMSE {report['rmse_rad']:.5f} rad (epoch {best[1]}), "
        f"no-change baseline {report['baseline_rmse_rad']:.5f} rad")
    return model, report


def _eta(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def plot_heldout(model: NDM, ds: WindowDataset, path: str | Path, spec: HandSpec | None = None,
                 episode: int | None = None, dt: float = 0.05) -> Path:
    """PNG of one held-out episode: true vs predicted next position (top) and the error (bottom), one column
    per finger (all joints in one column without a HandSpec). episode: index into ds.episode_meta (default: the
    longest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps, counts = np.unique(ds.episode, return_counts=True)
    if len(eps) == 0:
        raise ValueError("no held-out windows to plot")
    ep = int(eps[np.argmax(counts)]) if episode is None else int(episode)
    sel = np.flatnonzero(ds.episode == ep)
    qw, aw = torch.as_tensor(ds.q_win[sel]), torch.as_tensor(ds.a_win[sel])
    pred = predict(model, qw, aw).numpy()
    true = np.asarray(ds.q_next[sel])
    cmd = np.asarray(ds.a_win[sel, -1])
    t = (np.arange(len(sel)) + ds.window) * dt
    groups = ({f: list(ix) for f, ix in spec.fingers.items()} if spec is not None and spec.n == ds.n
              else {"joints": list(range(ds.n))})
    fig, axes = plt.subplots(2, len(groups), figsize=(4.2 * len(groups), 6.5), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [2, 1]})
    for c, (finger, idx) in enumerate(groups.items()):
        top, bot = axes[0, c], axes[1, c]
        for k, i in enumerate(idx):
            col = f"C{k % 10}"
            name = ds.joint_names[i]
            top.plot(t, true[:, i], color=col, lw=1.2, label=f"{name}")
            top.plot(t, pred[:, i], color=col, lw=1.0, ls="--")
            top.plot(t, cmd[:, i], color=col, lw=0.8, ls=":", alpha=0.5)
            bot.plot(t, pred[:, i] - true[:, i], color=col, lw=0.9)
        top.set_title(f"{finger}: truth (solid), predicted (--), target (:)", fontsize=8)
        top.legend(fontsize=7, loc="best")
        bot.axhline(0.0, color="k", lw=0.5)
        bot.set_xlabel("time (s)")
    axes[0, 0].set_ylabel("q_{t+1} (rad)")
    axes[1, 0].set_ylabel("prediction error (rad)")
    rmse = float(np.sqrt(np.mean((pred - true) ** 2)))
    meta = ds.episode_meta[ep] if ep < len(ds.episode_meta) else {}
    fig.suptitle(f"{ARCH_NAMES.get(model.arch, model.arch)} NDM, held-out episode {ep} "
                 f"({meta.get('profile', meta.get('source', '?'))}): one-step RMSE {rmse:.4f} rad", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def artifact_metadata(model: NDM, report: Mapping[str, Any], train_data: WindowDataset, val_data: WindowDataset,
                      hand: str, command: str = "", extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Metadata for :func:`save_ndm`: hand, joint order, data description, command, seed and metrics."""
    metrics = {k: report[k] for k in ("rmse_rad", "rmse_per_joint_rad", "baseline_rmse_rad", "baseline_per_joint_rad",
                                      "train_rmse_rad", "best_epoch")}
    return {
        "hand": hand,
        "joint_order": list(train_data.joint_names),
        "control_dt": 0.05,
        "data": {"train": train_data.describe(), "val": val_data.describe(), "split": "9:1 by episode"},
        "training": {k: report[k] for k in ("arch", "init", "epochs", "batch", "lr", "weight_decay", "seed",
                                            "train_seconds", "samples_per_s")},
        "command": command,
        "seed": report["seed"],
        "metrics": metrics,
        **(extra or {}),
    }


def write_model_card(path: str | Path, metadata: Mapping[str, Any], report: Mapping[str, Any]) -> Path:
    """Markdown model card next to the artifact: how it was made, on what, and how well it predicts."""
    path = Path(path)
    card = path.with_suffix(".md")
    md = metadata
    arch = md["arch"]
    size_mb = path.stat().st_size / 1e6 if path.is_file() else math.nan
    d = md["data"]
    lines = [
        f"# Model card: {path.name}",
        "",
        f"{ARCH_NAMES.get(arch['type'], arch['type'])} neural dynamics model of the {md['hand']} hand: from the "
        f"last {md['window']} (position, target) pairs of each joint to the next measured position (20 Hz).",
        "",
        "## How it was made",
        "",
        f"- Command: `{md.get('command') or '(library call)'}`",
        f"- Seed: {md['seed']}; {report['epochs']} epochs at batch {report['batch']}, Adam lr {report['lr']} "
        f"(cosine to 5 %), best held-out epoch {report['best_epoch']}; {report['train_seconds']:.0f} s on CPU.",
        f"- Initialised from: {report['init'] or 'random weights'}.",
        f"- Architecture: {ARCH_NAMES.get(arch['type'], arch['type'])}, hidden {arch['hidden']}, {arch['activation']}, "
        f"W = {arch['window']}{_fingers_text(arch)}; {report['parameters']} parameters, {size_mb:.2f} MB.",
        f"- Inputs: {md['normalizer']['encoding']}; output: {md['normalizer']['output']}; statistics stored in "
        "the artifact.",
        f"- Joint order: {md['joint_order']}.",
        f"- Data: {d['train']['episodes']} train / {d['val']['episodes']} held-out episodes "
        f"({d['train']['windows']} / {d['val']['windows']} windows), split {d['split']}.",
    ]
    for k in ("source", "profile", "object", "wrist", "action_source", "file"):
        if k in d["train"]:
            lines.append(f"  - {k}: {', '.join(map(str, d['train'][k]))}")
    lines += [
        "",
        "## Held-out one-step prediction error (rad)",
        "",
        f"Overall RMSE {report['rmse_rad']:.5f} rad; no-change baseline (q_(t+1) = q_t) {report['baseline_rmse_rad']:.5f} "
        "rad.",
        "",
        "| joint | RMSE | no-change |",
        "|---|---|---|",
    ]
    for name, v in report["rmse_per_joint_rad"].items():
        lines.append(f"| {name} | {v:.5f} | {report['baseline_per_joint_rad'][name]:.5f} |")
    if report.get("png"):
        lines += ["", f"![held-out episode]({Path(report['png']).name})"]
    card.write_text("\n".join(lines) + "\n")
    return card


def _fingers_text(arch: Mapping[str, Any]) -> str:
    if "fingers" not in arch:
        return ""
    return ", fingers " + ", ".join(f"{k} {v}" for k, v in arch["fingers"].items())
