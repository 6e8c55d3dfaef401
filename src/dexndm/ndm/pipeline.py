"""`dexndm pipeline`: collect -> train-ndm (finetune) -> train-residual -> eval, on one hand.

For a reality profile (the simulated stand-in for a real hand) or a real hand (--backend dynamixel):

1. trajectory library: the policy's rollouts in the ideal simulator (sim data: actions, q_sim, what
   the policy saw);
2. Chaos Box collection on the target hand: the library's actions replayed open loop with noise,
   fingers loaded (palm up: a foam ball bound to three fingertips);
3. NDMs finetuned on that data from sim-pretrained ones: joint-wise (DexNDM) and whole-hand
   (baseline), held-out one-step RMSE reported;
4. residual policies trained through each frozen real NDM on the library: the same joint-wise residual
   and the same rollout objective for both NDMs, so ``whole_hand`` and ``joint_wise`` differ only in
   the dynamics model (``--residual-arch obs`` trains the paper's observation MLP one step instead);
5. evaluation (same seeds for every method): ``ideal`` (the policy in the ideal simulator, the
   reference), ``direct`` (no adapter), ``whole_hand``, ``joint_wise`` (DexNDM) and ``inversion``.
   On a real hand (--backend dynamixel) only ``ideal`` runs here: the other methods are measured live
   (``dexndm launch rotate --backend dynamixel --adapter ...``, an object in the hand), so their entries
   hold the NDM error and the command that evaluates them (``live_eval``), and Rot/TTF are null.

Every step writes its outputs under --out and is skipped when they exist, so a re-run resumes.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from dexndm.ndm import DEFAULT_BOUND
from dexndm.paths import shipped_model

METHODS = ("ideal", "direct", "whole_hand", "joint_wise", "inversion")


@dataclass(frozen=True)
class PipelineConfig:
    reality: str
    out: str
    episodes: int = 400
    steps: int = 400  # control steps per collected episode (20 Hz)
    backend: str = "sim"
    port: str = ""
    hand: str = "leap"
    policy: str = ""
    wrist: str = "palm_up"
    axis: str = "z"
    objects: str = "regular"
    library_episodes: int = 60  # policy rollouts per axis of the library
    library_axes: tuple[str, ...] = ("z", "-z")
    eval_episodes: int = 100
    ndm_epochs: int = 12
    offset_std: float = 0.0  # collection: slow target offsets (rad, per-episode max), see CollectConfig
    ff_gain: float = 0.0  # collection: feed-forward gain exploration (max per-joint k_p), see CollectConfig
    ff_fraction: float = 1.0 / 3.0  # share of the episodes collected with it
    residual_epochs: int = 12
    residual_horizon: int = 100  # rollout steps of the joint-wise residual's objective
    residual_arch: str = "joint"  # joint (DexNDM, rollout objective) | obs (paper's observation MLP, one step)
    torque_cap: str = ""  # residual objective: leave out steps with simulated torque above this cap (see residual)
    residual_reg: float | None = None  # residual objective: correction penalty (None: the trainer's default; the
    # CLI gives the joint residual DEFAULT_JOINT_REG)
    rounds: int = 0  # adapter-in-the-loop rounds: collect with the current residual, refit NDMs and residual
    round_episodes: int = 0  # episodes per round (0: half of ``episodes``)
    bound: float = DEFAULT_BOUND
    seed: int = 0
    workers: int = 2
    command: str = ""


def _shipped(pattern: str) -> str:
    return shipped_model(pattern)


def _library_part(args) -> object:
    from dexndm.collect.trajectories import build_library

    policy, wrist, axes, objects, n, seed = args
    return build_library(policy, [wrist], list(axes), objects, n, seed, log=lambda *_: None)


def build_library_parallel(cfg: PipelineConfig, policy: str, path: Path, log) -> object:
    from dexndm.collect.trajectories import TrajectoryLibrary, merge_libraries

    if path.is_file():
        log(f"[pipeline] reusing library {path}")
        return TrajectoryLibrary.load(path)
    t0 = time.monotonic()
    parts = max(1, cfg.workers)
    per = [cfg.library_episodes // parts + (1 if i < cfg.library_episodes % parts else 0) for i in range(parts)]
    jobs = [(policy, cfg.wrist, cfg.library_axes, cfg.objects, n, cfg.seed * 1000 + i) for i, n in enumerate(per) if n]
    with mp.get_context("spawn").Pool(len(jobs)) as pool:  # torch in the workers: no fork
        lib = merge_libraries(pool.map(_library_part, jobs))
    lib.save(path)
    log(f"[pipeline] library: {len(lib)} successful rollouts in {(time.monotonic() - t0) / 60:.1f} min -> {path}")
    return lib


def _collect_part(args) -> dict:
    from dexndm.collect.chaos_box import CollectConfig, SimStepper, collect
    from dexndm.collect.trajectories import TrajectoryLibrary
    from dexndm.hand.sim.mujoco_hand import MujocoHand
    from dexndm.hand.sim.profiles import load_profile
    from dexndm.hand.sim.scene import SceneConfig
    from dexndm.hand.spec import load_hand_spec
    from dexndm.tools.collect import load_for

    cfg, lib_path, out, ids, worker, episodes, adapter_info = args
    spec = load_hand_spec(cfg.hand)
    adapter = _adapter(adapter_info, spec)
    lib = TrajectoryLibrary.load(lib_path)
    pool = lib.select(cfg.wrist)
    load = load_for(cfg.wrist, "auto")
    hand = MujocoHand(spec, SceneConfig(wrist=cfg.wrist, object=None, load=load, load_seed=cfg.seed + worker),
                      profile=load_profile(cfg.reality or None), initial_pose="grasp", seed=cfg.seed + worker)
    hand.connect()

    def trajectory(k, rng):
        i = int(pool[rng.integers(len(pool))])
        return lib.actions[i], {"source": "library", "index": i, **lib.meta[i]}

    ccfg = CollectConfig(episodes=episodes, steps=cfg.steps, seed=cfg.seed + 7919 * adapter_info.get("round", 0),
                         wrist=cfg.wrist, offset_std=cfg.offset_std, ff_gain=cfg.ff_gain, ff_fraction=cfg.ff_fraction,
                         meta={"backend": "sim", "hand": spec.name, "load": load, "reality": cfg.reality})
    log = print if worker == 0 else (lambda *_: None)
    return collect(hand, SimStepper(hand), spec, ccfg, out, trajectory, resume=True, episode_ids=ids,
                   adapter=adapter, adapter_info=adapter_info or None, log=log)


def _adapter(adapter_info: dict, spec):
    """The residual adapter an adapter-in-the-loop round collects with (None for plain Chaos Box data)."""
    if not adapter_info:
        return None
    import torch

    from dexndm.ndm.adapters import ResidualAdapter
    from dexndm.ndm.residual import load_residual

    torch.set_num_threads(1)
    return ResidualAdapter(load_residual(adapter_info["residual"]), spec)


def collect_data(cfg: PipelineConfig, lib_path: Path, out: Path, log, episodes: int | None = None,
                 adapter_info: dict | None = None) -> None:
    """Chaos Box collection into ``out``; with ``adapter_info`` ({"residual": path, "round": r}) the residual
    corrects every replayed target from the measured state (an adapter-in-the-loop round)."""
    from dexndm.collect.chaos_box import finished_episodes

    episodes = cfg.episodes if episodes is None else episodes
    adapter_info = adapter_info or {}
    if len(finished_episodes(out)) >= episodes if out.is_dir() else False:
        log(f"[pipeline] reusing {episodes} collected episodes in {out}")
        return
    t0 = time.monotonic()
    if cfg.backend == "sim":
        w = max(1, cfg.workers)
        jobs = [(cfg, str(lib_path), str(out), list(range(i, episodes, w)), i, episodes, adapter_info)
                for i in range(w)]
        with mp.get_context("spawn").Pool(w) as pool:  # the adapter runs torch in the workers: no fork
            pool.map(_collect_part, jobs)
    else:
        from dexndm.collect.chaos_box import CollectConfig, RealTimeStepper, collect
        from dexndm.collect.trajectories import TrajectoryLibrary
        from dexndm.hand.dynamixel.leap import from_options
        from dexndm.hand.spec import load_hand_spec

        spec = load_hand_spec(cfg.hand)
        lib = TrajectoryLibrary.load(lib_path)
        pool_idx = lib.select(cfg.wrist)
        hand = from_options(spec, {"port": cfg.port})
        hand.connect()
        try:
            def trajectory(k, rng):
                i = int(pool_idx[rng.integers(len(pool_idx))])
                return lib.actions[i], {"source": "library", "index": i, **lib.meta[i]}

            ccfg = CollectConfig(episodes=episodes, steps=cfg.steps, seed=cfg.seed + 7919 * adapter_info.get("round", 0),
                                 wrist=cfg.wrist, offset_std=cfg.offset_std, ff_gain=cfg.ff_gain,
                                 ff_fraction=cfg.ff_fraction, meta={"backend": "dynamixel"})
            collect(hand, RealTimeStepper(hand), spec, ccfg, out, trajectory, resume=True,
                    adapter=_adapter(adapter_info, spec), adapter_info=adapter_info or None, log=log)
        finally:
            hand.disconnect()
    how = f" with residual {adapter_info['residual']} in the loop" if adapter_info else ""
    log(f"[pipeline] collected {episodes} episodes{how} in {(time.monotonic() - t0) / 60:.1f} min -> {out}")


def train_ndm_step(cfg: PipelineConfig, spec, data_eps, sim_eps, arch: str, out_dir: Path, log,
                   tag: str = "") -> tuple[object, dict]:
    """Finetune a sim-pretrained NDM of this arch on the collected data (pretrain on sim data first when
    no shipped one exists). ``tag`` names an adapter-in-the-loop round's files."""
    from dexndm.ndm.data import make_dataset, split_episodes
    from dexndm.ndm.models import load_ndm, save_ndm
    from dexndm.ndm.train import artifact_metadata, train_ndm, write_model_card

    path = out_dir / f"ndm-{spec.name}-real-{arch}{tag}.pt"
    report_path = path.with_suffix(".report.json")
    tr, va = split_episodes(data_eps, 0.1, cfg.seed)
    train, val = make_dataset(tr, 10, spec.joint_names), make_dataset(va, 10, spec.joint_names)
    if path.is_file() and report_path.is_file():
        log(f"[pipeline] reusing {path}")
        return load_ndm(path), json.loads(report_path.read_text())
    init = _shipped(f"ndm-{spec.name}-sim-{arch}.pt")
    if not init:
        init = str(out_dir / f"ndm-{spec.name}-sim-{arch}.pt")
        if not Path(init).is_file():
            log(f"[pipeline] no shipped sim-pretrained {arch} NDM: pretraining on the library's sim data")
            str_, sva = split_episodes(sim_eps, 0.1, cfg.seed)
            m, rep = train_ndm(make_dataset(str_, 10, spec.joint_names), make_dataset(sva, 10, spec.joint_names),
                               arch=arch, epochs=cfg.ndm_epochs, seed=cfg.seed, spec=spec, log=log)
            save_ndm(init, m, artifact_metadata(m, rep, make_dataset(str_, 10), make_dataset(sva, 10), spec.name,
                                                command=cfg.command))
    model, report = train_ndm(train, val, arch=arch, init=init, epochs=cfg.ndm_epochs, seed=cfg.seed, spec=spec,
                              png=path.with_suffix(".png"), log=log)
    md = artifact_metadata(model, report, train, val, spec.name, command=cfg.command,
                           extra={"init": init, "reality": cfg.reality})
    save_ndm(path, model, md)
    write_model_card(path, load_ndm(path).metadata, report)
    slim = {k: report[k] for k in ("rmse_rad", "baseline_rmse_rad", "rmse_per_joint_rad", "best_epoch")
            if k in report}
    report_path.write_text(json.dumps(slim, indent=1))
    return load_ndm(path), slim


def train_residual_step(cfg: PipelineConfig, spec, lib, policy, ndm, arch: str, out_dir: Path, log,
                        tag: str = "") -> str:
    from dexndm.ndm.residual import save_residual

    path = out_dir / f"residual-{spec.name}-{arch}{tag}.pt"
    if path.is_file():
        log(f"[pipeline] reusing {path}")
        return str(path)
    weights = None
    if cfg.torque_cap:
        from dexndm.ndm.residual import torque_cap, torque_mask

        weights = torque_mask(lib, torque_cap(cfg.torque_cap, spec.joint_names))
        log(f"[pipeline] residual objective: {100 * (1 - weights[:, 1:].mean()):.1f} % of (step, joint) pairs left "
            f"out (simulated torque above {cfg.torque_cap})")
    net, rep = fit_residual(cfg.residual_arch, lib, ndm, spec, policy, cfg.bound, cfg.residual_epochs,
                            cfg.residual_horizon, cfg.seed, log, reg=cfg.residual_reg, weights=weights)
    if weights is not None:
        rep.objective += f", steps with simulated torque above {cfg.torque_cap} left out"
    md = residual_metadata(spec, policy, ndm, cfg.bound, rep, cfg.command, arch, net)
    md["ndm"]["path"] = str(out_dir / f"ndm-{spec.name}-real-{arch}{tag}.pt")
    save_residual(path, net, md)
    write_residual_card(path, md, cfg.seed, {"Trajectory library": f"{out_dir / 'library.npz'} ({len(lib)} trajectories)",
                                             "Frozen NDM": md["ndm"]["path"], "Reality": cfg.reality or cfg.backend})
    return str(path)


def fit_residual(residual_arch: str, lib, ndm, spec, policy, bound: float, epochs: int, horizon: int, seed: int,
                 log=print, reg: float | None = None, weights=None):
    """Train a residual of the given architecture through the frozen ``ndm`` (see dexndm.ndm.residual);
    ``reg`` weighs the mean squared correction (None: each trainer's default); ``weights`` (joint arch only)
    weighs the position match per step and joint (see residual.torque_mask)."""
    kw = {} if reg is None else {"reg": float(reg)}
    if weights is not None and residual_arch != "joint":
        raise ValueError("position-match weights (a torque cap) need the joint residual (--arch joint)")
    from dexndm.ndm.residual import ARCHS, train_residual, train_residual_rollout

    if residual_arch == "joint":
        longest = lib.actions.shape[1] - int(ndm.window)
        if horizon > longest:
            log(f"[train-residual] rollout horizon {horizon} > {longest} (library trajectories of "
                f"{lib.actions.shape[1]} steps): using {longest}")
            horizon = longest
        return train_residual_rollout(lib, ndm, spec, bound=bound, horizon=horizon, epochs=epochs, seed=seed, log=log,
                                      weights=weights, **kw)
    if residual_arch == "obs":
        return train_residual(lib, ndm, spec, policy.joint_order, policy.history, bound=bound, epochs=epochs,
                              seed=seed, log=log, **kw)
    raise ValueError(f"residual architecture '{residual_arch}' unknown; valid: {', '.join(ARCHS)}")


def residual_metadata(spec, policy, ndm, bound, rep, command, arch, net) -> dict:
    from dexndm.artifacts import file_digest
    from dexndm.ndm.models import ENCODING
    from dexndm.ndm.residual import JointResidualNet
    from dexndm.paths import portable_path

    if isinstance(net, JointResidualNet):
        shape = {"type": "joint_wise", "window": net.window, "hidden": list(net.hidden), "output": f"{bound} * tanh",
                 "inputs": f"per joint, own window of measured q and base targets: {ENCODING}"}
        obs_order, history = list(spec.joint_names), net.window
    else:
        shape = {"type": "mlp", "obs_size": policy.obs_size, "hidden": list(net.hidden), "output": f"{bound} * tanh",
                 "inputs": "policy observation o_t and base target a_t"}
        obs_order, history = list(policy.joint_order), policy.history
    return {
        "hand": spec.name, "obs_joint_order": obs_order, "joint_names": list(spec.joint_names),
        "history": history, "bound": bound, "normalizer": {"stored": "in the state_dict buffers"},
        "arch": shape, "ndm": {"arch": arch, "path": str(getattr(ndm, "metadata", {}).get("path", ""))},
        "policy": portable_path(policy.path), "policy_sha256": file_digest(policy.path), "command": command,
        "metrics": asdict(rep),
    }


def write_residual_card(path: str | Path, md: dict, seed: int, sources: dict[str, str], evaluation: str = "") -> Path:
    """The model card next to a residual artifact: what it is, the command, seed, data, and its metrics."""
    card = Path(path).with_suffix(".md")
    m = md["metrics"]
    lines = [f"# Model card: {Path(path).name}", "",
             f"Residual adapter ({md['arch']['type']}: {md['arch']['inputs']}), output bounded to +-{md['bound']} rad; "
             f"objective: {m.get('objective', '?')} through the frozen NDM ({md['ndm'].get('arch', '?')})"
             + (f", correction penalty {m['reg']:g}" if m.get("reg") is not None else "") + ".", "",
             f"- Command: `{md['command']}`", f"- Seed: {seed}",
             *[f"- {k}: {v}" for k, v in sources.items()],
             f"- Policy: {md['policy']} (sha256 {md.get('policy_sha256', '?')}; the adaptation node and "
             "`dexndm eval` warn when the residual runs behind another policy)", "", "## Training metrics", "", "```", json.dumps(m, indent=1), "```", ""]
    if evaluation:
        lines += ["## Evaluation", "", evaluation, ""]
    card.write_text("\n".join(lines))
    return card


def run_pipeline(cfg: PipelineConfig, log=print) -> dict:
    from dexndm.collect.trajectories import TrajectoryLibrary  # noqa: F401  (fail early if missing)
    from dexndm.hand.spec import load_hand_spec
    from dexndm.ndm.bags import episodes_from_bags
    from dexndm.ndm.sources import library_episodes
    from dexndm.policy.evaluate import AdaptedFactory, ArtifactFactory, EvalConfig, evaluate
    from dexndm.policy.exported import load_policy

    t0 = time.monotonic()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    policy_path = cfg.policy or _shipped(f"policy-{cfg.hand}-*.pt")
    if not policy_path:
        raise FileNotFoundError("no --policy and no shipped policy in models/")
    policy = load_policy(policy_path)
    spec = load_hand_spec(cfg.hand)
    (out / "config.json").write_text(json.dumps({**asdict(cfg), "policy": policy_path}, indent=1))

    lib = build_library_parallel(cfg, policy_path, out / "library.npz", log)
    collect_data(cfg, out / "library.npz", out / "bags", log)
    bag_dirs = [out / "bags"]
    sim_eps = library_episodes(lib, spec)
    ndms, ndm_reports, rounds = {}, {}, []
    tag = ""
    for r in range(cfg.rounds + 1):
        if r:
            # Adapter-in-the-loop round: the hand answers the current residual's own held corrections,
            # the regime where an NDM fitted to open-loop replays is least sure; refit on all data.
            residual = train_residual_step(cfg, spec, lib, policy, ndms["joint"], "joint", out, log, tag)
            tag = f"-r{r}"
            bag_dirs.append(out / f"bags{tag}")
            collect_data(cfg, out / "library.npz", bag_dirs[-1], log, episodes=cfg.round_episodes or cfg.episodes // 2,
                         adapter_info={"residual": residual, "round": r})
        data_eps = episodes_from_bags(bag_dirs, spec, log=log)
        for arch in ("joint", "whole") if r == cfg.rounds else ("joint",):  # the loop only needs joint-wise
            ndms[arch], ndm_reports[arch] = train_ndm_step(cfg, spec, data_eps, sim_eps, arch, out, log, tag)
        rounds.append({"round": r, "episodes": len(data_eps), "joint_ndm_error_rad": ndm_reports["joint"]["rmse_rad"]})
    residuals = {arch: train_residual_step(cfg, spec, lib, policy, ndms[arch], arch, out, log, tag)
                 for arch in ("joint", "whole")}
    sim_joint = _shipped(f"ndm-{spec.name}-sim-joint.pt") or str(out / f"ndm-{spec.name}-sim-joint.pt")

    ecfg = EvalConfig(wrists=(cfg.wrist,), axes=(cfg.axis,), objects=cfg.objects, episodes=cfg.eval_episodes,
                      seed=cfg.seed + 11, world=cfg.reality, hand=spec.name, workers=cfg.workers)
    jo = tuple(policy.joint_order)
    factories = {
        "ideal": (ArtifactFactory(policy_path), replace(ecfg, world=None)),
        "direct": (ArtifactFactory(policy_path), ecfg),
        "whole_hand": (AdaptedFactory(policy_path, "residual", residual=residuals["whole"], bound=cfg.bound), ecfg),
        "joint_wise": (AdaptedFactory(policy_path, "residual", residual=residuals["joint"], bound=cfg.bound), ecfg),
        "inversion": (AdaptedFactory(policy_path, "inversion", ndm_real=str(out / f"ndm-{spec.name}-real-joint{tag}.pt"),
                                     ndm_sim=sim_joint, bound=cfg.bound), ecfg),
    }
    report: dict = {"config": {**asdict(cfg), "policy": policy_path}}
    live = {} if cfg.backend == "sim" else live_commands(cfg, policy_path, out, residuals, sim_joint, tag, spec.name)
    for name, (factory, ec) in factories.items():
        if name in live:
            entry = {"rot_rad": None, "ttf_s": None, "live_eval": live[name]}
            if name != "direct":
                entry["ndm_error"] = ndm_reports["whole" if name == "whole_hand" else "joint"]["rmse_rad"]
            report[name] = entry
            continue
        cache = out / (f"eval_{name}.json" if name in ("ideal", "direct") else f"eval_{name}{tag}.json")
        if cache.is_file():
            res = json.loads(cache.read_text())
        else:
            res = evaluate(factory, ec, joint_order=jo, log=log)
            cache.write_text(json.dumps(res))
        entry = {k: res[k] for k in ("rot_rad", "ttf_s", "rotp", "drop_rate", "unstable") if k in res}
        if name in ("whole_hand", "joint_wise", "inversion"):
            arch = "whole" if name == "whole_hand" else "joint"
            entry["ndm_error"] = ndm_reports[arch]["rmse_rad"]
        report[name] = entry
        log(f"[pipeline] {name:10s} Rot {entry['rot_rad']:6.2f} rad  TTF {entry['ttf_s']:5.1f} s")
    ideal, direct, joint = (report[k]["rot_rad"] for k in ("ideal", "direct", "joint_wise"))
    loss = over = recovered = None  # a real hand: measured live, not here
    if direct is not None:
        lost = ideal - direct
        loss = lost / ideal if ideal else float("nan")
        over = joint / direct if direct else float("nan")
        recovered = (joint - direct) / lost if lost > 0 else float("nan")
    report["summary"] = {
        "direct_loss_fraction": loss,
        "joint_wise_over_direct": over,
        "recovered_fraction": recovered,
        "ndm_error_rad": {a: r["rmse_rad"] for a, r in ndm_reports.items()},
        "ndm_baseline_rmse_rad": ndm_reports["joint"].get("baseline_rmse_rad"),
        "rounds": rounds,
        "minutes": (time.monotonic() - t0) / 60,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    table = format_report(report)
    for arch in ("joint", "whole"):  # the evaluation goes into the residuals' cards
        from dexndm.ndm.residual import load_residual

        md = load_residual(residuals[arch]).metadata
        write_residual_card(residuals[arch], md, cfg.seed,
                            {"Trajectory library": str(out / "library.npz"), "Frozen NDM": md["ndm"]["path"],
                             "Reality": cfg.reality or cfg.backend},
                            evaluation=f"`{cfg.command}` (palm {cfg.wrist}, axis {cfg.axis}, {cfg.objects} objects, "
                                       f"{cfg.eval_episodes} episodes):\n\n```\n{table}\n```"
                                       + (f"\n\nOn the hand: `{live['joint_wise' if arch == 'joint' else 'whole_hand']}`"
                                          if live else ""))
    (out / "report.md").write_text(table + "\n")
    plot_report(report, out / "report.png")
    log(table)
    return report


def live_commands(cfg: PipelineConfig, policy_path: str, out: Path, residuals: dict[str, str], sim_joint: str,
                  tag: str, hand: str) -> dict[str, str]:
    """For a real hand: the `dexndm launch rotate` command that evaluates each method live."""
    base = (f"dexndm launch rotate --backend {cfg.backend} --port {cfg.port} --policy {policy_path} "
            f"--wrist {cfg.wrist} --axis={cfg.axis}")
    return {
        "direct": base,
        "whole_hand": f"{base} --adapter residual --residual {residuals['whole']}",
        "joint_wise": f"{base} --adapter residual --residual {residuals['joint']}",
        "inversion": f"{base} --adapter inversion --ndm-real {out / f'ndm-{hand}-real-joint{tag}.pt'} "
                     f"--ndm-sim {sim_joint}",
    }


def format_report(report: dict) -> str:
    lines = [f"{'method':12} {'Rot (rad)':>10} {'TTF (s)':>8} {'RotP':>7} {'drops':>6} {'NDM err (rad)':>14}"]
    for m in METHODS:
        r = report[m]
        err = f"{r['ndm_error']:.5f}" if "ndm_error" in r else ""
        if r["rot_rad"] is None:
            lines.append(f"{m:12} {'live':>10} {'':>8} {'':>7} {'':>6} {err:>14}")
            continue
        lines.append(f"{m:12} {r['rot_rad']:10.2f} {r['ttf_s']:8.2f} {r['rotp']:7.3f} {100 * r['drop_rate']:5.0f}% "
                     f"{err:>14}")
    s = report["summary"]
    if report["direct"]["rot_rad"] is None:
        lines.append("on the hand, evaluate each method live (an object in the hand, Rot and TTF by eye or "
                     "tracking):")
        lines += [f"  {m}: {report[m]['live_eval']}" for m in METHODS if "live_eval" in report[m]]
        lines.append(f"{s['minutes']:.1f} min")
        return "\n".join(lines)
    ratio = s["joint_wise_over_direct"]
    # A ratio means nothing when direct transfer does not rotate the object forward at all.
    vs = (f"{ratio:.2f}x direct" if report["direct"]["rot_rad"] > 0.05 else
          f"{report['joint_wise']['rot_rad'] - report['direct']['rot_rad']:+.2f} rad over direct")
    lines.append(f"direct transfer loses {100 * s['direct_loss_fraction']:.0f} % of the ideal Rot; DexNDM (joint_wise) "
                 f"= {vs}, recovers {100 * s['recovered_fraction']:.0f} % of the loss; {s['minutes']:.1f} min")
    return "\n".join(lines)


def plot_report(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    names = list(METHODS)
    colors = ["#888888", "#cc4444", "#dd9944", "#3377cc", "#44aa66"]
    if report["direct"]["rot_rad"] is None:  # a real hand: the NDMs' held-out error, Rot is measured live
        arch = ["whole_hand", "joint_wise"]
        ax[0].bar(arch, [report[m]["ndm_error"] for m in arch], color=colors[2:4])
        ax[0].set_ylabel("NDM held-out one-step RMSE (rad)")
        ax[1].bar(["ideal (sim)"], [report["ideal"]["rot_rad"]], color=colors[0])
        ax[1].set_ylabel("Rot (rad per 20 s episode)")
    else:
        ax[0].bar(names, [report[m]["rot_rad"] for m in names], color=colors)
        ax[0].set_ylabel("Rot (rad per 20 s episode)")
        ax[1].bar(names, [report[m]["ttf_s"] for m in names], color=colors)
        ax[1].set_ylabel("TTF (s)")
    for a in ax:
        a.tick_params(axis="x", rotation=25)
    where = (f"reality profile {Path(report['config']['reality']).stem}" if report["config"]["reality"] else
             f"{report['config']['backend']} hand on {report['config']['port']}")
    fig.suptitle(f"{where}: wrist {report['config']['wrist']}, "
                 f"axis {report['config']['axis']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


