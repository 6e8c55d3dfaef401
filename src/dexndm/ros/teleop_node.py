"""teleop: gamepad (sensor_msgs/Joy) -> rotation axis and dead-man enable.

Subscribes ``joy`` (sensor_msgs/Joy, e.g. from the ``joy`` package's game_controller_node).
Publishes ``dexndm/rotation_axis`` (geometry_msgs/Vector3Stamped, unit vector in the world frame;
on change and then at ``rate`` Hz; nothing until an axis is selected or ``axis`` is set: a zero or
non-finite axis is never published) and, when the controller config has a dead-man,
``dexndm/enable`` (std_msgs/Bool; on change and at ``rate`` Hz): true only while the dead-man is
held and Joy messages keep arriving. Consumers (the policy node) should pause while it is false.

The mapping (buttons -> fixed axes, stick -> general axis, dead-man) comes from
``config/teleop/<controller>.yaml``; see :mod:`dexndm.wrist.teleop`.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

from geometry_msgs.msg import Vector3Stamped  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import Joy  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402

from dexndm.ros.node_main import run_node  # noqa: E402
from dexndm.ros.params import declare  # noqa: E402
from dexndm.wrist.teleop import TeleopMapper, load_teleop_config, parse_axis_text  # noqa: E402


class TeleopNode(Node):
    def __init__(self, **kwargs):
        super().__init__("teleop", **kwargs)
        controller = declare(self, "controller", "gamepad", "button/stick mapping: config/teleop/<controller>.yaml "
                                                           "or a YAML path", read_only=True)
        axis = declare(self, "axis", "", "axis published before any selection (x, -y, 'x,y,z'); '' = none until the "
                                         "operator selects one", read_only=True)
        rate = declare(self, "rate", 10.0, "republish rate of the axis and enable (Hz)", lo=0.5, hi=100.0)
        self.frame_id = declare(self, "frame_id", "world", "frame_id of rotation_axis", read_only=True)
        self.cfg = load_teleop_config(controller)
        self.mapper = TeleopMapper(self.cfg, parse_axis_text(axis) if axis.strip() else None)
        self.pub_axis = self.create_publisher(Vector3Stamped, "dexndm/rotation_axis", 10)
        self.pub_enable = self.create_publisher(Bool, "dexndm/enable", 10) if self.cfg.deadman else None
        self.create_subscription(Joy, "joy", self._on_joy, 10)
        self._enabled: bool | None = None
        self._warned_short = False
        self.create_timer(1.0 / rate, self._on_tick)
        self.get_logger().info(
            f"controller {self.cfg.name}: {len(self.cfg.buttons)} axis buttons, stick "
            f"{'yes' if self.cfg.stick else 'no'}, dead-man {'yes' if self.cfg.deadman else 'no'}")

    def _on_joy(self, msg: Joy) -> None:
        now = time.monotonic()
        changed = self.mapper.update(list(msg.buttons), list(msg.axes), now)
        if self.mapper.short_messages and not self._warned_short:
            self._warned_short = True
            self.get_logger().warning(f"Joy has {len(msg.buttons)} buttons / {len(msg.axes)} axes, fewer than "
                                      f"controller '{self.cfg.name}' uses: those inputs read as released")
        if changed:
            self.get_logger().info(f"rotation axis {self.mapper.label}: {self.mapper.axis.round(3).tolist()}")
            self._publish_axis()
        self._publish_enable(now, only_change=True)

    def _publish_axis(self) -> None:
        a = self.mapper.axis
        if a is None:
            return
        m = Vector3Stamped()
        m.header.stamp = self.get_clock().now().to_msg()
        m.header.frame_id = self.frame_id
        m.vector.x, m.vector.y, m.vector.z = (float(v) for v in a)
        self.pub_axis.publish(m)

    def _publish_enable(self, now: float, only_change: bool = False) -> None:
        if self.pub_enable is None:
            return
        en = self.mapper.enabled(now)
        if only_change and en == self._enabled:
            return
        if en != self._enabled:
            self.get_logger().info(f"policy {'enabled' if en else 'paused'} (dead-man {'held' if en else 'released'})")
        self._enabled = en
        self.pub_enable.publish(Bool(data=en))

    def _on_tick(self) -> None:
        self._publish_axis()
        self._publish_enable(time.monotonic())


def main(argv: list[str] | None = None) -> int:
    return run_node(TeleopNode, argv)


if __name__ == "__main__":
    sys.exit(main())
