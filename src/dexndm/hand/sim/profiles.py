"""Actuator profiles for the simulated hand.

``ideal`` is the training simulator: a torque PD ``tau = kp*(target - q) - kd*qdot``, clipped to
a torque limit and recomputed ``pd_substeps`` times per control period (zero-order hold in
between), as in the Isaac Gym setup the DexNDM policy comes from.

A *reality profile* (``config/reality/*.yaml``) stands in for a real hand: a servo-like,
current-limited position controller with register-unit gains, command latency, Coulomb
friction, backlash, joint damping/armature, per-joint gain scatter, object differences and
sensor noise/quantisation. Every key is required and unknown keys are an error, so a typo in a
profile fails at start instead of silently running the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dexndm.paths import share_path


class ProfileError(ValueError):
    """A reality profile is invalid; the message names the file and the key."""


@dataclass(frozen=True)
class IdealProfile:
    """The training simulator's actuator (defaults: DexNDM / LEAP_Hand_Sim Isaac Gym setup)."""

    name: str = "ideal"
    kp: float = 3.0  # N*m/rad
    kd: float = 0.1  # N*m*s/rad
    torque_limit: float = 0.5  # N*m, |tau| cap (Isaac Gym effort limit)
    pd_substeps: int = 6  # PD updates per 20 Hz control period (120 Hz)


# ---- reality profile schema -------------------------------------------------------------------
# key -> (type, description). Nested dicts describe sections. Used for validation and the README.
SCHEMA: dict[str, Any] = {
    "name": (str, "profile name"),
    "description": (str, "what this profile stands for and where its numbers come from"),
    "servo": {
        "p_gain": (float, "position P gain, Dynamixel register units (Position P Gain, addr 84)"),
        "d_gain": (float, "position D gain, register units (Position D Gain, addr 80)"),
        "p_nm_per_rad_per_unit": (float, "N*m/rad per P unit (XC330: ~0.00263)"),
        "d_nms_per_rad_per_unit": (float, "N*m*s/rad per D unit (XC330: ~0.00135)"),
        "gain_scale": (dict, "joint name -> factor on P and D (LEAP: 0.75 on the MCP-side joints); {} for none"),
        "current_limit_ma": (float, "Goal Current cap in current-based position mode (mA)"),
        "torque_per_amp": (float, "N*m per A at the joint (XC330: ~0.517)"),
        "update_hz": (float, "servo control loop rate (Hz); torque recomputed at this rate"),
    },
    "latency_s": (float, "delay from command to servo goal (s)"),
    "joint": {
        "coulomb_friction": (float, "Coulomb friction torque per joint (N*m)"),
        "damping": (float, "viscous joint damping (N*m*s/rad)"),
        "armature": (float, "reflected rotor inertia (kg*m^2)"),
        "backlash_rad": (float, "total backlash play between motor and joint (rad)"),
    },
    "gain_scatter": (float, "per-joint multiplicative scatter of P, D and torque cap: U(1-s, 1+s)"),
    "object": {
        "friction_scale": (float, "multiplier on object friction"),
        "mass_scale": (float, "multiplier on object mass"),
    },
    "sensor": {
        "position_noise_std": (float, "Gaussian noise on measured position (rad)"),
        "quantization_rad": (float, "encoder resolution (rad); 0 for none (XC330: 2*pi/4096)"),
    },
    "seed": (int, "seed for gain scatter and sensor noise"),
}


@dataclass(frozen=True)
class RealityProfile:
    name: str
    description: str
    p_gain: float
    d_gain: float
    p_nm_per_rad_per_unit: float
    d_nms_per_rad_per_unit: float
    gain_scale: Mapping[str, float]
    current_limit_ma: float
    torque_per_amp: float
    update_hz: float
    latency_s: float
    coulomb_friction: float
    damping: float
    armature: float
    backlash_rad: float
    gain_scatter: float
    object_friction_scale: float
    object_mass_scale: float
    position_noise_std: float
    quantization_rad: float
    seed: int
    source: Path | None = field(default=None, compare=False)

    @property
    def kp(self) -> float:
        """Nominal stiffness before per-joint scale and scatter (N*m/rad)."""
        return self.p_gain * self.p_nm_per_rad_per_unit

    @property
    def kd(self) -> float:
        return self.d_gain * self.d_nms_per_rad_per_unit

    @property
    def torque_limit(self) -> float:
        """Torque cap from the current limit (N*m)."""
        return self.current_limit_ma * 1e-3 * self.torque_per_amp

    def per_joint(self, joint_names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Per-joint kp, kd and torque cap with gain_scale and the seeded scatter applied."""
        unknown = sorted(set(self.gain_scale) - set(joint_names))
        if unknown:
            raise ProfileError(
                f"{self.source or self.name}: servo.gain_scale: unknown joint(s) {unknown}; valid: {list(joint_names)}"
            )
        n = len(joint_names)
        scale = np.array([float(self.gain_scale.get(j, 1.0)) for j in joint_names])
        rng = np.random.default_rng(self.seed)
        s = self.gain_scatter
        scat = rng.uniform(1 - s, 1 + s, size=(3, n))
        return {
            "kp": self.kp * scale * scat[0],
            "kd": self.kd * scale * scat[1],
            "torque_limit": np.full(n, self.torque_limit) * scat[2],
        }


def _check(section: Mapping[str, Any], schema: Mapping[str, Any], src: Path, prefix: str) -> None:
    if not isinstance(section, Mapping):
        raise ProfileError(f"{src}: '{prefix.rstrip('.') or 'profile'}' must be a mapping")
    unknown = sorted(set(section) - set(schema))
    if unknown:
        raise ProfileError(f"{src}: unknown key '{prefix}{unknown[0]}'; valid keys here: {sorted(schema)}")
    missing = sorted(set(schema) - set(section))
    if missing:
        raise ProfileError(f"{src}: missing required key '{prefix}{missing[0]}' ({_describe(schema[missing[0]])})")
    for key, sub in schema.items():
        val = section[key]
        if isinstance(sub, dict):
            _check(val, sub, src, f"{prefix}{key}.")
            continue
        typ = sub[0]
        ok = isinstance(val, typ) or (typ is float and isinstance(val, int) and not isinstance(val, bool))
        if not ok or (typ in (float, int) and isinstance(val, bool)):
            raise ProfileError(f"{src}: '{prefix}{key}' must be {typ.__name__}, got {val!r}")
        if typ in (float, int) and not np.isfinite(val):
            raise ProfileError(f"{src}: '{prefix}{key}' must be finite, got {val!r}")


def _describe(entry: Any) -> str:
    return entry[1] if isinstance(entry, tuple) else "section"


def _nonneg(src: Path, key: str, val: float, positive: bool = False) -> None:
    if val < 0 or (positive and val == 0):
        raise ProfileError(f"{src}: '{key}' must be {'> 0' if positive else '>= 0'}, got {val}")


def parse_profile(cfg: Mapping[str, Any], src: Path) -> RealityProfile:
    _check(cfg, SCHEMA, src, "")
    sv, jt, ob, se = cfg["servo"], cfg["joint"], cfg["object"], cfg["sensor"]
    for k in ("p_gain", "d_gain", "p_nm_per_rad_per_unit", "d_nms_per_rad_per_unit", "current_limit_ma",
              "torque_per_amp", "update_hz"):
        _nonneg(src, f"servo.{k}", float(sv[k]), positive=k in ("p_gain", "current_limit_ma", "update_hz",
                                                                "torque_per_amp", "p_nm_per_rad_per_unit"))
    for k, v in sv["gain_scale"].items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v <= 2:
            raise ProfileError(f"{src}: 'servo.gain_scale.{k}' must be a number in (0, 2], got {v!r}")
    _nonneg(src, "latency_s", float(cfg["latency_s"]))
    for k in jt:
        _nonneg(src, f"joint.{k}", float(jt[k]))
    if not 0 <= float(cfg["gain_scatter"]) < 1:
        raise ProfileError(f"{src}: 'gain_scatter' must be in [0, 1), got {cfg['gain_scatter']}")
    for k in ob:
        _nonneg(src, f"object.{k}", float(ob[k]), positive=True)
    for k in se:
        _nonneg(src, f"sensor.{k}", float(se[k]))
    return RealityProfile(
        name=cfg["name"],
        description=cfg["description"],
        p_gain=float(sv["p_gain"]),
        d_gain=float(sv["d_gain"]),
        p_nm_per_rad_per_unit=float(sv["p_nm_per_rad_per_unit"]),
        d_nms_per_rad_per_unit=float(sv["d_nms_per_rad_per_unit"]),
        gain_scale={str(k): float(v) for k, v in sv["gain_scale"].items()},
        current_limit_ma=float(sv["current_limit_ma"]),
        torque_per_amp=float(sv["torque_per_amp"]),
        update_hz=float(sv["update_hz"]),
        latency_s=float(cfg["latency_s"]),
        coulomb_friction=float(jt["coulomb_friction"]),
        damping=float(jt["damping"]),
        armature=float(jt["armature"]),
        backlash_rad=float(jt["backlash_rad"]),
        gain_scatter=float(cfg["gain_scatter"]),
        object_friction_scale=float(ob["friction_scale"]),
        object_mass_scale=float(ob["mass_scale"]),
        position_noise_std=float(se["position_noise_std"]),
        quantization_rad=float(se["quantization_rad"]),
        seed=int(cfg["seed"]),
        source=src,
    )


def load_profile(name_or_path: str | Path | None) -> IdealProfile | RealityProfile:
    """``None``/``"ideal"`` -> IdealProfile; a name (``leap_default``) or a YAML path -> RealityProfile."""
    if name_or_path in (None, "", "ideal"):
        return IdealProfile()
    p = Path(name_or_path)
    src = p if p.suffix in (".yaml", ".yml") else share_path("config", "reality", f"{p}.yaml")
    if not src.is_file():
        known = sorted(x.stem for x in share_path("config", "reality").glob("*.yaml"))
        raise ProfileError(f"reality profile '{name_or_path}' not found ({src}); shipped profiles: {known}")
    try:
        with open(src) as f:
            cfg = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ProfileError(f"{src}: not valid YAML: {e}") from e
    return parse_profile(cfg or {}, src)


def schema_markdown() -> str:
    """The profile schema as a Markdown list (the README embeds this)."""
    lines: list[str] = []

    def walk(schema: Mapping[str, Any], prefix: str) -> None:
        for key, sub in schema.items():
            if isinstance(sub, dict):
                walk(sub, f"{prefix}{key}.")
            else:
                lines.append(f"- `{prefix}{key}` ({sub[0].__name__}): {sub[1]}")

    walk(SCHEMA, "")
    return "\n".join(lines)

