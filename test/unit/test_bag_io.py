"""dexndm.bag: rosbag2 writing/reading without ROS, crash recovery, metadata, errors."""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from dexndm.bag.info import bag_info, format_info
from dexndm.bag.io import (
    BagError,
    BagReader,
    BagWriter,
    build_message,
    decode,
    joint_states_arrays,
    normalize_qos,
    normalize_qos_list,
    partial_path,
    read_messages,
    serialize,
)
from dexndm.bag.reindex import needs_reindex, recover_messages, reindex
from dexndm.tools import bag as bag_tool

JS = "sensor_msgs/msg/JointState"
T0 = 1_700_000_000_000_000_000
TS = get_typestore(Stores.ROS2_KILTED)
REPO = Path(__file__).resolve().parents[2]


def js(i: int, names=None) -> dict:
    names = names or [f"j{k}" for k in range(1 + i % 5)]
    n = len(names)
    return {
        "header": {"stamp": T0 + i * 10_000_000, "frame_id": "hand" * (i % 3)},
        "name": names,
        "position": [0.01 * i + k for k in range(n)],
        "velocity": [] if i % 3 == 0 else [-0.5 * k for k in range(n)],
        "effort": [] if i % 2 else [0.25] * n,
    }


def write_bag(path: Path, n: int = 50, storage: str = "mcap", **kw) -> list[bytes]:
    raws = []
    with BagWriter(path, storage, **kw) as bag:
        bag.add_topic("/js", JS, qos={"reliability": "best_effort", "depth": 5})
        bag.add_topic("/note", "std_msgs/msg/String")
        for i in range(n):
            raw = serialize(js(i), JS)
            raws.append(raw)
            bag.write("/js", T0 + i * 10_000_000, raw)
            if i % 10 == 0:
                bag.write_msg("/note", T0 + i * 10_000_000 + 1, {"data": f"note {i}"})
    return raws


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_roundtrip_is_byte_faithful_and_readable_by_rosbags(tmp_path, storage):
    path = tmp_path / "bag"
    raws = write_bag(path, 50, storage)
    got = list(read_messages(path, ["/js"]))
    assert [m.rawdata for m in got] == raws
    assert [m.t_ns for m in got] == [T0 + i * 10_000_000 for i in range(50)]
    assert {m.msgtype for m in got} == {JS}

    # rosbags' own reader: counts, strict deserialisation, QoS and type hash.
    with AnyReader([path], default_typestore=TS) as reader:
        conns = {c.topic: c for c in reader.connections}
        assert conns["/js"].msgcount == 50 and conns["/note"].msgcount == 5
        assert conns["/js"].digest == TS.hash_rihs01(JS)
        assert conns["/js"].ext.offered_qos_profiles[0].depth == 5
        msgs = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages([conns["/note"]])]
        assert [m.data for m in msgs] == [f"note {i}" for i in range(0, 50, 10)]

    info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 9 and info["ros_distro"] == "kilted" and info["storage_identifier"] == storage
    assert info["message_count"] == 55 and info["relative_file_paths"] == [f"bag_0.{'mcap' if storage == 'mcap' else 'db3'}"]
    topic = info["topics_with_message_count"][0]["topic_metadata"]
    assert topic["type_description_hash"] == TS.hash_rihs01(JS)
    assert topic["offered_qos_profiles"][0]["reliability"] == "best_effort"
    assert topic["offered_qos_profiles"][0]["deadline"] == {"sec": 9223372036, "nsec": 854775807}
    assert info["starting_time"]["nanoseconds_since_epoch"] == T0
    assert info["duration"]["nanoseconds"] == 49 * 10_000_000


def test_mcap_is_readable_by_the_mcap_library(tmp_path):
    from mcap.reader import make_reader

    raws = write_bag(tmp_path / "bag", 40)
    with open(tmp_path / "bag" / "bag_0.mcap", "rb") as fh:
        reader = make_reader(fh)
        summary = reader.get_summary()
        assert summary.statistics.message_count == 44
        assert reader.get_header().profile == "ros2"
        got = [(ch.topic, msg.data) for _, ch, msg in reader.iter_messages(topics=["/js"])]
        channel = next(c for c in summary.channels.values() if c.topic == "/js")
        schema = summary.schemas[channel.schema_id]
    assert [d for _, d in got] == raws
    assert channel.metadata["topic_type_hash"] == TS.hash_rihs01(JS)
    assert yaml.safe_load(channel.metadata["offered_qos_profiles"])[0]["depth"] == 5
    assert schema.name == JS and schema.encoding == "ros2msg" and b"float64[] position" in schema.data


def test_atomic_write_renames_partial_on_close_and_keeps_it_on_error(tmp_path):
    path = tmp_path / "episode"
    with BagWriter(path) as bag:
        bag.add_topic("/js", JS)
        bag.write_msg("/js", T0, js(0))
        assert partial_path(path).is_dir() and not path.exists()
    assert path.is_dir() and not partial_path(path).exists()

    failed = tmp_path / "failed"
    with pytest.raises(RuntimeError, match="boom"):
        with BagWriter(failed) as bag:
            bag.add_topic("/js", JS)
            bag.write_msg("/js", T0, js(1))
            raise RuntimeError("boom")
    assert not failed.exists()
    assert len(list(read_messages(partial_path(failed)))) == 1  # closed properly, just not published

    with pytest.raises(BagError, match="already exists"):
        BagWriter(path).open()


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_killed_writer_leaves_a_partial_bag_that_reindex_recovers(tmp_path, storage):
    """A real crash: the writing process SIGKILLs itself after 30 flushed and 5 unflushed messages."""
    code = textwrap.dedent(
        f"""
        import os, signal
        from dexndm.bag.io import BagWriter, serialize
        from test_bag_io import js
        w = BagWriter({str(tmp_path / 'ep')!r}, {storage!r}, flush_interval=3600).open()
        w.add_topic('/js', {JS!r})
        for i in range(35):
            w.write('/js', {T0} + i, serialize(js(i), {JS!r}))
            if i == 29:
                w.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, timeout=60, env=_env()
    )
    assert proc.returncode == -9, proc.stderr
    partial = partial_path(tmp_path / "ep")
    assert needs_reindex(partial)
    assert len(list(read_messages(partial, recover=True))) == 30
    with pytest.raises(BagError, match="metadata.yaml: missing"):
        list(read_messages(partial))
    report = reindex(partial, finalize=True)
    assert report.path == tmp_path / "ep" and report.message_count == 30
    assert report.files[0].rewritten == (storage == "mcap")  # SQLite only needs its journal rolled back
    got = list(read_messages(tmp_path / "ep"))
    assert [m.rawdata for m in got] == [serialize(js(i), JS) for i in range(30)]


def test_reindex_recovers_every_complete_chunk_at_any_truncation_point(tmp_path):
    src = tmp_path / "full"
    raws = []
    with BagWriter(src, atomic=False, flush_interval=3600) as bag:
        bag.add_topic("/js", JS)
        for i in range(60):
            raws.append(serialize(js(i), JS))
            bag.write("/js", T0 + i, raws[-1])
            if i % 6 == 5:
                bag.flush()  # 10 chunks of 6 messages
    data = (src / "full_0.mcap").read_bytes()
    last = -1
    for cut in list(range(8, len(data), max(1, len(data) // 37))) + [len(data) - 1]:
        bag_dir = tmp_path / f"cut{cut}"
        bag_dir.mkdir()
        (bag_dir / "full_0.mcap").write_bytes(data[:cut])
        report = reindex(bag_dir)
        got = [m.rawdata for m in read_messages(bag_dir)]
        assert got == raws[: len(got)], cut  # always a clean prefix
        assert len(got) % 6 == 0 and len(got) >= last  # whole chunks, never fewer for a longer file
        assert report.message_count == len(got)
        last = len(got)
    assert last == 60  # a file cut inside its summary still yields every message


def test_reindex_of_complete_bag_without_metadata_keeps_the_file(tmp_path):
    path = tmp_path / "bag"
    raws = write_bag(path, 30)
    before = yaml.safe_load((path / "metadata.yaml").read_text())
    mtime = (path / "bag_0.mcap").stat().st_mtime_ns
    (path / "metadata.yaml").unlink()
    report = reindex(path)
    assert not report.files[0].rewritten and (path / "bag_0.mcap").stat().st_mtime_ns == mtime
    after = yaml.safe_load((path / "metadata.yaml").read_text())
    assert after == before
    assert [m.rawdata for m in read_messages(path, ["/js"])] == raws


def test_reindex_sqlite_bag_without_metadata(tmp_path):
    path = tmp_path / "bag"
    raws = write_bag(path, 20, "sqlite3")
    (path / "metadata.yaml").unlink()
    assert needs_reindex(path)
    assert len(list(recover_messages(path))) == 22
    report = reindex(path)
    assert report.storage == "sqlite3" and report.message_count == 22
    assert [m.rawdata for m in read_messages(path, ["/js"])] == raws
    info = bag_info(path)
    assert {t.name: t.type_hash for t in info.topics}["/js"] == TS.hash_rihs01(JS)


def test_split_by_size_and_by_duration(tmp_path):
    raws = write_bag(tmp_path / "size", 200, max_file_size=4096)
    files = sorted(p.name for p in (tmp_path / "size").glob("*.mcap"))
    assert len(files) > 3
    info = yaml.safe_load((tmp_path / "size" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["relative_file_paths"] == [f"size_{i}.mcap" for i in range(len(files))]
    assert sum(f["message_count"] for f in info["files"]) == 220
    assert [m.rawdata for m in read_messages(tmp_path / "size", ["/js"])] == raws
    with AnyReader([tmp_path / "size"], default_typestore=TS) as reader:
        assert reader.message_count == 220

    write_bag(tmp_path / "dur", 200, "sqlite3", max_file_duration=0.5)  # 2 s of data at 100 Hz
    info = yaml.safe_load((tmp_path / "dur" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert [f["message_count"] for f in info["files"]] == [55, 55, 55, 55]
    assert len(list(read_messages(tmp_path / "dur"))) == 220


@pytest.mark.parametrize(
    ("storage", "version"), [(StoragePlugin.MCAP, 9), (StoragePlugin.SQLITE3, 8)], ids=["mcap-v9", "sqlite3-v8"]
)
def test_bag_written_by_rosbags_reads_and_summarizes(tmp_path, storage, version):
    path = tmp_path / "ext"
    with Writer(path, version=version, storage_plugin=storage) as writer:
        conn = writer.add_connection("/js", JS, typestore=TS)
        for i in range(21):
            msg = build_message(JS, js(i))
            writer.write(conn, T0 + i * 20_000_000, TS.serialize_cdr(msg, JS))
    info = bag_info(path)
    assert info.message_count == 21 and info.version == version
    (topic,) = info.topics
    assert (topic.name, topic.msgtype, topic.count) == ("/js", JS, 21)
    assert topic.frequency_hz == pytest.approx(50.0)
    assert info.duration_s == pytest.approx(0.4)
    text = format_info(info)
    assert "/js" in text and "50.00 Hz" in text and "21 msgs" in text
    arrays = joint_states_arrays(path, "/js", ["j0"])
    assert arrays.position[:, 0] == pytest.approx([0.01 * i for i in range(21)])


def test_humble_style_sqlite_bag(tmp_path):
    """Metadata version 5, QoS as a YAML string of integers, no type hashes or message definitions."""
    path = tmp_path / "humble"
    with Writer(path, version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conn = writer.add_connection("/js", JS, typestore=TS)
        for i in range(10):
            writer.write(conn, T0 + i * 10_000_000, TS.serialize_cdr(build_message(JS, js(i)), JS))
    humble_qos = (  # Humble wrote enum integers and Fast DDS's old "infinite"
        "- history: 3\n  depth: 0\n  reliability: 1\n  durability: 2\n"
        "  deadline:\n    sec: 2147483647\n    nsec: 4294967295\n"
        "  lifespan:\n    sec: 2147483647\n    nsec: 4294967295\n  liveliness: 1\n"
        "  liveliness_lease_duration:\n    sec: 2147483647\n    nsec: 4294967295\n"
        "  avoid_ros_namespace_conventions: false"
    )
    db = sqlite3.connect(path / "humble.db3")
    db.executescript(
        "DROP TABLE message_definitions; ALTER TABLE topics DROP COLUMN type_description_hash;"
        "UPDATE schema SET schema_version = 3, ros_distro = 'humble';"
    )
    db.execute("UPDATE topics SET offered_qos_profiles = ?", (humble_qos,))
    db.commit()
    db.close()
    meta = yaml.safe_load((path / "metadata.yaml").read_text())
    info = meta["rosbag2_bagfile_information"]
    info["version"] = 5
    for key in ("custom_data", "ros_distro"):
        info.pop(key)
    for topic in info["topics_with_message_count"]:
        topic["topic_metadata"].pop("type_description_hash")
        topic["topic_metadata"]["offered_qos_profiles"] = humble_qos
    (path / "metadata.yaml").write_text(yaml.safe_dump(meta))

    summary = bag_info(path)
    assert summary.version == 5 and summary.message_count == 10 and summary.topics[0].msgtype == JS
    with BagReader(path) as bag:
        (qos,) = bag.topics["/js"].qos
        assert qos["reliability"] == "reliable" and qos["history"] == "unknown"
        assert qos["deadline"] == {"sec": 9223372036, "nsec": 854775807}
        assert bag.decode(next(bag.messages())).name == ["j0"]
    assert joint_states_arrays(path, "/js", ["j0"]).position.shape == (10, 1)


def test_joint_states_arrays_index_by_name(tmp_path):
    path = tmp_path / "bag"
    with BagWriter(path) as bag:
        bag.add_topic("/js", JS)
        bag.write_msg("/js", T0, {"name": ["b", "x", "a"], "position": [2, 9, 1], "velocity": [20, 90, 10]})
        bag.write_msg("/js", T0 + 1, {"name": ["other"], "position": [5]})  # none of ours: skipped
        bag.write_msg("/js", T0 + 2, {"header": {"stamp": 1.5}, "name": ["a"], "position": [3], "effort": [0.5]})
    arr = joint_states_arrays(path, "/js", ["a", "b"])
    assert arr.names == ("a", "b")
    np.testing.assert_array_equal(arr.position, [[1, 2], [3, np.nan]])
    np.testing.assert_array_equal(arr.velocity, [[10, 20], [np.nan, np.nan]])
    np.testing.assert_array_equal(arr.effort, [[np.nan, np.nan], [0.5, np.nan]])
    np.testing.assert_allclose(arr.t, [T0 * 1e-9, (T0 + 2) * 1e-9])
    assert arr.stamp[1] == 1.5
    with pytest.raises(BagError, match="no topic '/nope'"):
        joint_states_arrays(path, "/nope", ["a"])


def test_decode_tolerates_rclpy_trailing_bytes():
    rclpy_ser = pytest.importorskip("rclpy.serialization")
    from sensor_msgs.msg import JointState

    msg = JointState(name=["a", "b"], position=[1.0, 2.0], velocity=[0.5, 0.25])
    raw = rclpy_ser.serialize_message(msg)
    with pytest.raises(Exception, match="size mismatch"):
        TS.deserialize_cdr(raw, JS)  # the strict decoder rejects the extra bytes
    decoded = decode(raw, JS)
    assert decoded.name == ["a", "b"] and list(decoded.position) == [1.0, 2.0] and len(decoded.effort) == 0
    assert decode(serialize(js(3), JS) + b"\0" * 8, JS).position[0] == pytest.approx(0.03)


def test_build_message_defaults_and_times():
    msg = build_message(JS, {"header": {"stamp": 1_500_000_001}, "name": ["a"], "position": np.array([1.0])})
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1, 500_000_001)
    assert msg.velocity.dtype == np.float64 and msg.velocity.shape == (0,)
    assert build_message("builtin_interfaces/msg/Time", 2.25).nanosec == 250_000_000
    arr = build_message("std_msgs/msg/Float32MultiArray", {"data": [1, 2]})
    assert arr.data.dtype == np.float32


def test_qos_normalisation_accepts_v8_v9_partial_and_foxy_infinity():
    v8 = "- history: 1\n  depth: 7\n  reliability: 2\n  durability: 1\n  deadline: {sec: 2147483647, nsec: 4294967295}\n"
    v8 += "  lifespan: {sec: 0, nsec: 0}\n  liveliness: 1\n  liveliness_lease_duration: {sec: 1, nsec: 5}\n"
    v8 += "  avoid_ros_namespace_conventions: false\n"
    (q,) = normalize_qos_list(v8)
    assert (q["history"], q["depth"], q["reliability"], q["durability"]) == ("keep_last", 7, "best_effort", "transient_local")
    assert q["deadline"] == {"sec": 9223372036, "nsec": 854775807}
    assert q["liveliness_lease_duration"] == {"sec": 1, "nsec": 5}
    assert normalize_qos({"reliability": "reliable"})["history"] == "keep_last"
    with pytest.raises(ValueError, match="reliability"):
        normalize_qos({"reliability": "sometimes"})


# ---------------------------------------------------------------------------------------------- errors


def _broken(tmp_path: Path, kind: str) -> tuple[Path, str]:
    path = tmp_path / kind
    write_bag(path, 30)
    mcap = path / f"{kind}_0.mcap"
    if kind == "garbage":
        mcap.write_bytes(b"this is not a bag at all" * 10)
        return mcap, "not an MCAP file"
    if kind == "truncated":
        mcap.write_bytes(mcap.read_bytes()[:-300])
        return mcap, "truncated MCAP file"
    if kind == "nometa":
        (path / "metadata.yaml").unlink()
        return path / "metadata.yaml", "missing"
    if kind == "badyaml":
        (path / "metadata.yaml").write_text("rosbag2_bagfile_information: [unclosed\n  - x: {")
        return path / "metadata.yaml", "invalid YAML"
    if kind == "newer":
        text = (path / "metadata.yaml").read_text().replace("version: 9", "version: 10")
        (path / "metadata.yaml").write_text(text)
        return path / "metadata.yaml", "unsupported rosbag2 metadata version 10"
    if kind == "nofile":
        mcap.unlink()
        return mcap, "missing"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["garbage", "truncated", "nometa", "badyaml", "newer", "nofile"])
def test_bad_input_raises_bag_error_naming_file_and_problem(tmp_path, kind, capsys):
    culprit, problem = _broken(tmp_path, kind)
    with pytest.raises(BagError) as err:
        bag_info(culprit.parent)
    assert str(err.value).startswith(f"{culprit}: ") and problem in str(err.value)
    assert "\n" not in str(err.value)
    parser = argparse.ArgumentParser()
    bag_tool.add_arguments(parser)
    assert bag_tool.run(parser.parse_args(["info", str(culprit.parent)])) == 1
    out, errtext = capsys.readouterr()
    assert out == "" and errtext.count("\n") == 1 and str(culprit) in errtext and problem in errtext


def test_reindex_rejects_garbage_and_empty_dirs(tmp_path):
    culprit, _ = _broken(tmp_path, "garbage")
    with pytest.raises(BagError, match="not an MCAP file"):
        reindex(culprit.parent)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="no .mcap or .db3"):
        reindex(tmp_path / "empty")
    with pytest.raises(BagError, match="no such bag directory"):
        BagReader(tmp_path / "nothere").open()


def test_cli_prints_one_line_without_traceback(tmp_path):
    culprit, _ = _broken(tmp_path, "truncated")
    proc = subprocess.run(
        [sys.executable, "-m", "dexndm.cli", "bag", "info", str(culprit.parent)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert str(culprit) in proc.stderr and "dexndm bag reindex" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "dexndm.cli", "bag", "reindex", str(culprit.parent)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert proc.returncode == 0 and "rewritten" in proc.stdout, proc.stderr
    assert len(list(read_messages(culprit.parent))) > 0


def _env() -> dict:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return env

