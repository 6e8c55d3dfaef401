"""Read and write rosbag2 bags (MCAP or SQLite3) in pure Python, without a ROS installation.

Writing: :class:`BagWriter` stores serialized CDR messages exactly as given (wire bytes stay byte-faithful)
and writes ``metadata.yaml`` the way rosbag2 Kilted does (metadata version 9, offered QoS profiles as a
list, RIHS01 type description hashes). Data is flushed in complete MCAP chunks (or SQLite transactions) at
least every ``flush_interval`` seconds, so a process killed mid-recording leaves a file that
:mod:`dexndm.bag.reindex` can recover up to the last flush. With ``atomic=True`` the bag is written into
``<path>.partial`` and renamed to ``<path>`` only when it is complete.

Reading: :class:`BagReader` / :func:`read_messages` wrap ``rosbags.highlevel.AnyReader`` and read bags
written by dexndm, by ``rosbags`` and by ROS 2 itself (Humble to Kilted, MCAP or SQLite3). Problems are
raised as :class:`BagError`, whose message names the file and the problem on one line.

Times are integer nanoseconds (``*_ns``) in the bag's clock (receive time, Unix epoch for recordings);
:func:`joint_states_arrays` converts to seconds.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import yaml

STORAGES = ("mcap", "sqlite3")
STORAGE_SUFFIX = {"mcap": ".mcap", "sqlite3": ".db3"}
COMPRESSIONS = ("none", "zstd", "lz4")
METADATA_FILE = "metadata.yaml"
# rosbag2 metadata version written by Jazzy and Kilted; the readers accept 1..9.
METADATA_VERSION = 9
MAX_METADATA_VERSION = 9
ROS_DISTRO = "kilted"
SQLITE_SCHEMA_VERSION = 4
PARTIAL_SUFFIX = ".partial"
MCAP_MAGIC = b"\x89MCAP0\r\n"
SQLITE_MAGIC = b"SQLite format 3\x00"
# rmw's RMW_DURATION_INFINITE, as rosbag2 writes it: {sec: 9223372036, nsec: 854775807}.
INFINITE_NS = 2**63 - 1
# Start time rosbag2 writes for a bag without messages.
NO_MESSAGES_START_NS = 2**63 - 1
DEFAULT_FLUSH_INTERVAL_S = 0.5
DEFAULT_CHUNK_SIZE = 1 << 20

_QOS_HISTORY = ("system_default", "keep_last", "keep_all", "unknown")
_QOS_RELIABILITY = ("system_default", "reliable", "best_effort", "unknown", "best_available")
_QOS_DURABILITY = ("system_default", "transient_local", "volatile", "unknown", "best_available")
_QOS_LIVELINESS = ("system_default", "automatic", "manual_by_node", "manual_by_topic", "unknown", "best_available")


class BagError(Exception):
    """A bag cannot be read or written. ``str(err)`` is one line: ``<file>: <problem>``."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}")


class DecodeError(ValueError):
    """Serialized bytes do not decode as the given message type."""


class BagMessage(NamedTuple):
    """One stored message: unpacks as ``topic, msgtype, t_ns, rawdata``."""

    topic: str
    msgtype: str
    t_ns: int
    rawdata: bytes


class JointStateArrays(NamedTuple):
    """JointState samples for a fixed joint order.

    Shapes: ``t`` and ``stamp`` (N,) in seconds (bag receive time and ``header.stamp``); ``position``
    (rad or m), ``velocity`` and ``effort`` (N, J) in the order of ``names``; NaN where a message did not
    carry that joint or that field.
    """

    names: tuple[str, ...]
    t: np.ndarray
    stamp: np.ndarray
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


# --------------------------------------------------------------------------------------------------
# Types and (de)serialisation


@lru_cache(maxsize=1)
def default_typestore():
    """The ROS 2 Kilted typestore of ``rosbags`` (message classes, definitions, RIHS01 hashes)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def type_definition(msgtype: str, typestore=None) -> tuple[str, str, str]:
    """``(encoding, definition, rihs01_hash)`` for ``msgtype``; ``('', '', '')`` if the type is unknown."""
    ts = typestore or default_typestore()
    if msgtype not in ts.fielddefs:
        return "", "", ""
    msgdef, _ = ts.generate_msgdef(msgtype, ros_version=2)
    return "ros2msg", msgdef, ts.hash_rihs01(msgtype)


def decode(rawdata: bytes | memoryview, msgtype: str, typestore=None) -> Any:
    """Deserialize CDR bytes into a ``rosbags`` message object.

    Trailing bytes after the message are ignored: ``rclpy.serialization.serialize_message`` appends some
    for a few types (e.g. JointState with an empty ``effort``), which the strict
    ``Typestore.deserialize_cdr`` rejects.
    """
    ts = typestore or default_typestore()
    raw = memoryview(rawdata)
    if len(raw) < 4 or bytes(raw[:2]) not in (b"\x00\x00", b"\x00\x01"):
        raise DecodeError(f"{msgtype}: not CDR data (bad encapsulation header {bytes(raw[:4])!r})")
    try:
        msgdef = ts.get_msgdef(msgtype)
    except KeyError:
        raise DecodeError(f"{msgtype}: unknown message type") from None
    func = msgdef.deserialize_cdr_le if raw[1] else msgdef.deserialize_cdr_be
    try:
        message, _pos = func(raw[4:], 0, msgdef.cls, ts)
    except Exception as exc:  # noqa: BLE001 - generated deserialisers raise struct/index/unicode errors
        raise DecodeError(f"{msgtype}: cannot decode {len(raw)} bytes: {type(exc).__name__}: {exc}") from exc
    return message


def serialize(msg: Any, msgtype: str, typestore=None) -> bytes:
    """Serialize a ``rosbags`` message object, a mapping or an object with the message's attributes."""
    ts = typestore or default_typestore()
    if getattr(type(msg), "__msgtype__", None) != msgtype:
        msg = build_message(msgtype, msg, ts)
    return bytes(ts.serialize_cdr(msg, msgtype))


def _numpy_dtype(basetype: str) -> np.dtype:
    return np.dtype({"bool": "bool_", "char": "uint8"}.get(basetype, basetype))


_TIME_TYPES = ("builtin_interfaces/msg/Time", "builtin_interfaces/msg/Duration")


def build_message(msgtype: str, value: Any = None, typestore=None) -> Any:
    """Build a ``rosbags`` message object of ``msgtype`` from a mapping (or attribute object).

    Missing fields get ROS defaults (0, '', empty sequences). Numeric sequences accept lists or arrays.
    A ``builtin_interfaces/msg/Time`` or ``Duration`` field also accepts an int (nanoseconds) or a float
    (seconds). Example: ``build_message('sensor_msgs/msg/JointState', {'header': {'stamp': t_ns},
    'name': names, 'position': q})``.
    """
    from rosbags.typesys.base import Nodetype, normalize_fieldname

    ts = typestore or default_typestore()
    if msgtype not in ts.fielddefs:
        raise KeyError(f"unknown message type {msgtype!r}")
    if getattr(type(value), "__msgtype__", None) == msgtype:
        return value
    if msgtype in _TIME_TYPES and isinstance(value, (int, float, np.integer, np.floating)):
        ns = int(value) if isinstance(value, (int, np.integer)) else round(float(value) * 1e9)
        sec, nanosec = divmod(ns, 1_000_000_000)
        return ts.types[msgtype](sec=sec, nanosec=nanosec)

    def get(name: str) -> Any:
        if value is None:
            return None
        if isinstance(value, Mapping):
            return value.get(name, value.get(normalize_fieldname(name)))
        return getattr(value, normalize_fieldname(name), getattr(value, name, None))

    def convert(nodetype, desc, v):
        if nodetype == Nodetype.BASE:
            basetype = desc[0]
            if basetype == "string" or basetype == "wstring":
                return "" if v is None else str(v)
            if basetype == "bool":
                return bool(v) if v is not None else False
            if basetype.startswith("float"):
                return float(v) if v is not None else 0.0
            if isinstance(v, bytes):  # rclpy's byte fields
                return int.from_bytes(v, "little", signed=basetype == "byte")
            return int(v) if v is not None else 0
        if nodetype == Nodetype.NAME:
            return build_message(desc, v, ts)
        (subtype, subdesc), length = desc
        if nodetype == Nodetype.ARRAY and v is None:
            v = [None] * length
        v = [] if v is None else v
        if subtype == Nodetype.BASE and subdesc[0] not in ("string", "wstring"):
            if isinstance(v, (bytes, bytearray)):
                v = np.frombuffer(bytes(v), dtype=np.uint8)
            arr = np.asarray([0 if x is None else x for x in v] if isinstance(v, list) else v)
            arr = arr.astype(_numpy_dtype(subdesc[0]), copy=False).reshape(-1)
            if nodetype == Nodetype.ARRAY and arr.shape[0] != length:
                raise ValueError(f"{msgtype}: array needs {length} values, got {arr.shape[0]}")
            return arr
        return [convert(subtype, subdesc, x) for x in v]

    _consts, fields = ts.fielddefs[msgtype]
    kwargs = {normalize_fieldname(name): convert(nt, desc, get(name)) for name, (nt, desc) in fields}
    return ts.types[msgtype](**kwargs)


def message_to_dict(msg: Any) -> Any:
    """Nested plain-Python view of a ``rosbags`` message (numeric arrays stay numpy arrays)."""
    if hasattr(type(msg), "__msgtype__"):
        return {k: message_to_dict(getattr(msg, k)) for k in msg.__dataclass_fields__ if k != "__msgtype__"}
    if isinstance(msg, list):
        return [message_to_dict(x) for x in msg]
    return msg


# --------------------------------------------------------------------------------------------------
# QoS profiles (rosbag2 metadata version 9 format)


def _policy_name(value: Any, names: Sequence[str], what: str) -> str:
    if hasattr(value, "value") and not isinstance(value, (int, str)):  # enums (rosbags, rclpy)
        value = value.value
    if isinstance(value, str):
        name = value.strip().lower()
        if name not in names:
            raise ValueError(f"unknown QoS {what} {value!r} (expected one of {', '.join(names)})")
        return name
    index = int(value)
    return names[index] if 0 <= index < len(names) else "unknown"


# Pre-Galactic RMWs reported "infinite" as {0x7FFFFFFF, 0x7FFFFFFF} or {0x7FFFFFFF, 0xFFFFFFFF}; rosbag2
# maps those to infinite on read, and so do we.
_FOXY_INFINITE_NS = 0x7FFFFFFF * 1_000_000_000 + 0x7FFFFFFF


def _duration(value: Any) -> dict[str, int]:
    if value is None:
        ns = INFINITE_NS
    elif isinstance(value, Mapping):
        ns = int(value.get("sec", 0)) * 1_000_000_000 + int(value.get("nsec", 0))
    elif hasattr(value, "sec") and hasattr(value, "nsec"):  # rosbags QosTime
        ns = int(value.sec) * 1_000_000_000 + int(value.nsec)
    elif hasattr(value, "nanoseconds"):  # rclpy Duration
        ns = int(value.nanoseconds)
    else:
        ns = int(value)
    if ns >= _FOXY_INFINITE_NS:
        ns = INFINITE_NS
    ns = min(max(ns, 0), INFINITE_NS)
    sec, nsec = divmod(ns, 1_000_000_000)
    return {"sec": sec, "nsec": nsec}


_QOS_KEYS = (
    "history",
    "depth",
    "reliability",
    "durability",
    "deadline",
    "lifespan",
    "liveliness",
    "liveliness_lease_duration",
    "avoid_ros_namespace_conventions",
)


def normalize_qos(profile: Any) -> dict[str, Any]:
    """One QoS profile as rosbag2 (metadata v9) stores it.

    Accepts a mapping in v9 (policy names) or v8 (policy integers) form, possibly partial (missing
    entries default to keep_last 10, reliable, volatile, infinite durations, automatic), or a
    ``rosbags.interfaces.Qos``. Durations may be ``{sec, nsec}`` mappings or integer nanoseconds.
    """
    if not isinstance(profile, Mapping):
        profile = {k: getattr(profile, k) for k in _QOS_KEYS if hasattr(profile, k)}
    return {
        "history": _policy_name(profile.get("history", "keep_last"), _QOS_HISTORY, "history"),
        "depth": int(profile.get("depth", 10)),
        "reliability": _policy_name(profile.get("reliability", "reliable"), _QOS_RELIABILITY, "reliability"),
        "durability": _policy_name(profile.get("durability", "volatile"), _QOS_DURABILITY, "durability"),
        "deadline": _duration(profile.get("deadline")),
        "lifespan": _duration(profile.get("lifespan")),
        "liveliness": _policy_name(profile.get("liveliness", "automatic"), _QOS_LIVELINESS, "liveliness"),
        "liveliness_lease_duration": _duration(profile.get("liveliness_lease_duration")),
        "avoid_ros_namespace_conventions": bool(profile.get("avoid_ros_namespace_conventions", False)),
    }



def normalize_qos_list(profiles: Any) -> list[dict[str, Any]]:
    """A list of QoS profiles (see :func:`normalize_qos`); a YAML string (as stored in MCAP channel
    metadata and SQLite topic rows, v8 or v9) is parsed first. ``None`` or '' gives []."""
    if profiles is None or profiles == "":
        return []
    if isinstance(profiles, str):
        profiles = yaml.safe_load(profiles) or []
    if isinstance(profiles, Mapping) or not isinstance(profiles, Iterable):
        profiles = [profiles]
    return [normalize_qos(p) for p in profiles]


def qos_yaml(profiles: Sequence[Mapping[str, Any]]) -> str:
    """Serialize normalized QoS profiles the way rosbag2 stores them in MCAP channels and SQLite rows."""
    return yaml.safe_dump(list(profiles), sort_keys=False, default_flow_style=False) if profiles else ""


# --------------------------------------------------------------------------------------------------
# Metadata


@dataclass
class _TopicEntry:
    name: str
    msgtype: str
    qos: list[dict[str, Any]]
    type_hash: str
    msgdef_encoding: str
    msgdef: str
    serialization_format: str = "cdr"
    count: int = 0


@dataclass
class _FileEntry:
    name: str
    count: int = 0
    first_ns: int | None = None
    last_ns: int | None = None

    def add(self, t_ns: int) -> None:
        self.count += 1
        self.first_ns = t_ns if self.first_ns is None else min(self.first_ns, t_ns)
        self.last_ns = t_ns if self.last_ns is None else max(self.last_ns, t_ns)


def _span(first_ns: int | None, last_ns: int | None) -> tuple[int, int]:
    if first_ns is None or last_ns is None:
        return NO_MESSAGES_START_NS, 0
    return first_ns, last_ns - first_ns


def build_metadata(
    storage: str,
    topics: Sequence[_TopicEntry],
    files: Sequence[_FileEntry],
    custom_data: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``rosbag2_bagfile_information`` mapping as rosbag2 Kilted writes it (version 9)."""
    firsts = [f.first_ns for f in files if f.first_ns is not None]
    lasts = [f.last_ns for f in files if f.last_ns is not None]
    start, duration = _span(min(firsts) if firsts else None, max(lasts) if lasts else None)
    file_items = []
    for f in files:
        f_start, f_duration = _span(f.first_ns, f.last_ns)
        file_items.append(
            {
                "path": f.name,
                "starting_time": {"nanoseconds_since_epoch": f_start},
                "duration": {"nanoseconds": f_duration},
                "message_count": f.count,
            }
        )
    return {
        "version": METADATA_VERSION,
        "storage_identifier": storage,
        "duration": {"nanoseconds": duration},
        "starting_time": {"nanoseconds_since_epoch": start},
        "message_count": sum(f.count for f in files),
        "topics_with_message_count": [
            {
                "topic_metadata": {
                    "name": t.name,
                    "type": t.msgtype,
                    "serialization_format": t.serialization_format,
                    "offered_qos_profiles": list(t.qos),
                    "type_description_hash": t.type_hash,
                },
                "message_count": t.count,
            }
            for t in topics
        ],
        "compression_format": "",
        "compression_mode": "",
        "relative_file_paths": [f.name for f in files],
        "files": file_items,
        "custom_data": dict(custom_data) if custom_data else None,
        "ros_distro": ROS_DISTRO,
    }


def dump_metadata(info: Mapping[str, Any]) -> str:
    return yaml.safe_dump(
        {"rosbag2_bagfile_information": dict(info)}, sort_keys=False, default_flow_style=False, width=1000
    )


def write_metadata(bag_dir: Path, info: Mapping[str, Any]) -> Path:
    """Write ``metadata.yaml`` atomically (temporary file, then rename)."""
    path = Path(bag_dir) / METADATA_FILE
    tmp = path.with_name(METADATA_FILE + ".tmp")
    tmp.write_text(dump_metadata(info), encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_metadata(bag_dir: Path) -> dict[str, Any]:
    """Parse and sanity-check ``metadata.yaml``; raise :class:`BagError` naming the file otherwise."""
    path = Path(bag_dir) / METADATA_FILE
    if not path.is_file():
        raise BagError(
            path,
            "missing; the recording was probably interrupted. Run `dexndm bag reindex "
            f"{bag_dir}` to rebuild it from the storage files",
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise BagError(path, "not a text file (expected rosbag2 YAML metadata)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise BagError(path, f"invalid YAML{where}: {problem}") from None
    except OSError as exc:
        raise BagError(path, f"cannot read: {exc.strerror or exc}") from None
    info = data.get("rosbag2_bagfile_information") if isinstance(data, dict) else None
    if not isinstance(info, dict):
        raise BagError(path, "not rosbag2 metadata (no 'rosbag2_bagfile_information' mapping)")
    for key in ("version", "storage_identifier", "relative_file_paths", "topics_with_message_count"):
        if key not in info:
            raise BagError(path, f"rosbag2 metadata lacks the key {key!r}")
    version = info["version"]
    if not isinstance(version, int) or not 1 <= version <= MAX_METADATA_VERSION:
        raise BagError(path, f"unsupported rosbag2 metadata version {version!r} (supported: 1 to 9)")
    if info["storage_identifier"] not in STORAGES:
        raise BagError(path, f"unsupported storage {info['storage_identifier']!r} (supported: mcap, sqlite3)")
    if not isinstance(info["relative_file_paths"], list) or not isinstance(info["topics_with_message_count"], list):
        raise BagError(path, "'relative_file_paths' and 'topics_with_message_count' must be lists")
    return info


# --------------------------------------------------------------------------------------------------
# Storage files


class _McapFile:
    """One MCAP storage file of a bag (ros2 profile), written through the ``mcap`` library."""

    def __init__(self, path: Path, compression: str = "none"):
        from mcap.writer import CompressionType, Writer

        from dexndm import __version__

        self.path = path
        self._fh = open(path, "xb")
        ctype = {"none": CompressionType.NONE, "zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4}[compression]
        # Chunks are closed by us (flush), never by the library, so size accounting stays exact.
        self._writer = Writer(self._fh, chunk_size=1 << 62, compression=ctype, enable_crcs=True)
        self._writer.start(profile="ros2", library=f"dexndm {__version__} (mcap-python)")
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self.pending = 0

    def add_topic(self, topic: _TopicEntry) -> None:
        if topic.msgtype not in self._schemas:
            encoding = topic.msgdef_encoding if topic.msgdef else ""
            self._schemas[topic.msgtype] = self._writer.register_schema(
                name=topic.msgtype, encoding=encoding, data=topic.msgdef.encode()
            )
        self._channels[topic.name] = self._writer.register_channel(
            topic=topic.name,
            message_encoding=topic.serialization_format,
            schema_id=self._schemas[topic.msgtype],
            metadata={"offered_qos_profiles": qos_yaml(topic.qos), "topic_type_hash": topic.type_hash},
        )

    def write(self, topic: str, t_ns: int, data: bytes, publish_ns: int, sequence: int) -> None:
        self._writer.add_message(
            channel_id=self._channels[topic], log_time=t_ns, data=data, publish_time=publish_ns, sequence=sequence
        )
        self.pending += len(data) + 31  # opcode, length, header fields of a Message record

    def flush(self) -> None:
        self._writer.flush()  # closes the open chunk, writes its message index and flushes the stream
        self.pending = 0

    @property
    def size(self) -> int:
        return self._fh.tell() + self.pending

    def close(self, metadata_yaml: str) -> None:
        self._writer.add_metadata("rosbag2", {"serialized_metadata": metadata_yaml})
        self._writer.finish()
        self._fh.close()

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()


class _SqliteFile:
    """One SQLite3 storage file with the rosbag2 schema (version 4)."""

    SCHEMA = """
    CREATE TABLE schema(schema_version INTEGER PRIMARY KEY, ros_distro TEXT NOT NULL);
    CREATE TABLE metadata(id INTEGER PRIMARY KEY, metadata_version INTEGER NOT NULL, metadata TEXT NOT NULL);
    CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
      serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL, type_description_hash TEXT NOT NULL);
    CREATE TABLE message_definitions(id INTEGER PRIMARY KEY, topic_type TEXT NOT NULL, encoding TEXT NOT NULL,
      encoded_message_definition TEXT NOT NULL, type_description_hash TEXT NOT NULL);
    CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL, timestamp INTEGER NOT NULL,
      data BLOB NOT NULL);
    CREATE INDEX timestamp_idx ON messages (timestamp ASC);
    """

    def __init__(self, path: Path):
        if path.exists():
            raise FileExistsError(path)
        self.path = path
        # Autocommit mode with explicit transactions: a commit is the unit that survives a crash.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=DELETE")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(self.SCHEMA)
        self._db.execute("INSERT INTO schema VALUES (?, ?)", (SQLITE_SCHEMA_VERSION, ROS_DISTRO))
        self._topic_ids: dict[str, int] = {}
        self._types: set[str] = set()
        self._db.execute("BEGIN")
        self.pending = 0

    def add_topic(self, topic: _TopicEntry) -> None:
        if topic.msgtype not in self._types and topic.msgdef:
            self._db.execute(
                "INSERT INTO message_definitions (topic_type, encoding, encoded_message_definition,"
                " type_description_hash) VALUES (?, ?, ?, ?)",
                (topic.msgtype, topic.msgdef_encoding, topic.msgdef, topic.type_hash),
            )
            self._types.add(topic.msgtype)
        tid = len(self._topic_ids) + 1
        self._db.execute(
            "INSERT INTO topics VALUES (?, ?, ?, ?, ?, ?)",
            (tid, topic.name, topic.msgtype, topic.serialization_format, qos_yaml(topic.qos), topic.type_hash),
        )
        self._topic_ids[topic.name] = tid

    def write(self, topic: str, t_ns: int, data: bytes, publish_ns: int, sequence: int) -> None:
        self._db.execute(
            "INSERT INTO messages (topic_id, timestamp, data) VALUES (?, ?, ?)", (self._topic_ids[topic], t_ns, data)
        )
        self.pending += len(data) + 16

    def flush(self) -> None:
        self._db.execute("COMMIT")
        self._db.execute("BEGIN")
        self.pending = 0

    @property
    def size(self) -> int:
        return self.path.stat().st_size + self.pending

    def close(self, metadata_yaml: str) -> None:
        self._db.execute(
            "INSERT INTO metadata (metadata_version, metadata) VALUES (?, ?)", (METADATA_VERSION, metadata_yaml)
        )
        self._db.execute("COMMIT")
        self._db.close()

    def abort(self) -> None:
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error:
            pass
        self._db.close()


def _open_storage(storage: str, path: Path, compression: str):
    if storage == "mcap":
        return _McapFile(path, compression)
    if compression != "none":
        raise ValueError("sqlite3 storage does not compress; use compression='none'")
    return _SqliteFile(path)


# --------------------------------------------------------------------------------------------------
# Writer


def _fsync_dir_files(directory: Path) -> None:
    for p in directory.iterdir():
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def partial_path(path: str | os.PathLike) -> Path:
    """Where an atomic :class:`BagWriter` writes ``path`` until it is closed."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


class BagWriter:
    """Write a rosbag2 bag (a directory with ``metadata.yaml`` and ``<name>_<i>.mcap|.db3`` files).

    Use as a context manager::

        with BagWriter(run_dir / "episode_0007") as bag:
            bag.add_topic("/joint_states", "sensor_msgs/msg/JointState")
            bag.write_msg("/joint_states", t_ns, {"header": {"stamp": t_ns}, "name": names, "position": q})

    ``atomic=True`` writes into ``<path>.partial`` and renames it to ``path`` on a clean close; if the
    block raises, the bag is still closed properly but stays at ``<path>.partial`` (readable, and marked
    incomplete). A process crash leaves ``<path>.partial`` holding everything up to the last flush;
    ``dexndm bag reindex`` repairs it. ``max_file_size`` (bytes) and ``max_file_duration`` (seconds)
    split the bag into several storage files as rosbag2 does; 0 disables. Not thread-safe: write
    from one thread.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        storage: str = "mcap",
        *,
        atomic: bool = True,
        compression: str = "none",
        flush_interval: float = DEFAULT_FLUSH_INTERVAL_S,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_file_size: int = 0,
        max_file_duration: float = 0.0,
        custom_data: Mapping[str, str] | None = None,
        typestore=None,
    ):
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}, not {storage!r}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, not {compression!r}")
        if flush_interval <= 0 or chunk_size <= 0 or max_file_size < 0 or max_file_duration < 0:
            raise ValueError("flush_interval and chunk_size must be > 0; split limits must be >= 0")
        self.path = Path(path)
        self.storage = storage
        self.atomic = atomic
        self.write_dir = partial_path(self.path) if atomic else self.path
        self.compression = compression
        self.flush_interval = float(flush_interval)
        self.chunk_size = int(chunk_size)
        self.max_file_size = int(max_file_size)
        self.max_file_duration_ns = round(max_file_duration * 1e9)
        self.custom_data = {str(k): str(v) for k, v in (custom_data or {}).items()}
        self.typestore = typestore or default_typestore()
        self._topics: dict[str, _TopicEntry] = {}
        self._files: list[_FileEntry] = []
        self._file = None
        self._last_flush = 0.0
        self._closed = False
        self._result = self.write_dir

    # -- lifecycle ------------------------------------------------------------------------------
    def open(self) -> BagWriter:
        if self._file is not None or self._closed:
            raise RuntimeError(f"{self.path}: writer already opened")
        for p in {self.path, self.write_dir}:
            if p.exists():
                hint = " (an interrupted earlier write? recover it with `dexndm bag reindex`)" if p != self.path else ""
                raise BagError(p, f"already exists{hint}; not overwriting")
        try:
            self.write_dir.parent.mkdir(parents=True, exist_ok=True)
            self.write_dir.mkdir()
        except OSError as exc:
            raise BagError(self.write_dir, f"cannot create bag directory: {exc.strerror or exc}") from None
        self._open_file()
        return self

    def __enter__(self) -> BagWriter:
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.close(finalize=False)

    def _open_file(self) -> None:
        name = f"{self.path.name}_{len(self._files)}{STORAGE_SUFFIX[self.storage]}"
        try:
            self._file = _open_storage(self.storage, self.write_dir / name, self.compression)
        except OSError as exc:
            raise BagError(self.write_dir / name, f"cannot create storage file: {exc.strerror or exc}") from None
        self._files.append(_FileEntry(name))
        for topic in self._topics.values():
            self._file.add_topic(topic)
        self._last_flush = time.monotonic()

    def _close_file(self) -> None:
        file, self._file = self._file, None
        file.close(dump_metadata(self.metadata()))

    def close(self, finalize: bool = True) -> Path:
        """Close the storage, write ``metadata.yaml`` and (atomic mode, ``finalize``) rename into place.

        Returns the bag directory (``path``, or ``<path>.partial`` if not finalized)."""
        if self._closed:
            return self._result
        if self._file is None:
            raise RuntimeError(f"{self.path}: writer was never opened")
        try:
            self._close_file()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._result = self.write_dir
        write_metadata(self.write_dir, self.metadata())
        if self.atomic and finalize:
            _fsync_dir_files(self.write_dir)  # the rename must not publish data still in the page cache
            if self.path.exists():
                raise BagError(self.path, f"appeared while writing; the complete bag stays at {self.write_dir}")
            os.replace(self.write_dir, self.path)
            self._result = self.path
        return self._result

    def abort(self) -> None:
        """Stop writing without finishing the storage file (it stays recoverable by reindex)."""
        file, self._file = self._file, None
        self._closed = True
        if file is not None:
            try:
                file.flush()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
            file.abort()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- topics and messages ------------------------------------------------------------------------
    def add_topic(
        self,
        name: str,
        msgtype: str,
        qos: Any = None,
        *,
        type_hash: str | None = None,
        msgdef: str | None = None,
        msgdef_encoding: str = "ros2msg",
    ) -> None:
        """Declare a topic. ``qos``: offered QoS profile(s) to store (mapping, list of mappings, rosbags
        ``Qos`` or rosbag2 YAML string), default none. The message definition and RIHS01 hash come from
        the typestore unless given (a type unknown to it is stored without a definition)."""
        if self._file is None:
            raise RuntimeError(f"{self.path}: open the writer before adding topics")
        if name in self._topics:
            known = self._topics[name]
            if known.msgtype != msgtype:
                raise ValueError(f"topic {name} already added with type {known.msgtype}, not {msgtype}")
            return
        encoding, known_def, known_hash = type_definition(msgtype, self.typestore)
        entry = _TopicEntry(
            name=name,
            msgtype=msgtype,
            qos=normalize_qos_list(qos),
            type_hash=type_hash or known_hash,
            msgdef_encoding=msgdef_encoding if msgdef else (encoding or msgdef_encoding),
            msgdef=msgdef if msgdef is not None else known_def,
        )
        self._topics[name] = entry
        self._file.add_topic(entry)

    @property
    def topics(self) -> dict[str, str]:
        """Topic name -> message type."""
        return {name: t.msgtype for name, t in self._topics.items()}

    @property
    def message_count(self) -> int:
        return sum(f.count for f in self._files)

    @property
    def file_names(self) -> list[str]:
        return [f.name for f in self._files]

    def write(self, topic: str, t_ns: int, rawdata: bytes, *, publish_ns: int | None = None, sequence: int = 0) -> None:
        """Store serialized CDR bytes (4-byte encapsulation header included) received at ``t_ns``."""
        if self._file is None:
            raise RuntimeError(f"{self.path}: writer is not open")
        entry = self._topics.get(topic)
        if entry is None:
            raise KeyError(f"topic {topic!r} was not added (call add_topic first)")
        current = self._files[-1]
        if (
            self.max_file_duration_ns
            and current.first_ns is not None
            and t_ns - current.first_ns >= self.max_file_duration_ns
        ):
            self.split()
            current = self._files[-1]
        if not isinstance(rawdata, bytes):
            rawdata = bytes(rawdata)
        if len(rawdata) < 4 or rawdata[0] != 0 or rawdata[1] > 1:
            raise ValueError(f"{topic}: rawdata is not CDR (needs the 4-byte encapsulation header); use write_msg")
        t_ns = int(t_ns)
        self._file.write(topic, t_ns, rawdata, t_ns if publish_ns is None else int(publish_ns), sequence & 0xFFFFFFFF)
        entry.count += 1
        current.add(t_ns)
        if self.max_file_size and self._file.size >= self.max_file_size:
            self.split()
        elif self._file.pending >= self.chunk_size:
            self.flush()
        else:
            self.flush_if_due()

    def write_msg(self, topic: str, t_ns: int, msg: Any) -> None:
        """Serialize ``msg`` (rosbags object, mapping or attribute object) with the typestore and store it."""
        entry = self._topics.get(topic)
        if entry is None:
            raise KeyError(f"topic {topic!r} was not added (call add_topic first)")
        self.write(topic, t_ns, serialize(msg, entry.msgtype, self.typestore))

    def flush(self) -> None:
        """Make everything written so far durable against a process crash (complete chunk / commit)."""
        if self._file is not None:
            self._file.flush()
        self._last_flush = time.monotonic()

    def flush_if_due(self) -> None:
        if self._file is not None and self._file.pending and time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def split(self) -> None:
        """Finish the current storage file and continue in a new one."""
        if self._file is None:
            raise RuntimeError(f"{self.path}: writer is not open")
        self._close_file()
        self._open_file()

    def metadata(self) -> dict[str, Any]:
        """The current ``rosbag2_bagfile_information`` mapping."""
        return build_metadata(self.storage, list(self._topics.values()), self._files, self.custom_data)


# --------------------------------------------------------------------------------------------------
# Reader


def _check_storage_file(path: Path, storage: str, bag_dir: Path) -> None:
    hint = f"run `dexndm bag reindex {bag_dir}` to recover the complete messages"
    if not path.is_file():
        raise BagError(path, "storage file listed in metadata.yaml is missing")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(16)
            if storage == "mcap" and size >= 2 * len(MCAP_MAGIC):
                fh.seek(-len(MCAP_MAGIC), os.SEEK_END)
                tail = fh.read(len(MCAP_MAGIC))
            else:
                tail = b""
    except OSError as exc:
        raise BagError(path, f"cannot read: {exc.strerror or exc}") from None
    if storage == "mcap":
        if not head.startswith(MCAP_MAGIC):
            raise BagError(path, "not an MCAP file (bad magic bytes)" if size else "empty file (no MCAP data)")
        if tail != MCAP_MAGIC:
            raise BagError(path, f"truncated MCAP file (no footer; the recording was interrupted?); {hint}")
    else:
        if not head.startswith(SQLITE_MAGIC):
            raise BagError(path, "not an SQLite3 database" if size else "empty file (no SQLite3 data)")
        if path.with_name(path.name + "-journal").exists() or path.with_name(path.name + "-wal").exists():
            raise BagError(path, f"has an uncommitted journal (the recording was interrupted?); {hint}")


def _reader_problem(exc: BaseException) -> str:
    text = str(exc.args[0]) if getattr(exc, "args", None) else str(exc)
    return text or type(exc).__name__


@dataclass(frozen=True)
class TopicMeta:
    """A topic as stored in a bag."""

    name: str
    msgtype: str
    count: int
    qos: list[dict[str, Any]] = field(default_factory=list)
    type_hash: str = ""


class BagReader:
    """Read a rosbag2 bag directory (MCAP or SQLite3; rosbag2 metadata versions 1-9).

    ``with BagReader(path) as bag: for m in bag.messages(['/joint_states']): bag.decode(m)``
    """

    def __init__(self, path: str | os.PathLike, typestore=None):
        self.path = Path(path)
        self._default_typestore = typestore or default_typestore()
        self._reader = None
        self.metadata: dict[str, Any] = {}

    def open(self) -> BagReader:
        from rosbags.highlevel import AnyReader

        path = self.path
        if not path.exists():
            raise BagError(path, "no such bag directory")
        if not path.is_dir():
            raise BagError(path, "is a file; pass the bag directory (the folder holding metadata.yaml)")
        info = load_metadata(path)
        storage = info["storage_identifier"]
        for rel in info["relative_file_paths"]:
            _check_storage_file(path / Path(str(rel)).name, storage, path)
        try:
            reader = AnyReader([path], default_typestore=self._default_typestore)
            reader.open()
        except Exception as exc:  # noqa: BLE001 - rosbags raises ReaderError, KeyError, struct.error, ...
            raise BagError(path, f"cannot open bag: {_reader_problem(exc)}") from exc
        self._reader = reader
        self.metadata = info
        return self

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def __enter__(self) -> BagReader:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def reader(self):
        """The underlying ``rosbags.highlevel.AnyReader``."""
        if self._reader is None:
            raise RuntimeError(f"{self.path}: reader is not open")
        return self._reader

    @property
    def typestore(self):
        """Typestore built from the bag's own message definitions (falls back to Kilted's)."""
        return self.reader.typestore

    @property
    def storage(self) -> str:
        return self.metadata["storage_identifier"]

    @property
    def files(self) -> list[Path]:
        return [self.path / Path(str(rel)).name for rel in self.metadata["relative_file_paths"]]

    @property
    def message_count(self) -> int:
        return self.reader.message_count

    @property
    def start_ns(self) -> int | None:
        return self.reader.start_time if self.reader.message_count else None

    @property
    def end_ns(self) -> int | None:
        """Time of the last message (inclusive)."""
        return self.reader.end_time - 1 if self.reader.message_count else None

    @property
    def topics(self) -> dict[str, TopicMeta]:
        out: dict[str, TopicMeta] = {}
        for conn in self.reader.connections:
            qos = [normalize_qos(q) for q in getattr(conn.ext, "offered_qos_profiles", [])]
            prev = out.get(conn.topic)
            out[conn.topic] = TopicMeta(
                conn.topic,
                conn.msgtype,
                conn.msgcount + (prev.count if prev else 0),
                prev.qos if prev and prev.qos else qos,
                conn.digest or (prev.type_hash if prev else ""),
            )
        return out

    def messages(
        self, topics: Iterable[str] | None = None, *, start_ns: int | None = None, stop_ns: int | None = None
    ) -> Iterator[BagMessage]:
        """Messages in time order (``start_ns`` inclusive, ``stop_ns`` exclusive)."""
        reader = self.reader
        wanted = None if topics is None else set(topics)
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        try:
            for conn, t_ns, raw in reader.messages(connections=conns, start=start_ns, stop=stop_ns):
                yield BagMessage(conn.topic, conn.msgtype, t_ns, raw if isinstance(raw, bytes) else bytes(raw))
        except Exception as exc:  # noqa: BLE001 - corrupt chunk/row surfaces as assorted rosbags errors
            names = ", ".join(p.name for p in self.files)
            raise BagError(self.path, f"cannot read messages from {names}: {_reader_problem(exc)}") from exc

    def decode(self, message: BagMessage) -> Any:
        """Decode with the bag's own definitions (tolerates trailing bytes, see :func:`decode`)."""
        ts = self.typestore if message.msgtype in self.typestore.fielddefs else self._default_typestore
        return decode(message.rawdata, message.msgtype, ts)


def read_messages(
    path: str | os.PathLike,
    topics: Iterable[str] | None = None,
    *,
    start_ns: int | None = None,
    stop_ns: int | None = None,
    recover: bool = False,
) -> Iterator[BagMessage]:
    """Yield ``(topic, msgtype, t_ns, rawdata)`` from a bag, in time order.

    ``recover=True`` also reads a bag left behind by a crash (no metadata.yaml, unfinished MCAP,
    uncommitted SQLite journal) without modifying it, in file order, up to the last complete chunk.
    """
    if recover:
        from dexndm.bag.reindex import needs_reindex, recover_messages

        if needs_reindex(path):
            wanted = None if topics is None else set(topics)
            for m in recover_messages(path):
                if (wanted is None or m.topic in wanted) and (start_ns is None or m.t_ns >= start_ns):
                    if stop_ns is None or m.t_ns < stop_ns:
                        yield m
            return
    with BagReader(path) as bag:
        yield from bag.messages(topics, start_ns=start_ns, stop_ns=stop_ns)


def decode_messages(path: str | os.PathLike, topics: Iterable[str] | None = None) -> Iterator[tuple[str, int, Any]]:
    """Yield ``(topic, t_ns, message_object)`` for every message of ``topics``."""
    with BagReader(path) as bag:
        for m in bag.messages(topics):
            yield m.topic, m.t_ns, bag.decode(m)


_JOINT_STATE = "sensor_msgs/msg/JointState"


def joint_states_arrays(path: str | os.PathLike, topic: str, names: Sequence[str]) -> JointStateArrays:
    """Sample ``sensor_msgs/JointState`` messages of ``topic`` into arrays ordered by ``names``.

    Joints are looked up by name in each message (messages may carry other joints, in any order).
    A message that carries none of ``names`` is skipped; a joint or field missing from a message is NaN.
    """
    names = tuple(names)
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate joint names in {names}")
    column = {n: i for i, n in enumerate(names)}
    t: list[float] = []
    stamp: list[float] = []
    rows: dict[str, list[np.ndarray]] = {"position": [], "velocity": [], "effort": []}
    with BagReader(path) as bag:
        meta = bag.topics.get(topic)
        if meta is None:
            raise BagError(bag.path, f"no topic {topic!r} (topics: {', '.join(sorted(bag.topics)) or 'none'})")
        if meta.msgtype != _JOINT_STATE:
            raise BagError(bag.path, f"topic {topic!r} has type {meta.msgtype}, not {_JOINT_STATE}")
        for m in bag.messages([topic]):
            msg = bag.decode(m)
            src = [(k, column[n]) for k, n in enumerate(msg.name) if n in column]
            if not src:
                continue
            k_idx = np.array([k for k, _ in src])
            c_idx = np.array([c for _, c in src])
            for fname, out in rows.items():
                values = np.asarray(getattr(msg, fname), dtype=np.float64)
                row = np.full(len(names), np.nan)
                ok = k_idx < values.shape[0]
                row[c_idx[ok]] = values[k_idx[ok]]
                out.append(row)
            t.append(m.t_ns * 1e-9)
            stamp.append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
    shape = (len(t), len(names))

    def stack(key: str) -> np.ndarray:
        return np.vstack(rows[key]) if rows[key] else np.empty(shape)

    return JointStateArrays(
        names, np.asarray(t), np.asarray(stamp), stack("position"), stack("velocity"), stack("effort")
    )


def storage_files(bag_dir: Path) -> list[Path]:
    """Storage files in a bag directory in split order (``<name>_<i>.mcap|.db3``, numeric ``i``)."""

    def key(p: Path):
        m = re.search(r"_(\d+)$", p.stem)
        return (int(m.group(1)) if m else math.inf, p.name)

    files = [p for p in Path(bag_dir).iterdir() if p.is_file() and p.suffix in (".mcap", ".db3")]
    return sorted(files, key=key)
