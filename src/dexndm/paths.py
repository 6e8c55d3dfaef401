"""Locate the package's share files (config/, urdf/, launch/, models/).

Search order:
1. ``$DEXNDM_SHARE`` (explicit override);
2. the source checkout this module was imported from (editable install, tests);
3. ``<sys.prefix>/share/dexndm`` (pip install into a virtual environment);
4. the ament index (colcon build / ROS 2 install).
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

PACKAGE = "dexndm"
_MARKER = Path("config") / "hands"


class ShareNotFoundError(FileNotFoundError):
    pass


def _candidates():
    env = os.environ.get("DEXNDM_SHARE")
    if env:
        yield Path(env)
    here = Path(__file__).resolve()
    # src/dexndm/paths.py -> repository root is parents[2]
    if len(here.parents) > 2:
        yield here.parents[2]
    yield Path(sys.prefix) / "share" / PACKAGE
    try:
        from ament_index_python.packages import get_package_share_directory

        yield Path(get_package_share_directory(PACKAGE))
    except Exception:  # noqa: BLE001 - ament index absent or package not registered
        return


@lru_cache(maxsize=1)
def share_dir() -> Path:
    """The directory holding config/, urdf/, launch/ and models/."""
    tried = []
    for cand in _candidates():
        tried.append(str(cand))
        if (cand / _MARKER).is_dir():
            return cand
    raise ShareNotFoundError(
        "dexndm share files (config/hands) not found; tried: "
        + ", ".join(tried)
        + ". Set DEXNDM_SHARE to the package's share directory."
    )


def share_path(*parts: str | os.PathLike) -> Path:
    """Resolve a path relative to the share directory (absolute paths pass through)."""
    p = Path(*parts)
    if p.is_absolute():
        return p
    return share_dir() / p


def shipped_model(pattern: str, given: str | os.PathLike = "") -> str:
    """``given`` when set (made absolute), else the first shipped ``models/<pattern>`` ('' when none ships)."""
    if given:
        return str(Path(given).resolve())
    found = sorted(share_path("models").glob(pattern))
    return str(found[0]) if found else ""


def portable_path(path: str | os.PathLike) -> str:
    """``path`` as an artifact should record it: relative to the share directory when it lies inside it (a
    shipped model, ``models/policy-leap-palmup.pt``, is found there on any machine), else as given."""
    try:
        share = share_dir().resolve()
    except ShareNotFoundError:
        return str(path)
    full = Path(path).resolve()
    return full.relative_to(share).as_posix() if full.is_relative_to(share) else str(path)
