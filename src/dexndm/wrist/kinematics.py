"""Rotations, quaternions ([w, x, y, z], unit) and a small URDF forward kinematics, numpy only.

:class:`UrdfChain` reads the serial chain between two links of a URDF (revolute, continuous,
prismatic and fixed joints; ``origin xyz/rpy`` and ``axis``) and computes the pose of the tip in
the base frame. :func:`solve_ik` is a damped-least-squares solver used offline to compute the
stored arm poses of ``config/arms/*.yaml``; the nodes never run it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ---- rotations ------------------------------------------------------------------------------


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rpy_to_mat(rpy: Sequence[float]) -> np.ndarray:
    """URDF convention: fixed-axis roll (x), pitch (y), yaw (z): R = Rz(yaw) Ry(pitch) Rx(roll)."""
    r, p, y = (float(v) for v in rpy)
    return rot_z(y) @ rot_y(p) @ rot_x(r)


def axis_angle_mat(axis: Sequence[float], angle: float) -> np.ndarray:
    k = np.asarray(axis, dtype=float)
    k = k / np.linalg.norm(k)
    K = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * K + (1.0 - np.cos(angle)) * (K @ K)


def quat_normalize(q: Sequence[float]) -> np.ndarray:
    q = np.asarray(q, dtype=float)
    n = np.linalg.norm(q)
    if q.shape != (4,) or not np.all(np.isfinite(q)) or n < 1e-9:
        raise ValueError(f"quaternion must be 4 finite numbers w,x,y,z, not all zero; got {q.tolist()}")
    q = q / n
    return q if q[0] >= 0 else -q  # one canonical sign (w >= 0)


def quat_to_mat(q: Sequence[float]) -> np.ndarray:
    w, x, y, z = quat_normalize(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def mat_to_quat(R: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion [w, x, y, z] with w >= 0 (Shepperd's method)."""
    R = np.asarray(R, dtype=float)
    t = np.trace(R)
    if t > 0:
        s = 2.0 * np.sqrt(1.0 + t)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    return quat_normalize(q)


def quat_mul(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ])


def quat_angle(a: Sequence[float], b: Sequence[float]) -> float:
    """Rotation angle (rad, in [0, pi]) between two orientations (atan2 form: exact for small angles)."""
    qa, qb = quat_normalize(a), quat_normalize(b)
    rel = quat_mul(qa * np.array([1.0, -1.0, -1.0, -1.0]), qb)
    return 2.0 * float(np.arctan2(np.linalg.norm(rel[1:]), abs(rel[0])))


def slerp(a: Sequence[float], b: Sequence[float], t: float) -> np.ndarray:
    """Shortest-path spherical interpolation a -> b at fraction t in [0, 1]: the result lies t * angle(a, b)
    from a along the arc."""
    qa, qb = quat_normalize(a), quat_normalize(b)
    if float(np.dot(qa, qb)) < 0:
        qb = -qb
    theta = quat_angle(qa, qb) / 2.0  # half the rotation angle = the angle between the 4-vectors
    if theta < 1e-12:
        return qb
    return quat_normalize((np.sin((1 - t) * theta) * qa + np.sin(t * theta) * qb) / np.sin(theta))


def rotation_error(R_target: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Rotation vector (world frame) that takes R to R_target."""
    Re = R_target @ R.T
    c = np.clip((np.trace(Re) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(c)
    v = np.array([Re[2, 1] - Re[1, 2], Re[0, 2] - Re[2, 0], Re[1, 0] - Re[0, 1]])
    if angle < 1e-9:
        return 0.5 * v
    if np.pi - angle < 1e-6:  # 180 deg: axis from the symmetric part
        k = np.sqrt(np.maximum(np.diag(Re) + 1.0, 0.0) / 2.0)
        i = int(np.argmax(k))
        k = Re[:, i] + (np.eye(3)[:, i])
        return angle * k / np.linalg.norm(k)
    return angle * v / (2.0 * np.sin(angle))


def transform(R: np.ndarray, p: Sequence[float]) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = p
    return T


# ---- URDF chain -----------------------------------------------------------------------------


class UrdfError(ValueError):
    pass


@dataclass(frozen=True)
class ChainJoint:
    name: str
    type: str  # revolute | continuous | prismatic | fixed
    origin: np.ndarray  # 4x4 parent link -> joint frame at q = 0
    axis: np.ndarray  # unit, joint frame
    lower: float
    upper: float
    velocity: float

    @property
    def actuated(self) -> bool:
        return self.type != "fixed"


def _floats(text: str | None, n: int, default: Sequence[float], what: str) -> np.ndarray:
    if text is None:
        return np.asarray(default, dtype=float)
    vals = [float(v) for v in text.split()]
    if len(vals) != n:
        raise UrdfError(f"{what}: expected {n} numbers, got '{text}'")
    return np.asarray(vals, dtype=float)


class UrdfChain:
    """The serial chain base_link -> tip_link of a URDF; FK in the order of :attr:`joint_names`."""

    def __init__(self, joints: Sequence[ChainJoint], base: str, tip: str, source: str = ""):
        self.joints = tuple(joints)
        self.base, self.tip, self.source = base, tip, source
        self.actuated = tuple(j for j in self.joints if j.actuated)
        self.joint_names = tuple(j.name for j in self.actuated)
        self.lower = np.array([j.lower for j in self.actuated])
        self.upper = np.array([j.upper for j in self.actuated])
        self.velocity = np.array([j.velocity for j in self.actuated])

    @classmethod
    def from_urdf(cls, path: str | Path, base: str, tip: str) -> UrdfChain:
        path = Path(path)
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError) as e:
            raise UrdfError(f"{path}: cannot read URDF: {e}") from e
        by_child: dict[str, ET.Element] = {}
        links = {el.get("name") for el in root.findall("link")}
        for el in root.findall("joint"):
            child = el.find("child")
            if child is None or el.find("parent") is None:
                raise UrdfError(f"{path}: joint '{el.get('name')}' needs <parent> and <child>")
            by_child[child.get("link")] = el
        for name, what in ((base, "base link"), (tip, "tip link")):
            if name not in links:
                raise UrdfError(f"{path}: {what} '{name}' not in the URDF; links: {sorted(links)}")
        chain: list[ChainJoint] = []
        link = tip
        while link != base:
            el = by_child.get(link)
            if el is None:
                raise UrdfError(f"{path}: link '{tip}' is not below '{base}' (reached root '{link}')")
            chain.append(cls._joint(el, path))
            link = el.find("parent").get("link")
        return cls(list(reversed(chain)), base, tip, str(path))

    @staticmethod
    def _joint(el: ET.Element, path: Path) -> ChainJoint:
        name, jtype = el.get("name"), el.get("type")
        if jtype not in ("revolute", "continuous", "prismatic", "fixed"):
            raise UrdfError(f"{path}: joint '{name}' has type '{jtype}'; supported: revolute, continuous, "
                            "prismatic, fixed")
        org = el.find("origin")
        xyz = _floats(org.get("xyz") if org is not None else None, 3, (0, 0, 0), f"{path}: joint {name} origin xyz")
        rpy = _floats(org.get("rpy") if org is not None else None, 3, (0, 0, 0), f"{path}: joint {name} origin rpy")
        ax = el.find("axis")
        axis = _floats(ax.get("xyz") if ax is not None else None, 3, (1, 0, 0), f"{path}: joint {name} axis")
        if jtype != "fixed" and np.linalg.norm(axis) < 1e-9:
            raise UrdfError(f"{path}: joint '{name}' has a zero axis")
        axis = axis / max(np.linalg.norm(axis), 1e-12)
        lim = el.find("limit")
        lo, hi, vel = -np.inf, np.inf, np.inf
        if lim is not None and jtype in ("revolute", "prismatic"):
            lo, hi = float(lim.get("lower", "0")), float(lim.get("upper", "0"))
            vel = float(lim.get("velocity", "inf"))
        elif jtype in ("revolute", "prismatic"):
            raise UrdfError(f"{path}: {jtype} joint '{name}' needs a <limit>")
        return ChainJoint(name, jtype, transform(rpy_to_mat(rpy), xyz), axis, lo, hi, vel)

    def _q(self, q: Sequence[float] | Mapping[str, float]) -> np.ndarray:
        if isinstance(q, Mapping):
            missing = [n for n in self.joint_names if n not in q]
            if missing:
                raise ValueError(f"joint positions missing for {missing}")
            return np.array([float(q[n]) for n in self.joint_names])
        q = np.asarray(q, dtype=float)
        if q.shape != (len(self.joint_names),):
            raise ValueError(f"expected {len(self.joint_names)} joint positions {list(self.joint_names)}, "
                             f"got {q.shape}")
        return q

    def frames(self, q: Sequence[float] | Mapping[str, float]) -> list[np.ndarray]:
        """4x4 pose (base frame) of each joint frame after its motion, in chain order; last = tip."""
        q = self._q(q)
        T = np.eye(4)
        out = []
        i = 0
        for j in self.joints:
            T = T @ j.origin
            if j.type in ("revolute", "continuous"):
                T = T @ transform(axis_angle_mat(j.axis, q[i]), (0, 0, 0))
                i += 1
            elif j.type == "prismatic":
                T = T @ transform(np.eye(3), j.axis * q[i])
                i += 1
            out.append(T)
        return out

    def fk(self, q: Sequence[float] | Mapping[str, float]) -> np.ndarray:
        """4x4 pose of the tip link in the base link frame."""
        frames = self.frames(q)
        return frames[-1] if frames else np.eye(4)

    def jacobian(self, q: Sequence[float]) -> np.ndarray:
        """6 x n geometric Jacobian of the tip (rows: linear velocity, angular velocity; base frame)."""
        frames = self.frames(q)
        p_tip = frames[-1][:3, 3]
        cols = []
        for j, T in zip(self.joints, frames, strict=True):
            if not j.actuated:
                continue
            a = T[:3, :3] @ j.axis
            if j.type == "prismatic":
                cols.append(np.concatenate([a, np.zeros(3)]))
            else:
                cols.append(np.concatenate([np.cross(a, p_tip - T[:3, 3]), a]))
        return np.array(cols).T


@dataclass(frozen=True)
class IkResult:
    q: np.ndarray
    orientation_error: float  # rad
    position_error: float  # m


def solve_ik(chain: UrdfChain, R_target: np.ndarray, p_target: Sequence[float] | None, q0: Sequence[float],
             lower: np.ndarray, upper: np.ndarray, q_rest: Sequence[float] | None = None,
             position_weight: float = 0.3, rest_weight: float = 0.02, iterations: int = 400,
             damping: float = 0.05) -> IkResult:
    """Orientation (exact) and position (weighted) of the tip, joints kept in [lower, upper]; the
    redundancy is pulled toward q_rest. Damped least squares over the joints not pinned at a limit
    (active set); offline use only."""
    q = np.clip(np.asarray(q0, dtype=float), lower, upper)
    rest = q.copy() if q_rest is None else np.asarray(q_rest, dtype=float)
    n = len(q)
    for _ in range(iterations):
        T = chain.fk(q)
        J = chain.jacobian(q)
        rows, err = [J[3:]], [rotation_error(R_target, T[:3, :3])]
        if p_target is not None:
            rows.insert(0, position_weight * J[:3])
            err.insert(0, position_weight * (np.asarray(p_target) - T[:3, 3]))
        A_full, e = np.vstack(rows), np.concatenate(err)
        free = np.ones(n, dtype=bool)
        for _pass in range(n):
            A = A_full * free
            dq = A.T @ np.linalg.solve(A @ A.T + damping**2 * np.eye(len(e)), e)
            N = np.diag(free.astype(float)) - np.linalg.pinv(A) @ A
            dq += N @ (rest_weight * (rest - q))
            step = np.max(np.abs(dq))
            if step > 0.2:
                dq *= 0.2 / step
            out = free & (((q + dq) < lower) | ((q + dq) > upper))
            if not out.any():
                break
            free &= ~out
        q = np.clip(q + dq, lower, upper)
        if np.max(np.abs(dq)) < 1e-7:
            break
    T = chain.fk(q)
    pos_err = 0.0 if p_target is None else float(np.linalg.norm(np.asarray(p_target) - T[:3, 3]))
    return IkResult(q, float(np.linalg.norm(rotation_error(R_target, T[:3, :3]))), pos_err)
