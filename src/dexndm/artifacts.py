"""Model artifacts on disk: ``torch.save({"format", "metadata", "state_dict"})``, written atomically.

Every artifact (policy, NDM, residual) carries its own metadata -- joint order, history length,
normaliser, provenance -- so loading code never re-types a training constant.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch


def software_versions() -> dict[str, str]:
    """The library versions a result depends on. Contact outcomes differ between MuJoCo releases (the
    shipped policy turns 4.1 rad per 20 s under MuJoCo 4.0.0 and 2.5 rad under 4.0.1, same seeds), so
    artifacts and evaluation reports record them."""
    import mujoco
    import numpy

    return {"mujoco": mujoco.__version__, "torch": torch.__version__.split("+")[0], "numpy": numpy.__version__}


def version_mismatch(metadata: Mapping[str, Any], what: str) -> str:
    """A warning when this artifact was made under another MuJoCo release than the running one ('' if not,
    or if the artifact does not record it)."""
    made = (metadata.get("software") or {}).get("mujoco")
    now = software_versions()["mujoco"]
    if not made or made == now:
        return ""
    return (f"{what} was made under MuJoCo {made}, this is MuJoCo {now}: simulated contacts differ between "
            f"releases, so its recorded metrics may not reproduce (install mujoco=={made})")


def save_artifact(path: str | Path, fmt: str, metadata: Mapping[str, Any], state_dict: Mapping[str, Any]) -> Path:
    """Write atomically (temp file + rename): a crash never leaves half a model under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    md = dict(metadata)
    md.setdefault("software", software_versions())
    torch.save({"format": fmt, "metadata": md, "state_dict": dict(state_dict)}, tmp)
    tmp.replace(path)
    return path


def load_artifact(path: str | Path, fmt: str, required: Sequence[str], error: type[Exception],
                  what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata, state_dict) of an artifact of format ``fmt``; ``error(message naming the file)`` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} file {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise error(f"{path}: not a readable {what} artifact ({e.__class__.__name__}: {e})") from e
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise error(f"{path}: format is {found!r}, expected {fmt!r} (is this a {what} artifact?)")
    md = blob.get("metadata")
    if not isinstance(md, dict) or not isinstance(blob.get("state_dict"), dict):
        raise error(f"{path}: artifact has no metadata or state_dict")
    missing = [k for k in required if k not in md]
    if missing:
        raise error(f"{path}: metadata misses {missing}")
    return md, blob["state_dict"]


def file_digest(path: str | Path) -> str:
    """Short SHA-256 of a file's bytes: which exact artifact another one was made for (a residual
    records the policy it was trained on; a copy of the file has the same digest, a retrained one not)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]
