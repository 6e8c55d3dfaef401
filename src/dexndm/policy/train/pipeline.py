"""`dexndm train-policy`: gait specialists -> behaviour-cloned generalist -> artifact + card + plots."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from dexndm.hand.sim.objects import resolve_objects
from dexndm.policy.env import EnvConfig, RotationEnv
from dexndm.policy.evaluate import ArtifactFactory, EvalConfig, evaluate, format_table
from dexndm.policy.exported import save_policy
from dexndm.policy.metrics import axis_label, parse_axis
from dexndm.policy.train import bc
from dexndm.policy.train.config import TrainConfig
from dexndm.policy.train.gait import Gait, GaitFamily, circular_seed, fitness, gait_from_json, rollout_gait, search


def _plot(path: Path, gait_hist: dict, curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for key, h in gait_hist.items():
        if h:
            ax[0].plot(h["gen"], h["best"], label=f"{key} best")
            ax[0].plot(h["gen"], h["mean"], "--", alpha=0.6, label=f"{key} mean")
    ax[0].set_xlabel("CMA-ES generation")
    ax[0].set_ylabel("fitness (Rot + 2 TTF/T - 10 fell)")
    ax[0].set_title("gait specialists")
    ax[0].legend(fontsize=7)
    ax[1].semilogy(curves["epoch"], curves["train"], label="train")
    ax[1].semilogy(curves["epoch"], curves["val"], label="held-out")
    ax[1].set_xlabel("epoch")
    ax[1].set_ylabel("MSE on da")
    ax[1].set_title("generalist behaviour cloning")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _specialist(cfg: TrainConfig, env_cfg: EnvConfig, wrist: str, axis: str, group: str, work: Path, found: dict,
                log) -> tuple[Gait | GaitFamily, dict]:
    cache = work / "gait" / f"gait_{wrist}_{axis_label(parse_axis(axis))}_{group}.json"
    if cache.is_file():
        d = json.loads(cache.read_text())
        log(f"[train-policy] reusing specialist {cache}")
        reused.append(str(cache))
        if d.get("history", {}).get("x"):
            found_x[(wrist, axis_label(parse_axis(axis)), group)] = np.array(d["history"]["x"])
        return gait_from_json(d["gait"]), d.get("history", {})
    # A negative axis first tries the positive specialist run backwards.
    lab = axis_label(parse_axis(axis))
    opposite = ("+" if lab.startswith("-") else "-") + lab[1:]
    if (wrist, opposite, group) in found:
        g = found[(wrist, opposite, group)].reversed()
        env = RotationEnv(env_cfg)
        seeds = list(range(10_000, 10_000 + 2 * cfg.gait_episodes))
        rev = fitness(rollout_gait(env, g, seeds, wrist=wrist, axis=parse_axis(axis)), cfg.episode_steps * env.dt)
        fwd = fitness(rollout_gait(env, found[(wrist, opposite, group)], seeds, wrist=wrist,
                                   axis=parse_axis(opposite)), cfg.episode_steps * env.dt)
        log(f"[train-policy] {wrist} {lab}: reversed {opposite} specialist scores {rev:.2f} (forward {fwd:.2f})")
        if rev >= 0.8 * fwd:
            _save_gait(cache, wrist, lab, g, {})
            return g, {}
    # Warm start from a specialist already found for this wrist and axis (another object), else from the
    # circular finger-gaiting seed turning the right way.
    x0 = next((found_x[k] for k in found_x if k[:2] == (wrist, lab)), None)
    if x0 is None and cfg.seed_gait == "circular":
        x0 = circular_seed(RotationEnv(env_cfg).spec, -1.0 if lab.startswith("-") else 1.0).to_vector()
    g, hist = _two_stage_search(cfg, env_cfg, wrist, axis, group, x0, seed=cfg.seed + len(found), log=log)
    _save_gait(cache, wrist, lab, g, hist)
    found_x[(wrist, lab, group)] = np.array(hist.get("x", []))
    return g, hist


class TrainInputError(ValueError):
    """An input file of the training run is unusable (the message names it)."""


def _select(cfg: TrainConfig, env_cfg: EnvConfig, wrist: str, axis: str, group: str, own: Gait | GaitFamily,
            log) -> tuple[Gait | GaitFamily, str]:
    """This run's specialist against the same slot's cached specialists of ``cfg.candidate_dirs`` on held-out
    episodes (seeds no search or report uses); returns the best and where it came from."""
    lab = axis_label(parse_axis(axis))
    name = f"gait_{wrist}_{lab}_{group}.json"
    cands: list[tuple[str, Gait | GaitFamily]] = [(str(Path(cfg.work_dir) / "gait" / name), own)]
    for d in cfg.candidate_dirs:
        path = Path(d) / "gait" / name
        if path.is_file():
            try:
                cands.append((str(path), gait_from_json(json.loads(path.read_text())["gait"])))
            except (ValueError, KeyError, TypeError) as e:
                raise TrainInputError(f"--candidates: {path} is not a cached specialist ({e.__class__.__name__}: {e})") from e
        else:
            log(f"[train-policy] {wrist} {lab} {group}: no candidate in {d} ({path.name} missing)")
    if len(cands) == 1:
        return own, cands[0][0]
    env = RotationEnv(env_cfg)
    seeds = list(range(40_000, 40_000 + cfg.select_episodes))
    scores = [fitness(rollout_gait(env, g, seeds, wrist=wrist, axis=parse_axis(axis)), cfg.episode_steps * env.dt)
              for _, g in cands]
    best = int(np.argmax(scores))
    log(f"[train-policy] {wrist} {lab} {group}: specialist candidates on {len(seeds)} held-out episodes: "
        + ", ".join(f"{src} {sc:.2f}" for (src, _), sc in zip(cands, scores, strict=True)) + f"; keeping {cands[best][0]}")
    return cands[best][1], cands[best][0]


def nominal_config(env_cfg: EnvConfig, group: str, jitter: float = 0.0) -> EnvConfig:
    """The search's first stage: the group's middle object at its catalog size, mass and friction, no
    disturbance, no observation noise (deterministic: one episode per candidate is exact). ``jitter`` > 0
    draws mass and friction within x(1 +- jitter) and the size within x(1 +- jitter/5) of the catalog values."""
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"nominal jitter {jitter}: give a relative spread in [0, 1)")
    objs = resolve_objects(group)
    obj = objs[len(objs) // 2]
    nominal = replace(env_cfg, objects=obj.name, randomize=False, disturbance_scale=0.0, obs_noise=0.0)
    if jitter == 0.0:
        return nominal
    return replace(nominal, randomize=True, mass_range=(obj.mass * (1 - jitter), obj.mass * (1 + jitter)),
                   friction_range=(obj.friction * (1 - jitter), obj.friction * (1 + jitter)),
                   size_scale_range=(1 - jitter / 5, 1 + jitter / 5))


def shapes_config(env_cfg: EnvConfig, group: str) -> EnvConfig:
    """The optional middle stage: the group's objects with size randomisation only (the middle object's mass
    and friction, no disturbance, no observation noise)."""
    mid = resolve_objects(group)[len(resolve_objects(group)) // 2]
    return replace(env_cfg, objects=group, randomize=True, mass_range=(mid.mass, mid.mass),
                   friction_range=(mid.friction, mid.friction), disturbance_scale=0.0, obs_noise=0.0)


def family_spec(env_cfg: EnvConfig, group: str, features: tuple[str, ...]) -> dict | None:
    """GaitFamily settings for a group: features relative to the group's middle object (the nominal stage's)."""
    if not features:
        return None
    mid = resolve_objects(group)[len(resolve_objects(group)) // 2]
    return {"features": tuple(features), "ref_size": RotationEnv(replace(env_cfg, objects=mid.name)).nominal_size(mid),
            "ref_friction": mid.friction}


def _two_stage_search(cfg: TrainConfig, env_cfg: EnvConfig, wrist: str, axis: str, group: str,
                      x0: np.ndarray | None, seed: int, log) -> tuple[Gait | GaitFamily, dict]:
    """A gait that turns the nominal object fast, then made robust on the randomised group. Searching the
    randomised task from the start rarely finds the fast gaits (most candidates drop something). With
    ``cfg.family_features`` the later stages search a GaitFamily (the nominal gait with slopes)."""
    hists = []
    family = family_spec(env_cfg, group, cfg.family_features)
    if cfg.nominal_generations > 0:
        nominal = nominal_config(env_cfg, group, cfg.nominal_jitter)
        log(f"[train-policy] {wrist} {axis} {group}: stage 1 on {nominal.objects} "
            + (f"(mass and friction +-{100 * cfg.nominal_jitter:g} %)" if cfg.nominal_jitter else "(no randomisation)"))
        _, h1 = search(nominal, wrist, axis, x0=x0, generations=cfg.nominal_generations, popsize=cfg.popsize,
                       episodes=cfg.gait_episodes if cfg.nominal_jitter else cfg.nominal_episodes, seed=seed,
                       workers=cfg.workers, log=log)
        x0 = np.array(h1["x"])
        hists.append(h1)
    if cfg.shape_generations > 0:
        log(f"[train-policy] {wrist} {axis} {group}: shape stage on '{group}' (size randomisation only)")
        _, hs = search(shapes_config(env_cfg, group), wrist, axis, x0=x0, generations=cfg.shape_generations,
                       popsize=cfg.popsize, episodes=cfg.gait_episodes, seed=seed + 500, workers=cfg.workers,
                       sigma0=0.1 if hists else 0.3, family=family, log=log)
        x0 = np.array(hs["x"])
        hists.append(hs)
    log(f"[train-policy] {wrist} {axis} {group}: stage 2 on '{group}' with domain randomisation")
    g, h2 = search(env_cfg, wrist, axis, x0=x0, generations=cfg.generations, popsize=cfg.popsize,
                   episodes=cfg.gait_episodes, seed=seed + 1000, workers=cfg.workers,
                   sigma0=0.1 if hists else 0.3, family=family, log=log)
    hists.append(h2)
    return g, _joined(hists)


def _joined(hists: list[dict]) -> dict:
    """Search histories of consecutive stages as one (generations numbered on; 'stages' = their lengths)."""
    out: dict = {"gen": [], "best": [], "mean": [], "sigma": [], "stages": []}
    for h in hists:
        off = len(out["gen"])
        out["gen"] += [off + g for g in h["gen"]]
        for k in ("best", "mean", "sigma"):
            out[k] += h[k]
        out["stages"].append(len(h["gen"]))
    out["final"] = hists[-1]["final"]
    out["x"] = hists[-1]["x"]
    return out


found_x: dict[tuple[str, str, str], np.ndarray] = {}
reused: list[str] = []  # specialists taken from the work dir cache (searched by an earlier run)


def _save_gait(path: Path, wrist: str, axis: str, g: Gait | GaitFamily, hist: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"wrist": wrist, "axis": axis, "gait": g.to_json(), "history": hist}, indent=1))


def train_policy(cfg: TrainConfig, command: str | None = None, log=print) -> dict:
    t0 = time.monotonic()
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    env_cfg = EnvConfig(hand=cfg.hand, wrists=cfg.wrists, axes=cfg.axes, objects=cfg.objects,
                        episode_steps=cfg.episode_steps)
    found: dict[tuple[str, str, str], Gait | GaitFamily] = {}
    hists: dict[str, dict] = {}
    sources: dict[str, str] = {}  # specialist slot -> where the kept gait came from (with candidate_dirs)
    groups = cfg.specialist_objects or tuple(o.name for o in resolve_objects(cfg.objects))
    # Teachers are checked before any search (a bad one is refused in seconds, not after an hour of search).
    slots = [(w, axis_label(parse_axis(a))) for w in cfg.wrists for a in cfg.axes]
    taught: dict = {}
    teachers = _teachers(cfg, env_cfg, slots, taught, log)
    for group in groups:
        for wrist in cfg.wrists:
            for axis in cfg.axes:
                g_env = replace(env_cfg, objects=group)
                g, h = _specialist(cfg, g_env, wrist, axis, group, work, found, log)
                if cfg.candidate_dirs:
                    g, sources[f"{wrist} {axis_label(parse_axis(axis))} {group}"] = _select(
                        cfg, g_env, wrist, axis, group, g, log)
                found[(wrist, axis_label(parse_axis(axis)), group)] = g
                hists[f"{wrist} {axis_label(parse_axis(axis))} {group}"] = h
    found.update(taught)
    for t in teachers:
        slots += [tuple(s) for s in t["slots"]]
    env_cfg = replace(env_cfg, wrists=tuple(dict.fromkeys(w for w, _ in slots)),
                      axes=tuple(dict.fromkeys(a for _, a in slots)))
    data = bc.collect(env_cfg, found, cfg.bc_episodes, seed=cfg.seed + 100, log=log)
    log(f"[train-policy] BC data: {len(data.obs)} samples from {data.kept}/{data.episodes} successful episodes "
        f"(specialist Rot {data.rot_mean:.2f} rad)")
    net, norm, curves = bc.train(data, cfg.width, cfg.blocks, cfg.bc_epochs, seed=cfg.seed, log=log)
    env = RotationEnv(env_cfg)
    metadata = {
        "hand": cfg.hand,
        "joint_order": list(env.order.names),
        "history": env_cfg.history,
        "action_scale": env_cfg.action_scale,
        "control_dt": env.dt,
        "observation": {"layout": "history: oldest first, per step [q (n), a_prev (n)]; then wrist quat w,x,y,z "
                                  "(world); then unit axis (world)", "size": env.obs_size},
        "normalizer": norm,
        "arch": {"type": "residual_mlp", "width": cfg.width, "blocks": cfg.blocks, "n_in": env.obs_size,
                 "n_out": env.act_size, "output": "tanh (da in [-1, 1])"},
        "trained_on": {"wrists": list(env_cfg.wrists), "axes": list(env_cfg.axes),
                       "slots": [list(s) for s in slots],
                       "objects": cfg.objects, "initial_pose": env_cfg.initial_pose,
                       "hold_pose": env_cfg.hold_pose},
        "teachers": teachers,
        "command": command or "",
        "seed": cfg.seed,
        "train_config": asdict(cfg),
        "data": {"samples": int(len(data.obs)), "episodes": data.episodes, "kept": data.kept},
    }
    out = Path(cfg.out)
    save_policy(out, net, metadata)
    result = evaluate(ArtifactFactory(str(out)), EvalConfig(hand=cfg.hand, wrists=env_cfg.wrists, axes=env_cfg.axes,
                                                            objects=cfg.objects, episodes=cfg.eval_episodes,
                                                            seed=cfg.seed + 7, workers=cfg.workers,
                                                            episode_steps=cfg.episode_steps, slots=tuple(slots)),
                      log=log)
    specialist_eval = {}
    for (w, a, group), g in found.items():
        if not isinstance(g, (Gait, GaitFamily)):
            continue  # a teacher policy: its own card has its figures
        env = RotationEnv(replace(env_cfg, objects=group))
        infos = rollout_gait(env, g, list(range(20_000, 20_000 + min(20, cfg.eval_episodes))), wrist=w,
                             axis=parse_axis(a))
        specialist_eval[f"{w} {a} {group}"] = {"rot_rad": float(np.mean([i.rot for i in infos])),
                                       "ttf_s": float(np.mean([i.ttf for i in infos])),
                                       "drop_rate": float(np.mean([i.fell for i in infos]))}
    metadata["metrics"] = {k: result[k] for k in ("rot_rad", "ttf_s", "rotp", "drop_rate")}
    metadata["metrics"]["rows"] = result["rows"]
    metadata["metrics"]["specialists"] = specialist_eval
    metadata["train_minutes"] = (time.monotonic() - t0) / 60
    metadata["specialists_reused"] = list(reused)
    metadata["specialist_sources"] = sources
    save_policy(out, net, metadata)
    png = out.with_suffix(".png")
    _plot(png, hists, curves)
    (out.with_suffix(".eval.json")).write_text(json.dumps({k: v for k, v in result.items()}, indent=1))
    _write_card(out, metadata, result, specialist_eval)
    log(format_table(result))
    log(f"[train-policy] wrote {out}, {out.with_suffix('.md')}, {png} in {metadata['train_minutes']:.1f} min")
    return {"artifact": str(out), "metrics": metadata["metrics"]}


def _teachers(cfg: TrainConfig, env_cfg: EnvConfig, slots: list, found: dict, log) -> list[dict]:
    """Load ``cfg.teachers`` into ``found`` (one entry per (wrist, axis) slot each was trained on, object set
    ``cfg.objects``); returns what the artifact records about them. A slot the run's own specialists cover, or
    two teachers share, is refused by name."""
    from dexndm.artifacts import file_digest
    from dexndm.paths import portable_path
    from dexndm.policy.exported import PolicyLoadError, load_policy

    out, taken = [], set(slots)
    for path in cfg.teachers:
        try:
            pol = load_policy(path)
        except PolicyLoadError as e:
            raise TrainInputError(f"--teacher {path}: {e}") from e
        if pol.hand != cfg.hand:
            raise TrainInputError(f"--teacher {path}: a policy for the {pol.hand} hand, this run trains {cfg.hand}")
        on = pol.metadata.get("trained_on", {})
        mine = [tuple(s) for s in on.get("slots", [])] or [(w, a) for w in on.get("wrists", []) for a in on.get("axes", [])]
        if not mine:
            raise TrainInputError(f"--teacher {path}: its metadata names no trained_on wrists and axes")
        clash = [f"{w} {a}" for w, a in mine if (w, a) in taken]
        if clash:
            raise TrainInputError(f"--teacher {path}: slot(s) {', '.join(clash)} already taught by this run's "
                                  "specialists or another teacher; leave them out of --wrists/--axes")
        try:
            bc.PolicyTeacher(pol, RotationEnv(replace(env_cfg, objects=cfg.objects)))  # refuses another layout by name
        except ValueError as e:
            raise TrainInputError(f"--teacher {path}: {e}") from e
        for w, a in mine:
            found[(w, a, cfg.objects)] = pol
        taken |= set(mine)
        log(f"[train-policy] teacher {path} for {', '.join(f'{w} {a}' for w, a in mine)} on '{cfg.objects}'")
        out.append({"path": portable_path(path), "sha256": file_digest(path), "slots": [list(s) for s in mine],
                    "metrics": {k: v for k, v in pol.metadata.get("metrics", {}).items() if k != "specialists"}})
    return out


def _write_card(out: Path, md: dict, result: dict, specialists: dict) -> None:
    size_mb = out.stat().st_size / 1e6
    lines = [
        f"# Model card: {out.name}",
        "",
        "Proprioceptive in-hand rotation generalist for the simulated LEAP hand (DexNDM policy side).",
        "",
        "## How it was made",
        "",
        f"- Command: `{md['command']}`",
        f"- Seed: {md['seed']}; training time {md.get('train_minutes', 0):.1f} min on this machine's CPU"
        + (f" ({len(md['specialists_reused'])} specialist(s) reused from the work directory, found by an earlier "
           "run of the same command; each two-stage search takes about 10 min)." if md.get("specialists_reused") else "."),
        "- Specialists: CMA-ES over open-loop periodic gaits, one per (wrist, axis, object group), in the ideal "
        f"simulator, in stages: {md['train_config']['nominal_generations']} generations on the group's "
        "middle object "
        + (f"with its mass and friction within +-{100 * md['train_config']['nominal_jitter']:g} % and size within "
           f"+-{20 * md['train_config']['nominal_jitter']:g} % of the catalog values, then "
           if md["train_config"].get("nominal_jitter") else "without randomisation, then ")
        + (f"{md['train_config']['shape_generations']} generations on the group's objects with size randomisation "
           "only, then " if md["train_config"].get("shape_generations") else "")
        + f"{md['train_config']['generations']} generations on the whole group with domain randomisation (object "
        "mass 0.01-0.05 kg, friction 0.3-3.0, size +-5 %, disturbance force 2*m, joint-position noise +-0.005 rad)."
        + (" After the nominal stage each specialist is a gait family: its parameters are linear in the episode "
           f"object's {' and '.join(md['train_config']['family_features'])} (privileged knowledge the generalist "
           "has to infer from proprioception)." if md["train_config"].get("family_features") else ""),
        *([f"- Specialists compared with earlier runs' on {md['train_config']['select_episodes']} held-out episodes "
           "each (`--candidates`); kept: " + "; ".join(f"{k} from {v}" for k, v in md["specialist_sources"].items())
           + "."] if md.get("specialist_sources") else []),
        *(["- Teachers (trained policies, labelling their own slots with their actions at the states reached): "
           + "; ".join(f"{t['path']} (sha256 {t['sha256'][:16]}) for " + ", ".join(f"{w} {a}" for w, a in t["slots"])
                       for t in md["teachers"]) + "."] if md.get("teachers") else []),
        f"- Generalist: behaviour cloning (DART-style action noise on half the episodes) on "
        f"{md['data']['samples']} samples from {md['data']['kept']}/{md['data']['episodes']} successful specialist "
        "episodes.",
        f"- Network: residual MLP, width {md['arch']['width']}, {md['arch']['blocks']} residual blocks (the paper "
        "uses width 1024 and 5 blocks; reduced for CPU training and a small artifact), tanh output; "
        f"{size_mb:.2f} MB.",
        f"- Observation: last {md['history']} pairs (q, a_prev) in joint order {md['joint_order']}, then wrist "
        "quaternion and rotation axis (world frame); normaliser stored in the artifact.",
        f"- Action: relative target, a_t = clip(a_(t-1) + da_t * {md['action_scale']:.6f}, limits), 20 Hz.",
        f"- Trained on: (wrist, axis) {[' '.join(x) for x in md['trained_on']['slots']]}, objects "
        f"'{md['trained_on']['objects']}', initial pose '{md['trained_on']['initial_pose']}'.",
        "",
        "## Metrics (ideal simulator, `dexndm eval`)",
        "",
        "```",
        format_table(result),
        "```",
        "",
        "Specialists (open-loop gaits) on 20 episodes each, for reference:",
        "",
    ]
    for k, v in specialists.items():
        lines.append(f"- {k}: Rot {v['rot_rad']:.2f} rad, TTF {v['ttf_s']:.1f} s, drops {100 * v['drop_rate']:.0f} %")
    lines += ["", "Reproduce: run the command above from the repository root (results are seeded; timing "
              "depends on the machine)."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")

