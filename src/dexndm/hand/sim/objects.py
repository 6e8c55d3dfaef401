"""Built-in objects (config/objects.yaml) with settable size, mass and friction."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import yaml

from dexndm.paths import share_path

SHAPES = {"cylinder": 2, "box": 3, "sphere": 1, "capsule": 2}


@dataclass(frozen=True)
class ObjectSpec:
    """shape: cylinder|box|sphere|capsule; size: MuJoCo size (m); mass: kg; friction: sliding coeff."""

    name: str
    shape: str
    size: tuple[float, ...]
    mass: float
    friction: float

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"object '{self.name}': shape '{self.shape}' unknown; valid: {sorted(SHAPES)}")
        if len(self.size) != SHAPES[self.shape]:
            raise ValueError(
                f"object '{self.name}': size for a {self.shape} needs {SHAPES[self.shape]} numbers, got {list(self.size)}"
            )
        if any(s <= 0 or s > 0.2 for s in self.size):
            raise ValueError(f"object '{self.name}': size values must be in (0, 0.2] m, got {list(self.size)}")
        if not 0 < self.mass <= 1.0:
            raise ValueError(f"object '{self.name}': mass must be in (0, 1] kg, got {self.mass}")
        if not 0 < self.friction <= 5.0:
            raise ValueError(f"object '{self.name}': friction must be in (0, 5], got {self.friction}")

    @property
    def radius(self) -> float:
        """Extent from the centre along the palm normal when resting (m)."""
        if self.shape == "box":
            return float(self.size[2])
        return float(self.size[0])

    def with_(self, **kw) -> ObjectSpec:
        return replace(self, **kw)


@lru_cache(maxsize=1)
def _catalog() -> dict:
    with open(share_path("config", "objects.yaml")) as f:
        return yaml.safe_load(f)


def object_names() -> list[str]:
    return sorted(_catalog()["objects"])


def object_sets() -> dict[str, list[str]]:
    return {k: list(v) for k, v in _catalog()["sets"].items()}


def get_object(name: str, **overrides) -> ObjectSpec:
    """A built-in object by name; overrides (size, mass, friction) replace catalog values."""
    objs = _catalog()["objects"]
    if name not in objs:
        raise KeyError(f"unknown object '{name}'; built-in objects: {sorted(objs)}")
    d = dict(objs[name])
    d.update({k: v for k, v in overrides.items() if v is not None})
    return ObjectSpec(name=name, shape=d["shape"], size=tuple(float(s) for s in d["size"]),
                      mass=float(d["mass"]), friction=float(d["friction"]))


def resolve_objects(spec: str) -> list[ObjectSpec]:
    """'regular' (a set), 'cube_50' (an object) or 'cube_50,cylinder_45' -> objects."""
    sets = object_sets()
    out: list[ObjectSpec] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        if part in sets:
            out.extend(get_object(n) for n in sets[part])
        else:
            try:
                out.append(get_object(part))
            except KeyError:
                raise KeyError(f"'{part}' is neither an object set {sorted(sets)} nor an object {object_names()}") from None
    if not out:
        raise KeyError("no objects given")
    return out
