"""Test-wide setup: keep DDS on this machine and give each test process its own domain."""

import os
import sys
from pathlib import Path

# Must be set before rclpy initialises: without it DDS discovery multicasts onto the network.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
# Parallel test processes (and two CI runs on one machine) must not hear each other.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYTHONUNBUFFERED", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))
