"""Attribute decoding: the fast path must give exactly what Guild's YAML gives.

Expected values always come from PyYAML under Guild's resolver (`load_yaml`)
or from Guild itself (`guild.run.Run`), never from the fast path.
"""

import inspect
import json
import os
import pickle
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guildenv import guild_python  # noqa: E402

from runq.engine.attrs import (  # noqa: E402
    GUILD_LOADER,
    UNSURE,
    AttrDecodeError,
    decode_attr,
    fast_decode,
    is_lazy,
    load_yaml,
)
from runq.engine.errors import RunqError  # noqa: E402

EXAMPLES = int(os.environ.get("RUNQ_HYPOTHESIS_EXAMPLES", "300"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# --- Exact comparison ---------------------------------------------------------


def tagged(value):
    """`value` as JSON-able data that tells bool/int/float/-0.0/nan apart.

    Also sent as source to the Guild process, so it uses builtins only.
    """
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, int):
        return ["int", str(value)]
    if isinstance(value, float):
        return ["float", repr(value)]
    if value is None:
        return ["null"]
    if isinstance(value, str):
        return ["str", value]
    if isinstance(value, list):
        return ["list", [tagged(item) for item in value]]
    if isinstance(value, dict):
        return ["dict", [[tagged(k), tagged(v)] for k, v in value.items()]]
    return ["other", type(value).__name__, repr(value)]


def outcome(decode, text):
    try:
        return ["ok", tagged(decode(text))]
    except AttrDecodeError:
        return ["error"]


def assert_same_decoding(text):
    assert outcome(decode_attr, text) == outcome(load_yaml, text), repr(text)


# --- How Guild writes an attribute (guild/run.py write_attr) ------------------


class GuildStrictDumper(yaml.SafeDumper):
    """The resolvers Guild dumps with: its float patch and, in strict mode,
    single-letter y/n taken as bools (so they get quoted)."""


GuildStrictDumper.yaml_implicit_resolvers = {
    first: list(resolvers) for first, resolvers in GUILD_LOADER.yaml_implicit_resolvers.items()
}
GuildStrictDumper.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:y|Y|n|N)$"), list("yYnN")
)


def guild_encode(value):
    encoded = yaml.dump(value, Dumper=GuildStrictDumper, default_flow_style=False, indent=2)
    stripped = encoded.strip()
    if stripped.endswith("\n..."):
        stripped = stripped[:-4]
    return stripped + "\n"


# --- Tricky inputs --------------------------------------------------------------

# (text, whether the fast path should decide it itself)
TRICKY = [
    # ints: only plain decimal is decoded fast; YAML 1.1 has many more forms
    ("0\n", True), ("-5\n", True), ("+5\n", True), ("-0\n", True),
    ("123456789012345678901234567890\n", True),
    ("0o17\n", True),  # not an int in YAML 1.1: a string
    ("0x1f\n", False), ("-0x1f\n", False), ("0b101\n", False), ("1_000\n", False),
    ("012\n", False), ("00\n", False), ("08\n", True), ("1:30\n", False),
    ("-1:30\n", False), ("1:70\n", True),
    # floats, incl. Guild's patched forms
    ("1.5\n", True), ("1.0e-05\n", True), ("1e5\n", True), ("1e-4\n", True),
    ("1E+5\n", True), ("-1e2\n", True), (".5\n", True), ("1.\n", True),
    (".5e3\n", True), (".5e+3\n", True), ("-0.0\n", True), ("1e400\n", True),
    ("-1e400\n", True), (".inf\n", True), ("-.Inf\n", True), ("+.INF\n", True),
    (".nan\n", True), (".NaN\n", True), (".NAN\n", True), ("-.nan\n", True),
    ("1_0.5\n", False), ("1:30.5\n", False), ("._\n", False), (".\n", True),
    ("1e\n", True), ("e5\n", True),
    # bools, nulls
    ("true\n", True), ("True\n", True), ("TRUE\n", True), ("tRue\n", True),
    ("yes\n", True), ("No\n", True), ("on\n", True), ("OFF\n", True),
    ("y\n", True), ("n\n", True), ("Y\n", True),
    ("null\n", True), ("Null\n", True), ("NULL\n", True), ("nUll\n", True),
    ("~\n", True), ("", True), ("\n", True), ("\n\n", True), ("  \n", False),
    # timestamps become dates and datetimes
    ("2024-01-02\n", False), ("2024-01-02 10:11:12\n", False), ("2024-1-2\n", True),
    # strings, quoted strings
    ("abc\n", True), ("a b  c\n", True), ("abc", True), ("a#b\n", True),
    ("a #b\n", False), ("a:b\n", True), ("http://x/y?z=1\n", True), ("-x\n", True),
    ("- x\n", True), ("-\n", False), ("'yes'\n", True), ("'it''s'\n", True),
    ("''\n", True), ("' a '\n", True), ("'a'b'\n", False), ("'a''\n", False),
    ('"a"\n', True), ('"\\x41\\u00e9\\U0001F600\\t\\"\\\\\\/\\ \\N\\_\\L\\P\\0"\n', True),
    ('"\\q"\n', False), ('"\\x4"\n', False), ('"\\U00110000"\n', False),
    ('"a\\\n  b"\n', False), ("'a\n  b'\n", False), ("a\nb\n", False),
    ("---\n", False), ("--- x\n", False), ("---x\n", False), ("...\n", False),
    ("x\n...\n", False), ("%YAML 1.1\n--- x\n", False), ("# c\n", False),
    ("é\n", False), ("a\tb\n", False), ("a\r\nb: c\r\n", False), ("\ufeffx\n", False),
    ("a\x00\n", False), ("a\x7f\n", False),
    ("!!str 1\n", False), ("!!int '3'\n", False), ('!!int ""\n', False),
    ("!!bool x\n", False), ("&a x\n", False), ("*a\n", False), ("|\n  x\n", False),
    ("<<\n", False), ("=\n", False), ("@x\n", False), ("`x\n", False), ("?x\n", False),
    (":x\n", False), ("[[[[[[[[[[\n", False),
    # flat mappings (the flags attribute)
    ("lr: 0.01\nbatch-size: 32\nopt.name: adam\ndata/path: /tmp/x\n", True),
    ("a: yes\nb: 'no'\nc: ~\nd:\ne: {}\nf: []\ng: 1e3\n", True),
    ("'a: b': 1\n\"c\": 2\n", True), ("a:b: c\n", True), ("-a: 1\n", True),
    ("a: b: c\n", False), ("a: b #c\n", False), ("a#b: c#d\n", True),
    ("a:  b\n", False), ("a : b\n", False), ("a: \n", False), ("a:: b\n", False),
    ("a: b\n  c\n", False), ("a: b\nc\n", False), ("a: b\n\nc: d\n", False),
    ("a: 1\na: 2\n", True), ("1: a\ntrue: b\n1.0: c\n", True),
    (".nan: 1\n.nan: 2\n", True), (".nan: 1\n.NaN: 2\n", True), ("~: 1\nnull: 2\n", True),
    ("<<: {}\n", False), ("=: 1\n", False), ("? a\n: b\n", False),
    ("{}\n", True), ("{a: 1}\n", False), ("a:\n  b: 1\n", True),
    ("a:\n- 1\n", True), ("x" * 1100 + ": 1\n", False), ("x" * 900 + ": 1\n", True),
    ("a: !!str 1\n", False), ("a: &x 1\nb: *x\n", False), ("a: |\n  x\n", False),
    ("a: 2024-01-02\n", False), ("a: [1, 'b', c d, -2.5, .nan, yes]\n", True),
    # sequences (the tags attribute)
    ("- a\n- 1\n- 'c'\n- yes\n- ~\n", True), ("[]\n", True), ("- []\n- {}\n", True),
    ("- a: b\n", True), ("- - a\n", True), ("-\n- a\n", False), ("- a\nb: c\n", False),
    ("- --- x\n", True), ("[a, b]\n", True), ("[a, [b]]\n", False), ("[a,b]\n", False),
    ("[a , b]\n", False), ("[a, ]\n", False), ("[-1, +2, 'x, y', \"z\"]\n", True),
    ("[a: b]\n", False), ("[a b, c]\n", True), ("[\n", False),
    # nested block collections (deps, comments, flags holding lists)
    ("a:\n  b:\n    c: 1\n    d:\n    - x\n  e: 2\nf: 3\n", True),
    ("- body: hi\n  host: h\n  time: 17\n- body: yes\n  user: u\n", True),
    ("layers:\n- 0\n- 1\nlr: 1.0e-05\n", True), ("a:\n  - 1\n  - 2\nb: 3\n", True),
    ("- - a\n  - b\n- c\n", True), ("- - - a\n", True), ("- a:\n  - 1\n  b: 2\n", True),
    ("- a:\n- 1\n", True), ("- a:\n    b: 1\n", True), ("a:\n b: 1\n", True),
    ("a:\n  b: 1\n c: 2\n", False), ("a:\n    b: 1\n  c: 2\n", False),
    ("- a: 1\n   b: 2\n", False), ("- a: 1\n b: 2\n", False), ("- a: 1\nb: 2\n", False),
    ("a: 1\n- b\n", False), ("a:\n  b: 1\n  - c\n", False), ("a:\n  b\n", False),
    ("- a: x\n    y\n", False), ("a:\n  b: x\n   y\n", False), ("- \n", False),
    ("a:\n  ---\n", False), ("a:\n  - ---\n", True), ("a:\n  ? b\n", False),
    ("a:\n  &x b: 1\n", False), ("a:\n  b: &x 1\n", False), ("- -\n", False),
    ("a:\n  'b': 1\n  \"c\": [1, 2]\n", True), ("a:\n  b: 1\n\n", False),
    ("- " * 60 + "a\n", False), ("- " * 40 + "a\n", True),
]  # fmt: skip


@pytest.mark.parametrize("text,fast", TRICKY, ids=[repr(t)[:40] for t, _ in TRICKY])
def test_tricky_input_decodes_like_guild_yaml(text, fast):
    assert_same_decoding(text)
    assert (fast_decode(text) is not UNSURE) == fast


def test_guild_float_patch_lives_on_the_loader_only():
    assert load_yaml("1e2") == 100.0 and isinstance(load_yaml("1e-4"), float)
    # yaml's own resolvers are left alone
    assert yaml.safe_load("1e2") == "1e2"
    assert issubclass(GUILD_LOADER, yaml.SafeLoader)


def test_malformed_yaml_is_a_runq_error_that_says_what():
    with pytest.raises(AttrDecodeError) as caught:
        decode_attr("a: b: c\n")
    assert isinstance(caught.value, RunqError)
    assert "mapping values are not allowed here" in caught.value.message
    with pytest.raises(AttrDecodeError, match="ValueError"):
        decode_attr("._\n")


def test_attributes_a_run_row_needs_are_read_with_it_and_the_others_when_named():
    for name in ("started", "stopped", "initialized", "exit_status", "label", "marked", "sourcecode_digest",
                 "flags", "tags", "comments"):
        assert not is_lazy(name)
    for name in ("env", "pip_freeze", "run_params", "op", "cmd", "platform", "host", "user", "deps", "id", "mine"):
        assert is_lazy(name)


# --- Typical Guild attributes -------------------------------------------------


def typical_attrs(rng):
    """One run's worth of attribute values of the kinds filters use."""
    started = rng.randrange(1_600_000_000_000_000, 1_800_000_000_000_000)
    flags = {
        "lr": rng.choice([0.1, 0.01, 1e-4, 3e-05, rng.random()]),
        "batch-size": rng.choice([16, 32, 64, 128]),
        "epochs": rng.randrange(1, 500),
        "dropout": round(rng.random(), 3),
        "optimizer": rng.choice(["adam", "sgd", "rmsprop"]),
        "use.cuda": rng.choice([True, False]),
        "data/path": rng.choice(["/data/train.csv", "data/mnist", "~/x y"]),
        "seed": rng.choice([None, rng.randrange(10_000)]),
        "activation": rng.choice(["relu", "tanh", "yes", "1e3"]),
        "momentum": rng.choice([0.9, 0.99, 0.0, -0.0]),
    }
    label = " ".join(f"{k}={flags[k]}" for k in rng.sample(sorted(flags), 3))
    return [
        ("flags", flags),
        ("label", label),
        ("tags", rng.sample(["baseline", "best", "gpu", "y", "2024-01-01", "v1.2"], 3)),
        ("started", started),
        ("stopped", started + rng.randrange(10**9)),
        ("exit_status", rng.choice([0, 0, 0, 1, -9])),
        ("marked", rng.choice([True, False])),
        ("id", "%032x" % rng.getrandbits(128)),
        ("sourcecode_digest", "%032x" % rng.getrandbits(128)),
    ]


def typical_files(count, seed=0):
    rng = random.Random(seed)
    files = []
    while len(files) < count:
        files.extend(guild_encode(value) for _, value in typical_attrs(rng))
    return files[:count]


def test_fast_path_decides_typical_guild_attributes():
    for text in typical_files(900, seed=1):
        value = fast_decode(text)
        assert value is not UNSURE, text
        assert tagged(value) == tagged(load_yaml(text)), text


def test_micro_benchmark_typical_files():
    """Prints timings (set RUNQ_ATTRS_BENCH_FILES=10000 for the full size)."""
    files = typical_files(int(os.environ.get("RUNQ_ATTRS_BENCH_FILES", "2000")))
    fast_seconds, fast_values = timed(decode_attr, files)
    slow_seconds, slow_values = timed(load_yaml, files)
    assert [tagged(v) for v in fast_values] == [tagged(v) for v in slow_values]
    print(
        f"\n{len(files)} typical attribute files: decode_attr {fast_seconds:.3f}s,"
        f" load_yaml {slow_seconds:.3f}s ({slow_seconds / fast_seconds:.0f}x)"
    )


def timed(decode, texts):
    start = time.perf_counter()
    values = [decode(text) for text in texts]
    return time.perf_counter() - start, values


# --- Property tests -----------------------------------------------------------

NASTY_CHARS = list("aZ019eExob_.:#-+'\"\\ \t\n/[]{},?!&*|>%@`~=<yYnN") + [
    "é", "☃", "😀", "\x85", "\u2028", "\ufeff", "\x00", "\x07", "\x7f", "\r",
]  # fmt: skip
LOOKALIKES = [
    "yes", "No", "ON", "off", "y", "n", "Y", "N", "true", "False", "null", "~",
    "Null", "1e3", "1e-4", "1E5", ".5", "1.", "-0.0", "+5", "0x10", "0o17", "012",
    "08", "1_0", "12:30", "1:30.5", "2024-01-01", "2024-01-01 12:00:00", "<<",
    "=", ".inf", "-.Inf", ".NaN", "---", "...", "- a", "a: b", "# c", "'q'",
    '"q"', "", " ", " x", "x ", "[1, 2]", "{}", "[]", "._", "?", ":", "-",
]  # fmt: skip

strings = st.one_of(
    st.text(alphabet=st.sampled_from(NASTY_CHARS), max_size=12),
    st.sampled_from(LOOKALIKES),
    st.text(max_size=8),
    st.text(alphabet=st.sampled_from(["a", "b", " ", "-", ":", "#", "'"]), min_size=60, max_size=140),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(),
    st.sampled_from([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 5e-324, 1.7976931348623157e308]),
    strings,
)
guild_values = st.one_of(
    scalars,
    st.lists(scalars, max_size=6),
    st.dictionaries(
        st.one_of(strings, st.integers(-5, 5)),
        st.one_of(scalars, st.lists(scalars, max_size=3)),
        max_size=8,
    ),
)


@PROPERTY
@given(guild_values)
def test_guild_written_values_decode_like_guild_yaml(value):
    assert_same_decoding(guild_encode(value))


# Fragments of YAML, so random text often reaches the fast path's edges.
FRAGMENTS = LOOKALIKES + [
    "a", "b", "1", "0", "-", ": ", ":", " ", "#", " #", "'", "''", '"', "\\",
    "\\x41", "\\u00e9", "\\q", "\n", "\n- ", "- ", "[", "]", "{", "}", ", ",
    ",", ".", "e", "x", "_", "!!", "&", "*", "|", ">", "?", "%", "@", "`",
    "\t", "\r", "é", "true", "null", "1e5", "\x00",
]  # fmt: skip
TOKENS = LOOKALIKES + ["a", "b-c", "d.e/f", "1", "-2", "3.5", "'x y'", '"\\x41"', "[1, a]", "{}", "[]"]

fragment_texts = st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("".join)
mapping_texts = st.lists(
    st.tuples(st.sampled_from(TOKENS), st.sampled_from([": ", ":", " : ", ":  "]), st.sampled_from(TOKENS)),
    min_size=1,
    max_size=5,
).map(lambda entries: "".join(f"{k}{sep}{v}\n" for k, sep, v in entries))
sequence_texts = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=5).map(
    lambda items: "".join(f"- {item}\n" for item in items)
)


@PROPERTY
@given(st.one_of(fragment_texts, mapping_texts, sequence_texts))
def test_raw_text_decodes_like_guild_yaml(text):
    assert_same_decoding(text)


# Nested collections, as Guild writes deps, comments and flags holding lists.
nested_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(strings, st.integers(-5, 5)), children, max_size=4),
    ),
    max_leaves=16,
)


@PROPERTY
@given(nested_values)
def test_nested_values_decode_like_guild_yaml(value):
    assert_same_decoding(guild_encode(value))


# Lines of block collections at random indentations: most are not what a
# writer makes, and the fast path must either read them as PyYAML does or
# leave them to it.
block_lines = st.tuples(
    st.integers(0, 5),
    st.sampled_from(["- ", "- - ", "", "- k: ", "k: ", "k:", "- k:", "-", "? "]),
    st.sampled_from(["", *TOKENS[-12:], "x y", "k: v", "'a': b"]),
).map(lambda parts: " " * parts[0] + parts[1] + parts[2])
block_texts = st.lists(block_lines, min_size=1, max_size=7).map(lambda lines: "\n".join(lines) + "\n")


@PROPERTY
@given(block_texts)
def test_block_text_decodes_like_guild_yaml(text):
    assert_same_decoding(text)


def test_fast_path_decides_nested_guild_attributes():
    nested = [
        {"operation:train": {"operation:train": {"config": "24c9352c", "paths": ["checkpoints/final.pt"],
                                                 "uri": "operation:mnist:train"}}},
        [{"body": "promising", "host": "mbp-bob", "time": 1796043992609488, "user": "bob"}],
        {"freeze-layers": 12, "layers": [0, 1], "lr": 1e-05, "tag": "v2"},
        [[1, [2, {"a": []}]], {"b": {}}],
    ]
    for value in nested:
        text = guild_encode(value)
        assert fast_decode(text) is not UNSURE, text
        assert_same_decoding(text)


# --- Against Guild itself -------------------------------------------------------

GUILD_SCRIPT = """
import json, pickle, sys
from guild import run as runlib, util

{tagged}

values, raw_texts = pickle.load(sys.stdin.buffer)
run = runlib.Run("0" * 32, sys.argv[1])
util.ensure_dir(run.guild_path("attrs"))
for name, value in values:
    run.write_attr(name, value)
for name, text in raw_texts:
    run.write_attr(name, text, raw=True)
read = {{}}
for name in run.attr_names():
    try:
        # run[name] rather than run.get(name): get() turns KeyError raised
        # while decoding (e.g. `!!bool x`) into None, hiding the failure.
        read[name] = ["ok", tagged(run[name])]
    except Exception as exc:
        read[name] = ["error", type(exc).__name__]
json.dump(read, sys.stdout)
"""

TRICKY_VALUES = [
    *LOOKALIKES,
    *(f"a{ch}b" for ch in NASTY_CHARS),
    *NASTY_CHARS,
    0, -1, 2**63, 10**30, -(10**40),
    0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-05, 1e300, 5e-324,
    0.1, 1e16, 123456789.123, 3e-05,
    True, False, None, [], {},
    "a long label " * 12,
    {key: key for key in LOOKALIKES if key},
    {"lr": 0.001, "batch-size": 32, "opt.name": "adam", "data/path": "/x", "on": "off"},
    list(LOOKALIKES),
    [1, 2.5, None, True, "y"],
    {"nested": {"a": [1, 2]}},
]  # fmt: skip


def guild_batch():
    rng = random.Random(7)
    randoms = ["".join(rng.choice(NASTY_CHARS) for _ in range(rng.randrange(1, 10))) for _ in range(150)]
    values = TRICKY_VALUES + randoms + [value for _, value in typical_attrs(rng)]
    raw_texts = [text for text, _ in TRICKY if text.strip("\n")]
    return (
        [(f"v{i:04d}", value) for i, value in enumerate(values)],
        [(f"r{i:04d}", text.rstrip("\n")) for i, text in enumerate(raw_texts)],
    )


def guild_read_back(run_dir, values, raw_texts):
    script = GUILD_SCRIPT.format(tagged=inspect.getsource(tagged))
    env = {k: v for k, v in os.environ.items() if k != "NO_PATCH_YAML"}
    proc = subprocess.run(
        [str(guild_python()), "-c", script, str(run_dir)],
        input=pickle.dumps((values, raw_texts)),
        capture_output=True,
        env=env,
        check=True,
    )
    return json.loads(proc.stdout)


def test_decodes_files_written_and_read_by_guild(tmp_path):
    values, raw_texts = guild_batch()
    read = guild_read_back(tmp_path, values, raw_texts)
    attrs_dir = tmp_path / ".guild" / "attrs"
    assert sorted(read) == sorted(name for name, _ in values + raw_texts)
    for name, value in values:
        text = (attrs_dir / name).read_text()
        assert text == guild_encode(value), name
        assert outcome(decode_attr, text) == read[name], (name, text)
    for name, _ in raw_texts:
        text = (attrs_dir / name).read_text()
        # Guild raises whatever PyYAML raised; runq raises AttrDecodeError.
        guild = read[name] if read[name][0] == "ok" else ["error"]
        assert outcome(decode_attr, text) == guild, (name, text)


# --- Aliases: a budget on what they expand to --------------------------------


def _alias_bomb(levels, width=9):
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * width)}]" for n in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_aliases_that_expand_past_the_budget_are_refused():
    with pytest.raises(RunqError, match="aliases expand to more than 100000 nodes"):
        load_yaml(_alias_bomb(9))  # 520 bytes, 9**9 strings once expanded


@pytest.mark.parametrize(
    "text",
    [
        _alias_bomb(5),  # 9**5 = 59,049 strings: within the budget
        "base: &b {lr: 0.1, layers: [1, 2]}\nrun1: *b\nrun2: *b\n",
        "- &x 1\n- *x\n- *x\n",
        "a: &x [1, 2]\nb: {k: *x}\n",
    ],
)
def test_aliases_within_the_budget_decode_like_guild_yaml(text):
    assert load_yaml(text) == yaml.safe_load(text)


def test_a_recursive_alias_is_refused():
    assert yaml.safe_load("a: &x [*x]\n")["a"][0][0] is not None  # PyYAML builds a cycle
    with pytest.raises(RunqError, match="recursive alias"):
        load_yaml("a: &x [*x]\n")
