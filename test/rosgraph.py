"""Test helpers for real rclpy graphs: a probe node in its own context and launched processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor

from dexndm.hand.dynamixel.emulator import EmulatorControl

REPO = Path(__file__).resolve().parents[1]


class Probe:
    """A node in a private context spun in a background thread; records messages per topic."""

    def __init__(self, name: str = "probe"):
        self.context = Context()
        rclpy.init(context=self.context, domain_id=int(os.environ["ROS_DOMAIN_ID"]))
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.msgs: dict[str, list] = defaultdict(list)
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._stop = False
        self._thread.start()

    def _spin(self):
        while not self._stop and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def subscribe(self, msg_type, topic: str, qos: int = 50):
        def cb(msg):
            with self._lock:
                self.msgs[topic].append(msg)
                self.arrivals[topic].append(time.monotonic())

        return self.node.create_subscription(msg_type, topic, cb, qos)

    def publisher(self, msg_type, topic: str):
        return self.node.create_publisher(msg_type, topic, 10)

    def wait_for(self, topic: str, count: int = 1, timeout: float = 20.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.msgs[topic]) >= count:
                    return list(self.msgs[topic])
            time.sleep(0.02)
        raise TimeoutError(f"{topic}: got {len(self.msgs[topic])} of {count} messages in {timeout} s")

    def latest(self, topic: str):
        with self._lock:
            return self.msgs[topic][-1] if self.msgs[topic] else None

    def clear(self, topic: str | None = None):
        with self._lock:
            for t in [topic] if topic else list(self.msgs):
                self.msgs[t].clear()
                self.arrivals[t].clear()

    def call(self, srv_type, name: str, request, timeout: float = 10.0):
        cli = self.node.create_client(srv_type, name)
        if not cli.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {name} not available")
        fut = cli.call_async(request)
        deadline = time.monotonic() + timeout
        while not fut.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not fut.done():
            raise TimeoutError(f"service {name} did not answer")
        return fut.result()

    def close(self):
        self._stop = True
        self._thread.join(timeout=2)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Launched:
    """`dexndm launch ...` (or any dexndm CLI) as a subprocess with captured output."""

    def __init__(self, *args: str, env: dict | None = None):
        e = dict(os.environ)
        e.update(env or {})
        self.proc = subprocess.Popen([sys.executable, "-m", "dexndm.cli", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=e, cwd=REPO, start_new_session=True)
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_output(self, text: str, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output:
                return True
            if self.proc.poll() is not None:
                time.sleep(0.2)
                return text in self.output
            time.sleep(0.05)
        return False

    def interrupt(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise

    def wait(self, timeout: float = 60.0) -> int:
        rc = self.proc.wait(timeout)
        self._t.join(timeout=2)
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            try:
                self.interrupt()
            except subprocess.TimeoutExpired:
                pass


class Emulator:
    """`dexndm emulate-bus` as a process, with its pty link and control socket."""

    def __init__(self, tmp_path: Path, hand: str = "leap", *extra: str):
        self.port = str(tmp_path / "bus")
        self.ctl_path = str(tmp_path / "bus.ctl")
        self.proc = Launched("emulate-bus", "--hand", hand, "--link", self.port, "--control", self.ctl_path, *extra)
        assert self.proc.wait_output("Control socket", 30), self.proc.output
        self.ctl = EmulatorControl(self.ctl_path)

    def servos(self) -> list[dict]:
        return self.ctl.snapshot()

    def column(self, key: str) -> list:
        return [s[key] for s in self.servos()]

    def close(self) -> None:
        self.ctl.close()
        self.proc.interrupt()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- message helpers shared by the ROS tests -------------------------------------------------


def positions(msg, names) -> np.ndarray:
    """A JointState's positions for ``names``, by name (any order in the message)."""
    idx = {n: i for i, n in enumerate(msg.name)}
    return np.array([msg.position[idx[n]] for n in names])


def command(names, values):
    """A JointState position command by joint name."""
    from sensor_msgs.msg import JointState

    m = JointState()
    m.name = list(names)
    m.position = [float(v) for v in values]
    return m


def statuses(msg) -> dict:
    """DiagnosticArray -> {status name: DiagnosticStatus}."""
    return {s.name: s for s in msg.status}


def values(status) -> dict[str, str]:
    """DiagnosticStatus key/values as a dict."""
    return {kv.key: kv.value for kv in status.values}
