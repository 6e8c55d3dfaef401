"""Dynamixel Protocol 2.0 packets: CRC-16, byte stuffing, encode/decode.

Packet layout (all multi-byte fields little-endian)::

    FF FF FD 00 | ID | LEN_L LEN_H | INST | PARAM... | CRC_L CRC_H
    status:                          0x55 | ERR | PARAM...

LEN counts the bytes after LEN_H (instruction, parameters and CRC) *after* byte stuffing; the
CRC covers every byte from the first header byte to the last parameter, also after stuffing.
Stuffing inserts an extra 0xFD after every FF FF FD found in the instruction+parameter bytes so
a header can never appear inside a packet.

Used by the emulator and the tests; the driver talks through ``dynamixel_sdk`` and only borrows
the stuffing helpers to parse fast-sync-read replies.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

HEADER = b"\xff\xff\xfd"
RESERVED = 0x00
BROADCAST_ID = 0xFE
MAX_ID = 0xFC
MIN_PACKET_LENGTH = 10  # header(3) reserved ID len(2) inst crc(2)
CRC_POLYNOMIAL = 0x8005
ALERT_BIT = 0x80  # status ERR bit 7: check the Hardware Error Status register


class Instruction(enum.IntEnum):
    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    FACTORY_RESET = 0x06
    REBOOT = 0x08
    CLEAR = 0x10
    STATUS = 0x55
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83
    FAST_SYNC_READ = 0x8A
    BULK_READ = 0x92
    BULK_WRITE = 0x93
    FAST_BULK_READ = 0x9A


class ErrorNumber(enum.IntEnum):
    """Status ERR field, bits 0..6."""

    NONE = 0
    RESULT_FAIL = 1
    INSTRUCTION = 2
    CRC = 3
    DATA_RANGE = 4
    DATA_LENGTH = 5
    DATA_LIMIT = 6
    ACCESS = 7


class ProtocolError(ValueError):
    """A byte string is not a valid Protocol 2.0 packet; the message says which field.

    ``position``: index of the offending packet's header in the parsed buffer (-1 if unknown), so
    a stream parser can skip past it.
    """

    def __init__(self, message: str, position: int = -1):
        super().__init__(message)
        self.position = position


def _make_crc_table(poly: int) -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ poly) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _make_crc_table(CRC_POLYNOMIAL)


def crc16(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-16 (poly 0x8005, init 0, no reflection, no final xor) of ``data``, continuing from ``crc``."""
    table = _CRC_TABLE
    for b in data:
        crc = ((crc << 8) ^ table[((crc >> 8) ^ b) & 0xFF]) & 0xFFFF
    return crc


def stuff(body: bytes | bytearray) -> bytes:
    """Insert 0xFD after every FF FF FD in ``body`` (instruction + parameters, unstuffed)."""
    if b"\xff\xff\xfd" not in body:
        return bytes(body)
    out = bytearray()
    for i, b in enumerate(body):
        out.append(b)
        if b == 0xFD and i >= 2 and body[i - 1] == 0xFF and body[i - 2] == 0xFF:
            out.append(0xFD)
    return bytes(out)


def unstuff(body: bytes | bytearray) -> bytes:
    """Inverse of :func:`stuff`: drop the 0xFD that follows every FF FF FD."""
    if b"\xff\xff\xfd\xfd" not in body:
        return bytes(body)
    out = bytearray()
    i, n = 0, len(body)
    while i < n:
        b = body[i]
        out.append(b)
        if b == 0xFD and len(out) >= 3 and out[-2] == 0xFF and out[-3] == 0xFF and i + 1 < n and body[i + 1] == 0xFD:
            i += 2
            continue
        i += 1
    return bytes(out)


def encode(dxl_id: int, instruction: int, params: bytes | bytearray = b"") -> bytes:
    """A complete packet (header, stuffing, length, CRC) from unstuffed parameters."""
    if not 0 <= dxl_id <= 0xFF:
        raise ValueError(f"ID {dxl_id} out of range 0..255")
    body = stuff(bytes([instruction]) + bytes(params))
    length = len(body) + 2
    head = HEADER + bytes([RESERVED, dxl_id, length & 0xFF, length >> 8])
    crc = crc16(body, crc16(head))
    return head + body + bytes([crc & 0xFF, crc >> 8])


def encode_status(dxl_id: int, error: int = 0, params: bytes | bytearray = b"") -> bytes:
    """A status packet (instruction 0x55) with the ERR byte and parameters."""
    return encode(dxl_id, Instruction.STATUS, bytes([error & 0xFF]) + bytes(params))


@dataclass(frozen=True)
class Packet:
    """A decoded packet. ``params`` are unstuffed; for a status packet ``error`` is the ERR byte
    and ``params`` follow it."""

    id: int
    instruction: int
    params: bytes
    error: int | None = None

    @property
    def is_status(self) -> bool:
        return self.instruction == Instruction.STATUS


def decode(data: bytes | bytearray) -> Packet:
    """Decode exactly one packet; raises ProtocolError naming what is wrong."""
    pkt, used = parse(data)
    if pkt is None:
        raise ProtocolError(f"incomplete packet ({len(data)} bytes): {data.hex(' ')}")
    if used != len(data):
        raise ProtocolError(f"{len(data) - used} trailing byte(s) after the packet")
    return pkt


def parse(buffer: bytes | bytearray, start: int = 0) -> tuple[Packet | None, int]:
    """Parse the first packet in ``buffer[start:]``.

    Returns (packet, end index) when a complete packet with a valid CRC starts there; (None, index)
    when more bytes are needed (index = where the partial packet starts, so the caller keeps it).
    Raises ProtocolError for a bad CRC or a malformed length (the caller skips past the header).
    """
    n = len(buffer)
    i = buffer.find(HEADER, start)
    while i >= 0 and i + 3 < n and buffer[i + 3] == 0xFD:  # FF FF FD FD is stuffing, not a header
        i = buffer.find(HEADER, i + 1)
    if i < 0:
        return None, max(start, n - 2)
    if i + 7 > n:
        return None, i
    if buffer[i + 3] != RESERVED:
        raise ProtocolError(f"reserved byte is 0x{buffer[i + 3]:02x}, expected 0x00", i)
    length = buffer[i + 5] | (buffer[i + 6] << 8)
    if length < 3:
        raise ProtocolError(f"length field {length} < 3", i)
    end = i + 7 + length
    if end > n:
        return None, i
    crc = buffer[end - 2] | (buffer[end - 1] << 8)
    calc = crc16(memoryview(buffer)[i: end - 2])
    if crc != calc:
        raise ProtocolError(f"CRC mismatch: packet says 0x{crc:04x}, computed 0x{calc:04x}", i)
    body = unstuff(bytes(buffer[i + 7: end - 2]))
    inst = body[0]
    if inst == Instruction.STATUS:
        if len(body) < 2:
            raise ProtocolError("status packet without ERR byte", i)
        return Packet(buffer[i + 4], inst, body[2:], body[1]), end
    return Packet(buffer[i + 4], inst, body[1:]), end


# ---- parameter builders (little-endian) ------------------------------------------------------


def u16(v: int) -> bytes:
    return int(v).to_bytes(2, "little")


def read_params(address: int, length: int) -> bytes:
    return u16(address) + u16(length)


def write_params(address: int, data: bytes) -> bytes:
    return u16(address) + bytes(data)


def sync_read_params(address: int, length: int, ids: Iterable[int]) -> bytes:
    return u16(address) + u16(length) + bytes(ids)


def sync_write_params(address: int, length: int, data: Mapping[int, bytes]) -> bytes:
    out = bytearray(u16(address) + u16(length))
    for dxl_id, d in data.items():
        if len(d) != length:
            raise ValueError(f"sync write: ID {dxl_id} has {len(d)} bytes, expected {length}")
        out.append(dxl_id)
        out += d
    return bytes(out)


def bulk_read_params(entries: Sequence[tuple[int, int, int]]) -> bytes:
    """entries: (id, address, length)."""
    out = bytearray()
    for dxl_id, address, length in entries:
        out.append(dxl_id)
        out += read_params(address, length)
    return bytes(out)


def encode_fast_sync_read_status(entries: Sequence[tuple[int, int, bytes]]) -> bytes:
    """The single status packet that answers a fast sync read (ID 0xFE).

    entries: (error, id, data) per device in request order. After INST 0x55 the payload is, per
    device, ``ERR ID DATA... CRC_L CRC_H``; the last device's CRC is the packet CRC, the others
    carry the CRC of their own block (``dynamixel_sdk`` does not check them). The SDK reads
    ``(len(data) + 4) * n`` bytes from offset 8 and takes the ID at +1 and the data at +2 of each
    block.
    """
    if not entries:
        raise ValueError("fast sync read status needs at least one device")
    payload = bytearray()
    for k, (err, dxl_id, data) in enumerate(entries):
        block = bytes([err & 0xFF, dxl_id]) + bytes(data)
        payload += block
        if k < len(entries) - 1:
            crc = crc16(block)
            payload += bytes([crc & 0xFF, crc >> 8])
    return encode(BROADCAST_ID, Instruction.STATUS, bytes(payload))


def split_fast_sync_read(payload: bytes, data_length: int, ids: Sequence[int]) -> dict[int, tuple[int, bytes]]:
    """Split the unstuffed payload of a fast-sync-read status (from the ERR byte of the first
    device up to, not including, the packet CRC) into {id: (error, data)}.

    Raises ProtocolError when the size or an ID does not match the request (a device missing or
    a reply shifted), naming the first offending position and ID.
    """
    block = data_length + 4
    expected = block * len(ids) - 2
    if len(payload) != expected:
        raise ProtocolError(f"fast sync read payload is {len(payload)} bytes, expected {expected} for {len(ids)} IDs")
    out = {}
    for k, want in enumerate(ids):
        s = k * block
        got = payload[s + 1]
        if got != want:
            raise ProtocolError(f"fast sync read block {k}: ID {got}, expected ID {want}")
        out[want] = (payload[s], bytes(payload[s + 2: s + 2 + data_length]))
    return out
