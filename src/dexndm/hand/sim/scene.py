"""Build a MuJoCo scene from the hand's URDF: wrist pose, object, floor, actuators.

The hand's root link is a mocap body (the wrist) so its orientation can be set (and moved
smoothly) at run time. World frame: z up, gravity -z. The palm centre is placed at
``palm_height`` above the floor whatever the wrist orientation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import mujoco
import numpy as np

from dexndm.hand.sim.objects import ObjectSpec
from dexndm.hand.sim.profiles import IdealProfile, RealityProfile
from dexndm.hand.spec import HandSpec

WRIST_POSES = ("palm_up", "palm_down", "base_up", "base_down", "thumb_up", "thumb_down")
OBJECT_BODY = "object"
DEFAULT_TIMESTEP = 1.0 / 600.0  # 30 physics steps per 20 Hz control period


def _unit(v: Sequence[float]) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def palm_axes(spec: HandSpec) -> dict[str, np.ndarray]:
    """Unit vectors in the root-link frame: normal (out of the grasp surface), fingers (wrist to
    tips) and thumb (toward the thumb side), re-orthogonalised."""
    pf = spec.palm_frame
    try:
        n = _unit(pf["normal"])
        f = _unit(pf["fingers"])
    except KeyError as e:
        raise ValueError(f"{spec.source}: palm_frame.{e.args[0]} is required for wrist poses") from None
    f = _unit(f - n * (f @ n))
    t = np.cross(f, n)  # right hand: thumb on the f x n side
    if "thumb" in pf and np.dot(_unit(pf["thumb"]), t) < 0:
        t = -t
    return {"normal": n, "fingers": f, "thumb": t, "center": np.asarray(pf.get("center", [0, 0, 0]), float)}


# Named wrist poses: which palm axis points along which world axis (first pair exact, second completes).
_WRIST_ALIGN = {
    "palm_up": (("normal", (0, 0, 1)), ("fingers", (1, 0, 0))),
    "palm_down": (("normal", (0, 0, -1)), ("fingers", (1, 0, 0))),
    "base_up": (("fingers", (0, 0, -1)), ("normal", (1, 0, 0))),
    "base_down": (("fingers", (0, 0, 1)), ("normal", (1, 0, 0))),
    "thumb_up": (("thumb", (0, 0, 1)), ("normal", (1, 0, 0))),
    "thumb_down": (("thumb", (0, 0, -1)), ("normal", (1, 0, 0))),
}


def _frame(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = _unit(a)
    b = _unit(b - a * (a @ b))
    return np.stack([a, b, np.cross(a, b)], axis=1)


def wrist_rotation(spec: HandSpec, wrist: str | Sequence[float]) -> np.ndarray:
    """3x3 rotation root-link -> world for a named wrist pose or a quaternion [w, x, y, z]."""
    if isinstance(wrist, str):
        if wrist not in _WRIST_ALIGN:
            raise ValueError(f"wrist '{wrist}' unknown; valid: {list(WRIST_POSES)} or a quaternion w,x,y,z")
        ax = palm_axes(spec)
        (k1, w1), (k2, w2) = _WRIST_ALIGN[wrist]
        hand = _frame(ax[k1], ax[k2])
        world = _frame(np.array(w1, float), np.array(w2, float))
        return world @ hand.T
    q = np.asarray(wrist, dtype=float)
    if q.shape != (4,) or not np.all(np.isfinite(q)) or np.linalg.norm(q) < 1e-6:
        raise ValueError(f"wrist quaternion must be 4 finite numbers w,x,y,z, not all zero; got {list(q)}")
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, q / np.linalg.norm(q))
    return mat.reshape(3, 3)


def is_palm_up(spec: HandSpec, wrist: str | Sequence[float], tol_rad: float = math.radians(10.0)) -> bool:
    """Whether the palm faces up (its normal within ``tol_rad`` of the palm-up pose's), so an object can
    rest on it. Any other orientation needs the object held (see MujocoHand.grasp_and_turn)."""
    n = palm_axes(spec)["normal"]
    up = wrist_rotation(spec, "palm_up") @ n
    cos = float(np.clip((wrist_rotation(spec, wrist) @ n) @ up, -1.0, 1.0))
    return math.acos(cos) <= tol_rad


def mat_to_quat(R: np.ndarray) -> np.ndarray:
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(R, dtype=float).reshape(9))
    return q


@dataclass(frozen=True)
class SceneConfig:
    wrist: str | tuple[float, ...] = "palm_up"
    object: ObjectSpec | None = None
    palm_height: float = 0.25  # m, world z of the palm centre
    timestep: float = DEFAULT_TIMESTEP
    floor: bool = True
    object_gap: float = 0.004  # m between palm surface and object at spawn
    load: str = "none"  # finger load for data collection: none | chaos_box | fingertip_ball
    load_seed: int = 0
    n_balls: int = 14


@dataclass
class Scene:
    model: mujoco.MjModel
    spec: HandSpec
    config: SceneConfig
    qpos_adr: np.ndarray  # (n,) hand joint qpos addresses, canonical order
    dof_adr: np.ndarray  # (n,) hand joint dof addresses
    act_ids: np.ndarray  # (n,) actuator ids, canonical order
    wrist_mocap: int
    object_qpos_adr: int | None
    object_body: int | None
    palm_body: int
    tip_sites: dict[str, int]
    palm_center_world: np.ndarray


def object_spawn_pose(spec: HandSpec, cfg: SceneConfig, R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World position and quaternion of the object at spawn: resting on the palm's grasp side."""
    ax = palm_axes(spec)
    center = np.array([0.0, 0.0, cfg.palm_height])
    n_world = R @ ax["normal"]
    r = cfg.object.radius if cfg.object is not None else 0.0
    pos = center + n_world * (r + cfg.object_gap)
    # Cylinders stand on their flat face on the palm (axis along the palm normal).
    zq = np.zeros(4)
    mujoco.mju_quatZ2Vec(zq, n_world)
    return pos, zq


def build_scene(spec: HandSpec, cfg: SceneConfig, profile: IdealProfile | RealityProfile) -> Scene:
    """Compile the MuJoCo model for a hand, wrist pose, object and actuator profile."""
    # The URDF's root link becomes a mocap body: the wrist, orientable at run time.
    world = mujoco.MjSpec.from_file(str(spec.urdf_path))
    root = world.worldbody.first_body()
    if root is None or root.name != spec.root_link:
        raise ValueError(f"{spec.urdf_path}: root link is '{getattr(root, 'name', None)}', config says '{spec.root_link}'")
    world.modelname = f"dexndm_{spec.name}"
    world.option.timestep = cfg.timestep
    world.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    world.option.impratio = 10.0
    world.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    world.visual.global_.offwidth = 1280
    world.visual.global_.offheight = 960

    R = wrist_rotation(spec, cfg.wrist)
    ax = palm_axes(spec)
    palm_center = np.array([0.0, 0.0, cfg.palm_height])
    root.mocap = True
    root.pos = palm_center - R @ ax["center"]
    root.quat = mat_to_quat(R)

    wb = world.worldbody
    wb.add_light(pos=[0, -0.4, 1.0], dir=[0, 0.3, -1], diffuse=[0.8, 0.8, 0.8])
    wb.add_camera(name="front", pos=palm_center + np.array([0.2, -0.2, 0.16]),
                  xyaxes=[0.707, 0.707, 0, -0.38, 0.38, 0.84])
    wb.add_camera(name="top", pos=palm_center + np.array([0.0, 0.0, 0.35]), xyaxes=[1, 0, 0, 0, 1, 0])
    if cfg.floor:
        wb.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[1, 1, 0.05], rgba=[0.85, 0.85, 0.8, 1])

    # Joint dynamics: the profile decides friction, damping and armature.
    sim_cfg = spec.sim
    for name in spec.joint_names:
        j = world.joint(name)
        if isinstance(profile, RealityProfile):
            j.armature = profile.armature
            j.damping = [profile.damping, 0.0, 0.0]
            j.frictionloss = profile.coulomb_friction
        else:
            j.armature = float(sim_cfg.get("armature", 0.001))
        world.add_actuator(name=f"{name}_motor", target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT,
                           ctrllimited=True, ctrlrange=[-j.actfrcrange[1], j.actfrcrange[1]] if j.actfrclimited
                           else [-1.0, 1.0])

    tip_links = {v["link"] for v in spec.fingertips.values()}
    geom_friction = sim_cfg.get("geom_friction", [0.2, 0.005, 0.0001])
    tip_friction = sim_cfg.get("fingertip_friction", geom_friction)
    for g in world.geoms:
        body = g.parent
        if body is None or body.name in ("world", ""):
            continue
        g.friction = tip_friction if body.name in tip_links else geom_friction
        g.rgba = [0.25, 0.25, 0.28, 1] if body.name not in tip_links else [0.85, 0.85, 0.85, 1]
    for a, b in sim_cfg.get("contact_excludes", []):
        world.add_exclude(bodyname1=a, bodyname2=b)
    for finger, tip in spec.fingertips.items():
        world.body(tip["link"]).add_site(name=f"tip_{finger}", pos=tip["pos"], size=[0.004, 0, 0])

    if cfg.object is not None:
        ob = cfg.object
        pos, quat = object_spawn_pose(spec, cfg, R)
        body = wb.add_body(name=OBJECT_BODY, pos=pos, quat=quat)
        body.add_freejoint(name="object_free")
        mass = ob.mass * (profile.object_mass_scale if isinstance(profile, RealityProfile) else 1.0)
        fr = ob.friction * (profile.object_friction_scale if isinstance(profile, RealityProfile) else 1.0)
        gtype = {
            "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER,
            "box": mujoco.mjtGeom.mjGEOM_BOX,
            "sphere": mujoco.mjtGeom.mjGEOM_SPHERE,
            "capsule": mujoco.mjtGeom.mjGEOM_CAPSULE,
        }[ob.shape]
        size = list(ob.size) + [0.0] * (3 - len(ob.size))
        body.add_geom(name="object_geom", type=gtype, size=size, mass=mass, friction=[fr, 0.005, 0.0001],
                      rgba=[0.9, 0.45, 0.1, 1], condim=4)
        # Axis markers make rotation visible in renders.
        body.add_site(name="object_marker", pos=[0, 0, 0], size=[0.003, 0, 0])

    if cfg.load == "chaos_box":
        _add_chaos_box(world, spec, cfg, R)
    elif cfg.load == "fingertip_ball":
        _add_fingertip_ball(world, spec, R)
    elif cfg.load != "none":
        raise ValueError(f"load '{cfg.load}' unknown; valid: none, chaos_box, fingertip_ball")

    model = world.compile()
    jid = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in spec.joint_names]
    if min(jid) < 0:
        raise ValueError(f"{spec.urdf_path}: joints missing after compile: {spec.joint_names}")
    aid = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, f"{n}_motor") for n in spec.joint_names]
    obj_body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, OBJECT_BODY) if cfg.object else -1
    return Scene(
        model=model,
        spec=spec,
        config=cfg,
        qpos_adr=np.array([model.jnt_qposadr[i] for i in jid]),
        dof_adr=np.array([model.jnt_dofadr[i] for i in jid]),
        act_ids=np.array(aid),
        wrist_mocap=int(model.body_mocapid[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, spec.root_link)]),
        object_qpos_adr=int(model.jnt_qposadr[model.body_jntadr[obj_body]]) if obj_body >= 0 else None,
        object_body=obj_body if obj_body >= 0 else None,
        palm_body=mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, spec.root_link),
        tip_sites={f: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, f"tip_{f}") for f in spec.fingertips},
        palm_center_world=palm_center,
    )


# ---- Chaos Box: soft, light, deformable balls that load the fingers ---------------------------------
# Soft contacts (long solref time constant, wide solimp) let the balls squash like foam balls.
BALL_SOLREF = [0.03, 1.0]
BALL_SOLIMP = [0.6, 0.95, 0.01, 0.5, 2.0]
# The fingertip binding is soft too: it loads the fingers (~0.25 N*m at +-0.2 rad finger motion) without
# jamming them.
BINDING_SOLREF = [0.1, 1.0]
BINDING_SOLIMP = [0.5, 0.95, 0.01, 0.5, 2.0]


def _add_chaos_box(world: mujoco.MjSpec, spec: HandSpec, cfg: SceneConfig, R: np.ndarray) -> None:
    """An open box around the hand, filled with light foam balls (radius 1.5-2.5 cm, 2-6 g)."""
    c = np.array([0.0, 0.0, cfg.palm_height])
    half = np.array([0.13, 0.13, 0.0])
    wall_h = 0.16
    bottom = c[2] - 0.12
    wb = world.worldbody
    rgba = [0.55, 0.45, 0.3, 0.35]
    wb.add_geom(name="box_floor", type=mujoco.mjtGeom.mjGEOM_BOX, size=[half[0], half[1], 0.005],
                pos=[c[0], c[1], bottom], rgba=rgba)
    for k, (dx, dy, sx, sy) in enumerate([(1, 0, 0.005, half[1]), (-1, 0, 0.005, half[1]),
                                          (0, 1, half[0], 0.005), (0, -1, half[0], 0.005)]):
        wb.add_geom(name=f"box_wall_{k}", type=mujoco.mjtGeom.mjGEOM_BOX, size=[sx, sy, wall_h / 2],
                    pos=[c[0] + dx * half[0], c[1] + dy * half[1], bottom + wall_h / 2], rgba=rgba)
    rng = np.random.default_rng(cfg.load_seed)
    # Balls start in a loose grid above the box floor and settle around (and on) the hand.
    n = cfg.n_balls
    side = int(np.ceil(np.sqrt(n / 3)))
    k = 0
    for layer in range(3):
        for i in range(side):
            for j in range(side):
                if k >= n:
                    break
                r = rng.uniform(0.015, 0.025)
                pos = [c[0] - 0.09 + 0.18 * (i + 0.5) / side + rng.uniform(-0.005, 0.005),
                       c[1] - 0.09 + 0.18 * (j + 0.5) / side + rng.uniform(-0.005, 0.005),
                       bottom + 0.03 + 0.06 * layer + 0.1]
                b = wb.add_body(name=f"ball_{k}", pos=pos)
                b.add_freejoint(name=f"ball_{k}_free")
                b.add_geom(name=f"ball_{k}_geom", type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[r, 0, 0],
                           mass=rng.uniform(0.002, 0.006), friction=[0.8, 0.005, 0.0001], solref=BALL_SOLREF,
                           solimp=BALL_SOLIMP, rgba=[0.9, 0.2 + 0.6 * rng.random(), 0.3, 1])
                k += 1


def _add_fingertip_ball(world: mujoco.MjSpec, spec: HandSpec, R: np.ndarray) -> None:
    """Palm-up variant: one foam ball bound (soft equality constraints) to three fingertips.

    The binding is made where the fingertips are in the hand's 'grasp' pose (or at zero if it has
    none): the ball sits at their centroid and each constraint holds a point of the ball at its
    fingertip, so moving the fingers apart or together squeezes or stretches the ball.
    """
    fingers = [f for f in ("thumb", "index", "middle") if f in spec.fingertips][:3]
    probe = world.copy()
    m = probe.compile()
    d = mujoco.MjData(m)
    q = spec.pose("grasp") if "grasp" in spec.poses else np.zeros(spec.n)
    for name, v in zip(spec.joint_names, q, strict=True):
        d.qpos[m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)]] = v
    mujoco.mj_kinematics(m, d)
    tips = []
    for f in fingers:
        tip = spec.fingertips[f]
        b = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, tip["link"])
        tips.append(d.xpos[b] + d.xmat[b].reshape(3, 3) @ np.asarray(tip["pos"], float))
    tips = np.array(tips)
    center = tips.mean(axis=0)
    radius = float(np.clip(np.min(np.linalg.norm(tips - center, axis=1)) - 0.006, 0.012, 0.03))
    b = world.worldbody.add_body(name="load_ball", pos=center)
    b.add_freejoint(name="load_ball_free")
    b.add_geom(name="load_ball_geom", type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[radius, 0, 0], mass=0.01,
               solref=BALL_SOLREF, solimp=BALL_SOLIMP, rgba=[0.3, 0.8, 0.3, 1])
    for f, p in zip(fingers, tips, strict=True):
        tip = spec.fingertips[f]
        world.add_equality(type=mujoco.mjtEq.mjEQ_CONNECT, name1=tip["link"], name2="load_ball",
                           objtype=mujoco.mjtObj.mjOBJ_BODY,
                           data=list(tip["pos"]) + list(p - center) + [0.0] * 6, solref=BINDING_SOLREF,
                           solimp=BINDING_SOLIMP)
