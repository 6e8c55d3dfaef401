"""dexndm: ament_python package that also installs with plain pip (see README)."""

import os

from setuptools import find_packages, setup

PACKAGE = "dexndm"
# Folders installed under share/dexndm (ROS convention; pip puts them under <prefix>/share/dexndm).
SHARE_DIRS = ("launch", "config", "urdf", "models")


def share_files():
    files = [
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ]
    for top in SHARE_DIRS:
        for folder, _dirs, names in os.walk(top):
            paths = [os.path.join(folder, n) for n in sorted(names) if not n.endswith(".pyc")]
            if paths:
                files.append((os.path.join("share", PACKAGE, folder), paths))
    return files


# Node executables: `ros2 run dexndm <name>` finds them in lib/dexndm (setup.cfg).
NODES = {
    "hand_driver": "dexndm.ros.hand_driver_node:main",
    "policy": "dexndm.ros.policy_node:main",
    "adaptation": "dexndm.ros.adaptation_node:main",
    "wrist": "dexndm.ros.wrist_node:main",
    "teleop": "dexndm.ros.teleop_node:main",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    description="DexNDM in-hand rotation stack for LEAP/Allegro hands on ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    package_dir={"": "src"},
    packages=find_packages("src"),
    data_files=share_files(),
    zip_safe=False,
    install_requires=[
        "numpy>=1.24",
        "pyyaml>=6",
        # Exact: contact outcomes (a rolling cylinder between fingertips) change between MuJoCo releases; the
        # shipped policy turns about 4.1 rad per 20 s under 4.0.0 and 2.5 rad under 4.0.1 (same seeds).
        "mujoco==4.0.0",
        "torch==2.13.0",
        "rosbags==0.11.9",
        "mcap>=1.1",
        "dynamixel-sdk==4.1.0",
        "matplotlib>=3.6",
        "imageio>=2.30",
        "cma>=3.3",
    ],
    extras_require={
        # ROS 2 Kilted from PyPI wheels, for machines without a ROS installation.
        "ros": [
            "ros-rclpy==9.1.2",
            "ros-rmw-fastrtps-cpp",
            "ros-std-msgs",
            "ros-std-srvs",
            "ros-sensor-msgs",
            "ros-geometry-msgs",
            "ros-trajectory-msgs",
            "ros-diagnostic-msgs",
            "ros-lifecycle-msgs",
            "ros-rosgraph-msgs",
            "ros-builtin-interfaces",
        ],
        "test": [
            "pytest>=8",
            "pytest-timeout>=2",
            "ruff==0.17.5",
            "colcon-core",
            "colcon-ros",
            "colcon-python-setup-py",
            "colcon-package-selection",
        ],
    },
    entry_points={
        "console_scripts": ["dexndm = dexndm.cli:main"]
        + [f"{name} = {target}" for name, target in NODES.items()],
    },
)
