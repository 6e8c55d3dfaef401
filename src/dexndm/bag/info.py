"""Summaries of a bag: storage, files, size, time span, and per topic the type, count and rate."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dexndm.bag.io import BagReader


@dataclass(frozen=True)
class TopicStats:
    """One topic. Times in ns (bag clock); ``frequency_hz`` is (count - 1) / (last - first), 0 if undefined."""

    name: str
    msgtype: str
    count: int
    first_ns: int | None
    last_ns: int | None
    frequency_hz: float
    type_hash: str = ""
    qos: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class BagInfo:
    path: Path
    storage: str
    version: int
    ros_distro: str
    files: list[tuple[str, int]]  # (file name, size in bytes)
    message_count: int
    start_ns: int | None
    end_ns: int | None
    topics: list[TopicStats]
    custom_data: dict[str, str] | None = None

    @property
    def size_bytes(self) -> int:
        return sum(size for _, size in self.files)

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) * 1e-9 if self.start_ns is not None else 0.0


def bag_info(path: str | os.PathLike) -> BagInfo:
    """Read a bag's metadata and scan its message times (raises :class:`~dexndm.bag.io.BagError`)."""
    with BagReader(path) as bag:
        firsts: dict[str, int] = {}
        lasts: dict[str, int] = {}
        counts: dict[str, int] = {}
        for m in bag.messages():
            firsts.setdefault(m.topic, m.t_ns)
            lasts[m.topic] = m.t_ns
            counts[m.topic] = counts.get(m.topic, 0) + 1
        topics = []
        for name, meta in sorted(bag.topics.items()):
            n = counts.get(name, 0)
            first, last = firsts.get(name), lasts.get(name)
            freq = (n - 1) / ((last - first) * 1e-9) if n > 1 and last > first else 0.0
            topics.append(TopicStats(name, meta.msgtype, n, first, last, freq, meta.type_hash, meta.qos))
        info = bag.metadata
        return BagInfo(
            path=bag.path,
            storage=bag.storage,
            version=int(info["version"]),
            ros_distro=str(info.get("ros_distro") or ""),
            files=[(p.name, p.stat().st_size) for p in bag.files],
            message_count=sum(counts.values()),
            start_ns=min(firsts.values()) if firsts else None,
            end_ns=max(lasts.values()) if lasts else None,
            topics=topics,
            custom_data=info.get("custom_data") or None,
        )


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _stamp(ns: int | None) -> str:
    if ns is None:
        return "-"
    when = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.timezone.utc)
    sec, nsec = divmod(ns, 1_000_000_000)
    return f"{when:%Y-%m-%d %H:%M:%S}.{nsec:09d} UTC ({sec}.{nsec:09d})"


def format_info(info: BagInfo) -> str:
    """The ``dexndm bag info`` text."""
    distro = f", recorded by {info.ros_distro}" if info.ros_distro else ""
    lines = [
        f"Bag:          {info.path}",
        f"Storage:      {info.storage} (rosbag2 metadata version {info.version}{distro})",
        f"Files:        {', '.join(name for name, _ in info.files)}",
        f"Size:         {_size(info.size_bytes)} ({info.size_bytes} bytes)",
        f"Duration:     {info.duration_s:.3f} s",
        f"Start:        {_stamp(info.start_ns)}",
        f"End:          {_stamp(info.end_ns)}",
        f"Messages:     {info.message_count}",
        f"Topics:       {len(info.topics)}",
    ]
    if info.custom_data:
        lines.append("Custom data:  " + ", ".join(f"{k}={v}" for k, v in sorted(info.custom_data.items())))
    if info.topics:
        width = max(len(t.name) for t in info.topics)
        twidth = max(len(t.msgtype) for t in info.topics)
        for t in info.topics:
            lines.append(
                f"  {t.name:<{width}}  {t.msgtype:<{twidth}}  {t.count:>8} msgs  {t.frequency_hz:10.2f} Hz"
            )
    return "\n".join(lines)
