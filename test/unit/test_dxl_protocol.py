"""Protocol 2.0 packets: CRC, stuffing, encode/decode against the e-manual's example packets."""

import pytest

from dexndm.hand.dynamixel import protocol as p2
from dexndm.hand.dynamixel.control_table import RAD_PER_TICK, XC330_M288_T, HardwareError, describe_hardware_error

Inst = p2.Instruction


def h(s: str) -> bytes:
    return bytes.fromhex(s)


def test_crc_check_value():
    assert p2.crc16(b"123456789") == 0xFEE8


def test_crc_matches_sdk_table():
    from dynamixel_sdk import PacketHandler

    ph = PacketHandler(2.0)
    data = bytes(range(256)) * 2
    assert p2.crc16(data) == ph.updateCRC(0, list(data), len(data))


# (hex packet, id, instruction, params, error) from the Protocol 2.0 e-manual examples.
EXAMPLES = [
    ("FF FF FD 00 01 03 00 01 19 4E", 1, Inst.PING, "", None),
    ("FF FF FD 00 01 07 00 55 00 06 04 26 65 5D", 1, Inst.STATUS, "06 04 26", 0),
    ("FF FF FD 00 FE 03 00 01 31 42", 0xFE, Inst.PING, "", None),
    ("FF FF FD 00 02 07 00 55 00 06 04 26 6F 6D", 2, Inst.STATUS, "06 04 26", 0),
    ("FF FF FD 00 01 07 00 02 84 00 04 00 1D 15", 1, Inst.READ, "84 00 04 00", None),
    ("FF FF FD 00 01 08 00 55 00 A6 00 00 00 8C C0", 1, Inst.STATUS, "A6 00 00 00", 0),
    ("FF FF FD 00 01 09 00 03 74 00 00 02 00 00 CA 89", 1, Inst.WRITE, "74 00 00 02 00 00", None),
    ("FF FF FD 00 01 04 00 55 00 A1 0C", 1, Inst.STATUS, "", 0),
    ("FF FF FD 00 01 09 00 04 68 00 C8 00 00 00 AE 8E", 1, Inst.REG_WRITE, "68 00 C8 00 00 00", None),
    ("FF FF FD 00 01 03 00 05 02 CE", 1, Inst.ACTION, "", None),
    ("FF FF FD 00 01 04 00 06 01 A1 E6", 1, Inst.FACTORY_RESET, "01", None),
    ("FF FF FD 00 01 03 00 08 2F 4E", 1, Inst.REBOOT, "", None),
    ("FF FF FD 00 01 08 00 10 01 44 58 4C 22 B1 DC", 1, Inst.CLEAR, "01 44 58 4C 22", None),
    ("FF FF FD 00 FE 09 00 82 84 00 04 00 01 02 CE FA", 0xFE, Inst.SYNC_READ, "84 00 04 00 01 02", None),
    ("FF FF FD 00 02 08 00 55 00 1F 08 00 00 BA BE", 2, Inst.STATUS, "1F 08 00 00", 0),
    ("FF FF FD 00 FE 11 00 83 74 00 04 00 01 96 00 00 00 02 AA 00 00 00 82 87", 0xFE, Inst.SYNC_WRITE,
     "74 00 04 00 01 96 00 00 00 02 AA 00 00 00", None),
    ("FF FF FD 00 FE 0D 00 92 01 90 00 02 00 02 92 00 01 00 1A 05", 0xFE, Inst.BULK_READ,
     "01 90 00 02 00 02 92 00 01 00", None),
    ("FF FF FD 00 01 06 00 55 00 77 00 C3 69", 1, Inst.STATUS, "77 00", 0),
    ("FF FF FD 00 02 05 00 55 00 24 8B A9", 2, Inst.STATUS, "24", 0),
]


@pytest.mark.parametrize("packet,dxl_id,inst,params,error", EXAMPLES)
def test_manual_examples_decode_and_reencode(packet, dxl_id, inst, params, error):
    raw = h(packet)
    pkt = p2.decode(raw)
    assert (pkt.id, pkt.instruction, pkt.params, pkt.error) == (dxl_id, inst, h(params), error)
    if error is None:
        assert p2.encode(dxl_id, inst, h(params)) == raw
    else:
        assert p2.encode_status(dxl_id, error, h(params)) == raw


def test_param_builders_reproduce_examples():
    assert p2.encode(1, Inst.READ, p2.read_params(132, 4)) == h(EXAMPLES[4][0])
    assert p2.encode(0xFE, Inst.SYNC_READ, p2.sync_read_params(132, 4, [1, 2])) == h(EXAMPLES[13][0])
    goal = XC330_M288_T["goal_position"]
    data = {1: goal.encode(150), 2: goal.encode(170)}
    assert p2.encode(0xFE, Inst.SYNC_WRITE, p2.sync_write_params(goal.address, 4, data)) == h(EXAMPLES[15][0])
    assert p2.encode(0xFE, Inst.BULK_READ, p2.bulk_read_params([(1, 144, 2), (2, 146, 1)])) == h(EXAMPLES[16][0])


@pytest.mark.parametrize("body", [
    b"", b"\xff\xff\xfd", b"\xff\xff\xfd\xfd", b"\x01\xff\xff\xfd\x02\xff\xff\xfd",
    b"\xff\xff\xff\xfd\xfd\xff", bytes(range(256)), b"\xff\xff\xfd" * 5,
])
def test_stuffing_round_trip(body):
    stuffed = p2.stuff(body)
    assert p2.unstuff(stuffed) == body
    assert len(stuffed) == len(body) + body.count(b"\xff\xff\xfd")


def test_stuffed_packet_round_trip_and_length_field():
    params = p2.write_params(116, b"\xff\xff\xfd\x00")
    raw = p2.encode(3, Inst.WRITE, params)
    assert b"\xff\xff\xfd\xfd" in raw[7:]
    assert raw[5] | raw[6] << 8 == len(raw) - 7  # length counts the stuffed bytes
    assert p2.decode(raw).params == params


def test_sdk_agrees_on_stuffing():
    from dynamixel_sdk import PacketHandler

    params = p2.write_params(116, b"\xff\xff\xfd\x00")
    tx = [0] * (len(params) + 10)
    tx[4], tx[5], tx[6], tx[7] = 3, (len(params) + 3) & 0xFF, 0, Inst.WRITE
    tx[8:8 + len(params)] = params
    sdk = PacketHandler(2.0).addStuffing(tx)
    ours = p2.encode(3, Inst.WRITE, params)
    assert bytes(sdk[4:-2]) == ours[4:-2]


def test_bad_crc_and_truncation_are_reported():
    raw = bytearray(h(EXAMPLES[0][0]))
    raw[-1] ^= 1
    with pytest.raises(p2.ProtocolError, match="CRC"):
        p2.decode(bytes(raw))
    assert p2.parse(h(EXAMPLES[4][0])[:9]) == (None, 0)


def test_parse_stream_skips_garbage():
    stream = b"\x00\x13" + h(EXAMPLES[0][0]) + h(EXAMPLES[2][0])
    pkt, end = p2.parse(stream)
    assert pkt.id == 1 and pkt.instruction == Inst.PING
    pkt2, end2 = p2.parse(stream, end)
    assert pkt2.id == 0xFE and end2 == len(stream)


def test_fast_sync_read_status_layout_as_sdk_reads_it():
    entries = [(0, 1, b"\x11\x22\x33\x44"), (0x80, 2, b"\x55\x66\x77\x88")]
    raw = p2.encode_fast_sync_read_status(entries)
    assert raw[4] == 0xFE and raw[7] == 0x55
    body = raw[8:]  # the SDK takes (len + 4) * n bytes from offset 8
    assert len(body) == (4 + 4) * 2
    assert (body[0], body[1], body[2:6]) == (0, 1, b"\x11\x22\x33\x44")
    assert (body[8], body[9], body[10:14]) == (0x80, 2, b"\x55\x66\x77\x88")
    split = p2.split_fast_sync_read(p2.unstuff(raw[8:-2]), 4, [1, 2])
    assert split == {1: (0, b"\x11\x22\x33\x44"), 2: (0x80, b"\x55\x66\x77\x88")}
    with pytest.raises(p2.ProtocolError, match="ID 2"):
        p2.split_fast_sync_read(p2.unstuff(raw[8:-2]), 4, [1, 3])


def test_register_encoding_and_units():
    reg = XC330_M288_T["present_current"]
    assert reg.encode(-2) == b"\xfe\xff" and reg.decode(b"\xfe\xff") == -2
    assert XC330_M288_T["goal_position"].decode(0xFFFFFFFF) == -1
    assert XC330_M288_T.span("present_current", "present_position") == (126, 10)
    assert 2048 * RAD_PER_TICK == pytest.approx(3.141592653589793)
    with pytest.raises(ValueError, match="does not fit"):
        XC330_M288_T["torque_enable"].encode(256)
    assert describe_hardware_error(HardwareError.OVERHEATING | HardwareError.OVERLOAD) == "overheating,overload"
