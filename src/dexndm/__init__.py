"""dexndm: DexNDM in-hand rotation stack (hardware-agnostic core + thin ROS 2 nodes)."""

__version__ = "0.1.0"
