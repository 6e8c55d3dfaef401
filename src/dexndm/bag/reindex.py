"""Recover bags left behind by a crash and rebuild their ``metadata.yaml``.

A recorder killed mid-run leaves MCAP files without summary, index or footer (or an SQLite3 file with an
uncommitted journal) and no ``metadata.yaml``. :func:`reindex` scans every storage file record by record,
keeps every complete message (top-level or inside a complete, CRC-valid chunk), rewrites an unfinished
MCAP file with a proper summary and index, and writes ``metadata.yaml`` from what it found. A truncated or
corrupt trailing record is dropped; everything before it is kept.

:func:`recover_messages` reads such a bag without repairing it.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dexndm.bag.io import (
    MCAP_MAGIC,
    METADATA_FILE,
    PARTIAL_SUFFIX,
    BagError,
    BagMessage,
    _check_storage_file,
    _FileEntry,
    _McapFile,
    _TopicEntry,
    build_metadata,
    default_typestore,
    dump_metadata,
    load_metadata,
    normalize_qos_list,
    storage_files,
    type_definition,
    write_metadata,
)

# MCAP record opcodes (https://mcap.dev/spec).
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
OP_DATA_END = 0x0F
_OP_NAMES = {
    0x01: "Header",
    0x02: "Footer",
    0x03: "Schema",
    0x04: "Channel",
    0x05: "Message",
    0x06: "Chunk",
    0x07: "MessageIndex",
    0x08: "ChunkIndex",
    0x09: "Attachment",
    0x0A: "AttachmentIndex",
    0x0B: "Statistics",
    0x0C: "Metadata",
    0x0D: "MetadataIndex",
    0x0E: "SummaryOffset",
    0x0F: "DataEnd",
}
_REWRITE_CHUNK_BYTES = 1 << 20


@dataclass
class FileReport:
    """What reindex found in one storage file."""

    name: str
    message_count: int = 0
    rewritten: bool = False
    problems: list[str] = field(default_factory=list)


@dataclass
class ReindexReport:
    path: Path
    storage: str
    message_count: int
    files: list[FileReport]


class _Reader:
    """Little-endian field reader over one record body."""

    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise ValueError("field runs past the end of its record")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def string(self) -> str:
        return bytes(self.take(self.u32())).decode("utf-8")

    def rest(self) -> bytes:
        out = bytes(self.data[self.pos :])
        self.pos = len(self.data)
        return out

    def string_map(self) -> dict[str, str]:
        end = self.u32() + self.pos
        out = {}
        while self.pos < end:
            key = self.string()
            out[key] = self.string()
        return out


def _decompress(compression: str, data: bytes, size: int) -> bytes:
    if compression == "":
        return data
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompress(data, max_output_size=size)
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.decompress(data)
    raise ValueError(f"unsupported chunk compression {compression!r}")


class McapScanner:
    """Scan an MCAP file from the start, yielding schema, channel and message events.

    Events: ``('schema', id, name, encoding, data)``, ``('channel', id, schema_id, topic, encoding,
    metadata)``, ``('message', channel_id, sequence, log_time, publish_time, data)``. After the scan,
    ``complete`` says whether the data section ended properly (DataEnd record and footer magic) and
    ``problems`` lists what was skipped or cut off.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.complete = False
        self.problems: list[str] = []

    def events(self) -> Iterator[tuple]:
        try:
            fh = open(self.path, "rb")
        except OSError as exc:
            raise BagError(self.path, f"cannot read: {exc.strerror or exc}") from None
        with fh:
            size = os.fstat(fh.fileno()).st_size
            if fh.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
                raise BagError(self.path, "not an MCAP file (bad magic bytes)" if size else "empty file (no MCAP data)")
            pos = len(MCAP_MAGIC)
            while True:
                head = fh.read(9)
                if not head:
                    self.problems.append("file ends without a DataEnd record and footer (recording was interrupted)")
                    return
                if len(head) < 9:
                    self.problems.append(f"truncated record header at byte {pos} (recording was interrupted)")
                    return
                op, length = struct.unpack("<BQ", head)
                name = _OP_NAMES.get(op, f"opcode 0x{op:02x}")
                if op == 0 or (0x0F < op < 0x80):
                    self.problems.append(f"corrupt data at byte {pos} (invalid opcode 0x{op:02x}); stopped there")
                    return
                if pos + 9 + length > size:
                    self.problems.append(
                        f"truncated {name} record at byte {pos} ({size - pos - 9} of {length} bytes present)"
                    )
                    return
                if op == OP_DATA_END or op == OP_FOOTER:
                    fh.seek(-len(MCAP_MAGIC), os.SEEK_END)
                    self.complete = fh.read(len(MCAP_MAGIC)) == MCAP_MAGIC
                    if not self.complete:
                        self.problems.append("summary section is truncated (no footer magic)")
                    return
                body = fh.read(length)
                try:
                    yield from self._record(op, body, pos, top_level=True)
                except (ValueError, UnicodeDecodeError, struct.error, zlib.error, RuntimeError) as exc:
                    self.problems.append(f"skipped corrupt {name} record at byte {pos}: {exc}")
                pos += 9 + length

    def _record(self, op: int, body: bytes, pos: int, top_level: bool) -> Iterator[tuple]:
        r = _Reader(body)
        if op == OP_SCHEMA:
            sid = r.u16()
            name = r.string()
            encoding = r.string()
            data = bytes(r.take(r.u32()))
            yield ("schema", sid, name, encoding, data)
        elif op == OP_CHANNEL:
            cid = r.u16()
            sid = r.u16()
            topic = r.string()
            encoding = r.string()
            yield ("channel", cid, sid, topic, encoding, r.string_map())
        elif op == OP_MESSAGE:
            cid = r.u16()
            seq = r.u32()
            log_time = r.u64()
            publish_time = r.u64()
            yield ("message", cid, seq, log_time, publish_time, r.rest())
        elif op == OP_CHUNK and top_level:
            r.u64()  # message start time
            r.u64()  # message end time
            usize = r.u64()
            crc = r.u32()
            compression = r.string()
            records = bytes(r.take(r.u64()))
            data = _decompress(compression, records, usize)
            if len(data) != usize:
                raise ValueError(f"chunk decompresses to {len(data)} bytes, header says {usize}")
            if crc and zlib.crc32(data) != crc:
                raise ValueError("chunk CRC mismatch")
            # Parse the whole chunk first so that a corrupt chunk yields nothing rather than a prefix.
            inner = _Reader(data)
            events = []
            while inner.pos < len(data):
                iop = inner.take(1)[0]
                ibody = bytes(inner.take(inner.u64()))
                events.extend(self._record(iop, ibody, pos, top_level=False))
            yield from events


def _topic_from_channel(
    topic: str, schema: tuple[str, str, bytes] | None, encoding: str, meta: dict[str, str]
) -> _TopicEntry:
    msgtype, schema_encoding, data = schema if schema else ("", "", b"")
    try:
        qos = normalize_qos_list(meta.get("offered_qos_profiles", ""))
    except Exception:  # noqa: BLE001 - damaged QoS text in a channel record must not cost the messages
        qos = []
    type_hash = meta.get("topic_type_hash", "")
    if not type_hash and msgtype:
        type_hash = type_definition(msgtype, default_typestore())[2]
    return _TopicEntry(
        name=topic,
        msgtype=msgtype,
        qos=qos,
        type_hash=type_hash,
        msgdef_encoding=schema_encoding or "ros2msg",
        msgdef=data.decode("utf-8", errors="replace"),
        serialization_format=encoding or "cdr",
    )


def _iter_mcap(path: Path, scanner: McapScanner) -> Iterator[tuple[_TopicEntry, int, int, int, bytes, bool]]:
    """Yield ``(topic_entry, log_time, publish_time, sequence, data, is_new_topic)`` for every message."""
    schemas: dict[int, tuple[str, str, bytes]] = {}
    channels: dict[int, _TopicEntry] = {}
    seen: set[str] = set()
    for ev in scanner.events():
        if ev[0] == "schema":
            schemas[ev[1]] = (ev[2], ev[3], ev[4])
        elif ev[0] == "channel":
            channels[ev[1]] = _topic_from_channel(ev[3], schemas.get(ev[2]), ev[4], ev[5])
        else:
            entry = channels.get(ev[1])
            if entry is None:
                continue  # message of a channel whose record was lost
            new = entry.name not in seen
            seen.add(entry.name)
            yield entry, ev[3], ev[4], ev[2], ev[5], new


def _reindex_mcap(path: Path, topics: dict[str, _TopicEntry]) -> tuple[_FileEntry, FileReport]:
    entry = _FileEntry(path.name)
    report = FileReport(path.name)
    scanner = McapScanner(path)
    for topic, log_time, _pub, _seq, _data, _new in _iter_mcap(path, scanner):
        known = topics.setdefault(topic.name, topic)
        known.count += 1
        entry.add(log_time)
    report.message_count = entry.count
    report.problems = list(scanner.problems)
    if scanner.complete:
        return entry, report
    # Rewrite the file with everything recovered, then replace the original.
    tmp = path.with_name(path.name + ".reindex.tmp")
    tmp.unlink(missing_ok=True)
    out = _McapFile(tmp)
    try:
        added: set[str] = set()
        for topic, log_time, pub, seq, data, _new in _iter_mcap(path, McapScanner(path)):
            if topic.name not in added:
                out.add_topic(topics.get(topic.name, topic))
                added.add(topic.name)
            out.write(topic.name, log_time, data, pub, seq)
            if out.pending >= _REWRITE_CHUNK_BYTES:
                out.flush()
        out.close(dump_metadata(build_metadata("mcap", [topics[n] for n in added], [entry])))
    except BaseException:
        out.abort()
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    report.rewritten = True
    return entry, report


def _open_sqlite(path: Path) -> sqlite3.Connection:
    try:
        # A normal (read-write) open rolls back a transaction left uncommitted by a crash.
        db = sqlite3.connect(path)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise BagError(path, f"not a readable SQLite3 database: {exc}") from None
    if not {"topics", "messages"} <= tables:
        db.close()
        raise BagError(path, "not a rosbag2 SQLite3 database (no 'topics' and 'messages' tables)")
    return db


def _sqlite_topics(db: sqlite3.Connection, path: Path) -> dict[int, _TopicEntry]:
    cols = {r[1] for r in db.execute("PRAGMA table_info(topics)")}
    qos_col = "offered_qos_profiles" if "offered_qos_profiles" in cols else "''"
    hash_col = "type_description_hash" if "type_description_hash" in cols else "''"
    defs: dict[str, tuple[str, str]] = {}
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "message_definitions" in tables:
        for msgtype, enc, text in db.execute(
            "SELECT topic_type, encoding, encoded_message_definition FROM message_definitions"
        ):
            defs[msgtype] = (enc, text)
    out = {}
    for tid, name, msgtype, fmt, qos, type_hash in db.execute(
        f"SELECT id, name, type, serialization_format, {qos_col}, {hash_col} FROM topics ORDER BY id"
    ):
        try:
            qos_list = normalize_qos_list(qos)
        except Exception:  # noqa: BLE001 - damaged QoS text must not cost the messages
            qos_list = []
        enc, text = defs.get(msgtype) or type_definition(msgtype, default_typestore())[:2]
        out[tid] = _TopicEntry(
            name=name,
            msgtype=msgtype,
            qos=qos_list,
            type_hash=type_hash or type_definition(msgtype, default_typestore())[2],
            msgdef_encoding=enc or "ros2msg",
            msgdef=text or "",
            serialization_format=fmt or "cdr",
        )
    return out


def _reindex_sqlite(path: Path, topics: dict[str, _TopicEntry]) -> tuple[_FileEntry, FileReport]:
    entry = _FileEntry(path.name)
    report = FileReport(path.name)
    db = _open_sqlite(path)
    try:
        by_id = _sqlite_topics(db, path)
        for topic in by_id.values():
            topics.setdefault(topic.name, topic)
        for tid, count, t_min, t_max in db.execute(
            "SELECT topic_id, COUNT(*), MIN(timestamp), MAX(timestamp) FROM messages GROUP BY topic_id"
        ):
            if tid not in by_id:
                report.problems.append(f"{count} messages of unknown topic id {tid} skipped")
                continue
            topics[by_id[tid].name].count += count
            entry.count += count
            entry.first_ns = t_min if entry.first_ns is None else min(entry.first_ns, t_min)
            entry.last_ns = t_max if entry.last_ns is None else max(entry.last_ns, t_max)
    except sqlite3.DatabaseError as exc:
        raise BagError(path, f"corrupt SQLite3 database: {exc}") from None
    finally:
        db.close()
    # Opening the database rolled back a hot journal; one still there is stale (a crash before the
    # journal header was written) and would make readers think a transaction is pending.
    journal = path.with_name(path.name + "-journal")
    if journal.exists():
        journal.unlink()
        report.problems.append("removed the stale rollback journal of an interrupted transaction")
    report.message_count = entry.count
    return entry, report


def _storage_of(path: Path) -> tuple[str, list[Path]]:
    if not path.exists():
        raise BagError(path, "no such bag directory")
    if not path.is_dir():
        raise BagError(path, "is a file; pass the bag directory")
    files = storage_files(path)
    if not files:
        raise BagError(path, "no .mcap or .db3 storage files in this directory")
    suffixes = {f.suffix for f in files}
    if len(suffixes) > 1:
        raise BagError(path, "holds both .mcap and .db3 files; a bag uses one storage")
    return ("mcap" if ".mcap" in suffixes else "sqlite3"), files


def reindex(path: str | os.PathLike, *, finalize: bool = False) -> ReindexReport:
    """Repair the bag directory ``path`` in place and (re)write its ``metadata.yaml``.

    ``finalize=True`` also renames ``<name>.partial`` (left by an interrupted atomic :class:`BagWriter`)
    to ``<name>``. Raises :class:`BagError` if a storage file is not MCAP/SQLite3 at all.
    """
    path = Path(path)
    storage, files = _storage_of(path)
    custom = None
    try:
        custom = load_metadata(path).get("custom_data")
    except BagError:
        pass
    topics: dict[str, _TopicEntry] = {}
    entries: list[_FileEntry] = []
    reports: list[FileReport] = []
    for f in files:
        entry, report = (_reindex_mcap if storage == "mcap" else _reindex_sqlite)(f, topics)
        entries.append(entry)
        reports.append(report)
    write_metadata(path, build_metadata(storage, list(topics.values()), entries, custom or None))
    final = path
    if finalize and path.name.endswith(PARTIAL_SUFFIX):
        target = path.with_name(path.name[: -len(PARTIAL_SUFFIX)])
        if target.exists():
            raise BagError(target, f"already exists; leaving the repaired bag at {path}")
        os.replace(path, target)
        final = target
    return ReindexReport(final, storage, sum(e.count for e in entries), reports)


def needs_reindex(path: str | os.PathLike) -> bool:
    """True if ``path`` lacks a usable ``metadata.yaml`` or holds an unfinished storage file."""
    path = Path(path)
    try:
        info = load_metadata(path)
        for rel in info["relative_file_paths"]:
            _check_storage_file(path / Path(str(rel)).name, info["storage_identifier"], path)
    except BagError:
        return path.is_dir() and bool(storage_files(path))
    return False


def recover_messages(path: str | os.PathLike) -> Iterator[BagMessage]:
    """Every complete message of a (possibly crashed) bag, in file order, without rewriting anything.

    SQLite3 itself rolls back a transaction left uncommitted by a crash when the file is opened."""
    path = Path(path)
    storage, files = _storage_of(path)
    for f in files:
        if storage == "mcap":
            for topic, log_time, _pub, _seq, data, _new in _iter_mcap(f, McapScanner(f)):
                yield BagMessage(topic.name, topic.msgtype, log_time, data)
            continue
        db = _open_sqlite(f)
        try:
            by_id = _sqlite_topics(db, f)
            for tid, t_ns, data in db.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY id"):
                if tid in by_id:
                    yield BagMessage(by_id[tid].name, by_id[tid].msgtype, t_ns, bytes(data))
        finally:
            db.close()


def describe(report: ReindexReport) -> str:
    """Human-readable summary of a reindex."""
    lines = [
        f"Reindexed {report.path}: {report.message_count} messages in {len(report.files)} "
        f"{report.storage} file(s); wrote {METADATA_FILE}"
    ]
    for f in report.files:
        action = "rewritten with a new index" if f.rewritten else "intact"
        lines.append(f"  {f.name}: {f.message_count} messages, {action}")
        lines.extend(f"    note: {p}" for p in f.problems)
    return "\n".join(lines)
