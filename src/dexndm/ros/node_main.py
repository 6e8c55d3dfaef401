"""One main() for every node: init, spin, and a clean release on Ctrl-C / SIGTERM / crash.

rclpy's own signal handlers would invalidate the context before our cleanup runs (torque off must
still be able to log and, for lifecycle drivers, happen at all), so we take SIGINT/SIGTERM
ourselves and turn them into KeyboardInterrupt.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_node(make: Callable[[], Node], argv: list[str] | None = None,
             start: Callable[[Node], bool] | None = None, release: Callable[[Node], None] | None = None) -> int:
    """make() builds the node; start(node) -> False aborts with status 1; release(node) always runs."""
    rclpy.init(args=argv if argv is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    node = None
    code = 0
    try:
        node = make()
        if start is not None and not start(node):
            return 1
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as e:  # noqa: BLE001 - log, then release below (torque off)
        code = 1
        if node is not None:
            node.get_logger().fatal(f"crashed: {e!r}")
        else:
            print(f"{sys.argv[0]}: {e}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if node is not None:
            try:
                if release is not None:
                    release(node)
            finally:
                node.destroy_node()
        rclpy.try_shutdown()
    return code
