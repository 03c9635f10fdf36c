"""Event files: runq's reader and writer against TensorBoard's and Guild's.

The reference peer runs in Guild's own venv, twice per module: once to
write event files with TensorBoard's writer, once to read every directory
the tests build with Guild's ScalarReader (and files with TensorBoard's
loader). Each test then compares one case with what the peer reported.
"""

import json
import math
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from guildenv import guild_python  # noqa: E402

from runq.engine import tfevents  # noqa: E402
from runq.engine.tfevents import (  # noqa: E402
    ScalarRead,
    append_events,
    crc32c,
    event_file_name,
    is_event_file,
    is_loaded_event_file,
    loaded_event_files,
    read_dir_scalars,
    read_scalars,
    scalars_from_bytes,
    write_event_file,
)

# ---------------------------------------------------------------------------
# The peer: Guild 0.9.0 with TensorBoard 2.20, driven by JSON on stdin

PEER = r"""
import json, logging, sys, warnings
warnings.simplefilter("ignore")
import numpy as np
from guild import tfevent
from tensorboard.backend.event_processing import event_file_loader, io_wrapper
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter, RecordWriter
from tensorboard.util import tensor_util


def set_simple(value, spec):
    value.simple_value = spec["value"]


def set_np(value, spec):
    array = np.array(spec["value"], dtype=spec["dtype"])
    value.tensor.CopyFrom(tensor_util.make_tensor_proto(array))


def set_tensor(value, spec):
    tensor = value.tensor
    tensor.dtype = spec["dtype"]
    if spec.get("shape") is not None:
        tensor.tensor_shape.SetInParent()
        for size in spec["shape"]:
            tensor.tensor_shape.dim.add(size=size)
    tensor.float_val.extend(spec.get("float_val", []))
    tensor.double_val.extend(spec.get("double_val", []))
    tensor.tensor_content = bytes.fromhex(spec.get("content", ""))


def set_image(value, spec):
    image = value.image
    image.height, image.width, image.colorspace = 1, 1, 3
    image.encoded_image_string = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def set_histo(value, spec):
    histo = value.histo
    histo.min, histo.max, histo.num, histo.sum = 0.0, 2.0, 3, 3.0
    histo.bucket_limit.extend([0.5, 1.5, 2.5])
    histo.bucket.extend([1, 1, 1])


VALUE_SETTERS = {
    "simple": set_simple, "np": set_np, "tensor": set_tensor,
    "image": set_image, "histo": set_histo,
}


def value_proto(spec):
    value = summary_pb2.Summary.Value(tag=spec["tag"])
    VALUE_SETTERS[spec["kind"]](value, spec)
    if spec.get("scalars_metadata"):
        value.metadata.CopyFrom(scalar_metadata.create_summary_metadata(None, None))
    return value


def event_bytes(spec):
    if "raw" in spec:
        return bytes.fromhex(spec["raw"])
    event = event_pb2.Event(wall_time=spec.get("wall_time", 0.0), step=spec.get("step", 0))
    if "file_version" in spec:
        event.file_version = spec["file_version"]
    if "values" in spec:
        event.summary.SetInParent()
        event.summary.value.extend(value_proto(value) for value in spec["values"])
    return event.SerializeToString()


def write(file_spec):
    if "event_file_writer_dir" in file_spec:
        writer = EventFileWriter(file_spec["event_file_writer_dir"])
        for spec in file_spec["events"]:
            writer.add_event(event_pb2.Event.FromString(event_bytes(spec)))
        writer.close()
        return
    with open(file_spec["path"], "wb") as out:
        writer = RecordWriter(out)
        for spec in file_spec["events"]:
            writer.write(event_bytes(spec))
        writer.flush()


class Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def guild_read(dir):
    handler = Warnings()
    logging.getLogger("guild").addHandler(handler)
    scalars, raised = [], None
    try:
        for tag, value, step in tfevent.ScalarReader(dir):
            scalars.append([tag, value, step])
    except Exception as e:
        raised = f"{type(e).__name__}: {e}"
    logging.getLogger("guild").removeHandler(handler)
    return {"scalars": scalars, "warnings": handler.messages, "raised": raised}


def tensorboard_read(path):
    scalars = []
    for event in event_file_loader.EventFileLoader(path).Load():
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == "scalars":
                item = tensor_util.make_ndarray(value.tensor).item()
                scalars.append([value.tag, item, event.step])
    return scalars


def name_rules(name):
    return [tfevent._is_event_file(name), io_wrapper.IsSummaryEventsFile(name)]


request = json.load(sys.stdin)
for file_spec in request.get("write", []):
    write(file_spec)
json.dump({
    "guild": {dir: guild_read(dir) for dir in request.get("guild_read", [])},
    "tensorboard": {path: tensorboard_read(path) for path in request.get("tensorboard_read", [])},
    "names": {name: name_rules(name) for name in request.get("names", [])},
}, sys.stdout)
"""


def run_peer(request):
    done = subprocess.run(
        [str(guild_python()), "-c", PEER],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# ---------------------------------------------------------------------------
# Cases written by TensorBoard: {case: {file name: [event spec]}}

WALL = 1_700_000_000.25


def simple(tag, value):
    return {"tag": tag, "kind": "simple", "value": value}


def np_scalar(tag, value, dtype="float32", metadata=True):
    return {"tag": tag, "kind": "np", "value": value, "dtype": dtype, "scalars_metadata": metadata}


def tensor(tag, dtype=1, **fields):
    return {"tag": tag, "kind": "tensor", "dtype": dtype, "scalars_metadata": True, **fields}


def f32_hex(*values):
    return struct.pack(f"<{len(values)}f", *values).hex()


def f64_hex(*values):
    return struct.pack(f"<{len(values)}d", *values).hex()


def event(step, *values):
    return {"wall_time": WALL + step, "step": step, "values": list(values)}


VERSION = {"wall_time": WALL, "file_version": "brain.Event:2"}
F = "events.out.tfevents.1700000000.host"

TB_CASES = {
    "simple_value": {
        F: [VERSION] + [event(i, simple("loss", 1 / (i + 1)), simple("acc", i / 7)) for i in range(6)],
    },
    "simple_value_specials": {
        F: [
            event(0, simple("nan", math.nan), simple("inf", math.inf), simple("-inf", -math.inf)),
            event(1, simple("tiny", 1e-45), simple("big", 3.4e38), simple("neg zero", -0.0)),
            event(-3, simple("métrique/λ", 0.1)),
            event(2**40, simple("", 2.5)),
            event(2**63 - 1, simple("max step", 1.0)),
            event(0, simple("x" * 200, 7.0)),
        ],
    },
    "np_tensor_scalars": {  # TensorBoard's make_tensor_proto: float_val / double_val
        F: [VERSION]
        + [event(i, np_scalar("loss", 0.5 - i / 10), np_scalar("lr", 1e-3 * i, "float64")) for i in range(5)],
    },
    "tensor_content_scalars": {  # tf.summary in TF2 writes tensor_content
        F: [
            event(
                i,
                tensor("loss", shape=[], content=f32_hex(1.5 * i)),
                tensor("d", 2, shape=[], content=f64_hex(0.1 * i)),
            )
            for i in range(5)
        ],
    },
    "one_element_tensors": {
        F: [
            event(1, tensor("shape [1]", shape=[1], content=f32_hex(4.0))),
            event(2, tensor("shape [1,1] double", 2, shape=[1, 1], double_val=[0.3])),
            event(3, tensor("no shape field", float_val=[1.25])),
            event(4, tensor("shape [-1]", shape=[-1], content=f32_hex(2.0))),
            event(5, tensor("shape [1,-1]", shape=[1, -1], content=f32_hex(5.0))),
            event(6, np_scalar("nested list", [[3.5]], "float64", metadata=False)),
            event(7, tensor("float and double values", shape=[], float_val=[8.0], double_val=[9.0])),
        ],
    },
    "non_scalar_tensors": {
        F: [
            event(1, np_scalar("vector", [1.0, 2.0]), simple("kept", 1.0)),
            event(2, np_scalar("int", 7, "int32"), np_scalar("int64", 7, "int64")),
            event(3, tensor("repeat to 3", shape=[3], float_val=[1.0])),
            event(4, tensor("empty", shape=[0], float_val=[1.0])),
            event(5, tensor("two values", shape=[2], float_val=[1.0, 2.0])),
            event(6, tensor("string", 7, shape=[])),
            event(7, tensor("half", 19, shape=[], content="003c")),
            event(10, tensor("two contents", shape=[2], content=f32_hex(1.0, 2.0))),
            event(11, simple("kept", 2.0)),
        ],
    },
    "images_and_histograms": {
        F: [
            event(1, {"tag": "img", "kind": "image"}, simple("loss", 0.25)),
            event(2, {"tag": "hist", "kind": "histo"}),
            event(3, np_scalar("hist as tensor", [[0.0, 1.0, 3.0]], "float64", metadata=False)),
            event(4, simple("loss", 0.125), {"tag": "img", "kind": "image"}),
        ],
    },
    "merged_summaries": {  # TF1's merge_all: every tag in one event
        F: [event(i, *(simple(f"tag{k}", k * i / 3) for k in range(12))) for i in range(4)],
    },
    "several_files": {
        "events.out.tfevents.10.host": [event(10, simple("a", 10.0))],
        "events.out.tfevents.2.host": [event(2, simple("a", 2.0))],
        "events.out.tfevents.2.host.profile-empty": [event(99, simple("a", 99.0))],
        "tfevents_without_dots": [event(5, simple("b", 5.0))],
        "zz.tfevents.0": [event(0, simple("c", 0.5))],
        "README": [event(98, simple("a", 98.0))],
    },
    "empty_and_eventless": {
        "events.out.tfevents.1.host": [],
        "events.out.tfevents.2.host": [VERSION, {"wall_time": WALL, "step": 3}, event(4)],
        "events.out.tfevents.3.host": [event(5, simple("after", 5.0))],
    },
}


def varint(value):
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def raw_value(number, payload):
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def raw_event(*parts):
    """An Event spec of raw bytes, field by field, to build what writers never do."""
    return {"raw": b"".join(parts).hex()}


def f32(value):
    return struct.pack("<f", value)


SUMMARY_A = raw_value(5, raw_value(1, raw_value(1, b"a") + b"\x15" + f32(1.0)))
SUMMARY_B = raw_value(5, raw_value(1, raw_value(1, b"b") + b"\x15" + f32(2.0)))
TENSOR_1 = raw_value(8, b"\x08\x01\x12\x00")  # a float scalar, no value yet
TENSOR_2 = raw_value(8, b"\x2d" + f32(2.0))
SIMPLE_3 = b"\x15" + f32(3.0)
TAG_T = raw_value(1, b"t")


def raw_summary(*value_parts):
    return raw_value(5, raw_value(1, b"".join(value_parts)))


TB_CASES["protobuf_merging"] = {
    F: [
        raw_event(SUMMARY_A, raw_value(3, b"brain.Event:2")),  # a later oneof member wins
        raw_event(raw_value(3, b"brain.Event:2"), SUMMARY_A),
        raw_event(SUMMARY_A, SUMMARY_B, b"\x10\x07"),  # summaries merge, step after
        raw_event(raw_summary(TAG_T, TENSOR_1, TENSOR_2)),  # tensors merge: float 2.0
        raw_event(raw_summary(TAG_T, TENSOR_1, SIMPLE_3, TENSOR_2)),  # reset: no dtype
        raw_event(raw_summary(TAG_T, TENSOR_1, SIMPLE_3)),
        raw_event(raw_summary(TAG_T, SIMPLE_3, raw_value(4, b""))),  # image wins
        raw_event(raw_summary(TAG_T, b"\x10\x05", SIMPLE_3)),  # mistyped field skipped
        raw_event(b"\x12\x01\x00", SUMMARY_B),  # step as bytes: unknown field
        raw_event(b"\x0b\x10\x01\x0c", SUMMARY_B),  # an unknown group
        raw_event(raw_summary(raw_value(1, b"first"), TAG_T, SIMPLE_3)),  # last tag wins
        raw_event(b"\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", SUMMARY_A),  # 10-byte step
        raw_event(raw_summary(raw_value(1, b"d"), raw_value(8, b"\x08\x81\x80\x80\x80\x10\x2d" + f32(4.0)))),
    ],
}

# Values of one tag and length whose bytes differ only around the number:
# a layout learned from the first must not be applied to the others.
TB_CASES["same_length_layouts"] = {
    F: [
        raw_event(raw_summary(TAG_T, raw_value(8, b"\x12\x00\x22\x04" + f32(1.0) + b"\x08\x01"))),
        raw_event(raw_summary(TAG_T, raw_value(8, b"\x12\x00\x22\x04" + f32(2.0) + b"\x08\x03"))),
        raw_event(raw_summary(TAG_T, raw_value(8, b"\x08\x01\x12\x00\x22\x04" + f32(3.0)))),
        raw_event(raw_summary(TAG_T, raw_value(8, b"\x08\x03\x12\x00\x22\x04" + f32(4.0)))),
        raw_event(raw_summary(TAG_T, SIMPLE_3, raw_value(7, b""))),
        raw_event(raw_summary(TAG_T, SIMPLE_3, raw_value(4, b""))),  # an image: no scalar
    ],
}

TB_EVENT_FILE_WRITER = [event(i, simple("written", i / 4), np_scalar("t", i / 8)) for i in range(3)]


# ---------------------------------------------------------------------------
# Files written by runq, read back by Guild and TensorBoard

OUR_SCALARS = [
    ("loss", 0.1, 0),
    ("loss", 1 / 3, 1),
    ("acc", 0.999999999, 1),
    ("métrique", -2.5e-8, 2**33),
    ("neg", 7.0, -5),
    ("huge", 1e39, 3),
    ("nan", math.nan, 4),
    ("inf", -math.inf, 5),
]
OUR_CASES = {
    "simple": dict(as_tensor=False, file_version=True),
    "tensor": dict(as_tensor=True, file_version=True),
    "simple_no_version": dict(as_tensor=False, file_version=False),
    "tensor_no_version": dict(as_tensor=True, file_version=False),
}
APPENDED = [("later", 0.5, 9), ("loss", 0.25, 10)]


def float32(value):
    """`value` rounded to float32 as C does (struct refuses what rounds to inf)."""
    try:
        return struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


def write_our_case(dir, options):
    dir.mkdir(parents=True)
    path = dir / event_file_name(WALL, "host", ".1.0")
    write_event_file(path, OUR_SCALARS, wall_time=WALL, **options)
    append_events(path, APPENDED, wall_time=WALL + 1, as_tensor=options["as_tensor"])
    return path


# ---------------------------------------------------------------------------
# Damage: (name, function of the file's bytes and its record bounds)


def record_bounds(data):
    """[(start, end)] of each whole record of an intact file."""
    bounds, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        bounds.append((pos, pos + 16 + length))
        pos += 16 + length
    return bounds


def frame(payload):
    """A record with right CRCs (masked crc32c, computed here from scratch)."""
    header = struct.pack("<Q", len(payload))
    return header + struct.pack("<I", masked_crc(header)) + payload + struct.pack("<I", masked_crc(payload))


def reference_crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked_crc(data):
    crc = reference_crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def flip(data, index):
    return data[:index] + bytes([data[index] ^ 0x10]) + data[index + 1 :]


def cut(offset_of):
    return lambda data, bounds: data[: offset_of(bounds, len(data))]


def flip_at(offset_of):
    return lambda data, bounds: flip(data, offset_of(bounds, len(data)))


def replace_record(index, payload):
    def damage(data, bounds):
        start, end = bounds[index]
        return data[:start] + frame(payload) + data[end:]

    return damage


def insert_records(index, *payloads):
    def damage(data, bounds):
        start = bounds[index][0]
        return data[:start] + b"".join(frame(payload) for payload in payloads) + data[start:]

    return damage


def huge_length(data, bounds):
    start = bounds[2][0]
    header = struct.pack("<Q", len(data) * 4)
    return data[:start] + header + struct.pack("<I", masked_crc(header)) + data[start + 12 :]


# Events of one float tensor that make numpy's make_ndarray raise
CONTENT_NOT_WHOLE = b"\x10\x09" + raw_summary(TAG_T, raw_value(8, b"\x08\x01\x12\x00\x22\x03abc"))
SHAPE_MISMATCH = raw_summary(TAG_T, raw_value(8, b"\x08\x01\x12\x04\x12\x02\x08\x02\x22\x04" + f32(1.0)))
EMPTY_SCALAR = raw_summary(TAG_T, TENSOR_1)
DOUBLE_OF_FLOATS = raw_summary(TAG_T, raw_value(8, b"\x08\x02\x12\x00\x2d" + f32(1.0)))


def nested_event(depth):
    """A scalar Event whose deepest message is `depth` levels below the Event.

    Event > Summary > Value > TensorProto (depth 3), then variant_val >
    tensors pairs (2 levels each), then a shape (1) or a shape's dim (2).
    """
    pairs, rest = divmod(depth - 4, 2)
    inner = raw_value(2, raw_value(2, b"")) if rest else raw_value(2, b"")
    for _ in range(pairs):
        inner = raw_value(15, raw_value(3, inner))
    tensor = raw_value(8, b"\x08\x01\x12\x00\x2d" + f32(6.0) + inner)
    return raw_summary(TAG_T, tensor)


DAMAGES = {
    "empty file": cut(lambda b, size: 0),
    "cut in first header": cut(lambda b, size: 3),
    "cut after length": cut(lambda b, size: 8),
    "cut in header crc": cut(lambda b, size: 10),
    "cut after header": cut(lambda b, size: b[2][0] + 12),
    "cut in data": cut(lambda b, size: b[2][0] + 14),
    "cut in data crc": cut(lambda b, size: b[2][1] - 2),
    "cut at a record end": cut(lambda b, size: b[2][1]),
    "cut one byte short": cut(lambda b, size: size - 1),
    "trailing bytes": lambda data, bounds: data + b"\x01\x02\x03",
    "trailing partial header": lambda data, bounds: data + data[:11],
    "length bit flipped": flip_at(lambda b, size: b[2][0] + 1),
    "header crc flipped": flip_at(lambda b, size: b[2][0] + 9),
    "payload flipped": flip_at(lambda b, size: b[2][0] + 14),
    "data crc flipped": flip_at(lambda b, size: b[2][1] - 1),
    "last data crc flipped": flip_at(lambda b, size: size - 3),
    "first header flipped": flip_at(lambda b, size: 0),
    "length past the end": huge_length,
    "unparsable event": replace_record(2, b"\x0a\x05abc"),
    "unparsable event first": replace_record(0, b"\xff"),
    "invalid utf-8 tag": replace_record(2, raw_summary(raw_value(1, b"\xff\xfe"), SIMPLE_3)),
    "tensor content not whole": replace_record(2, CONTENT_NOT_WHOLE),
    "tensor content misfits shape": replace_record(2, SHAPE_MISMATCH),
    "scalar tensor without values": replace_record(2, EMPTY_SCALAR),
    "double tensor of float_val": replace_record(2, DOUBLE_OF_FLOATS),
    "messages 100 deep": replace_record(2, nested_event(100)),  # protobuf's limit
    "messages 101 deep": replace_record(2, nested_event(101)),
    "empty record": insert_records(2, b""),
    "bad tail after a known layout": insert_records(
        2,
        raw_summary(TAG_T, SIMPLE_3, raw_value(7, b"ok")),
        raw_summary(TAG_T, SIMPLE_3, raw_value(9, b"ok")),  # not a SummaryMetadata
    ),
    "record of three bytes": insert_records(2, b"\x10\x85\x01"),
    "record of four bytes": insert_records(2, b"\x10\x01\x10\x02"),
}
DAMAGE_BASES = ("ours", "tensorboard")
NEXT_FILE = [("next file", 42.0, 100)]


def damaged_dir(root, base_name, base, damage_name):
    dir = root / "damaged" / base_name / damage_name.replace(" ", "_")
    dir.mkdir(parents=True)
    (dir / "events.out.tfevents.1.host").write_bytes(DAMAGES[damage_name](base, record_bounds(base)))
    write_event_file(dir / "events.out.tfevents.2.host", NEXT_FILE, wall_time=WALL)
    return dir


# ---------------------------------------------------------------------------
# Fuzzing: mutated Events in intact records, so only the protobuf decides

FUZZ_COUNT = 600
# Bytes that mean something in these messages: keys of the fields used,
# small lengths, dtypes, and the high bit that continues a varint.
MEANINGFUL_BYTES = (
    0x00,
    0x01,
    0x02,
    0x03,
    0x08,
    0x0A,
    0x10,
    0x12,
    0x15,
    0x22,
    0x2A,
    0x2D,
    0x32,
    0x42,
    0x4A,
    0x80,
)


def mutate(payload, rng):
    data = bytearray(payload)
    for _ in range(1 if rng.random() < 0.7 else rng.randint(2, 3)):
        if not data:
            break
        at = rng.randrange(len(data))
        rng.choice(MUTATIONS)(data, at, rng)
    return bytes(data)


def set_random_byte(data, at, rng):
    data[at] = rng.randrange(256)


def set_meaningful_byte(data, at, rng):
    data[at] = rng.choice(MEANINGFUL_BYTES)


def flip_bit(data, at, rng):
    data[at] ^= 1 << rng.randrange(8)


def delete_bytes(data, at, rng):
    del data[at : at + rng.randint(1, 4)]


def insert_bytes(data, at, rng):
    data[at:at] = bytes(rng.choice(MEANINGFUL_BYTES) for _ in range(rng.randint(1, 3)))


def duplicate_bytes(data, at, rng):
    data[at:at] = data[at : at + rng.randint(1, 12)]


def truncate(data, at, rng):
    del data[at:]


MUTATIONS = (
    set_random_byte,
    set_meaningful_byte,
    set_meaningful_byte,
    flip_bit,
    flip_bit,
    delete_bytes,
    insert_bytes,
    duplicate_bytes,
    truncate,
)


def fuzz_dirs(root, payloads):
    rng = random.Random(20240917)
    dirs = []
    for index in range(FUZZ_COUNT):
        dir = root / "fuzz" / str(index)
        dir.mkdir(parents=True)
        payload = mutate(rng.choice(payloads), rng)
        (dir / "events.out.tfevents.1.host").write_bytes(frame(payload))
        write_event_file(dir / "events.out.tfevents.2.host", NEXT_FILE, wall_time=WALL)
        dirs.append(dir)
    return dirs


# ---------------------------------------------------------------------------
# One world for the module: everything written, then everything read by Guild

NAMES = [
    "events.out.tfevents.1700000000.host",
    "events.out.tfevents.1.host.profile-empty",
    "x.tfevents.y",
    "tfevents",
    "a.tfevents",
    ".tfevents.",
    "events.out.tfevent.1",
    "TFEVENTS.1",
    "events.tfevents.1.profile-empty.bak",
]


def write_tensorboard_cases(root):
    """Has TensorBoard's writers write every TB_CASES file (one peer call)."""
    writes = [
        {"path": str(root / "tb" / case / name), "events": events}
        for case, files in TB_CASES.items()
        for name, events in files.items()
    ]
    for case in [*TB_CASES, "event_file_writer"]:
        (root / "tb" / case).mkdir(parents=True)
    writer_dir = str(root / "tb" / "event_file_writer")
    writes.append({"event_file_writer_dir": writer_dir, "events": TB_EVENT_FILE_WRITER})
    run_peer({"write": writes})
    return [root / "tb" / case for case in [*TB_CASES, "event_file_writer"]]


FUZZ_SOURCES = (
    "np_tensor_scalars",
    "one_element_tensors",
    "images_and_histograms",
    "protobuf_merging",
    "simple_value",
)


def fuzz_payloads(root):
    """The Events TensorBoard wrote for the fuzzing sources."""
    return [
        data[start + 12 : end - 4]
        for case in FUZZ_SOURCES
        for data in [(root / "tb" / case / F).read_bytes()]
        for start, end in record_bounds(data)
    ]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Every case on disk, and what Guild and TensorBoard read of each."""
    root = tmp_path_factory.mktemp("tfevents")
    tb_dirs = write_tensorboard_cases(root)
    ours = {case: write_our_case(root / "ours" / case, options) for case, options in OUR_CASES.items()}
    bases = {
        "ours": ours["simple"].read_bytes(),
        "tensorboard": (root / "tb" / "np_tensor_scalars" / F).read_bytes(),
    }
    damaged = {
        (base_name, damage): damaged_dir(root, base_name, base, damage)
        for base_name, base in bases.items()
        for damage in DAMAGES
    }
    fuzzed = fuzz_dirs(root, fuzz_payloads(root))
    all_dirs = tb_dirs + [path.parent for path in ours.values()] + list(damaged.values()) + fuzzed
    report = run_peer(
        {
            "guild_read": [str(dir) for dir in all_dirs],
            "tensorboard_read": [str(path) for path in ours.values()],
            "names": NAMES,
        }
    )
    return {"root": root, "ours": ours, "damaged": damaged, "fuzzed": fuzzed, **report}


def comparable(scalars):
    """Scalars with values as repr, so nan equals nan and -0.0 is not 0.0."""
    return [(tag, repr(float(value)), step) for tag, value, step in scalars]


def guild_aborted(report):
    return bool(report["warnings"] or report["raised"])


# ---------------------------------------------------------------------------
# Reading what TensorBoard wrote, as Guild does


@pytest.mark.parametrize("case", [*TB_CASES, "event_file_writer"])
def test_reads_tensorboard_files_as_guild_does(world, case):
    dir = world["root"] / "tb" / case
    ours = read_dir_scalars(dir)
    guild = world["guild"][str(dir)]
    assert comparable(ours.scalars) == comparable(guild["scalars"])
    assert guild_aborted(guild) is False and ours.problem is None and not ours.aborts_dir


def test_tensorboard_cases_hold_scalars(world):
    # Guards the comparisons above against vacuous agreement.
    for case in TB_CASES:
        if case != "empty_and_eventless":
            assert world["guild"][str(world["root"] / "tb" / case)]["scalars"], case


def test_reads_files_in_tensorboard_order(world):
    names = [path.name for path in loaded_event_files(world["root"] / "tb" / "several_files")]
    assert names == [
        "events.out.tfevents.10.host",
        "events.out.tfevents.2.host",
        "tfevents_without_dots",
        "zz.tfevents.0",
    ]


@pytest.mark.parametrize("name", NAMES)
def test_event_file_name_rules_match_guild_and_tensorboard(world, name):
    assert [is_event_file(name), is_loaded_event_file(name)] == world["names"][name]


def test_event_file_name_is_tensorboards():
    assert event_file_name(1700000000.9, "host", ".123.0") == "events.out.tfevents.1700000000.host.123.0"
    assert event_file_name(12.0) == "events.out.tfevents.0000000012.localhost"
    assert is_event_file(event_file_name(WALL)) and is_loaded_event_file(event_file_name(WALL))


# ---------------------------------------------------------------------------
# Writing what Guild and TensorBoard read


def expected_written(scalars):
    return [(tag, float32(value), step) for tag, value, step in scalars]


@pytest.mark.parametrize("case", OUR_CASES)
def test_guild_reads_our_files(world, case):
    report = world["guild"][str(world["ours"][case].parent)]
    assert not guild_aborted(report)
    assert comparable(report["scalars"]) == comparable(expected_written(OUR_SCALARS + APPENDED))


@pytest.mark.parametrize("case", OUR_CASES)
def test_tensorboard_loader_reads_our_files(world, case):
    report = world["tensorboard"][str(world["ours"][case])]
    assert comparable(report) == comparable(expected_written(OUR_SCALARS + APPENDED))


@pytest.mark.parametrize("case", OUR_CASES)
def test_reads_our_files(world, case):
    read = read_scalars(world["ours"][case])
    assert comparable(read.scalars) == comparable(expected_written(OUR_SCALARS + APPENDED))
    assert (read.problem, read.aborts_dir) == (None, False)


def test_file_version_leads_the_file(world):
    with_version = world["ours"]["simple"].read_bytes()
    without = world["ours"]["simple_no_version"].read_bytes()
    first = with_version[12 : record_bounds(with_version)[0][1] - 4]
    assert b"\x1a\x0dbrain.Event:2" in first
    assert with_version.endswith(without)


# ---------------------------------------------------------------------------
# Damage: never raise, keep what Guild keeps, stop where Guild stops


@pytest.mark.parametrize("base", DAMAGE_BASES)
@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_files_read_as_guild_reads_them(world, base, damage):
    dir = world["damaged"][(base, damage)]
    guild = world["guild"][str(dir)]
    ours = read_dir_scalars(dir)
    assert comparable(ours.scalars) == comparable(guild["scalars"])
    assert ours.aborts_dir == guild_aborted(guild)


@pytest.mark.parametrize("base", DAMAGE_BASES)
@pytest.mark.parametrize("damage", DAMAGES)
def test_damage_is_reported(world, base, damage):
    read = read_scalars(world["damaged"][(base, damage)] / "events.out.tfevents.1.host")
    harmless = damage in (
        "cut at a record end",
        "empty file",
        "empty record",
        "record of three bytes",
        "record of four bytes",
        "messages 100 deep",
    )
    assert (read.problem is None) == harmless


def test_damage_before_any_scalar_loses_them_all(world):
    dir = world["damaged"][("ours", "first header flipped")]
    assert read_dir_scalars(dir).scalars == [("next file", 42.0, 100)]


def test_fuzzed_events_read_as_guild_reads_them(world):
    mismatches = []
    for dir in world["fuzzed"]:
        guild = world["guild"][str(dir)]
        ours = read_dir_scalars(dir)
        if comparable(ours.scalars) != comparable(guild["scalars"]) or ours.aborts_dir != guild_aborted(
            guild
        ):
            mismatches.append((dir.name, ours, guild))
    assert mismatches == []


def test_fuzzing_reaches_both_outcomes(world):
    aborted = [guild_aborted(world["guild"][str(dir)]) for dir in world["fuzzed"]]
    assert 0.05 < sum(aborted) / len(aborted) < 0.95


@pytest.mark.parametrize("chunk", [16, 100, 1000])
def test_crcs_checked_in_chunks_read_as_guild_reads_them(world, monkeypatch, chunk):
    # Files are checked a few megabytes at a time; small chunks put
    # chunk boundaries everywhere in these small files.
    monkeypatch.setattr(tfevents, "_CHUNK", chunk)
    dirs = [*world["damaged"].values(), *(world["root"] / "tb" / case for case in TB_CASES)]
    for dir in dirs:
        guild = world["guild"][str(dir)]
        assert comparable(read_dir_scalars(dir).scalars) == comparable(guild["scalars"]), dir


def test_unreadable_entry_stops_the_directory(tmp_path):
    write_event_file(tmp_path / "events.out.tfevents.1", [("a", 1.0, 1)], wall_time=WALL)
    (tmp_path / "events.out.tfevents.2").mkdir()
    write_event_file(tmp_path / "events.out.tfevents.3", [("b", 1.0, 1)], wall_time=WALL)
    read = read_dir_scalars(tmp_path)
    assert read.scalars == [("a", 1.0, 1)] and read.aborts_dir and "events.out.tfevents.2" in read.problem


def test_missing_directory_is_a_problem_not_an_exception(tmp_path):
    read = read_dir_scalars(tmp_path / "gone")
    assert read.scalars == [] and read.aborts_dir and read.problem


# ---------------------------------------------------------------------------
# Properties, in process

finite_or_not = st.floats(allow_nan=True, allow_infinity=True)
tags = st.text(min_size=0, max_size=40)
steps = st.integers(min_value=-(2**63), max_value=2**63 - 1)
scalar_lists = st.lists(st.tuples(tags, finite_or_not, steps), max_size=30)


@settings(max_examples=150, deadline=None)
@given(scalar_lists, scalar_lists, st.booleans())
def test_round_trip(tmp_path_factory, first, later, as_tensor):
    path = tmp_path_factory.mktemp("round") / "events.out.tfevents.1"
    write_event_file(path, first, wall_time=WALL, as_tensor=as_tensor)
    append_events(path, later, wall_time=WALL, as_tensor=not as_tensor)
    read = read_scalars(path)
    assert comparable(read.scalars) == comparable(expected_written(first + later))
    assert read.problem is None


@settings(max_examples=100, deadline=None)
@given(scalar_lists, st.booleans())
def test_learned_layouts_read_as_fresh_ones(tmp_path_factory, scalars, as_tensor):
    # Each record read alone goes through the full decoder; read together,
    # repeated layouts are read by template. Both must agree.
    path = tmp_path_factory.mktemp("layout") / "events.out.tfevents.1"
    write_event_file(path, scalars + scalars, wall_time=WALL, as_tensor=as_tensor)
    data = path.read_bytes()
    one_by_one = [
        scalar for start, end in record_bounds(data) for scalar in fresh_scalars(data[start:end]).scalars
    ]
    assert comparable(fresh_scalars(data).scalars) == comparable(one_by_one)


def fresh_scalars(data):
    """What a process that has read no other event file reads from `data`."""
    tfevents._SHARED_TEMPLATES.clear()
    return scalars_from_bytes(data)


def test_layouts_learnt_from_other_files_read_as_fresh_ones(world):
    # A process keeps the layouts it learnt for every file it reads next:
    # damaged and fuzzed files read after all the others must read as if
    # each were the first.
    dirs = [*world["damaged"].values(), *world["fuzzed"], *(world["root"] / "tb" / case for case in TB_CASES)]
    files = [path for dir in dirs for path in loaded_event_files(dir) if path.is_file()]
    for path in files:
        scalars_from_bytes(path.read_bytes())
    learnt = [scalars_from_bytes(path.read_bytes()) for path in files]
    fresh = [fresh_scalars(path.read_bytes()) for path in files]
    assert len(tfevents._SHARED_TEMPLATES) <= tfevents._MAX_TEMPLATES + 1
    assert [(comparable(r.scalars), r.problem, r.aborts_dir) for r in learnt] == [
        (comparable(r.scalars), r.problem, r.aborts_dir) for r in fresh
    ]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_never_raises_on_random_bytes(data):
    read = scalars_from_bytes(data)
    assert isinstance(read, ScalarRead)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=60), max_size=5))
def test_never_raises_on_random_events(payloads):
    read = scalars_from_bytes(b"".join(frame(payload) for payload in payloads))
    assert isinstance(read, ScalarRead)
    assert not read.problem or "unparsable Event" in read.problem or "bad tensor" in read.problem


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_crc32c(data):
    assert crc32c(data) == reference_crc32c(data)


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283  # the catalogued CRC-32C check value


@pytest.mark.parametrize(
    "make, problem",
    [
        (os.mkfifo, "not a regular file (a FIFO)"),  # opening it would wait for a writer
        (lambda path: os.symlink("/dev/zero", path), "not a regular file (a character device)"),
        (lambda path: os.truncate(path.touch() or path, tfevents.EVENT_FILE_MAX_BYTES + 1), "larger than"),
    ],
)
def test_only_regular_event_files_of_bounded_size_are_read(tmp_path, make, problem):
    path = tmp_path / event_file_name(1700000000)
    make(path)
    read = read_scalars(path)
    assert read.scalars == [] and read.aborts_dir and problem in read.problem
