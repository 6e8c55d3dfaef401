"""Player: publish a bag's serialized messages with their recorded timing, optionally driving /clock.

Messages are published as stored (``Publisher.publish(bytes)``, no decode/re-encode) with the
publisher QoS rebuilt from the bag's offered profiles (rosbag2's ``adapt_offer_to_recorded_offers``).
Pacing uses absolute deadlines on the monotonic clock, ``wall0 + (t - t0) / rate``, so lateness never
accumulates: the thread sleeps until just before a deadline and spins the last fraction of a
millisecond. With ``clock_hz`` a ``rosgraph_msgs/Clock`` is published at that wall rate carrying the
playback time, so nodes with ``use_sim_time`` follow the bag.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from rclpy.duration import Duration  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import (  # noqa: E402
    DurabilityPolicy,
    HistoryPolicy,
    LivelinessPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.signals import SignalHandlerOptions  # noqa: E402

from dexndm.bag.io import INFINITE_NS, BagError, BagReader  # noqa: E402
from dexndm.ros.record import import_message_type, normalize_topic  # noqa: E402

# Busy-wait this long before a deadline instead of sleeping. Under CFS a wake-up is ~0.05-0.1 ms late
# when idle but can be 3-5 ms late when the cores are busy; with SCHED_FIFO it is a few microseconds.
SPIN_NS = 300_000
SPIN_NS_REALTIME = 50_000
LEAD_NS = 5_000_000  # the first message is due this long after playback starts
REALTIME_PRIORITY = 10  # low SCHED_FIFO priority: above every normal task, below kernel/IRQ threads
MAX_SLEEP_NS = 100_000_000  # stay responsive to stop requests
DEFAULT_DEPTH = 10
_COMPAT_KEYS = ("reliability", "durability", "deadline", "liveliness", "liveliness_lease_duration")


def _ns(d: dict[str, int]) -> int:
    return int(d["sec"]) * 1_000_000_000 + int(d["nsec"])


def qos_from_recorded(profiles: list[dict[str, Any]], depth: int = DEFAULT_DEPTH) -> QoSProfile:
    """Publisher QoS for replaying a topic recorded with these offered profiles (normalized v9 dicts).

    Identical offers (on the policies that matter for compatibility) are reproduced with a keep-last
    history; mixed or missing offers give the default (reliable, volatile, keep last ``depth``)."""
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth)
    if not profiles or any(p[k] != profiles[0][k] for p in profiles[1:] for k in _COMPAT_KEYS):
        return qos
    p = profiles[0]
    if p["reliability"] in ("reliable", "best_effort"):
        qos.reliability = ReliabilityPolicy.RELIABLE if p["reliability"] == "reliable" else ReliabilityPolicy.BEST_EFFORT
    if p["durability"] in ("volatile", "transient_local"):
        qos.durability = (
            DurabilityPolicy.TRANSIENT_LOCAL if p["durability"] == "transient_local" else DurabilityPolicy.VOLATILE
        )
    if p["liveliness"] == "manual_by_topic":
        qos.liveliness = LivelinessPolicy.MANUAL_BY_TOPIC
    for key in ("deadline", "lifespan", "liveliness_lease_duration"):
        ns = _ns(p[key])
        if 0 < ns < INFINITE_NS:
            setattr(qos, key, Duration(nanoseconds=ns))
    return qos


def try_realtime_pacing() -> bool:
    """Move the calling thread (only) to SCHED_FIFO if permitted; False if not (normal scheduling stays)."""
    if not hasattr(os, "sched_setscheduler"):
        return False
    try:
        priority = min(REALTIME_PRIORITY, os.sched_get_priority_max(os.SCHED_FIFO))
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError:
        return False
    return True


def end_realtime_pacing() -> None:
    """Back to normal scheduling, so that bookkeeping after playback cannot starve the DDS threads."""
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (OSError, AttributeError):
        pass


@dataclass(frozen=True)
class PlayOptions:
    bag: Path
    rate: float = 1.0
    loop: bool = False
    topics: tuple[str, ...] = ()
    start_offset: float = 0.0
    clock_hz: float = 0.0
    delay: float = 0.0
    wait_for_subscribers: float = 0.0
    realtime: bool = True  # pace from a SCHED_FIFO thread when the OS allows it


@dataclass
class PlayStats:
    published: int = 0
    loops: int = 0
    lateness_ns: list[int] = field(default_factory=list)  # publish time minus deadline, per message

    def summary(self) -> str:
        if not self.lateness_ns:
            return f"published {self.published} messages"
        late = np.asarray(self.lateness_ns) * 1e-6
        return (
            f"published {self.published} messages; lateness vs schedule p50 {np.percentile(late, 50):.3f} ms, "
            f"p99 {np.percentile(late, 99):.3f} ms, max {late.max():.3f} ms"
        )


class Player:
    """Publishes the messages of an open :class:`BagReader` on ``node``."""

    def __init__(self, node: Node, bag: BagReader, opts: PlayOptions):
        if not opts.rate > 0:
            raise ValueError(f"rate must be > 0, got {opts.rate}")
        if opts.start_offset < 0:
            raise ValueError(f"start offset must be >= 0, got {opts.start_offset}")
        self.node = node
        self.bag = bag
        self.opts = opts
        topics = bag.topics
        wanted = [normalize_topic(t) for t in opts.topics] or sorted(topics)
        if missing := [t for t in wanted if t not in topics]:
            raise BagError(bag.path, f"no topic {', '.join(missing)} in the bag (it has {', '.join(sorted(topics))})")
        self.publishers: dict[str, Any] = {}
        for name in wanted:
            meta = topics[name]
            try:
                cls = import_message_type(meta.msgtype)
            except ImportError as exc:
                node.get_logger().error(f"{name}: skipped: {exc}")
                continue
            self.publishers[name] = node.create_publisher(cls, name, qos_from_recorded(meta.qos))
        if not self.publishers:
            raise BagError(bag.path, "none of the selected topics has an installed message type; nothing to play")
        self._clock_pub = None
        if opts.clock_hz > 0:
            from rosgraph_msgs.msg import Clock

            self._clock_cls = Clock
            self._clock_pub = node.create_publisher(Clock, "/clock", QoSProfile(depth=1))
        self._clock_next: int | None = None
        self.spin_ns = SPIN_NS

    def wait_for_subscribers(self, timeout: float, stop: threading.Event) -> bool:
        """Wait until every publisher has a matched subscription (at most ``timeout`` s)."""
        end = time.monotonic() + timeout
        while not stop.is_set() and time.monotonic() < end:
            if all(p.get_subscription_count() > 0 for p in self.publishers.values()):
                stop.wait(0.2)  # let the subscriber side finish matching too
                return True
            stop.wait(0.02)
        return False

    def _publish_clock(self, bag_ns: int) -> None:
        msg = self._clock_cls()
        msg.clock.sec, msg.clock.nanosec = divmod(int(bag_ns), 1_000_000_000)
        self._clock_pub.publish(msg)

    def _wait_until(self, deadline: int, wall0: int, t0: int, stop: threading.Event) -> bool:
        """Sleep/spin until ``deadline`` (monotonic ns), publishing due /clock ticks on the way."""
        period = round(1e9 / self.opts.clock_hz) if self._clock_pub is not None else 0
        while True:
            now = time.monotonic_ns()
            if self._clock_next is not None and self._clock_next <= min(now, deadline):
                self._publish_clock(t0 + (self._clock_next - wall0) * self.opts.rate)
                self._clock_next += period
                continue
            target = deadline if self._clock_next is None else min(deadline, self._clock_next)
            remaining = target - now
            if remaining <= 0:
                if target == deadline:
                    return True
                continue
            if stop.is_set():
                return False
            if remaining > self.spin_ns:
                time.sleep(min(remaining - self.spin_ns, MAX_SLEEP_NS) * 1e-9)

    def play(self, stop: threading.Event) -> PlayStats:
        stats = PlayStats()
        start = self.bag.start_ns
        if start is None:
            return stats
        t0 = start + round(self.opts.start_offset * 1e9)
        rate = self.opts.rate
        pubs = self.publishers
        wall0 = None
        while not stop.is_set():
            messages = self.bag.messages(list(pubs), start_ns=t0)
            first = next(messages, None)  # opening the storage is not charged to the first deadline
            if first is None:
                break
            if wall0 is None:
                wall0 = time.monotonic_ns() + LEAD_NS
                if self._clock_pub is not None:
                    self._publish_clock(t0)
                    self._clock_next = wall0 + round(1e9 / self.opts.clock_hz)
            last_t = t0
            for m in itertools.chain((first,), messages):
                deadline = wall0 + round((m.t_ns - t0) / rate)
                if not self._wait_until(deadline, wall0, t0, stop):
                    return stats
                pubs[m.topic].publish(m.rawdata)
                stats.lateness_ns.append(time.monotonic_ns() - deadline)
                stats.published += 1
                last_t = m.t_ns
            stats.loops += 1
            if not self.opts.loop:
                break
            wall0 += round((last_t - t0) / rate)  # the next pass starts where this one ended
        self._clock_next = None
        return stats

    def drain(self, timeout: float = 1.0) -> None:
        """Give reliable subscribers a moment to acknowledge the last messages before exiting."""
        for pub in self.publishers.values():
            if pub.qos_profile.reliability == ReliabilityPolicy.RELIABLE:
                pub.wait_for_all_acked(Duration(nanoseconds=round(timeout * 1e9)))


def run_player(opts: PlayOptions, stop: threading.Event | None = None) -> int:
    """Play until the bag ends (or forever with ``loop``), SIGINT/SIGTERM or ``stop``."""
    stop = stop or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    node = None
    try:
        with BagReader(opts.bag) as bag:
            rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
            try:
                node = rclpy.create_node(f"dexndm_player_{os.getpid()}")
                player = Player(node, bag, opts)
                if opts.delay > 0:
                    stop.wait(opts.delay)
                if opts.wait_for_subscribers > 0 and not player.wait_for_subscribers(opts.wait_for_subscribers, stop):
                    print("dexndm play: warning: not every topic has a subscriber yet; playing anyway", file=sys.stderr)
                # After rclpy.init, so that only this thread (not the DDS threads) runs SCHED_FIFO.
                realtime = opts.realtime and try_realtime_pacing()
                if realtime:
                    player.spin_ns = SPIN_NS_REALTIME
                pacing = "SCHED_FIFO" if realtime else "normal scheduling"
                print(f"Playing {opts.bag}: {', '.join(player.publishers)} at rate {opts.rate:g} ({pacing})", flush=True)
                begin = time.monotonic()
                stats = player.play(stop)
                if realtime:
                    end_realtime_pacing()
                print(f"Done after {time.monotonic() - begin:.2f} s: {stats.summary()}", flush=True)
                player.drain()
            finally:
                if node is not None:
                    node.destroy_node()
                rclpy.try_shutdown()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
