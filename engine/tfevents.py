"""TensorBoard event files, read and written without TensorFlow.

An event file is a sequence of TFRecords (u64 length, masked CRC-32C of
the length, data, masked CRC-32C of the data), each holding one `Event`
protobuf. runq reads only what Guild 0.9.0 indexes from them: scalars,
as (tag, value, step). A scalar is a Summary.Value holding simple_value,
or a DT_FLOAT/DT_DOUBLE tensor that numpy would make a one-element array
of (tfevent.py `_try_scalar_event`); values widen float32 exactly.

How Guild reads a directory (through TensorBoard's DirectoryWatcher and
LegacyEventFileLoader, on TensorBoard's pure-Python TFRecord reader),
and what this module reproduces:

- A directory holds events when one of its files has ".tfevents." in its
  name (`is_event_file`). Every entry of it whose name contains
  "tfevents" and does not end in ".profile-empty" (`is_loaded_event_file`)
  is then read, one at a time, in sorted order (`loaded_event_files`).
- A record cut short or failing a CRC ends that file quietly: the events
  before it count, the rest of the file is skipped, the next file is
  read. Guild says nothing (TensorBoard logs it at debug level).
- A record whose CRCs hold but whose Event protobuf does not parse, or an
  entry that cannot be read (a directory, no permission), ends the whole
  directory: what was read before counts; Guild logs a warning.
- A float tensor whose values do not fit its shape makes numpy raise
  ValueError out of Guild's scalar reader, failing the indexing command;
  here it ends the directory like an unparsable Event, keeping the
  scalars before it, and is reported.

`ScalarRead.aborts_dir` says when Guild would stop reading the directory;
`read_dir_scalars` applies these rules to one directory.

Known differences: a header whose CRC holds but whose length exceeds the
memory Python can allocate makes Guild fail with MemoryError (ending the
directory); here it is a record cut short. CRCs of a file are checked
together (see `_Codewords`): if two records are corrupt, the chance that
their errors cancel is 2**-32, as for any CRC.
"""

from __future__ import annotations

import os
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from .files import EVENT_FILE_MAX_BYTES, read_regular

# ---------------------------------------------------------------------------
# File names


def is_event_file(name: str) -> bool:
    """Guild's rule: a directory with such a file is read for scalars."""
    return ".tfevents." in name


def is_loaded_event_file(name: str) -> bool:
    """TensorBoard's rule for which entries of such a directory are read."""
    return "tfevents" in name and not name.endswith(".profile-empty")


def loaded_event_files(dir_path) -> list[Path]:
    """Entries of `dir_path` that Guild reads, in the order it reads them."""
    names = sorted(name for name in os.listdir(dir_path) if is_loaded_event_file(name))
    return [Path(dir_path, name) for name in names]


def event_file_name(wall_time: float, host: str = "localhost", suffix: str = "") -> str:
    """The name TensorBoard's writers give a new event file."""
    return f"events.out.tfevents.{int(wall_time):010d}.{host}{suffix}"


# ---------------------------------------------------------------------------
# CRC-32C (Castagnoli), as TFRecord frames use it.
#
# Short data goes through the usual 256-entry table, a byte per step.
# Long data, and whole files at once, are instead divided by the CRC
# polynomial P with Python's big integers: the bytes are bit-reversed
# (the CRC is reflected), read as one integer, and reduced by folding
# (`_gf2_mod`), which costs a few dozen C-level operations per megabyte.

_CRC_POLY_REFLECTED = 0x82F63B78
_CRC_POLY = 0x11EDC6F41  # with its x^32 term, most significant bit first
_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF


def _crc_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (_CRC_POLY_REFLECTED if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()
_REVERSED_BITS = bytes(int(f"{byte:08b}"[::-1], 2) for byte in range(256))


def _gf2_mulmod(a, b):
    product = 0
    while b:
        if b & 1:
            product ^= a
        a <<= 1
        b >>= 1
    return _gf2_mod_small(product)


def _gf2_mod_small(a):
    while a.bit_length() > 32:
        a ^= _CRC_POLY << (a.bit_length() - 33)
    return a


def _powers_of_x():
    """{k: the bits set in x**k mod P} for k = 2**j, the folds _gf2_mod makes."""
    bits = {}
    power = _gf2_mod_small(1 << 32)
    for j in range(5, 64):
        bits[1 << j] = tuple(b for b in range(32) if power >> b & 1)
        power = _gf2_mulmod(power, power)
    return bits


_X_POWER_BITS = _powers_of_x()


def _gf2_mod(a):
    """a mod P over GF(2), for an integer of any size.

    Folds the high part onto the low one, H*x^k + L = H*(x^k mod P) + L,
    the product being one shifted copy of H per bit of x^k mod P; each
    fold halves the integer.
    """
    while a.bit_length() > 64:
        k = 1 << ((a.bit_length() - 1).bit_length() - 1)
        high = a >> k
        a &= (1 << k) - 1
        for bit in _X_POWER_BITS[k]:
            a ^= high << bit
    return _gf2_mod_small(a)


def _crc32c_small(data):
    crc = _U32
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _U32


def _reverse32(value):
    return int.from_bytes(value.to_bytes(4, "little").translate(_REVERSED_BITS), "big")


def crc32c(data) -> int:
    """CRC-32C of `data` (initial and final xor 0xFFFFFFFF, reflected)."""
    if len(data) < 512:
        return _crc32c_small(data)
    bits = 8 * len(data)
    message = int.from_bytes(bytes(data).translate(_REVERSED_BITS), "big")
    remainder = _gf2_mod((message << 32) ^ (_U32 << bits))
    return _reverse32(remainder) ^ _U32


def masked_crc32c(data) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32


# ---------------------------------------------------------------------------
# TFRecord framing: u64 length, masked crc of the length, data, masked crc


_HEADER = struct.Struct("<QI")
_WORDS4 = struct.Struct("<IIII")
_WORD = struct.Struct("<I")


@dataclass
class _Records:
    spans: list  # (start, end) of each intact record's data, in file order
    problem: str | None = None


def _split_records(data) -> _Records:
    """Intact records in file order, up to the first damaged one.

    Walks the lengths first, trusting them, and checks every CRC of the
    walked records at once (`_Codewords`); only when that fails are the
    records checked one by one to find the first bad one, whose header
    may have misled the walk.
    """
    codewords = _Codewords(data)
    spans = codewords.walk()
    end = spans[-1][1] + 4 if spans else 0
    if codewords.remainder:
        for index, (data_start, data_end) in enumerate(spans):
            if not _record_intact(data, data_start - 12, data_start, data_end):
                return _Records(spans[:index], _damage(data, data_start - 12))
    return _Records(spans, _damage(data, end) if end < len(data) else None)


_CHUNK = 1 << 22  # bytes of records rewritten and divided at a time


class _Codewords:
    """Checks the CRCs of many records with big-integer divisions.

    A CRC-32C codeword m + crc(m), with its first and last four bytes
    complemented (the CRC's initial and final xor), is a multiple of the
    CRC polynomial; so is any concatenation of such codewords. Each
    record's header and data are rewritten that way in a copy of the file
    (CRCs unmasked, ends complemented), and the copy, chunk by chunk, is
    divided by the polynomial: `remainder` is 0 when all CRCs hold. One
    bad record always shows; several could cancel out with odds of
    2**-32, as two errors can in any CRC.
    """

    def __init__(self, data):
        self.data = data
        self.remainder = 0  # of the bytes divided so far
        self.copy, self.base = bytearray(), 0  # the chunk, and where it starts

    def walk(self):
        """Rewrites and divides every whole record; returns the spans of their data.

        The hot loop of reading: one pass, struct calls only.
        """
        data, size, pos, spans = self.data, len(self.data), 0, []
        unpack_head, pack_head = _WORDS4.unpack_from, _WORDS4.pack_into
        unpack_crc, pack_crc = _WORD.unpack_from, _WORD.pack_into
        copy, base, limit = self.copy, 0, 0
        while size - pos >= 16:
            low, high, header_crc, head = unpack_head(data, pos)
            end = pos + 12 + (low | high << 32)
            if end + 4 > size:
                break
            if end + 4 > limit:
                copy, base, limit = self._next_chunk(pos, end + 4)
            # The complement of an unmasked CRC: ~rotl15(m - delta), which
            # is rotl15(delta - 1 - m).
            header_crc = (_MASK_DELTA - 1 - header_crc) & _U32
            data_crc = (_MASK_DELTA - 1 - unpack_crc(data, end)[0]) & _U32
            header_crc = (header_crc << 15 | header_crc >> 17) & _U32
            data_crc = (data_crc << 15 | data_crc >> 17) & _U32
            if end - pos < 16:
                self._add_short(pos - base, end - base, low, high, header_crc, data_crc)
            else:
                pack_head(copy, pos - base, low ^ _U32, high, header_crc, head ^ _U32)
                pack_crc(copy, end - base, data_crc)
            spans.append((pos + 12, end))
            pos = end + 4
        self._divide(pos)
        return spans

    def _next_chunk(self, pos, reach):
        """Divides the records before `pos`; copies the file from `pos` on."""
        self._divide(pos)
        self.base = pos
        self.copy = bytearray(memoryview(self.data)[pos : max(reach, pos + _CHUNK)])
        return self.copy, pos, pos + len(self.copy)

    def _divide(self, end):
        chunk = self.copy[: end - self.base]
        number = int.from_bytes(chunk.translate(_REVERSED_BITS), "big")
        self.remainder = _gf2_mod((self.remainder << 8 * len(chunk)) ^ number)

    def _add_short(self, pos, end, low, high, header_crc, data_crc):
        """A record of under four data bytes: its complemented ends overlap."""
        struct.pack_into("<III", self.copy, pos, low ^ _U32, high, header_crc)
        _WORD.pack_into(self.copy, end, data_crc)
        for index in range(pos + 12, pos + 16):
            self.copy[index] ^= 0xFF


def _record_intact(data, start, data_start, data_end):
    header_crc = _HEADER.unpack_from(data, start)[1]
    data_crc = _WORD.unpack_from(data, data_end)[0]
    return (
        masked_crc32c(data[start : start + 8]) == header_crc
        and masked_crc32c(data[data_start:data_end]) == data_crc
    )


def _damage(data, start):
    """Why the record at `start` is unusable, checked in TensorBoard's order."""
    left = len(data) - start
    if left < 8:
        return f"record header cut short at byte {start}"
    if left < 12:
        return f"record header crc cut short at byte {start}"
    length, header_crc = _HEADER.unpack_from(data, start)
    if masked_crc32c(data[start : start + 8]) != header_crc:
        return f"record header crc32c mismatch at byte {start}"
    if start + 12 + length > len(data):
        return f"record data cut short at byte {start}"
    if start + 16 + length > len(data):
        return f"record data crc cut short at byte {start}"
    return f"record data crc32c mismatch at byte {start}"


def _framed(payload):
    header = struct.pack("<Q", len(payload))
    return b"".join((header, _WORD.pack(masked_crc32c(header)), payload, _WORD.pack(masked_crc32c(payload))))


# ---------------------------------------------------------------------------
# Protobuf wire format: just enough of it, with protobuf's own strictness
# (upb, which Guild's protobuf uses, rejects what `_Malformed` rejects).

_VARINT, _FIXED64, _LEN, _GROUP_START, _GROUP_END, _FIXED32 = range(6)
_MAX_DEPTH = 100  # nested messages protobuf accepts below the top one


class _Malformed(Exception):
    """Bytes that protobuf refuses to parse as the message they should be."""


class _BadTensor(Exception):
    """A float tensor whose values do not fit its shape."""


def _varint(buf, pos, end, max_bytes=10):
    result = shift = 0
    for index in range(pos, min(end, pos + max_bytes)):
        byte = buf[index]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, index + 1
        shift += 7
    raise _Malformed("bad varint")


def _skip_group(buf, pos, end, number):
    while pos < end:
        key, pos = _field_key(buf, pos, end)
        if key & 7 == _GROUP_END:
            if key >> 3 != number:
                break
            return pos
        pos = _read_value(buf, pos, end, key)[1]
    raise _Malformed("unterminated group")


def _field_key(buf, pos, end):
    key, pos = _varint(buf, pos, end, 5)
    if key >> 32 or key >> 3 == 0:
        raise _Malformed("bad field key")
    return key, pos


def _read_value(buf, pos, end, key):
    """The value of one field: an int for varints, else (start, end) of its bytes."""
    wire = key & 7
    if wire == _VARINT:
        return _varint(buf, pos, end)
    size = _FIXED_SIZES.get(wire)
    if size is None:
        if wire == _LEN:
            size, pos = _varint(buf, pos, end)
        elif wire == _GROUP_START:
            return None, _skip_group(buf, pos, end, key >> 3)
        else:
            raise _Malformed(f"bad wire type {wire}")
    if pos + size > end:
        raise _Malformed("field runs past its message")
    return (pos, pos + size), pos + size


_FIXED_SIZES = {_FIXED64: 8, _FIXED32: 4}


def _fields(buf, pos, end):
    """[(number, wire type, value)] of a message; unknown groups skipped."""
    fields = []
    while pos < end:
        byte = buf[pos]
        if 8 <= byte < 0x80:
            key, pos = byte, pos + 1
        else:
            key, pos = _field_key(buf, pos, end)
        value, pos = _read_value(buf, pos, end, key)
        if value is not None:
            fields.append((key >> 3, key & 7, value))
    return fields


# Fields that protobuf checks inside messages runq does not interpret:
# strings must be UTF-8, messages must parse, packed numbers must fit.
# fmt: off
_SCHEMAS = {
    "Event": {3: "string", 4: "bytes", 5: "Summary", 6: "LogMessage", 7: "SessionLog",
              8: "TaggedRunMetadata", 9: "bytes", 10: "SourceMetadata"},
    "Summary": {1: "Summary.Value"},
    "Summary.Value": {1: "string", 3: "bytes", 4: "Summary.Image", 5: "HistogramProto",
                      6: "Summary.Audio", 7: "string", 8: "TensorProto", 9: "SummaryMetadata"},
    "SummaryMetadata": {1: "SummaryMetadata.PluginData", 2: "string", 3: "string"},
    "SummaryMetadata.PluginData": {1: "string"},
    "Summary.Image": {},
    "HistogramProto": {6: "packed64", 7: "packed64"},
    "Summary.Audio": {5: "string"},
    "TensorProto": {2: "TensorShapeProto", 5: "packed32", 6: "packed64", 7: "packedvarint",
                    9: "packed32", 10: "packedvarint", 11: "packedvarint", 12: "packed64",
                    13: "packedvarint", 14: "ResourceHandleProto", 15: "VariantTensorDataProto",
                    16: "packedvarint", 17: "packedvarint"},
    "TensorShapeProto": {2: "TensorShapeProto.Dim"},
    "TensorShapeProto.Dim": {2: "string"},
    "ResourceHandleProto": {1: "string", 2: "string", 3: "string", 5: "string",
                            6: "ResourceHandleProto.DtypeAndShape"},
    "ResourceHandleProto.DtypeAndShape": {2: "TensorShapeProto"},
    "VariantTensorDataProto": {1: "string", 3: "TensorProto"},
    "LogMessage": {2: "string"},
    "SessionLog": {2: "string", 3: "string"},
    "TaggedRunMetadata": {1: "string"},
    "SourceMetadata": {1: "string"},
}
# fmt: on


def _check_message(buf, span, schema, depth):
    if depth > _MAX_DEPTH:
        raise _Malformed("messages nested too deep")
    kinds = _SCHEMAS[schema]
    for number, wire, value in _fields(buf, *span):
        kind = kinds.get(number)
        if kind is not None and wire == _LEN:
            _check_len_field(buf, value, kind, depth)


def _check_len_field(buf, span, kind, parent_depth):
    check = _LEN_CHECKS.get(kind)
    if check is None:
        _check_message(buf, span, kind, parent_depth + 1)
    else:
        check(buf, span)


def _text(buf, span):
    try:
        return buf[span[0] : span[1]].decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed("string field is not UTF-8") from None


def _check_packed_varints(buf, span):
    pos, end = span
    while pos < end:
        pos = _varint(buf, pos, end)[1]


def _packed_fixed_checker(size):
    def check(buf, span):
        if (span[1] - span[0]) % size:
            raise _Malformed("packed field of a wrong size")

    return check


_LEN_CHECKS = {
    "string": _text,
    "bytes": lambda buf, span: None,
    "packedvarint": _check_packed_varints,
    "packed32": _packed_fixed_checker(4),
    "packed64": _packed_fixed_checker(8),
}


def _int64(value):
    return value - (1 << 64) if value >> 63 else value


def _int32(value):
    value &= _U32
    return value - (1 << 32) if value >> 31 else value


# ---------------------------------------------------------------------------
# Event -> summary values -> scalars

_EVENT_STEP, _EVENT_SUMMARY = 2, 5
_EVENT_WHAT = frozenset(range(3, 10))  # members of Event's `what` oneof
_VALUE_TAG, _VALUE_SIMPLE, _VALUE_TENSOR = 1, 2, 8
_VALUE_KIND = frozenset((2, 3, 4, 5, 6, 8))  # members of Value's `value` oneof
_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")
_FLOAT_VAL, _DOUBLE_VAL = 5, 6
_ELEMENTS = {_FLOAT_VAL: _FLOAT, _DOUBLE_VAL: _DOUBLE}  # by TensorProto field
_DTYPE_VALUES = {1: _FLOAT_VAL, 2: _DOUBLE_VAL}  # DT_FLOAT, DT_DOUBLE


def _event_values(buf, start, end, templates):
    """(step, [(tag, kind, content, span)]) of one Event's Summary.Values.

    kind is the Value's oneof member (content: the simple_value offset or
    a _Tensor), None, or _KNOWN (content: the scalar, read by template).
    """
    step, what, values = 0, None, []
    checks = _SCHEMAS["Event"]
    for number, wire, value in _fields(buf, start, end):
        if number == _EVENT_STEP and wire == _VARINT:
            step = _int64(value)
        elif wire == _LEN and number in checks:
            if number in _EVENT_WHAT and number != what:  # a oneof member replaces the one before
                what, values = number, []
            if number == _EVENT_SUMMARY:
                values.extend(_summary_values(buf, value, templates))
            else:
                _check_len_field(buf, value, checks[number], 0)
    return step, values


def _summary_values(buf, span, templates):
    return [
        _known_value(buf, value, templates) or _summary_value(buf, value)
        for number, wire, value in _fields(buf, *span)
        if number == 1 and wire == _LEN
    ]


def _summary_value(buf, span):
    """(tag, oneof member or None, its content, span) of a Summary.Value."""
    tag, kind, content = "", None, None
    checks = _SCHEMAS["Summary.Value"]
    for number, wire, value in _fields(buf, *span):
        if number == _VALUE_TAG and wire == _LEN:
            tag = _text(buf, value)
        elif number == _VALUE_SIMPLE and wire == _FIXED32:
            kind, content = number, value[0]
        elif number == _VALUE_TENSOR and wire == _LEN:
            if kind != _VALUE_TENSOR:
                kind, content = number, _Tensor()
            content.merge(buf, value)
        elif wire == _LEN and number in checks:
            if number in _VALUE_KIND:
                kind, content = number, None
            _check_len_field(buf, value, checks[number], 2)
    return tag, kind, content, span


# A file repeats the same Summary.Value layout for each tag; only the
# bytes of the number change, and those bytes (a fixed32/fixed64 field,
# tensor_content or a packed element) never steer the parse. So once a
# Value has been decoded, a later one of the same tag and length whose
# other bytes are identical is read by slicing out the number. What a
# Value's bytes mean does not depend on the file holding them, so the
# layouts learnt are kept for every file a process reads (the runs of a
# home log the same tags), up to a bound.
_KNOWN = 0  # value-kind marker: the content is the scalar itself
_SHARED_TEMPLATES = {}
_MAX_TEMPLATES = 4096


def _templates():
    if len(_SHARED_TEMPLATES) > _MAX_TEMPLATES:
        _SHARED_TEMPLATES.clear()
    return _SHARED_TEMPLATES


def _template_key(buf, start, end):
    """(length, tag field) of a Value whose tag comes first, as writers put it."""
    if end - start < 2 or buf[start] != 0x0A or buf[start + 1] >= 0x80:
        return None, 0
    tag_end = start + 2 + buf[start + 1]
    return (end - start, buf[start:tag_end]), tag_end


def _known_value(buf, span, templates):
    start, end = span
    key, tag_end = _template_key(buf, start, end)
    template = templates.get(key)
    if template is None:
        return None
    offset, element, tag, body = template
    at, after = start + offset, offset + element.size
    if buf[start + after : end] != body[after:] or buf[tag_end:at] != body[tag_end - start : offset]:
        return None
    return tag, _KNOWN, element.unpack_from(buf, at)[0], span


def _learn_value(templates, buf, span, at, element, tag):
    start, end = span
    key, tag_end = _template_key(buf, start, end)
    if key is not None and at >= tag_end:
        templates[key] = (at - start, element, tag, buf[start:end])


class _Tensor:
    """What make_ndarray uses of a TensorProto: dtype, shape, values."""

    def __init__(self):
        self.dtype = 0
        self.dims = []
        self.content = (0, 0)  # span of tensor_content
        self.counts = {_FLOAT_VAL: 0, _DOUBLE_VAL: 0}
        self.firsts = {}  # field -> offset of its first element

    def merge(self, buf, span, depth=3):
        if depth > _MAX_DEPTH:
            raise _Malformed("messages nested too deep")
        checks = _SCHEMAS["TensorProto"]
        for number, wire, value in _fields(buf, *span):
            reader = _TENSOR_READERS.get((number, wire))
            if reader is not None:
                reader(self, number, value, buf)
            elif wire == _LEN and number in checks:
                _check_len_field(buf, value, checks[number], depth)

    def scalar_at(self):
        """(offset, struct) of the one value of a float tensor; None if not one."""
        number = _DTYPE_VALUES.get(self.dtype)
        if number is None:
            return None
        element = _ELEMENTS[number]
        count, at = self._count_and_first(number, element.size)
        if count < 0 or not _reshapes(count, self.dims):
            raise _BadTensor(f"{count} values do not fit shape {self.dims}")
        return (at, element) if count == 1 else None

    def _count_and_first(self, number, size):
        """How many values make_ndarray makes of the tensor, and where the first is."""
        start, end = self.content
        if end > start:
            count, extra = divmod(end - start, size)
            if extra:
                raise _BadTensor("tensor_content is not whole values")
            return count, start
        count = self.counts[number]
        if count == 1:  # one value fills the whole shape
            return _product(self.dims), self.firsts[number]
        return count, self.firsts.get(number)


def _set_dtype(tensor, number, value, buf):
    tensor.dtype = _int32(value)


def _merge_shape(tensor, number, span, buf):
    for dim_number, wire, value in _fields(buf, *span):
        if dim_number == 2 and wire == _LEN:
            tensor.dims.append(_dim_size(buf, value))


def _dim_size(buf, span):
    size = 0
    for number, wire, value in _fields(buf, *span):
        if number == 1 and wire == _VARINT:
            size = _int64(value)
        elif number == 2 and wire == _LEN:
            _text(buf, value)
    return size


def _set_content(tensor, number, span, buf):
    tensor.content = span


def _add_values(tensor, number, span, buf):
    """Counts float_val or double_val elements, packed or one by one."""
    count, extra = divmod(span[1] - span[0], _ELEMENTS[number].size)
    if extra:
        raise _Malformed("packed field of a wrong size")
    if count and not tensor.counts[number]:
        tensor.firsts[number] = span[0]
    tensor.counts[number] += count


_TENSOR_READERS = {
    (1, _VARINT): _set_dtype,
    (2, _LEN): _merge_shape,
    (4, _LEN): _set_content,
    (_FLOAT_VAL, _LEN): _add_values,
    (_FLOAT_VAL, _FIXED32): _add_values,
    (_DOUBLE_VAL, _LEN): _add_values,
    (_DOUBLE_VAL, _FIXED64): _add_values,
}


def _product(numbers):
    result = 1
    for number in numbers:
        result *= number
    return result


def _reshapes(count, dims):
    """Whether numpy can reshape `count` values to `dims` (negatives: unknown)."""
    unknown = [size for size in dims if size < 0]
    known = _product(size for size in dims if size >= 0)
    if not unknown:
        return known == count
    return len(unknown) == 1 and known != 0 and count % known == 0


# How writers lay out a scalar Event: wall_time (which Guild's own writer
# of output scalars leaves unset), step, then a Summary of one Value. Such
# an Event whose Value has a known layout skips the rest.
_SCALAR_EVENT_HEAD = re.compile(
    rb"(?:\x09.{8})?(?:\x10([\x80-\xff]{0,9}[\x00-\x7f]))?\x2a([\x00-\x7f])\x0a([\x00-\x7f])",
    re.DOTALL,
)


def _known_event(buf, start, end, templates, found):
    """Appends the scalar of the usual one-Value Event; whether it could."""
    head = _SCALAR_EVENT_HEAD.match(buf, start, end)
    if head is None:
        return False
    summary_len, value_len = head.group(2)[0], head.group(3)[0]
    if head.end() + value_len != end or summary_len != value_len + 2:
        return False
    known = _known_value(buf, (head.end(), end), templates)
    if known is None:
        return False
    found.append((known[0], known[2], _step(head.group(1))))
    return True


def _step(varint):
    """The step of a varint captured by _SCALAR_EVENT_HEAD (None: absent)."""
    if varint is None:
        return 0
    if len(varint) == 1:
        return varint[0]
    return _int64(_varint(varint, 0, len(varint))[0])


def _event_scalars(buf, start, end, templates, found):
    """Appends the scalars of one Event to `found`, as Guild counts them.

    The whole Event is decoded before any scalar is taken, since protobuf
    refuses an Event as a whole; a bad tensor, found value by value as
    Guild does, leaves the scalars before it in `found`.
    """
    if _known_event(buf, start, end, templates, found):
        return
    step, values = _event_values(buf, start, end, templates)
    for tag, kind, content, span in values:
        if kind == _KNOWN:
            found.append((tag, content, step))
            continue
        located = _locate_scalar(kind, content)
        if located is not None:
            at, element = located
            _learn_value(templates, buf, span, at, element, tag)
            found.append((tag, element.unpack_from(buf, at)[0], step))


def _locate_scalar(kind, content):
    """(offset, struct) of a Value's scalar, as Guild's _try_scalar_event finds it."""
    if kind == _VALUE_TENSOR:
        return content.scalar_at()
    if kind == _VALUE_SIMPLE:
        return content, _FLOAT
    return None


# ---------------------------------------------------------------------------
# Reading


@dataclass
class ScalarRead:
    """Scalars read from event data, and what stopped the reading early."""

    scalars: list[tuple[str, float, int]]
    problem: str | None = None
    aborts_dir: bool = False  # Guild stops reading the rest of the directory


def scalars_from_bytes(data: bytes) -> ScalarRead:
    """The scalars of one event file's contents; never raises on bad data."""
    data = bytes(data)  # templates key on slices, which must hash
    records = _split_records(data)
    scalars, templates = [], _templates()
    for start, end in records.spans:
        kept = len(scalars)
        try:
            _event_scalars(data, start, end, templates, scalars)
        except _Malformed as e:
            del scalars[kept:]
            return ScalarRead(scalars, f"unparsable Event at byte {start - 12}: {e}", True)
        except _BadTensor as e:
            return ScalarRead(scalars, f"bad tensor at byte {start - 12}: {e}", True)
    return ScalarRead(scalars, records.problem)


def read_scalars(path) -> ScalarRead:
    """The scalars of one event file; never raises on bad data."""
    try:
        data = read_regular(path, EVENT_FILE_MAX_BYTES)
    except OSError as e:
        return ScalarRead([], f"cannot read: {e.strerror or e}", True)
    return scalars_from_bytes(data)


def read_dir_scalars(dir_path) -> ScalarRead:
    """The scalars Guild's ScalarReader yields for the files of one directory."""
    try:
        paths = loaded_event_files(dir_path)
    except OSError as e:
        return ScalarRead([], f"cannot list: {e.strerror or e}", True)
    scalars, problems = [], []
    for path in paths:
        read = read_scalars(path)
        scalars.extend(read.scalars)
        if read.problem:
            problems.append(f"{path.name}: {read.problem}")
        if read.aborts_dir:
            return ScalarRead(scalars, "; ".join(problems), True)
    return ScalarRead(scalars, "; ".join(problems) or None)


# ---------------------------------------------------------------------------
# Writing


def _encode_varint(value):
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(number, payload):
    return _encode_varint(number << 3 | _LEN) + _encode_varint(len(payload)) + payload


def _float32(value):
    """`value` as protobuf stores a float field: rounded, overflowing to inf."""
    try:
        return _FLOAT.pack(value)
    except OverflowError:
        return _FLOAT.pack(float("inf") if value > 0 else float("-inf"))


# SummaryMetadata as TensorBoard's scalars plugin makes it: plugin_data { plugin_name }
_SCALARS_METADATA = _len_field(1, _len_field(1, b"scalars"))
_SCALAR_SHAPE = _len_field(2, b"")


def _simple_value(tag, value):
    return _len_field(1, tag.encode("utf-8")) + b"\x15" + _float32(value)


def _tensor_value(tag, value):
    tensor = b"\x08\x01" + _SCALAR_SHAPE + _len_field(4, _float32(value))
    return _len_field(1, tag.encode("utf-8")) + _len_field(8, tensor) + _len_field(9, _SCALARS_METADATA)


def _event(wall_time, step=0, body=b""):
    head = b"\x09" + struct.pack("<d", wall_time) if wall_time else b""
    step_field = b"\x10" + _encode_varint(step) if step else b""
    return head + step_field + body


def _scalar_records(scalars, wall_time, as_tensor):
    encode_value = _tensor_value if as_tensor else _simple_value
    return [
        _framed(_event(wall_time, int(step), _len_field(5, _len_field(1, encode_value(tag, value)))))
        for tag, value, step in scalars
    ]


def write_event_file(path, scalars, *, wall_time=None, as_tensor=False, file_version=True) -> None:
    """Writes a new event file of (tag, value, step) scalars.

    Values are stored as float32, as simple_value or, with `as_tensor`, as
    a scalar DT_FLOAT tensor in tensor_content with scalars plugin metadata
    (as TF2's tf.summary.scalar writes them). `file_version` leads with the
    `brain.Event:2` event, as every TensorBoard writer does.
    """
    wall_time = time.time() if wall_time is None else wall_time
    records = [_framed(_event(wall_time, 0, _len_field(3, b"brain.Event:2")))] if file_version else []
    records += _scalar_records(scalars, wall_time, as_tensor)
    Path(path).write_bytes(b"".join(records))


def append_events(path, scalars, *, wall_time=None, as_tensor=False) -> None:
    """Appends scalars to an existing event file, as a live writer would."""
    wall_time = time.time() if wall_time is None else wall_time
    with open(path, "ab") as out:
        out.write(b"".join(_scalar_records(scalars, wall_time, as_tensor)))
