"""Gamepad -> rotation axis and dead-man enable, without ROS (the teleop node feeds it Joy messages).

A controller YAML (``config/teleop/<controller>.yaml``) maps:

- ``buttons``: ``{axis: button index}``, axis one of ``+x -x +y -y +z -z`` or ``"x,y,z"``: pressing
  the button selects that fixed rotation axis (world frame). The selection is kept after release.
- ``stick``: two Joy axes to a general rotation axis: ``x_direction``/``y_direction`` are the world
  directions of the stick's first/second Joy axis at full positive deflection. ``mode: plane`` takes
  the stick's direction in that plane (its magnitude only has to pass ``deadzone``); ``mode:
  hemisphere`` adds ``sqrt(1 - r^2)`` along ``center``, so a small deflection tilts the axis a little
  away from ``center``. Optional ``button``: the stick only counts while that button is held.
- ``deadman``: ``button`` (held = pressed) or ``axis`` + ``threshold`` (pressed when the value is
  beyond the threshold, on the threshold's side of zero, e.g. -0.5 for a trigger resting at +1).
  :meth:`TeleopMapper.enabled` is true only while it is pressed and Joy messages keep arriving
  (``joy_timeout``): the policy should pause whenever it is false.

The axis :attr:`TeleopMapper.axis` is always a unit vector or None (nothing selected yet): a zero
or non-finite axis can never come out of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml


def validate_axis(v: Sequence[float]) -> np.ndarray:
    """3 finite numbers with a direction -> unit vector (the policy's rule, dexndm.policy.runner.validate_axis,
    without importing the policy stack: the teleop node stays light)."""
    a = np.asarray(v, dtype=float)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise ValueError(f"rotation axis must be 3 finite numbers, got {a.tolist()}")
    n = float(np.linalg.norm(a))
    if n < 1e-6:
        raise ValueError("rotation axis is zero; it must have a direction")
    return a / n

_NAMED_AXES = {"+x": (1, 0, 0), "-x": (-1, 0, 0), "+y": (0, 1, 0), "-y": (0, -1, 0), "+z": (0, 0, 1),
               "-z": (0, 0, -1), "x": (1, 0, 0), "y": (0, 1, 0), "z": (0, 0, 1)}
_TOP_KEYS = {"name", "description", "joy_timeout", "deadman", "buttons", "stick"}


class TeleopConfigError(ValueError):
    pass


def parse_axis_text(text: str) -> np.ndarray:
    t = str(text).strip().lower()
    if t in _NAMED_AXES:
        return np.array(_NAMED_AXES[t], dtype=float)
    try:
        return validate_axis([float(v) for v in t.split(",")])
    except ValueError as e:
        raise ValueError(f"axis '{text}': use +x, -y, z, ... or 'x,y,z' ({e})") from None


@dataclass(frozen=True)
class StickConfig:
    axes: tuple[int, int]
    x_direction: np.ndarray
    y_direction: np.ndarray
    mode: str = "plane"  # plane | hemisphere
    center: np.ndarray | None = None
    deadzone: float = 0.5
    button: int | None = None


@dataclass(frozen=True)
class DeadmanConfig:
    button: int | None = None
    axis: int | None = None
    threshold: float = 0.5


@dataclass(frozen=True)
class TeleopConfig:
    name: str
    buttons: tuple[tuple[int, str, np.ndarray], ...]  # (button index, label, unit axis), priority order
    stick: StickConfig | None
    deadman: DeadmanConfig | None
    joy_timeout: float = 0.5


def _index(v, what: str, src) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise TeleopConfigError(f"{src}: {what} must be a non-negative integer index, got {v!r}")
    return v


def _direction(v, what: str, src) -> np.ndarray:
    try:
        return validate_axis(v)
    except (ValueError, TypeError) as e:
        raise TeleopConfigError(f"{src}: {what}: {e}") from None


def teleop_config_path(controller: str | Path) -> Path:
    from dexndm.paths import share_path

    p = Path(controller)
    if p.suffix in (".yaml", ".yml"):
        return share_path(p)
    return share_path("config", "teleop", f"{controller}.yaml")


def load_teleop_config(controller: str | Path) -> TeleopConfig:
    """A controller by name (config/teleop/<name>.yaml) or YAML path."""
    src = teleop_config_path(controller)
    if not src.is_file():
        known = sorted(x.stem for x in src.parent.glob("*.yaml")) if src.parent.is_dir() else []
        raise TeleopConfigError(f"no teleop controller '{controller}' ({src}); known: {known}")
    cfg = yaml.safe_load(src.read_text()) or {}
    return teleop_config_from_dict(cfg, src)


def teleop_config_from_dict(cfg: dict, src="teleop config") -> TeleopConfig:
    unknown = sorted(set(cfg) - _TOP_KEYS)
    if unknown:
        raise TeleopConfigError(f"{src}: unknown key '{unknown[0]}'; valid keys: {sorted(_TOP_KEYS)}")
    buttons = []
    for label, idx in (cfg.get("buttons") or {}).items():
        try:
            axis = parse_axis_text(str(label))
        except ValueError as e:
            raise TeleopConfigError(f"{src}: buttons: {e}") from None
        buttons.append((_index(idx, f"buttons.{label}", src), str(label), axis))
    stick = None
    if cfg.get("stick"):
        s = dict(cfg["stick"])
        bad = sorted(set(s) - {"axes", "x_direction", "y_direction", "mode", "center", "deadzone", "button"})
        if bad:
            raise TeleopConfigError(f"{src}: stick.{bad[0]}: unknown key")
        axes = s.get("axes")
        if not (isinstance(axes, list) and len(axes) == 2):
            raise TeleopConfigError(f"{src}: stick.axes must be two Joy axis indices")
        xd = _direction(s.get("x_direction"), "stick.x_direction", src)
        yd = _direction(s.get("y_direction"), "stick.y_direction", src)
        if np.linalg.norm(np.cross(xd, yd)) < 1e-3:
            raise TeleopConfigError(f"{src}: stick.x_direction and stick.y_direction must not be parallel")
        mode = str(s.get("mode", "plane"))
        if mode not in ("plane", "hemisphere"):
            raise TeleopConfigError(f"{src}: stick.mode must be plane or hemisphere, got '{mode}'")
        center = _direction(s["center"], "stick.center", src) if "center" in s else validate_axis(np.cross(xd, yd))
        dz = float(s.get("deadzone", 0.5))
        if not 0.0 < dz < 1.0:
            raise TeleopConfigError(f"{src}: stick.deadzone must be in (0, 1), got {dz}")
        btn = s.get("button")
        stick = StickConfig((_index(axes[0], "stick.axes", src), _index(axes[1], "stick.axes", src)), xd, yd, mode,
                            center, dz, None if btn is None else _index(btn, "stick.button", src))
    deadman = None
    if cfg.get("deadman"):
        d = dict(cfg["deadman"])
        if ("button" in d) == ("axis" in d):
            raise TeleopConfigError(f"{src}: deadman needs exactly one of 'button' or 'axis'")
        thr = float(d.get("threshold", 0.5))
        if "axis" in d and not (0.0 < abs(thr) < 1.0):
            raise TeleopConfigError(f"{src}: deadman.threshold must be in (-1, 0) or (0, 1), got {thr}")
        deadman = DeadmanConfig(_index(d["button"], "deadman.button", src) if "button" in d else None,
                                _index(d["axis"], "deadman.axis", src) if "axis" in d else None, thr)
    if not buttons and stick is None and deadman is None:
        raise TeleopConfigError(f"{src}: maps nothing: give buttons, stick and/or deadman")
    timeout = float(cfg.get("joy_timeout", 0.5))
    if not timeout > 0:
        raise TeleopConfigError(f"{src}: joy_timeout must be > 0 s")
    return TeleopConfig(str(cfg.get("name", Path(str(src)).stem)), tuple(buttons), stick, deadman, timeout)


def _get(seq: Sequence, i: int | None, default=0):
    if i is None or i >= len(seq):
        return default
    return seq[i]


class TeleopMapper:
    def __init__(self, cfg: TeleopConfig, initial_axis: Sequence[float] | None = None):
        self.cfg = cfg
        self.axis: np.ndarray | None = None if initial_axis is None else validate_axis(initial_axis)
        self.label = "initial" if initial_axis is not None else ""
        self._prev_buttons: tuple = ()
        self._last_joy: float | None = None
        self._deadman = False
        self.short_messages = 0  # Joy messages with fewer buttons/axes than the config uses

    def _pressed(self, buttons: Sequence[int], i: int | None) -> bool:
        return bool(_get(buttons, i, 0))

    def update(self, buttons: Sequence[int], axes: Sequence[float], now: float) -> bool:
        """Feed one Joy message; True if the rotation axis changed."""
        cfg = self.cfg
        self._last_joy = now
        used_b = [i for i, _, _ in cfg.buttons] + [x for x in (
            cfg.stick.button if cfg.stick else None, cfg.deadman.button if cfg.deadman else None) if x is not None]
        used_a = list(cfg.stick.axes if cfg.stick else ()) + ([cfg.deadman.axis] if cfg.deadman and
                                                                cfg.deadman.axis is not None else [])
        if (used_b and max(used_b) >= len(buttons)) or (used_a and max(used_a) >= len(axes)):
            self.short_messages += 1
        # Dead-man.
        d = cfg.deadman
        if d is None:
            self._deadman = False
        elif d.button is not None:
            self._deadman = self._pressed(buttons, d.button)
        else:
            v = float(_get(axes, d.axis, 0.0))
            self._deadman = math.isfinite(v) and (v <= d.threshold if d.threshold < 0 else v >= d.threshold)
        new_axis, label = None, ""
        # Buttons: a newly pressed one selects its axis (first in config order wins).
        prev = self._prev_buttons
        for i, lab, ax in cfg.buttons:
            if self._pressed(buttons, i) and not (i < len(prev) and prev[i]):
                new_axis, label = ax, lab
                break
        self._prev_buttons = tuple(bool(b) for b in buttons)
        # Stick: while deflected beyond the dead zone (and its button held, if any).
        s = cfg.stick
        if new_axis is None and s is not None and (s.button is None or self._pressed(buttons, s.button)):
            sx, sy = float(_get(axes, s.axes[0], 0.0)), float(_get(axes, s.axes[1], 0.0))
            r = math.hypot(sx, sy)
            if math.isfinite(r) and r >= s.deadzone:
                v = sx * s.x_direction + sy * s.y_direction
                if s.mode == "hemisphere":
                    r1 = min(r, 1.0)
                    v = (v / r) * r1 + math.sqrt(max(0.0, 1.0 - r1 * r1)) * s.center
                try:
                    new_axis, label = validate_axis(v), "stick"
                except ValueError:
                    new_axis = None
        if new_axis is None:
            return False
        changed = self.axis is None or float(np.dot(self.axis, new_axis)) < 1.0 - 1e-9
        self.axis, self.label = new_axis, label
        return changed

    def joy_fresh(self, now: float) -> bool:
        return self._last_joy is not None and now - self._last_joy <= self.cfg.joy_timeout

    def enabled(self, now: float) -> bool:
        """Dead-man held and Joy still arriving. False without a dead-man in the config."""
        return self.cfg.deadman is not None and self._deadman and self.joy_fresh(now)
