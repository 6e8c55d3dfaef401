"""rosbag2 bags (MCAP, SQLite3) in pure Python: writing, reading, recovery and summaries. No rclpy here."""

from dexndm.bag.io import (
    BagError,
    BagMessage,
    BagReader,
    BagWriter,
    DecodeError,
    JointStateArrays,
    decode,
    joint_states_arrays,
    read_messages,
)

__all__ = [
    "BagError",
    "BagMessage",
    "BagReader",
    "BagWriter",
    "DecodeError",
    "JointStateArrays",
    "decode",
    "joint_states_arrays",
    "read_messages",
]
