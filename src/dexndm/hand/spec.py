"""HandSpec: the one place that knows a hand's joints, limits and every joint ordering.

A hand is described by ``config/hands/<name>.yaml`` plus the URDF it names. Joint limits,
efforts and velocity limits are read from the URDF (single source of truth); the YAML names the
joints in canonical order (which must be the URDF's actuated-joint order, i.e. the MuJoCo qpos
order), groups them into fingers, and lists every other ordering in use (hardware slots, the
policy's training order, ...) as lists of names. All arrays handled by dexndm above the hardware
layer are in canonical order, in radians.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dexndm.paths import share_path

REQUIRED_ORDERINGS = ("hardware", "policy", "sim")
_TOP_KEYS = {
    "name", "description", "urdf", "root_link", "joints", "fingertips", "orderings",
    "hardware", "sim", "poses", "palm_frame", "objects_anchor",
}


class HandSpecError(ValueError):
    """A hand description is invalid; the message names the file and the field."""


@dataclass(frozen=True)
class JointSpec:
    name: str
    finger: str
    lower: float
    upper: float
    effort: float
    velocity: float
    child_link: str


@dataclass(frozen=True)
class Ordering:
    """A named joint ordering. Slot ``k`` of a vector in this ordering holds joint ``names[k]``.

    ``index[k]`` is the canonical index of slot ``k``, so ``from_canonical(x) = x[..., index]``.
    """

    name: str
    names: tuple[str, ...]
    index: np.ndarray = field(repr=False)

    def from_canonical(self, x: np.ndarray) -> np.ndarray:
        """Canonical-order array (..., n) -> this ordering (..., n)."""
        return np.asarray(x)[..., self.index]

    def to_canonical(self, y: np.ndarray) -> np.ndarray:
        """Array in this ordering (..., n) -> canonical order (..., n)."""
        y = np.asarray(y)
        out = np.empty_like(y)
        out[..., self.index] = y
        return out


@dataclass(frozen=True)
class HandSpec:
    name: str
    description: str
    urdf_path: Path
    root_link: str
    joints: tuple[JointSpec, ...]
    orderings: Mapping[str, Ordering]
    fingertips: Mapping[str, dict]
    hardware: Mapping[str, Any]
    sim: Mapping[str, Any]
    poses: Mapping[str, np.ndarray]
    palm_frame: Mapping[str, Any]
    source: Path

    # ---- basic views -------------------------------------------------------------------
    @property
    def n(self) -> int:
        return len(self.joints)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    @property
    def lower(self) -> np.ndarray:
        return np.array([j.lower for j in self.joints])

    @property
    def upper(self) -> np.ndarray:
        return np.array([j.upper for j in self.joints])

    @property
    def effort(self) -> np.ndarray:
        return np.array([j.effort for j in self.joints])

    @property
    def fingers(self) -> dict[str, tuple[int, ...]]:
        """Finger name -> canonical joint indices, in canonical order."""
        out: dict[str, list[int]] = {}
        for i, j in enumerate(self.joints):
            out.setdefault(j.finger, []).append(i)
        return {k: tuple(v) for k, v in out.items()}

    def ordering(self, name: str) -> Ordering:
        try:
            return self.orderings[name]
        except KeyError:
            raise KeyError(
                f"hand '{self.name}' has no ordering '{name}'; known: {sorted(self.orderings)}"
            ) from None

    def ordering_from_names(self, names: Sequence[str], name: str = "custom") -> Ordering:
        """An ordering given as joint names (e.g. an artifact's joint_order); must be a permutation."""
        return _ordering(self.source, name, names, self.joint_names)

    def index_of(self, names: Iterable[str]) -> np.ndarray:
        """Canonical indices of joint names; raises KeyError naming unknown joints."""
        names = list(names)
        lookup = self._lookup
        missing = [n for n in names if n not in lookup]
        if missing:
            raise KeyError(
                f"unknown joint name(s) {missing} for hand '{self.name}'; valid: {list(self.joint_names)}"
            )
        return np.array([lookup[n] for n in names], dtype=np.int64)

    @property
    def _lookup(self) -> dict[str, int]:
        return {j.name: i for i, j in enumerate(self.joints)}

    def vector_from_named(self, names: Sequence[str], values: Sequence[float], what: str = "message") -> np.ndarray:
        """(n,) canonical-order vector from a message's name/value arrays (any order, extra joints ignored).
        Raises ValueError naming missing joints or non-finite values."""
        by_name = dict(zip(names, values, strict=False))
        missing = [n for n in self.joint_names if n not in by_name]
        if missing:
            raise ValueError(f"{what} lacks joints {missing}")
        v = np.array([by_name[n] for n in self.joint_names], dtype=float)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{what} carries non-finite values for {[self.joint_names[i] for i in np.flatnonzero(~np.isfinite(v))]}")
        return v

    def clamp(self, q: np.ndarray) -> np.ndarray:
        """Clamp canonical-order positions (..., n) to the joint limits."""
        return np.clip(q, self.lower, self.upper)

    def pose(self, name: str) -> np.ndarray:
        """A named reference pose, canonical order (rad)."""
        try:
            return self.poses[name].copy()
        except KeyError:
            raise KeyError(f"hand '{self.name}' has no pose '{name}'; known: {sorted(self.poses)}") from None

    def by_name(self, q: np.ndarray) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.joint_names, q, strict=True)}


# ---- loading --------------------------------------------------------------------------------


def _fail(src: Path, field_: str, msg: str) -> HandSpecError:
    return HandSpecError(f"{src}: field '{field_}': {msg}")


def parse_urdf_joints(urdf: Path) -> list[dict]:
    """Actuated (revolute/prismatic) joints of a URDF in document order."""
    try:
        root = ET.parse(urdf).getroot()
    except (OSError, ET.ParseError) as e:
        raise HandSpecError(f"{urdf}: cannot parse URDF: {e}") from e
    out = []
    for j in root.findall("joint"):
        if j.get("type") not in ("revolute", "prismatic"):
            continue
        lim = j.find("limit")
        if lim is None:
            raise HandSpecError(f"{urdf}: joint '{j.get('name')}' has no <limit>")
        child = j.find("child")
        out.append(
            {
                "name": j.get("name"),
                "lower": float(lim.get("lower")),
                "upper": float(lim.get("upper")),
                "effort": float(lim.get("effort", "nan")),
                "velocity": float(lim.get("velocity", "nan")),
                "child": child.get("link") if child is not None else "",
            }
        )
    return out


def _ordering(src: Path, name: str, names: Sequence[str], canonical: Sequence[str]) -> Ordering:
    names = list(names)
    if sorted(names) != sorted(canonical):
        extra = sorted(set(names) - set(canonical))
        missing = sorted(set(canonical) - set(names))
        dup = sorted({n for n in names if names.count(n) > 1})
        raise _fail(
            src, f"orderings.{name}",
            f"must be a permutation of the {len(canonical)} joints; unknown {extra}, missing {missing}, duplicated {dup}",
        )
    lookup = {n: i for i, n in enumerate(canonical)}
    return Ordering(name=name, names=tuple(names), index=np.array([lookup[n] for n in names], dtype=np.int64))


def load_hand_spec(hand: str | Path) -> HandSpec:
    """Load a HandSpec by hand name (``leap``, ``allegro``) or by YAML path."""
    p = Path(hand)
    if p.suffix in (".yaml", ".yml"):
        src = share_path(p)
    else:
        src = share_path("config", "hands", f"{hand}.yaml")
    if not src.is_file():
        known = sorted(x.stem for x in share_path("config", "hands").glob("*.yaml"))
        raise HandSpecError(f"no hand description '{hand}' ({src}); known hands: {known}")
    with open(src) as f:
        cfg = yaml.safe_load(f) or {}
    unknown = sorted(set(cfg) - _TOP_KEYS)
    if unknown:
        raise _fail(src, unknown[0], f"unknown key; valid keys: {sorted(_TOP_KEYS)}")
    for key in ("name", "urdf", "joints", "orderings"):
        if key not in cfg:
            raise _fail(src, key, "required key missing")

    urdf = share_path(cfg["urdf"])
    if not urdf.is_file():
        raise _fail(src, "urdf", f"file {urdf} does not exist")
    urdf_joints = {j["name"]: j for j in parse_urdf_joints(urdf)}
    urdf_order = list(urdf_joints)

    joints = []
    for k, entry in enumerate(cfg["joints"]):
        if not isinstance(entry, dict) or "name" not in entry or "finger" not in entry:
            raise _fail(src, f"joints[{k}]", "each joint needs 'name' and 'finger'")
        name = entry["name"]
        if name not in urdf_joints:
            raise _fail(src, f"joints[{k}].name", f"'{name}' is not an actuated joint of {urdf.name}; URDF has {urdf_order}")
        uj = urdf_joints[name]
        lower, upper = uj["lower"], uj["upper"]
        # Optional soft limits may only tighten the URDF's.
        if "soft_limits" in entry:
            lo, hi = (float(v) for v in entry["soft_limits"])
            if not (lower <= lo < hi <= upper):
                raise _fail(src, f"joints[{k}].soft_limits", f"must lie within the URDF limits [{lower}, {upper}]")
            lower, upper = lo, hi
        joints.append(JointSpec(name, str(entry["finger"]), lower, upper, uj["effort"], uj["velocity"], uj["child"]))
    names = [j.name for j in joints]
    if names != urdf_order:
        raise _fail(src, "joints", f"must list the URDF's actuated joints in URDF order {urdf_order}, got {names}")

    orderings = {"canonical": _ordering(src, "canonical", names, names)}
    for oname, olist in (cfg.get("orderings") or {}).items():
        orderings[oname] = _ordering(src, oname, olist, names)
    for req in REQUIRED_ORDERINGS:
        if req not in orderings:
            raise _fail(src, f"orderings.{req}", "required ordering missing")

    poses = {}
    for pname, pvals in (cfg.get("poses") or {}).items():
        if not isinstance(pvals, dict):
            raise _fail(src, f"poses.{pname}", "must map joint name -> radians")
        bad = sorted(set(pvals) - set(names))
        if bad or set(pvals) != set(names):
            raise _fail(src, f"poses.{pname}", f"must give every joint exactly once; unknown {bad}, missing {sorted(set(names) - set(pvals))}")
        q = np.array([float(pvals[n]) for n in names])
        lo = np.array([j.lower for j in joints])
        hi = np.array([j.upper for j in joints])
        if np.any(q < lo - 1e-9) or np.any(q > hi + 1e-9):
            off = [names[i] for i in np.flatnonzero((q < lo - 1e-9) | (q > hi + 1e-9))]
            raise _fail(src, f"poses.{pname}", f"outside joint limits for {off}")
        poses[pname] = q

    for j in joints:
        if not (math.isfinite(j.lower) and math.isfinite(j.upper) and j.lower < j.upper):
            raise _fail(src, f"joints.{j.name}", f"bad limits [{j.lower}, {j.upper}] in {urdf.name}")

    return HandSpec(
        name=str(cfg["name"]),
        description=str(cfg.get("description", "")),
        urdf_path=urdf,
        root_link=str(cfg.get("root_link", "")),
        joints=tuple(joints),
        orderings=orderings,
        fingertips=dict(cfg.get("fingertips") or {}),
        hardware=dict(cfg.get("hardware") or {}),
        sim=dict(cfg.get("sim") or {}),
        poses=poses,
        palm_frame=dict(cfg.get("palm_frame") or {}),
        source=src,
    )
