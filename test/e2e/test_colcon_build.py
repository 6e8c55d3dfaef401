"""The ROS 2 way: `colcon build` installs share files and node executables where ros2 finds them."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_colcon_build_installs_share_files_and_executables(tmp_path):
    colcon = shutil.which("colcon", path=str(Path(sys.executable).parent))
    if colcon is None:
        pytest.fail("colcon is not installed: pip install -e '.[test]'")
    src = tmp_path / "ws" / "src" / "dexndm"
    # Build from a copy of the tracked tree (as a workspace would check it out), not the live checkout.
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    for f in files:
        if not (REPO / f).is_file():
            continue
        dst = src / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dst)
    ws = tmp_path / "ws"
    r = subprocess.run([colcon, "build", "--base-paths", "src"], cwd=ws, capture_output=True, text=True,
                       env={**os.environ, "COLCON_HOME": str(tmp_path / "colcon_home")})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    inst = ws / "install" / "dexndm"
    share = inst / "share" / "dexndm"
    for rel in ["package.xml", "launch/hand.launch.py", "config/hands/leap.yaml", "config/hands/allegro.yaml",
                "config/reality/leap_default.yaml", "config/objects.yaml", "urdf/leap_hand.urdf",
                "urdf/allegro_hand.urdf"]:
        assert (share / rel).is_file(), f"share/dexndm/{rel} not installed"
    assert (inst / "share" / "ament_index" / "resource_index" / "packages" / "dexndm").is_file()
    for exe in ["hand_driver", "dexndm"]:
        p = inst / "lib" / "dexndm" / exe
        assert p.is_file() and os.access(p, os.X_OK), f"lib/dexndm/{exe} missing (ros2 run looks there)"
    # The installed package finds its share files through the install prefix, not the source tree.
    site = next((inst / "lib").glob("python3*/site-packages"))
    env = {**os.environ, "PYTHONPATH": str(site), "AMENT_PREFIX_PATH": str(inst)}
    r = subprocess.run([sys.executable, "-c", "import dexndm.paths as p; print(p.share_dir())"], capture_output=True,
                       text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == share
