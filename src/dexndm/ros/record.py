"""Recorder: subscribe to topics with ``raw=True`` and store the exact wire bytes in a rosbag2 bag.

Topic types come from the ROS graph: a requested topic is subscribed as soon as a publisher for it
appears; with ``all_topics`` every new (non-hidden) topic is picked up while recording. The subscription
QoS is adapted to the publishers' offers as rosbag2 does (reliable only if every publisher is reliable,
transient-local only if every publisher is), and the offered profiles are stored in the bag. Each
message is stamped with its receive time (rmw reception timestamp, Unix epoch ns). Data is flushed at
least every ``flush_interval`` seconds, so a killed recorder loses at most that much.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402

from dexndm.bag.io import BagError, BagWriter  # noqa: E402


def import_message_type(msgtype: str) -> Any:
    """The rclpy message class for ``pkg/msg/Name`` (raises ImportError if it is not installed)."""
    parts = msgtype.split("/")
    if len(parts) != 3:
        raise ImportError(f"malformed message type {msgtype!r} (expected pkg/msg/Name)")
    pkg, kind, name = parts
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"message type {msgtype} is not installed ({exc})") from None


def qos_profile_to_dict(profile: QoSProfile) -> dict[str, Any]:
    """An rclpy QoS profile in rosbag2 metadata (v9) form."""
    from dexndm.bag.io import normalize_qos

    return normalize_qos(
        {
            "history": int(profile.history),
            "depth": int(profile.depth),
            "reliability": int(profile.reliability),
            "durability": int(profile.durability),
            "deadline": profile.deadline.nanoseconds,
            "lifespan": profile.lifespan.nanoseconds,
            "liveliness": int(profile.liveliness),
            "liveliness_lease_duration": profile.liveliness_lease_duration.nanoseconds,
            "avoid_ros_namespace_conventions": bool(profile.avoid_ros_namespace_conventions),
        }
    )


def adapt_request_to_offers(offers: Sequence[QoSProfile]) -> QoSProfile:
    """Subscription QoS that connects to every publisher (rosbag2's ``adapt_request_to_offers``)."""
    depth = max((int(p.depth) for p in offers), default=0)
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth) if depth > 1 else QoSProfile(
        history=HistoryPolicy.KEEP_ALL, depth=1000
    )
    reliable = bool(offers) and all(p.reliability == ReliabilityPolicy.RELIABLE for p in offers)
    latched = bool(offers) and all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in offers)
    qos.reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
    qos.durability = DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE
    return qos


def is_hidden(topic: str) -> bool:
    return any(part.startswith("_") for part in topic.split("/"))


def normalize_topic(topic: str) -> str:
    return topic if topic.startswith("/") else "/" + topic


@dataclass(frozen=True)
class RecordOptions:
    output: Path
    topics: tuple[str, ...] = ()
    all_topics: bool = False
    storage: str = "mcap"
    compression: str = "none"
    max_bag_size: int = 0
    max_bag_duration: float = 0.0
    duration: float = 0.0
    flush_interval: float = 0.25
    discovery_interval: float = 0.1


class Recorder:
    """Subscribes to topics on ``node`` and writes what arrives into ``writer`` (an open BagWriter)."""

    def __init__(self, node: Node, writer: BagWriter, topics: Sequence[str] = (), all_topics: bool = False):
        self.node = node
        self.writer = writer
        self.requested = [normalize_topic(t) for t in topics]
        self.all_topics = all_topics
        self._subs: dict[str, Any] = {}
        self._skipped: set[str] = set()
        self._announced_wait = False
        self.error: BaseException | None = None

    @property
    def subscribed(self) -> list[str]:
        return list(self._subs)

    @property
    def waiting_for(self) -> list[str]:
        return [t for t in self.requested if t not in self._subs and t not in self._skipped]

    @property
    def discovery_done(self) -> bool:
        return not self.all_topics and not self.waiting_for

    def poll_graph(self) -> None:
        """Subscribe to wanted topics that now have publishers."""
        log = self.node.get_logger()
        graph = dict(self.node.get_topic_names_and_types())
        candidates = self.waiting_for if not self.all_topics else [t for t in graph if not is_hidden(t)]
        for topic in candidates:
            if topic in self._subs or topic in self._skipped:
                continue
            pubs = self.node.get_publishers_info_by_topic(topic)
            if not pubs:
                continue
            types = sorted({p.topic_type for p in pubs})
            msgtype = types[0]
            if len(types) > 1:
                log.warning(f"{topic}: publishers disagree on the type ({', '.join(types)}); recording {msgtype}")
            try:
                cls = import_message_type(msgtype)
            except ImportError as exc:
                log.error(f"{topic}: cannot record: {exc}")
                self._skipped.add(topic)
                continue
            offers = [p.qos_profile for p in pubs if p.topic_type == msgtype]
            type_hash = next((str(p.topic_type_hash) for p in pubs if p.topic_type == msgtype), "")
            self.writer.add_topic(
                topic,
                msgtype,
                qos=[qos_profile_to_dict(q) for q in offers],
                type_hash=type_hash if type_hash.startswith("RIHS01_") else None,
            )
            self._subs[topic] = self.node.create_subscription(
                cls,
                topic,
                lambda raw, info, _topic=topic: self._on_message(_topic, raw, info),
                adapt_request_to_offers(offers),
                raw=True,
            )
            print(f"Subscribed to {topic} [{msgtype}]", flush=True)
        if self.waiting_for and not self._announced_wait:
            print(f"Waiting for publishers on {', '.join(self.waiting_for)}", flush=True)
            self._announced_wait = True

    def _on_message(self, topic: str, raw: bytes, info: Any) -> None:
        if self.error is not None:
            return
        t_ns = 0
        source_ns = None
        sequence = 0
        if isinstance(info, dict):
            t_ns = int(info.get("received_timestamp") or 0)
            source_ns = info.get("source_timestamp") or None
            sequence = int(info.get("publication_sequence_number") or 0)
        if t_ns <= 0:
            t_ns = time.time_ns()
        try:
            self.writer.write(topic, t_ns, raw, publish_ns=source_ns, sequence=sequence)
        except (OSError, BagError) as exc:  # disk full, file removed: stop cleanly with what we have
            self.error = exc

    def flush(self) -> None:
        if self.error is None:
            try:
                self.writer.flush()
            except (OSError, BagError) as exc:
                self.error = exc


def run_recorder(opts: RecordOptions, stop: threading.Event | None = None) -> int:
    """Record until SIGINT/SIGTERM, ``stop`` or ``opts.duration``; always closes the bag cleanly."""
    stop = stop or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    writer = BagWriter(
        opts.output,
        opts.storage,
        atomic=False,
        compression=opts.compression,
        flush_interval=opts.flush_interval,
        max_file_size=opts.max_bag_size,
        max_file_duration=opts.max_bag_duration,
    )
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = None
    executor = None
    code = 1
    try:
        writer.open()
        node = rclpy.create_node(f"dexndm_recorder_{os.getpid()}")
        recorder = Recorder(node, writer, opts.topics, opts.all_topics)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        node.create_timer(opts.flush_interval, recorder.flush)
        print(f"Recording to {opts.output} ({opts.storage})", flush=True)
        start = time.monotonic()
        next_poll = start
        while not stop.is_set():
            now = time.monotonic()
            if opts.duration and now - start >= opts.duration:
                break
            if now >= next_poll and not recorder.discovery_done:
                recorder.poll_graph()
                next_poll = now + opts.discovery_interval
            executor.spin_once(timeout_sec=0.05)
            if recorder.error is not None:
                print(f"dexndm record: error: {recorder.error}; stopping", file=sys.stderr)
                break
        code = 1 if recorder.error is not None else 0
    finally:
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if not writer.closed and writer.file_names:
            try:
                path = writer.close()
                print(
                    f"Recorded {writer.message_count} messages on {len(writer.topics)} topics to {path}", flush=True
                )
            except (OSError, BagError) as exc:
                print(f"dexndm record: error: closing the bag failed: {exc}", file=sys.stderr)
                code = 1
    return code
