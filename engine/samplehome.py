"""Realistic Guild homes, written the way Guild 0.9.0 writes its runs.

`generate_home` fills ROOT/runs/<id>/ and ROOT/trash/runs/<id>/ with runs
in Guild's exact layout: `.guild/opref`, one YAML file per attribute in
`.guild/attrs/` (about twenty, `env` and `pip_freeze` a few KB each),
`.guild/output` with its `output.index`, `.guild/manifest`, the source code
copied to the run directory, status markers (LOCK, LOCK.remote, PENDING,
STAGED with its ENV), and TensorBoard event files: in `.guild/` for the
scalars Guild parses from output, and in sub-directories (`train/`, `eval/`,
deeper) or the run root for what training code logs itself.

The "realistic" profile looks like two years of a team's work; "fidelity"
covers, on purpose and in good numbers, every status, kind of operation,
flag type, label, tag, comment and scalar layout whose reading a runq
feature depends on; "fast" draws runs as "realistic" does but writes only
what a listing shows (opref, times, exit status, flags, label, tags, marks,
comments: about ten files a run, no event files, output or source code),
for homes of a million runs. Everything is a function of the spec and `now`.

`mutate_home` then changes a fraction of the runs the way users and Guild
do, so that incremental indexing can be tested and measured.

    python -m runq.engine.samplehome PATH --runs N [--seed S] [--profile P]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import math
import multiprocessing
import os
import random
import re
import shlex
import struct
import sys
import time
import uuid
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path

from .tfevents import append_events, event_file_name, write_event_file

# ---------------------------------------------------------------------------
# Attribute text in Guild's form
#
# Guild writes each attribute with PyYAML's safe_dump (block style, indent 2,
# width 80, sorted keys, ASCII only), strips the result, adds a newline, and
# quotes y/Y/n/N and numbers such as `1e3` that its patched resolver would
# read back as non-strings. Writing that text ourselves keeps PyYAML off the
# hot path; tests compare every file with Guild's own encoder.
# ---------------------------------------------------------------------------

_NON_STRING_PLAIN = re.compile(
    r"""^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF
        |y|Y|n|N
        |~|null|Null|NULL|
        |[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN)
        |[-+]?0b[0-1_]+
        |[-+]?0[0-7_]+
        |[-+]?(?:0|[1-9][0-9_]*)
        |[-+]?0x[0-9a-fA-F_]+
        |[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+
        |[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
        |[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?
         (?:[Tt]|[\ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?
         (?:[\ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?
        |<<|=|!|&|\*)$""",
    re.X,
)
_SIMPLE_PLAIN = re.compile(r"[A-Za-z0-9_/][A-Za-z0-9_./=+\-]*\Z")
_WIDTH = 80
_INDENT = 2
_BREAKS = "\n\x85\u2028\u2029"
_SPACE_OR_END = "\0 \t\r\n\x85\u2028\u2029"
_ESCAPES = {
    "\0": "0", "\x07": "a", "\x08": "b", "\t": "t", "\n": "n", "\x0b": "v",
    "\x0c": "f", "\r": "r", "\x1b": "e", '"': '"', "\\": "\\", "\x85": "N",
    "\xa0": "_", "\u2028": "L", "\u2029": "P",
}


def encode_attr(value):
    """The text of an attribute file as Guild writes it (with its newline)."""
    if isinstance(value, dict) and value:
        text = "\n".join(_top_item(key, value[key]) for key in sorted(value))
    elif isinstance(value, list) and value:
        text = "\n".join(_top_item(None, item) for item in value)
    else:
        text = _encode(value)
    return text.strip() + "\n"


def _top_item(key, value):
    # Each top-level item starts on a fresh line in the same emitter state,
    # so its text does not depend on its neighbours. Most items repeat from
    # run to run (env, run_params, op), so their text is remembered, keyed
    # by type and repr so that 1, 1.0, True and -0.0, 0.0 stay apart.
    kind = type(value)
    token = (key, kind, value if kind in _EXACT_KEYS else repr(value))
    text = _ITEM_TEXT.get(token)
    if text is None:
        text = _encode({key: value} if key is not None else [value])
        if len(_ITEM_TEXT) < _ITEM_TEXT_LIMIT:
            _ITEM_TEXT[token] = text
    return text


_EXACT_KEYS = (str, int, bool, type(None))
_ITEM_TEXT = {}
_ITEM_TEXT_LIMIT = 200_000


def _encode(value):
    writer = _YamlWriter()
    writer.node(value)
    return "".join(writer.out)


def _scalar_text(value):
    """(text, plain_allowed_by_type) the way PyYAML represents value."""
    if isinstance(value, str):
        return value, not _NON_STRING_PLAIN.match(value)
    return _SCALAR_TEXT[type(value)](value), True


def _float_text(value):
    if value != value:
        return ".nan"
    if value in (float("inf"), float("-inf")):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value).lower()
    if "." not in text and "e" in text:
        text = text.replace("e", ".0e", 1)
    return text


_SCALAR_TEXT = {
    bool: lambda v: "true" if v else "false",
    int: str,
    float: _float_text,
    type(None): lambda v: "null",
}


class _Analysis:
    """Which scalar styles PyYAML's emitter allows for a text."""

    __slots__ = ("empty", "multiline", "plain", "single")

    def __init__(self, text):
        self.empty = not text
        self.multiline = any(ch in _BREAKS for ch in text)
        self.plain, self.single = _allowed_styles(text) if text else (True, True)


def _allowed_styles(text):
    """(plain, single-quoted) allowed, by the rules of PyYAML's analyze_scalar."""
    special = any(not (ch == "\n" or " " <= ch <= "~") for ch in text)
    leading_trailing = text[0] in " " + _BREAKS or text[-1] in " " + _BREAKS
    space_break = break_space = False
    for prev, ch in zip(text, text[1:]):
        space_break = space_break or (prev == " " and ch in _BREAKS)
        break_space = break_space or (prev in _BREAKS and ch == " ")
    plain = not (leading_trailing or special or space_break or break_space
                 or any(ch in _BREAKS for ch in text) or _has_block_indicator(text))
    single = not (special or space_break or break_space)
    return plain, single


def _has_block_indicator(text):
    """Whether text holds what would end a plain scalar in block context."""
    if text.startswith("---") or text.startswith("..."):
        return True
    for index, ch in enumerate(text):
        followed_by_space = index + 1 >= len(text) or text[index + 1] in _SPACE_OR_END
        if index == 0:
            if ch in "#,[]{}&*!|>'\"%@`" or (ch in "-?:" and followed_by_space):
                return True
        elif (ch == ":" and followed_by_space) or (ch == "#" and text[index - 1] in _SPACE_OR_END):
            return True
    return False


class _YamlWriter:
    """A block-style emitter that tracks column and indentation like PyYAML."""

    def __init__(self):
        self.out = []
        self.column = 0
        self.whitespace = True
        self.indention = True
        self.indent = None
        self.indents = []

    # structure

    def node(self, value, in_mapping=False, simple_key=False):
        if isinstance(value, dict):
            self._mapping(value)
        elif isinstance(value, (list, tuple)):
            self._sequence(value, in_mapping)
        else:
            self._scalar(value, simple_key)

    def _mapping(self, mapping):
        if not mapping:
            self._empty_flow("{", "}")
            return
        self._push_indent(indentless=False)
        for key in sorted(mapping):
            self._write_indent()
            self._scalar(key, simple_key=True)
            self._indicator(":", False)
            self.node(mapping[key], in_mapping=True)
        self._pop_indent()

    def _sequence(self, items, in_mapping):
        if not items:
            self._empty_flow("[", "]")
            return
        self._push_indent(indentless=in_mapping and not self.indention)
        for item in items:
            self._write_indent()
            self._indicator("-", True, indention=True)
            self.node(item)
        self._pop_indent()

    def _empty_flow(self, start, end):
        self._indicator(start, True, whitespace=True)
        self._indicator(end, False)

    def _push_indent(self, indentless, flow=False):
        self.indents.append(self.indent)
        if self.indent is None:
            self.indent = _INDENT if flow else 0
        elif not indentless:
            self.indent += _INDENT

    def _pop_indent(self):
        self.indent = self.indents.pop()

    # scalars

    def _scalar(self, value, simple_key=False):
        text, plain_by_type = _scalar_text(value)
        self._push_indent(indentless=False, flow=True)
        # Most scalars are one word of safe characters: plain, and with no
        # space to wrap at, so they need no analysis.
        if plain_by_type and len(text) < 128 and _SIMPLE_PLAIN.match(text):
            self._plain_word(text)
        else:
            self._styled_scalar(text, plain_by_type, simple_key)
        self._pop_indent()

    def _styled_scalar(self, text, plain_by_type, simple_key):
        analysis = _Analysis(text)
        if simple_key and (analysis.empty or analysis.multiline or len(text) >= 128):
            raise ValueError(f"not a simple mapping key: {text!r}")
        split = not simple_key
        if plain_by_type and analysis.plain:
            self._plain(text, split)
        elif analysis.single:
            self._single_quoted(text, split)
        else:
            self._double_quoted(text, split)

    def _plain_word(self, text):
        if not self.whitespace:
            text = " " + text
        self._write(text)
        self.whitespace = self.indention = False

    def _plain(self, text, split):
        if not text:
            return
        if not self.whitespace:
            self._write(" ")
        self.whitespace = self.indention = False
        spaces = False
        start = end = 0
        while end <= len(text):
            ch = text[end] if end < len(text) else None
            if spaces:
                if ch != " ":
                    if start + 1 == end and self.column > _WIDTH and split:
                        self._write_indent()
                        self.whitespace = self.indention = False
                    else:
                        self._write(text[start:end])
                    start = end
            elif ch is None or ch == " ":
                self._write(text[start:end])
                start = end
            spaces = ch == " "
            end += 1

    def _single_quoted(self, text, split):
        self._indicator("'", True)
        spaces = breaks = False
        start = end = 0
        while end <= len(text):
            ch = text[end] if end < len(text) else None
            if spaces:
                if ch != " ":
                    if (start + 1 == end and self.column > _WIDTH and split
                            and start != 0 and end != len(text)):
                        self._write_indent()
                    else:
                        self._write(text[start:end])
                    start = end
            elif breaks:
                if ch is None or ch not in _BREAKS:
                    if text[start] == "\n":
                        self._line_break()
                    for br in text[start:end]:
                        self._line_break(br)
                    self._write_indent()
                    start = end
            elif (ch is None or ch in " " + _BREAKS or ch == "'") and start < end:
                self._write(text[start:end])
                start = end
            if ch == "'":
                self._write("''")
                start = end + 1
            if ch is not None:
                spaces, breaks = ch == " ", ch in _BREAKS
            end += 1
        self._indicator("'", False)

    def _double_quoted(self, text, split):
        self._indicator('"', True)
        start = end = 0
        while end <= len(text):
            ch = text[end] if end < len(text) else None
            if ch is None or ch in '"\\\x85\u2028\u2029\ufeff' or not " " <= ch <= "~":
                if start < end:
                    self._write(text[start:end])
                    start = end
                if ch is not None:
                    self._write("\\" + _escape(ch))
                    start = end + 1
            if (0 < end < len(text) - 1 and (ch == " " or start >= end)
                    and self.column + (end - start) > _WIDTH and split):
                self._write(text[start:end] + "\\")
                start = max(start, end)
                self._write_indent()
                self.whitespace = self.indention = False
                if text[start] == " ":
                    self._write("\\")
            end += 1
        self._indicator('"', False)

    # low-level writes

    def _write(self, data):
        self.column += len(data)
        self.out.append(data)

    def _indicator(self, indicator, need_whitespace, whitespace=False, indention=False):
        if not self.whitespace and need_whitespace:
            indicator = " " + indicator
        self.whitespace = whitespace
        self.indention = self.indention and indention
        self._write(indicator)

    def _write_indent(self):
        indent = self.indent or 0
        if (not self.indention or self.column > indent
                or (self.column == indent and not self.whitespace)):
            self._line_break()
        if self.column < indent:
            self.whitespace = True
            self._write(" " * (indent - self.column))

    def _line_break(self, data="\n"):
        self.whitespace = self.indention = True
        self.column = 0
        self.out.append(data)


def _escape(ch):
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if ch <= "\xff":
        return "x%02X" % ord(ch)
    if ch <= "\uffff":
        return "u%04X" % ord(ch)
    return "U%08X" % ord(ch)


# ---------------------------------------------------------------------------
# Catalog: the machines, projects and operations runs come from
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Host:
    name: str
    user: str
    home: str
    python: str
    cpus: int
    python_version: str
    uname: str
    architecture: str = "64bit ELF"
    processor: str = "x86_64"


_HOSTS = (
    _Host("gpu-box-1", "alice", "/home/alice", "/home/alice/venvs/ml/bin/python", 32,
          "3.10.12 (main, Nov 20 2023, 15:14:05) [GCC 11.4.0]",
          "Linux gpu-box-1 5.15.0-91-generic #101-Ubuntu SMP Tue Nov 14 13:30:08 UTC"
          " 2023 x86_64 x86_64"),
    _Host("train-node-07", "alice", "/home/alice", "/opt/conda/envs/train/bin/python", 64,
          "3.11.7 | packaged by conda-forge | (main, Dec 23 2023, 14:43:09) [GCC 12.3.0]",
          "Linux train-node-07 6.2.0-39-generic #40~22.04.1-Ubuntu SMP PREEMPT_DYNAMIC"
          " Thu Nov 16 10:53:04 UTC 2 x86_64 x86_64"),
    _Host("mbp-bob", "bob", "/Users/bob", "/Users/bob/.venvs/guild/bin/python", 10,
          "3.11.6 (main, Oct  2 2023, 13:45:54) [Clang 15.0.0 (clang-1500.0.40.1)]",
          "Darwin mbp-bob 23.1.0 Darwin Kernel Version 23.1.0: Mon Oct  9 21:28:12"
          " PDT 2023; root:xnu-10002.41.9~6/RELEASE_ARM64_T6020 arm64 arm",
          architecture="64bit", processor="arm"),
)
_HOST_WEIGHTS = (5, 3, 2)
_REMOTES = ("ec2-v100", "lambda-a100")
_COMMENTERS = (("alice", "gpu-box-1"), ("bob", "mbp-bob"), ("", "train-node-07"))


@dataclass(frozen=True)
class _Project:
    dir: str                 # relative to the user's home
    files: tuple             # source files, the Guild file first when there is one


_PROJECTS = {
    "mnist": _Project("projects/mnist", (
        "guild.yml", "train.py", "evaluate.py", "prepare_data.py", "model.py",
        "data.py", "utils.py", "requirements.txt", "README.md", "config/default.yml")),
    "cifar": _Project("work/cifar10", (
        "guild.yml", "train.py", "resnet.py", "vgg.py", "export.py", "datasets.py",
        "augment.py", "requirements.txt", "README.md", "configs/resnet50.yml")),
    "textclf": _Project("src/textclf", (
        "train.py", "finetune.py", "data.py", "model.py", "metrics.py",
        "requirements.txt", "README.md", "scripts/preprocess.py")),
    "gpkg.mnist": _Project("venvs/ml/lib/python3.10/site-packages/gpkg/mnist", (
        "guild.yml", "train.py", "model.py", "__init__.py")),
    "gpkg.hello": _Project("venvs/ml/lib/python3.10/site-packages/gpkg/hello", (
        "guild.yml", "hello.py", "__init__.py")),
}


@dataclass(frozen=True)
class _Log:
    """Event files that training code writes itself, under `prefix`."""

    prefix: str              # may hold {stamp}, as Hugging Face's run dirs do
    tags: tuple
    as_tensor: bool = False  # TF2/Keras writes scalars as float tensors


@dataclass(frozen=True)
class _OpDef:
    project: str
    kind: str                # guildfile | script | package
    model: str
    name: str
    main: str
    flags: tuple             # ((name, candidate values), ...)
    output: tuple = ()       # scalars printed to output, per step
    logs: tuple = ()
    minutes: tuple = (1, 30)
    requires: str = ""       # operation whose run this one uses
    version: str = ""        # package version
    weight: int = 1


_LR = (0.1, 0.05, 0.01, 0.005, 0.001, 0.0003, 0.0001, 1e-05)
_EPOCHS = (3, 5, 10, 20, 50, 100)
_BATCH = (16, 32, 64, 128, 256)

_OPS = {
    "mnist:train": _OpDef(
        "mnist", "guildfile", "mnist", "train", "train",
        (("lr", _LR), ("epochs", _EPOCHS), ("batch-size", _BATCH),
         ("optimizer", ("adam", "sgd", "rmsprop", "adamw")),
         ("dropout", (0.0, 0.1, 0.2, 0.25, 0.5))),
        ("loss", "acc", "val_loss", "val_acc"),
        (_Log("", ("Loss/train", "Accuracy/val")),), (5, 240), weight=30),
    "mnist:evaluate": _OpDef(
        "mnist", "guildfile", "mnist", "evaluate", "evaluate",
        (("checkpoint", ("best", "last")), ("batch-size", (256, 512))),
        ("test_loss", "test_acc"), (), (1, 5), requires="mnist:train", weight=10),
    "prepare-data": _OpDef(
        "mnist", "guildfile", "", "prepare-data", "prepare_data",
        (("val-split", (0.1, 0.2)), ("seed", (0, 1, 42)), ("shuffle", (True, False))),
        ("train_size", "val_size"), (), (1, 3), weight=5),
    "resnet:train": _OpDef(
        "cifar", "guildfile", "resnet", "train", "train",
        (("depth", (18, 34, 50, 101)), ("lr", _LR), ("epochs", _EPOCHS),
         ("batch-size", _BATCH), ("weight-decay", (0.0001, 0.0005, 5e-05)),
         ("augment", (True, False)), ("scheduler", ("cosine", "step", "none"))),
        ("loss", "acc", "val_loss", "val_acc"),
        (_Log("train", ("epoch_loss", "epoch_accuracy"), True),
         _Log("validation", ("epoch_loss", "epoch_accuracy"), True)),
        (20, 600), weight=20),
    "vgg:train": _OpDef(
        "cifar", "guildfile", "vgg", "train", "train",
        (("layers", (11, 16, 19)), ("lr", _LR), ("epochs", _EPOCHS),
         ("batch-size", _BATCH), ("batch-norm", (True, False))),
        ("loss", "acc", "val_loss", "val_acc"),
        (_Log("train", ("epoch_loss", "epoch_accuracy"), True),
         _Log("validation", ("epoch_loss", "epoch_accuracy"), True)),
        (20, 480), weight=8),
    "resnet:export": _OpDef(
        "cifar", "guildfile", "resnet", "export", "export",
        (("format", ("onnx", "torchscript")), ("opset", (13, 17))),
        (), (), (1, 4), requires="resnet:train", weight=3),
    "train.py": _OpDef(
        "textclf", "script", "", "train.py", "train",
        (("model-name", ("bert-base-uncased", "distilbert-base-uncased", "roberta-base")),
         ("max-len", (128, 256, 512)), ("lr", (2e-05, 3e-05, 5e-05)),
         ("epochs", (2, 3, 4)), ("warmup", (0.0, 0.06, 0.1)), ("fp16", (True, False))),
        ("loss", "eval_loss", "eval_f1"),
        (_Log("runs/{stamp}", ("train/loss", "train/learning_rate", "eval/loss", "eval/f1")),),
        (30, 720), weight=12),
    "finetune.py": _OpDef(
        "textclf", "script", "", "finetune.py", "finetune",
        (("lr", (1e-05, 2e-05)), ("freeze-layers", (0, 6, 12)),
         ("layers", ([0, 1], [10, 11], [])), ("tag", ("v1", "v2", "2024"))),
        ("loss", "eval_f1"), (), (10, 240), weight=5),
    "gpkg.mnist/mnist:train": _OpDef(
        "gpkg.mnist", "package", "mnist", "train", "gpkg.mnist.train",
        (("lr", _LR), ("epochs", _EPOCHS)), ("loss", "acc"), (), (5, 60),
        version="0.1.0", weight=3),
    "gpkg.hello/hello": _OpDef(
        "gpkg.hello", "package", "", "hello", "gpkg.hello.hello",
        (("msg", ("Hello Guild!", "hi", "yes")),), (), (), (0, 1),
        version="0.2.1", weight=2),
}
_OP_NAMES = tuple(_OPS)

# The kinds of operation Guild formats differently, for the fidelity profile.
_OP_KINDS = {
    "guildfile-model": ("mnist:train", "resnet:train", "mnist:evaluate", "vgg:train"),
    "guildfile": ("prepare-data",),
    "script": ("train.py", "finetune.py"),
    "package-model": ("gpkg.mnist/mnist:train",),
    "package": ("gpkg.hello/hello",),
}

# Flags of every kind and awkward name, merged into fidelity runs.
_FIDELITY_FLAGS = (
    ("lr", (0.1, 0.01, 0.001, 1e-05)),
    ("epochs", (1, 5, 10, 100)),
    ("batch-size", (16, 32, 64)),
    ("dropout", (0.0, 0.5, 1e-05)),
    ("momentum", (-0.5, -2.5, 0.9)),
    ("shift", (-3, 0, 7)),
    ("verbose", (True, False)),
    ("optimizer", ("adam", "sgd", "Adam", "ADAM")),
    ("size", ("100", "yes", "1e3", "no", "null", "3.0", "small", "y")),
    ("note", (None,)),
    ("layers", ([1, 2, 3], [64, "relu", 0.5, True, None], [], ["a", "1"])),
    ("label", ("foo", "best run", "")),
    ("status", ("completed", "ok", "running")),
    ("started", ("yesterday", 1, "2024-01-01")),
    ("max-len", (128, 256)),
    ("model-name", ("bert-base", "resnet 50", "Bert-Base")),
)

_CUSTOM_LABELS = (
    "baseline", "try larger batch", "sanity check", "overnight run", "lr sweep",
    "debug", "final", "reproduce paper", "with augmentation", "fix data leak",
)
_FIDELITY_LABELS = {
    "spaces": ("baseline run 3", "try larger batch", "two  spaces"),
    "mixed-case": ("BestModel v2", "LR Sweep", "bestmodel V2"),
    "unicode": ("résumé ünïcode", "日本語のラベル", "naïve — café"),
    "tricky": ("100", "yes", "null", "a: b", "# hash", "- dash", "'quoted'",
               "trailing ", " leading", "1e3", "[x]", "key: value # c"),
    "long": ("a label long enough that Guild's YAML writer has to wrap it over more"
             " than one line because it is wider than eighty columns",),
}
_TAG_SETS = {
    "empty": [],
    "best": ["best"],
    "best+baseline": ["baseline", "best"],
    "Best": ["Best"],
    "case-variants": ["BEST", "best"],
    "spaced": ["needs review", "v2"],
    "unicode": ["日本"],
    "number-like": ["2024", "yes"],
    "baseline": ["baseline"],
    "ablation": ["ablation"],
    "v2-best": ["best", "v2"],
}
_COMMENT_BODIES = {
    "one": ("looks good",),
    "multi-line": ("line one\nline two\n\nline four after a blank line",),
    "several": ("first look: loss plateaus", "Rerun with lower LR", "agreed"),
    "unicode": ("Diverged — NaN LOSS at epoch 3 ✗",),
    "realistic": ("promising", "check the data split", "best so far",
                  "killed: wrong config", "compare with baseline"),
}
_DIGEST_GROUPS = ("a1b2", "a1b2c3d4", "0f0f", "ffe", "7")

# status kind -> the status Guild computes for it
_STATUS_OF_KIND = {
    "completed": "completed",
    "error": "error",                   # exit_status > 0
    "error-no-exit": "error",           # no exit_status and no LOCK
    "error-dead-pid": "error",          # a LOCK whose process is gone
    "terminated": "terminated",         # exit_status < 0
    "running": "running",               # a LOCK holding a live pid
    "running-remote": "running",        # LOCK.remote
    "pending": "pending",               # PENDING
    "staged": "staged",                 # STAGED
}
_FINISHED_KINDS = ("completed", "error", "terminated")
_EXIT_STATUSES = {"completed": (0,), "error": (1, 1, 1, 2, 137), "terminated": (-15, -9, -2)}
_LIVE_PID = 1           # always alive on Linux
_DEAD_PID_FLOOR = 4194305  # above the largest pid_max Linux allows

# Weighted choices per dimension. The fidelity profile deals each option out
# in proportion over all runs (a shuffled deck), so even a small home holds
# every case several times; the realistic profile draws each run freely.
_REALISTIC = {
    "op": tuple((name, op.weight) for name, op in _OPS.items()),
    "label": (("default", 75), ("custom", 10), ("absent", 10), ("empty", 5)),
    "tags": (("absent", 85), ("best", 5), ("baseline", 4), ("v2-best", 3),
             ("ablation", 2), ("Best", 1)),
    "comments": (("absent", 92), ("realistic-1", 6), ("realistic-2", 2)),
    "marked": (("absent", 95), ("true", 4), ("false", 1)),
    "times": (("both", 1),),
    "digest": (("source", 1),),
    "scalars": (("op", 1),),
    "flags": (("op", 1),),
}
_FIDELITY = {
    "op": tuple((kind, 1) for kind in _OP_KINDS),
    "status": tuple((kind, 1) for kind in _STATUS_OF_KIND),
    "label": (("default", 2), ("absent", 1), ("empty", 1),
              *((kind, 1) for kind in _FIDELITY_LABELS)),
    "tags": (("absent", 3), *((name, 1) for name in _TAG_SETS
                              if name not in ("baseline", "ablation", "v2-best"))),
    "comments": (("absent", 3), ("empty", 1), *((kind, 1) for kind in _COMMENT_BODIES
                                                 if kind != "realistic")),
    "marked": (("absent", 1), ("true", 1), ("false", 1)),
    "times": (("both", 8), ("initialized", 2)),
    "digest": (("shared-prefix", 6), ("source", 2), ("null", 1), ("absent", 1)),
    "scalars": (("none", 1), ("guild", 1), ("guild+eval", 1), ("shared-tag", 1),
                ("flag-named", 1), ("nan", 1), ("tensor", 1), ("out-of-order", 1),
                ("two-files", 1), ("deep", 1)),
    "flags": (("fidelity", 1),),
}
_PROFILES = {"realistic": _REALISTIC, "fidelity": _FIDELITY, "fast": _REALISTIC}
_DRAWN_FREELY = ("realistic", "fast")  # each run drawn on its own, not dealt from a deck
# The attributes a "fast" run keeps: what `runs list` and its filters read.
_FAST_ATTRS = ("id", "flags", "op", "initialized", "started", "stopped", "exit_status",
               "label", "tags", "marked", "comments")

# Where start times fall: (weight, window name). Dense around now.
_TIME_WINDOWS = ((4, "last-hour"), (8, "today"), (8, "yesterday"), (10, "this-week"),
                 (20, "last-30-days"), (50, "two-years"))
_DAY = 86400
_US = 1000000


# ---------------------------------------------------------------------------
# What is asked for, and what was written
# ---------------------------------------------------------------------------

@dataclass
class HomeSpec:
    runs: int
    deleted_fraction: float = 0.5
    seed: int = 0
    profile: str = "realistic"   # or "fidelity", "fast"
    sourcecode_files: int = 8    # source files copied to each run


@dataclass
class RunRecord:
    """One run as written: what Guild must read back."""

    id: str
    deleted: bool
    opref: tuple                 # (pkg_type, pkg_name, pkg_version, model, op)
    operation: str               # as run_util.format_operation shows it
    status: str
    status_kind: str             # how the status is expressed on disk
    started: int | None
    initialized: int | None
    stopped: int | None
    exit_status: int | None
    label: str | None            # None: no label file
    tags: list | None
    marked: bool | None
    comments: list | None
    flags: dict
    sourcecode_digest: str | None
    scalars: dict                # {(prefix, tag): last value}

    @property
    def sort_timestamp(self):
        return self.started if self.started is not None else self.initialized

    def run_dir(self, root):
        return Path(root, *_ROOT_PARTS[self.deleted], self.id)


@dataclass
class HomeManifest:
    root: Path
    spec: HomeSpec
    now: datetime.datetime
    runs: list = field(default_factory=list)

    def by_id(self):
        return {run.id: run for run in self.runs}

    @property
    def live(self):
        return [run for run in self.runs if not run.deleted]

    @property
    def deleted(self):
        return [run for run in self.runs if run.deleted]


_ROOT_PARTS = {False: ("runs",), True: ("trash", "runs")}


# ---------------------------------------------------------------------------
# Planning: ids, trash, start times and the cases each run covers
# ---------------------------------------------------------------------------

@dataclass
class _Plan:
    index: int
    id: str
    deleted: bool
    sort_us: int
    picks: dict


def _plan_runs(spec, now):
    rng = random.Random(f"samplehome/{spec.seed}/{spec.profile}")
    now_us = _epoch_us(now)
    ids = _run_ids(rng, spec.runs)
    deleted = set(rng.sample(range(spec.runs), round(spec.runs * spec.deleted_fraction)))
    sort_times = _sort_times(rng, spec.runs, now)
    picks = _deal_picks(rng, spec, sort_times, now_us)
    plans = [_Plan(i, ids[i], i in deleted, sort_times[i], picks[i])
             for i in range(spec.runs)]
    if spec.profile == "fidelity":
        _give_one_run_per_root_no_time(rng, plans)
    return plans


def _epoch_us(moment):
    return int(round(moment.timestamp() * _US))


def _run_ids(rng, count):
    ids = []
    seen = set()
    while len(ids) < count:
        run_id = uuid.UUID(int=rng.getrandbits(128), version=4).hex
        if run_id not in seen:
            seen.add(run_id)
            ids.append(run_id)
    return ids


def _sort_times(rng, count, now):
    """Distinct microsecond start times, dense near now, spread over two years."""
    windows = _time_windows(now)
    weights = [weight for weight, _name in _TIME_WINDOWS]
    names = [name for _weight, name in _TIME_WINDOWS]
    seen = set()
    times = []
    for name in rng.choices(names, weights, k=count):
        start, end = windows[name]
        ts = _skewed_time(rng, start, end, name)
        while ts in seen:
            ts -= 1
        seen.add(ts)
        times.append(ts)
    return times


def _time_windows(now):
    """{name: (start_us, end_us)} in local time; empty windows fall back."""
    now_us = _epoch_us(now)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    monday = midnight - datetime.timedelta(days=midnight.weekday())
    latest = now_us - _US
    bounds = {
        "last-hour": (now_us - 3600 * _US, latest),
        "today": (_epoch_us(midnight), min(latest, now_us - 3600 * _US)),
        "yesterday": (_epoch_us(midnight - datetime.timedelta(days=1)), _epoch_us(midnight)),
        "this-week": (_epoch_us(monday), _epoch_us(midnight - datetime.timedelta(days=1))),
        "last-30-days": (now_us - 30 * _DAY * _US, now_us - 7 * _DAY * _US),
        "two-years": (now_us - 730 * _DAY * _US, now_us - 30 * _DAY * _US),
    }
    fallback = bounds["last-30-days"]
    return {name: (span if span[1] - span[0] > _US else fallback)
            for name, span in bounds.items()}


def _skewed_time(rng, start, end, name):
    # Older work is sparser: within two years, density grows toward now.
    fraction = rng.random() ** 1.6 if name == "two-years" else rng.random()
    return end - int(fraction * (end - start))


def _deal_picks(rng, spec, sort_times, now_us):
    table = _PROFILES[spec.profile]
    dealt = {dim: _deal(rng, options, spec.runs, spec.profile)
             for dim, options in table.items()}
    if spec.profile in _DRAWN_FREELY:
        dealt["status"] = [_realistic_status_kind(rng, now_us - ts) for ts in sort_times]
    return [{dim: dealt[dim][i] for dim in dealt} for i in range(spec.runs)]


def _deal(rng, options, count, profile):
    names = [name for name, _weight in options]
    weights = [weight for _name, weight in options]
    if profile in _DRAWN_FREELY:
        return rng.choices(names, weights, k=count)
    cycle = [name for name, weight in options for _ in range(weight)]
    deck = (cycle * (count // len(cycle) + 1))[:count]
    rng.shuffle(deck)
    return deck


# Realistic statuses by age: runs in flight are recent; an old run that
# still holds a LOCK belonged to a process that is long gone.
_REALISTIC_STATUS = (
    (3600, (("running", 30), ("completed", 50), ("error", 8), ("terminated", 6),
            ("staged", 3), ("pending", 2), ("running-remote", 1))),
    (_DAY, (("running", 3), ("completed", 75), ("error", 10), ("terminated", 7),
            ("staged", 2), ("pending", 1), ("running-remote", 1), ("error-no-exit", 1))),
    (None, (("completed", 78), ("error", 11), ("terminated", 8), ("staged", 1),
            ("error-no-exit", 1), ("error-dead-pid", 1))),
)


def _realistic_status_kind(rng, age_us):
    for max_age, options in _REALISTIC_STATUS:
        if max_age is None or age_us < max_age * _US:
            return _weighted(rng, options)
    raise AssertionError("unreachable")


def _weighted(rng, options):
    return rng.choices([name for name, _w in options], [w for _n, w in options])[0]


def _give_one_run_per_root_no_time(rng, plans):
    """One run per root has neither `started` nor `initialized`.

    Guild sorts such runs last with a comparator that does not order them
    among themselves (var.py _run_attr_cmp), so one per root keeps Guild's
    order fully determined.
    """
    for deleted in (False, True):
        candidates = [plan for plan in plans if plan.deleted == deleted]
        if len(candidates) > 1:
            rng.choice(candidates).picks["times"] = "neither"


# ---------------------------------------------------------------------------
# Building one run: its facts, then its files
# ---------------------------------------------------------------------------

@dataclass
class _EventFile:
    path: str                # relative to the run directory
    scalars: list            # [(tag, value, step)]
    wall_time: float         # 0.0: not set
    as_tensor: bool = False


@dataclass
class _RunFiles:
    record: RunRecord
    dirs: list               # relative, parents first
    files: list              # [(relative path, bytes)]
    events: list             # [_EventFile]


@dataclass
class _Run:
    """Everything decided about one run before anything is written."""

    plan: _Plan
    rng: random.Random
    spec: HomeSpec
    now_us: int
    op_name: str
    op: _OpDef
    host: _Host
    kind: str
    times: dict
    exit_status: int | None
    flags: dict
    user_flags: dict
    steps: list


def _build_run(plan, spec, now_us):
    run = _decide_run(plan, spec, now_us)
    if spec.profile == "fast":
        return _build_fast_run(run)
    output, events, scalars = _run_scalars(run)
    attrs = _run_attrs(run)
    record = _run_record(run, attrs, scalars)
    files = _guild_files(run, attrs, output)
    sources = _source_tree(run.op.project, _source_version(run), spec.sourcecode_files)
    files += [(path, data) for path, data, _sha in sources.files]
    files.append((".guild/manifest", _manifest_text(sources)))
    dirs = _dirs_for([path for path, _data in files] + [event.path for event in events])
    return _RunFiles(record, dirs, files, events)


def _build_fast_run(run):
    every = _run_attrs(run)
    attrs = {name: value for name, value in every.items() if name in _FAST_ATTRS}
    record = _run_record(run, attrs, {})
    files = [(".guild/opref", _encode_opref(_opref(run)).encode())]
    files += [(f".guild/attrs/{name}", _attr_bytes(value)) for name, value in attrs.items()]
    files += _MARKERS[run.kind](run, every)
    return _RunFiles(record, _dirs_for([path for path, _data in files]), files, [])


def _decide_run(plan, spec, now_us):
    rng = random.Random(f"{spec.seed}/{plan.index}/{plan.id}")
    op_name = _op_name(rng, plan.picks["op"])
    op = _OPS[op_name]
    kind = plan.picks["status"]
    times = _run_times(rng, plan, kind, op, now_us)
    flags, user_flags = _run_flags(rng, plan.picks["flags"], op)
    exit_status = rng.choice(_EXIT_STATUSES[kind]) if kind in _EXIT_STATUSES else None
    host = _HOSTS[0] if op.kind == "package" else rng.choices(_HOSTS, _HOST_WEIGHTS)[0]
    steps = _logged_steps(rng, flags, op, kind)
    return _Run(plan, rng, spec, now_us, op_name, op, host, kind, times,
                exit_status, flags, user_flags, steps)


def _op_name(rng, pick):
    return rng.choice(_OP_KINDS[pick]) if pick in _OP_KINDS else pick


def _run_times(rng, plan, kind, op, now_us):
    """{'initialized', 'started', 'stopped'}: microseconds or None."""
    which = "initialized" if kind == "pending" else plan.picks["times"]
    if which == "neither":
        return {"initialized": None, "started": None, "stopped": None}
    started = plan.sort_us if which == "both" else None
    initialized = plan.sort_us - rng.randrange(50_000, 3 * _US) if started else plan.sort_us
    stopped = None
    if kind in _FINISHED_KINDS:
        begin = started or initialized
        minutes = math.exp(rng.uniform(math.log(op.minutes[0] + 0.2), math.log(op.minutes[1] + 1)))
        stopped = begin + max(1000, min(int(minutes * 60 * _US), now_us - begin - 1000))
    return {"initialized": initialized, "started": started, "stopped": stopped}


def _run_flags(rng, pick, op):
    """(flags, user_flags): every flag value, and those the user set."""
    defaults = {name: values[0] for name, values in op.flags}
    if pick == "fidelity":
        chosen = {name: rng.choice(values) for name, values in _FIDELITY_FLAGS
                  if rng.random() < 0.6}
        flags = {name: rng.choice(values) for name, values in op.flags}
        flags.update(chosen)
    else:
        flags = {name: rng.choice(values) if rng.random() < 0.5 else defaults[name]
                 for name, values in op.flags}
    if op.requires:
        flags[f"operation:{op.requires.split(':')[-1]}"] = _hex(rng, 32)
    user_flags = {name: value for name, value in flags.items()
                  if name not in defaults or value != defaults[name]}
    return flags, user_flags


def _hex(rng, digits):
    return "%0*x" % (digits, rng.getrandbits(digits * 4))


def _logged_steps(rng, flags, op, kind):
    """The steps a run printed scalars for: a few, evenly over its epochs."""
    epochs = flags.get("epochs")
    total = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 1 else 1
    points = min(total, 8)
    steps = sorted({round(i * (total - 1) / max(points - 1, 1)) for i in range(points)})
    if kind in ("pending", "staged"):
        return []
    if kind != "completed" and len(steps) > 1:
        steps = steps[: rng.randint(1, len(steps) - 1)]
    return steps


# --- scalars, output and event files ----------------------------------------

def _run_scalars(run):
    """(output lines, event files, {(prefix, tag): last value})."""
    layout = run.plan.picks["scalars"]
    if not run.steps:
        return [], [], {}
    output_tags, logs = _SCALAR_LAYOUTS[layout](run)
    output = _output_lines(run, output_tags)
    events = []
    guild_scalars = _parse_output_scalars(output)
    if guild_scalars:
        # Guild's own writer leaves wall_time unset in these events.
        events.append(_EventFile(f".guild/{_event_name(run, 0)}", guild_scalars, 0.0))
    events += logs
    return output, events, _last_values(events)


def _op_layout(run):
    logs = [_log_events(run, log, index + 1, _series(run, log.tags))
            for index, log in enumerate(run.op.logs)]
    return run.op.output, logs


def _series(run, tags, steps=None):
    steps = run.steps if steps is None else steps
    return [(tag, _curve(run.rng, tag, step, steps[-1]), step)
            for step in steps for tag in tags]


def _curve(rng, tag, step, last_step):
    """A plausible value for a metric: losses fall, accuracies rise."""
    progress = (step + 1) / (last_step + 1)
    noise = rng.uniform(-0.02, 0.02)
    lowered = tag.lower()
    if "size" in lowered:
        return float(rng.choice((5000, 6000, 54000, 60000)))
    if "learning_rate" in lowered or lowered == "lr":
        return round(0.001 * (1 - progress) + 1e-06, 8)
    if "acc" in lowered or "f1" in lowered:
        return round(min(0.999, 0.5 + 0.45 * progress + noise), 6)
    return round(max(0.001, 2.3 * math.exp(-3 * progress) + noise), 6)


def _log_events(run, log, number, scalars):
    prefix = log.prefix.format(stamp=_run_stamp(run))
    name = _event_name(run, number, ".v2" if log.as_tensor else "")
    path = f"{prefix}/{name}" if prefix else name
    return _EventFile(path, scalars, _started_seconds(run) + number, log.as_tensor)


def _run_stamp(run):
    moment = datetime.datetime.fromtimestamp(_started_seconds(run), datetime.timezone.utc)
    return moment.strftime("%b%d_%H-%M-%S_") + run.host.name


def _started_seconds(run):
    begin = run.times["started"] or run.times["initialized"] or run.plan.sort_us
    return begin / _US


def _event_name(run, number, suffix=""):
    pid = 1000 + run.plan.index % 30000
    return event_file_name(_started_seconds(run), run.host.name, f".{pid}.{number}{suffix}")


def _output_lines(run, tags):
    """[(stream, text)] as the operation printed them (0 stdout, 1 stderr)."""
    lines = [(0, f"Running {run.op.name} on {run.host.name}")]
    multi_step = len(run.steps) > 1 or (run.steps and run.steps[0] > 0)
    for step in run.steps:
        if multi_step:
            lines.append((0, f"step: {step}"))
        lines += [(0, _scalar_line(tag, _curve(run.rng, tag, step, run.steps[-1])))
                  for tag in tags]
    lines += _EPILOGUES.get(run.kind, ())
    return lines


def _scalar_line(tag, value):
    return f"{tag}: {value:.0f}" if value >= 1000 else f"{tag}: {value:.6f}"


_EPILOGUES = {
    "completed": ((0, "Saved checkpoint to checkpoints/final.pt"),),
    "error": ((1, "Traceback (most recent call last):"),
              (1, '  File "train.py", line 87, in <module>'),
              (1, "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB")),
    "terminated": ((1, "KeyboardInterrupt"),),
}

# Guild's default output-scalar pattern: `key: number` on its own line.
_OUTPUT_SCALAR = re.compile(r"^([^ \t]+):\s+([0-9\.e\-]+)(?:\s+\(.*\))?$")


def _parse_output_scalars(output):
    """The (tag, value, step) Guild logs to .guild while reading output."""
    scalars = []
    step = 0
    for _stream, text in output:
        match = _OUTPUT_SCALAR.match(text)
        if not match:
            continue
        key, value = match.group(1), float(match.group(2))
        if key == "step":
            step = int(value)
        else:
            scalars.append((key, value, step))
    return scalars


def _last_values(events):
    """{(prefix, tag): value at the highest step, the later event on ties}.

    Files of one directory are read in name order, as TensorBoard does.
    """
    best = {}
    for event in sorted(events, key=lambda e: e.path):
        prefix = _prefix_of(event.path)
        for tag, value, step in event.scalars:
            key = (prefix, tag)
            if key not in best or step >= best[key][0]:
                best[key] = (step, _float32(value))
    return {key: value for key, (_step, value) in best.items()}


def _prefix_of(path):
    return path.rpartition("/")[0]


def _float32(value):
    return struct.unpack("<f", struct.pack("<f", value))[0]


# Fidelity scalar layouts: (output tags, event files written by the code).

def _layout_none(run):
    return (), []


def _layout_guild(run):
    return ("loss", "acc"), []


def _layout_guild_eval(run):
    return ("loss",), [_log_events(run, _Log("eval", ()), 1, _series(run, ("val_loss", "acc")))]


def _layout_shared_tag(run):
    # The same tag under two prefixes, ending on the same value: Guild picks
    # between prefixes in file-system order, so only equal values are fair.
    final = round(run.rng.uniform(0.6, 0.95), 6)
    root = [("acc", 0.25, 0), ("acc", final, 1)]
    evals = [("acc", 0.5, 0), ("acc", 0.125, 2), ("acc", final, 3)]
    return ("loss",), [_log_events(run, _Log("", ()), 1, root),
                       _log_events(run, _Log("eval", ()), 2, evals)]


def _layout_flag_named(run):
    return ("lr", "epochs", "label", "status", "batch-size"), []


def _layout_nan(run):
    scalars = _series(run, ("val_acc",)) + [("loss", 0.5, 0), ("loss", float("nan"), 1)]
    return ("acc",), [_log_events(run, _Log("eval", ()), 1, scalars)]


def _layout_tensor(run):
    return (), [_log_events(run, _Log("train", (), True), 1, _series(run, ("loss", "acc")))]


def _layout_out_of_order(run):
    # The highest step wins even when logged first; on a tie, the later event.
    scalars = [("val_acc", 0.9, 5), ("val_acc", 0.1, 2), ("val_loss", 0.75, 3),
               ("val_loss", 0.5, 3), ("val_loss", 0.875, 1)]
    return ("acc",), [_log_events(run, _Log("eval", ()), 1, scalars)]


def _layout_two_files(run):
    first = [("loss", 1.5, 0), ("loss", 1.25, 1)]
    second = [("loss", 0.625, 2), ("loss", 0.375, 3)]
    return (), [_log_events(run, _Log("eval", ()), 1, first),
                _log_events(run, _Log("eval", ()), 2, second)]


def _layout_deep(run):
    log = _Log("runs/{stamp}", ("train/loss", "eval/f1"))
    return ("loss",), [_log_events(run, log, 1, _series(run, log.tags))]


_SCALAR_LAYOUTS = {
    "op": _op_layout,
    "none": _layout_none,
    "guild": _layout_guild,
    "guild+eval": _layout_guild_eval,
    "shared-tag": _layout_shared_tag,
    "flag-named": _layout_flag_named,
    "nan": _layout_nan,
    "tensor": _layout_tensor,
    "out-of-order": _layout_out_of_order,
    "two-files": _layout_two_files,
    "deep": _layout_deep,
}


# --- attributes -------------------------------------------------------------

def _run_attrs(run):
    """{name: value or encoded bytes} of every attribute file written."""
    attrs = {
        "id": run.plan.id,
        "flags": run.flags,
        "user_flags": run.user_flags,
        "cmd": _cmd(run),
        "env": _env(run),
        "host": run.host.name,
        "user": run.host.user,
        "platform": _platform(run.host),
        "plugins": ["cpu", "disk", "gpu", "memory", "perf", "python_script"],
        "random_seed": run.rng.randrange(2 ** 32),
        "run_params": _run_params(run),
        "deps": _deps(run),
        "op": _op_attr_text(run.op_name, run.host),
    }
    attrs.update(_time_attrs(run))
    attrs.update(_user_attrs(run))
    attrs.update(_source_attrs(run))
    if run.op.kind != "package" and run.rng.random() < 0.9:
        attrs["pip_freeze"] = _pip_freeze_text(run.host)
    if run.op.output and run.rng.random() < 0.05:
        attrs["objective"] = run.rng.choice(("loss", "-acc", "val_loss"))
    return attrs


def _time_attrs(run):
    attrs = {name: value for name, value in run.times.items() if value is not None}
    if run.exit_status is not None:
        attrs["exit_status"] = run.exit_status
    return attrs


def _user_attrs(run):
    """label, tags, marked and comments, as users leave them."""
    picks = run.plan.picks
    attrs = {}
    label = _label(run, picks["label"])
    if label is not None:
        attrs["label"] = label
    if picks["tags"] != "absent":
        attrs["tags"] = list(_TAG_SETS[picks["tags"]])
    if picks["marked"] != "absent":
        attrs["marked"] = picks["marked"] == "true"
    if picks["comments"] != "absent":
        attrs["comments"] = _comments(run, picks["comments"])
    return attrs


def _label(run, pick):
    """The label to write; None for no label file."""
    choose = _LABEL_PICKS.get(pick)
    return choose(run) if choose else run.rng.choice(_FIDELITY_LABELS[pick])


_LABEL_PICKS = {
    "absent": lambda run: None,
    "empty": lambda run: "",
    "default": lambda run: _default_label(run.flags),
    "custom": lambda run: run.rng.choice(_CUSTOM_LABELS),
}


def _default_label(flags):
    """Guild's label for a run nobody labeled: NAME=VALUE for set flags."""
    return " ".join(f"{name}={_flag_text(value)}"
                    for name, value in sorted(flags.items()) if value is not None)


def _flag_text(value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return "[" + ", ".join(_flag_text(item) for item in value) + "]"
    if isinstance(value, str):
        return value if value and not _NON_STRING_PLAIN.match(value) else f"'{value}'"
    return _scalar_text(value)[0]


def _comments(run, pick):
    if pick == "empty":
        return []
    if pick.startswith("realistic-"):
        bodies = run.rng.sample(_COMMENT_BODIES["realistic"], int(pick.split("-")[1]))
    else:
        bodies = _COMMENT_BODIES[pick]
    begin = run.times["started"] or run.times["initialized"] or run.now_us - _DAY * _US
    times = sorted(run.rng.randrange(begin + 1, max(begin + 2, run.now_us))
                   for _ in bodies)
    return [_comment(run, body, when, i) for i, (body, when) in enumerate(zip(bodies, times))]


def _comment(run, body, when, index):
    user, host = _COMMENTERS[(run.plan.index + index) % len(_COMMENTERS)]
    return {"body": body, "host": host, "time": when, "user": user}


def _source_attrs(run):
    pick = run.plan.picks["digest"]
    sources = _source_tree(run.op.project, _source_version(run), run.spec.sourcecode_files)
    attrs = {}
    if run.op.kind != "package":
        commit = sources.commit + ("*" if run.rng.random() < 0.2 else "")
        attrs["vcs_commit"] = f"git:{commit}"
    digest = _DIGEST_PICKS[pick](run, sources)
    if pick != "absent":
        attrs["sourcecode_digest"] = digest
    return attrs


def _shared_prefix_digest(run, sources):
    prefix = run.rng.choice(_DIGEST_GROUPS)
    tail = hashlib.md5(f"{prefix}/{run.rng.randrange(3)}".encode()).hexdigest()
    return (prefix + tail)[:32]


_DIGEST_PICKS = {
    "source": lambda run, sources: sources.digest,
    "shared-prefix": _shared_prefix_digest,
    "null": lambda run, sources: None,
    "absent": lambda run, sources: None,
}


def _cmd(run):
    args = [run.host.python, "-um", "guild.op_main", run.op.main, "--"]
    for name, value in sorted(run.flags.items()):
        if value is not None:
            args += [f"--{name}", _flag_text(value)]
    return args


def _env(run):
    run_id = run.plan.id
    home = run.host.home
    project_dir = _project_dir(run.op, run.host)
    env = dict(_base_env(run.host))
    env.update({
        "CMD_DIR": project_dir,
        "FLAGS_DEST": "globals",
        "GUILD_HOME": f"{home}/.guild",
        "GUILD_OP": f"{project_dir}/{run.op.main}",
        "GUILD_PLUGINS": "cpu,disk,gpu,memory,perf,python_script",
        "GUILD_SOURCECODE": ".",
        "LOG_LEVEL": "20",
        "PROJECT_DIR": project_dir,
        "PWD": project_dir,
        "RUN_DIR": f"{home}/.guild/runs/{run_id}",
        "RUN_ID": run_id,
    })
    for name, value in run.flags.items():
        env["FLAG_" + re.sub(r"\W", "_", name).upper()] = _env_flag_text(value)
    return env


def _env_flag_text(value):
    if value is None or value is False:
        return ""
    return _flag_text(value)


@cache
def _base_env(host):
    path = ":".join((f"{host.home}/.local/bin", host.python.rsplit("/", 1)[0],
                     "/usr/local/cuda/bin", "/usr/local/sbin", "/usr/local/bin",
                     "/usr/sbin", "/usr/bin", "/sbin", "/bin", "/snap/bin"))
    env = {
        "CUDA_HOME": "/usr/local/cuda", "CUDA_VISIBLE_DEVICES": "0,1",
        "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus",
        "EDITOR": "vim", "HOME": host.home, "LANG": "en_US.UTF-8",
        "LC_ALL": "en_US.UTF-8", "LC_CTYPE": "UTF-8",
        "LD_LIBRARY_PATH": "/usr/local/cuda/lib64:/usr/local/cuda/extras/CUPTI/lib64",
        "LESSCLOSE": "/usr/bin/lesspipe %s %s", "LESSOPEN": "| /usr/bin/lesspipe %s",
        "LOGNAME": host.user, "MOTD_SHOWN": "pam", "OLDPWD": host.home,
        "PATH": path, "PYTHONPATH": f".:{host.home}/lib/python",
        "PYTHONUNBUFFERED": "1", "SHELL": "/bin/bash", "SHLVL": "2",
        "SSH_CLIENT": "10.0.0.12 51234 22", "SSH_CONNECTION": "10.0.0.12 51234 10.0.0.5 22",
        "SSH_TTY": "/dev/pts/3", "TERM": "xterm-256color", "TMUX": "/tmp/tmux-1000/default,2245,0",
        "TMUX_PANE": "%3", "USER": host.user, "VIRTUAL_ENV": host.python.rsplit("/bin/", 1)[0],
        "XDG_DATA_DIRS": "/usr/local/share:/usr/share:/var/lib/snapd/desktop",
        "XDG_RUNTIME_DIR": "/run/user/1000", "XDG_SESSION_CLASS": "user",
        "XDG_SESSION_ID": "412", "XDG_SESSION_TYPE": "tty", "_": host.python,
        "LS_COLORS": _LS_COLORS,
    }
    return tuple(env.items())


_LS_COLORS = ":".join(
    f"*.{ext}=01;{color}" for ext, color in (
        ("tar", 31), ("tgz", 31), ("zip", 31), ("gz", 31), ("bz2", 31), ("xz", 31),
        ("jpg", 35), ("png", 35), ("gif", 35), ("mp4", 35), ("mkv", 35), ("flac", 36),
        ("mp3", 36), ("wav", 36), ("ogg", 36), ("deb", 31), ("rpm", 31), ("jar", 31)))


def _platform(host):
    return {"architecture": host.architecture, "cpus": host.cpus,
            "processor": host.processor, "python_version": host.python_version,
            "uname": host.uname}


def _run_params(run):
    picks = run.plan.picks
    params = dict(_RUN_PARAMS_DEFAULTS)
    params.update({
        "flags": [f"{name}={_flag_text(value)}" for name, value in sorted(run.user_flags.items())],
        "opspec": run.op_name,
        "stage": run.kind == "staged",
        "background": run.kind in ("running", "running-remote") and run.rng.random() < 0.5,
        "label": run.rng.choice(_CUSTOM_LABELS) if picks["label"] == "custom" else None,
        "remote": _REMOTES[0] if run.kind == "running-remote" else None,
    })
    return params


_RUN_PARAMS_DEFAULTS = {
    "additional_deps": [], "background": False, "batch_comment": None,
    "batch_label": None, "batch_tags": [], "break_": [], "break_on_error": False,
    "comment": None, "debug_sourcecode": None, "edit_batch_comment": False,
    "edit_comment": False, "edit_flags": False, "fail_on_trial_error": False,
    "force_deps": False, "force_flags": False, "force_sourcecode": False,
    "gpus": None, "help_model": False, "help_op": False, "keep_batch": False,
    "keep_run": False, "max_trials": None, "maximize": None, "minimize": None,
    "needed": False, "no_gpus": False, "no_wait": False, "opt_flags": [],
    "optimize": False, "optimizer": None, "pidfile": None, "print_cmd": False,
    "print_env": False, "print_trials": False, "proto": None, "quiet": False,
    "random_seed": None, "restart": None, "run_dir": None, "run_id": None,
    "save_trials": None, "stage_trials": False, "stop_after": None, "tags": [],
    "test_flags": False, "test_output_scalars": None, "test_sourcecode": False,
    "yes": True,
}


def _deps(run):
    if not run.op.requires:
        return {}
    name = f"operation:{run.op.requires.split(':')[-1]}"
    config = run.flags[name]
    return {name: {name: {"config": config, "paths": ["checkpoints/final.pt"],
                          "uri": f"operation:{run.op.requires}"}}}


@cache
def _op_attr_text(op_name, host):
    op = _OPS[op_name]
    project_dir = _project_dir(op, host)
    value = {
        "delete-on-success": False,
        "deps": [_op_dep(op, project_dir)] if op.requires else [],
        "flag-null-labels": {},
        "flags-extra": {},
        "label-template": None,
        "op-cmd": {
            "cmd-args": ["${python_exe}", "-um", "guild.op_main", op.main, "--",
                         "__flag_args__"],
            "cmd-env": {"FLAGS_DEST": "globals",
                        "GUILD_PLUGINS": "cpu,disk,gpu,memory,perf,python_script",
                        "PROJECT_DIR": project_dir,
                        "PYTHONPATH": f".:{host.home}/lib/python"},
            "cmd-flags": {name: {} for name, _values in op.flags},
            "flags-dest": "globals",
        },
        "output-scalars": None,
        "python-requires": None,
        "sourcecode": {"dest": "."},
    }
    return encode_attr(value).encode()


def _op_dep(op, project_dir):
    name = f"operation:{op.requires.split(':')[-1]}"
    return {"location": project_dir, "name": name, "sources": [{"operation": op.requires}]}


@cache
def _pip_freeze_text(host):
    rng = random.Random(host.name)
    packages = sorted(_PACKAGES, key=str.lower)
    lines = [f"{name}=={rng.randint(0, 4)}.{rng.randint(0, 30)}.{rng.randint(0, 12)}"
             for name in packages]
    return encode_attr(lines).encode()


_PACKAGES = (
    "absl-py aiohttp aiosignal alembic antlr4-python3-runtime anyio appdirs argon2-cffi "
    "asttokens astunparse async-timeout attrs babel beautifulsoup4 black bleach "
    "blinker cachetools certifi cffi charset-normalizer click cloudpickle cmake "
    "colorama comm contourpy cycler daemonize datasets debugpy decorator defusedxml "
    "dill distlib executing fastjsonschema filelock flatbuffers fonttools frozenlist "
    "fsspec gast google-auth google-auth-oauthlib google-pasta grpcio guildai h5py "
    "huggingface-hub hydra-core idna importlib-metadata ipykernel ipython isort "
    "jedi Jinja2 joblib jsonschema jupyter_client jupyter_core keras kiwisolver "
    "libclang lightning-utilities Markdown MarkupSafe matplotlib matplotlib-inline "
    "mccabe ml-dtypes mpmath multidict multiprocess mypy-extensions natsort nest-asyncio "
    "networkx numpy nvidia-cublas-cu12 nvidia-cuda-runtime-cu12 nvidia-cudnn-cu12 "
    "oauthlib omegaconf opt-einsum optree packaging pandas parso pathspec pexpect "
    "pillow pkginfo platformdirs prompt-toolkit protobuf psutil ptyprocess pure-eval "
    "pyarrow pyasn1 pyasn1-modules pycparser pyflakes Pygments pyparsing "
    "python-dateutil pytorch-lightning pytz PyYAML pyzmq regex requests "
    "requests-oauthlib rich rsa safetensors scikit-learn scipy seaborn sentencepiece "
    "six soupsieve SQLAlchemy stack-data sympy tabview tensorboard "
    "tensorboard-data-server tensorflow tensorflow-estimator termcolor threadpoolctl "
    "tokenizers tomli torch torchmetrics torchvision tornado tqdm traitlets "
    "transformers triton typing_extensions tzdata urllib3 wcwidth Werkzeug wrapt "
    "xxhash yarl zipp"
).split()


def _project_dir(op, host):
    return f"{host.home}/{_PROJECTS[op.project].dir}"


def _opref(run):
    op = run.op
    project_dir = _project_dir(op, run.host)
    if op.kind == "guildfile":
        sources = _source_tree(op.project, _source_version(run), run.spec.sourcecode_files)
        return ("guildfile", f"{project_dir}/guild.yml", sources.guildfile_digest,
                op.model, op.name)
    if op.kind == "script":
        return ("script", project_dir, "", "", op.name)
    return ("package", op.project, op.version, op.model, op.name)


def _format_operation(opref):
    pkg_type, pkg_name, _version, model, op = opref
    name = f"{model}:{op}" if model else op
    return f"{pkg_name}/{name}" if pkg_type == "package" else name


def _encode_opref(opref):
    pkg_type, pkg_name, version, model, op = (_shell_word(part) for part in opref)
    return f"{pkg_type}:{pkg_name} {version} {model} {op}"


def _shell_word(text):
    return shlex.quote(text or "")


# --- the record Guild must read back ----------------------------------------

def _run_record(run, attrs, scalars):
    opref = _opref(run)
    return RunRecord(
        id=run.plan.id,
        deleted=run.plan.deleted,
        opref=opref,
        operation=_format_operation(opref),
        status=_STATUS_OF_KIND[run.kind],
        status_kind=run.kind,
        started=attrs.get("started"),
        initialized=attrs.get("initialized"),
        stopped=attrs.get("stopped"),
        exit_status=attrs.get("exit_status"),
        label=attrs.get("label"),
        tags=attrs.get("tags"),
        marked=attrs.get("marked"),
        comments=attrs.get("comments"),
        flags=run.flags,
        sourcecode_digest=attrs.get("sourcecode_digest"),
        scalars=scalars,
    )


# --- files under .guild -----------------------------------------------------

def _guild_files(run, attrs, output):
    files = [(".guild/opref", _encode_opref(_opref(run)).encode())]
    files += [(f".guild/attrs/{name}", _attr_bytes(value)) for name, value in attrs.items()]
    files += _MARKERS[run.kind](run, attrs)
    if output:
        files += _output_files(run, output)
    return files


def _attr_bytes(value):
    # bytes: text encoded once and shared by many runs (op, pip_freeze)
    return value if isinstance(value, bytes) else encode_attr(value).encode()


def _staged_files(run, attrs):
    env = "".join(f"export {name}={shlex.quote(value)}\n"
                  for name, value in sorted(attrs["env"].items()))
    return [(".guild/STAGED", b""), (".guild/ENV", env.encode())]


_MARKERS = {
    "completed": lambda run, attrs: [],
    "error": lambda run, attrs: [],
    "error-no-exit": lambda run, attrs: [],
    "terminated": lambda run, attrs: [],
    "error-dead-pid": lambda run, attrs: [
        (".guild/LOCK", str(_DEAD_PID_FLOOR + run.rng.randrange(10 ** 6)).encode())],
    "running": lambda run, attrs: [(".guild/LOCK", str(_LIVE_PID).encode())],
    "running-remote": lambda run, attrs: [
        (".guild/LOCK.remote", run.rng.choice(_REMOTES).encode())],
    "pending": lambda run, attrs: [(".guild/PENDING", b"")],
    "staged": _staged_files,
}


def _output_files(run, output):
    """`output` and `output.index`: one (ms time, stream) entry per line."""
    begin = run.times["started"] or run.times["initialized"] or run.plan.sort_us
    end = run.times["stopped"] or min(run.now_us, begin + 3600 * _US)
    span = max(end - begin, len(output))
    times = [(begin + span * (i + 1) // (len(output) + 1)) // 1000 for i in range(len(output))]
    text = "".join(line + "\n" for _stream, line in output)
    index = b"".join(struct.pack("!QB", ms, stream)
                     for ms, (stream, _line) in zip(times, output))
    return [(".guild/output", text.encode()), (".guild/output.index", index)]


# --- source code ------------------------------------------------------------

@dataclass(frozen=True)
class _SourceTree:
    files: tuple             # ((path, bytes, sha1), ...)
    digest: str              # Guild's sourcecode_digest of these files
    guildfile_digest: str
    commit: str


def _source_version(run):
    # Code changes every ten days or so; runs of the same period share it.
    return (run.plan.sort_us // _US) // (10 * _DAY)


@lru_cache(maxsize=256)
def _source_tree(project, version, count):
    paths = _source_paths(_PROJECTS[project].files, count)
    files = tuple((path, data, hashlib.sha1(data).hexdigest())
                  for path, data in ((p, _source_text(project, p, version)) for p in paths))
    guildfile = dict((path, data) for path, data, _sha in files).get("guild.yml", b"")
    commit = hashlib.sha1(f"{project}@{version}".encode()).hexdigest()
    return _SourceTree(files, _files_digest(files), hashlib.md5(guildfile).hexdigest(), commit)


def _source_paths(paths, count):
    extra = [f"lib/module_{i:02d}.py" for i in range(max(0, count - len(paths)))]
    return (list(paths) + extra)[:count]


def _files_digest(files):
    """Guild's digest: md5 over each path and its bytes, in path order."""
    digest = hashlib.md5()
    for path, data, _sha in sorted(files):
        digest.update(path.encode() + b"\0" + data + b"\0")
    return digest.hexdigest()


_CODE_LINES = (
    "import numpy as np",
    "from torch import nn, optim",
    "def build_model(depth={i}, width=64):",
    "    layers = [nn.Linear(width, width) for _ in range(depth)]",
    "    return nn.Sequential(*layers)",
    "# revision {v}: tuned defaults",
    "BATCH_SIZE = {i}",
    "def load_split(path, ratio=0.{i}):",
    "    with open(path) as f:",
    "        return [line.split(',') for line in f]",
    "    # keep the tail for validation",
    "LEARNING_RATE = 1e-{i}",
    "class Trainer:",
    "    def step(self, batch):",
    "        loss = self.criterion(self.model(batch.x), batch.y)",
    "        loss.backward()",
)


def _source_text(project, path, version):
    seed = int(hashlib.md5(f"{project}/{path}".encode()).hexdigest()[:8], 16)
    lines = [f"# {path} - {project} (revision {version})"]
    lines += [_CODE_LINES[(seed + i * 7) % len(_CODE_LINES)].format(i=i % 10, v=version)
              for i in range(12 + seed % 70)]
    return ("\n".join(lines) + "\n").encode()


def _manifest_text(sources):
    return "".join(f"s {shlex.quote(path)} {sha} {shlex.quote(path)}\n"
                   for path, _data, sha in sources.files).encode()


def _dirs_for(paths):
    dirs = set()
    for path in paths:
        parent = path.rpartition("/")[0]
        while parent and parent not in dirs:
            dirs.add(parent)
            parent = parent.rpartition("/")[0]
    return sorted(dirs, key=lambda d: (d.count("/"), d))


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

def generate_home(root, spec, now):
    """Write spec.runs runs under root/runs and root/trash/runs."""
    if spec.profile not in _PROFILES:
        raise ValueError(f"unknown profile {spec.profile!r} (use one of {', '.join(_PROFILES)})")
    root = Path(root)
    for parts in _ROOT_PARTS.values():
        root.joinpath(*parts).mkdir(parents=True, exist_ok=True)
    plans = _plan_runs(spec, now)
    records = _write_plans(root, spec, _epoch_us(now), plans)
    return HomeManifest(root, spec, now, records)


_PARALLEL_MIN_RUNS = 400
_CHUNK = 250


def _write_plans(root, spec, now_us, plans):
    chunks = [plans[i:i + _CHUNK] for i in range(0, len(plans), _CHUNK)]
    job = _ChunkWriter(str(root), spec, now_us)
    workers = min(os.cpu_count() or 1, 4)
    if len(plans) < _PARALLEL_MIN_RUNS or workers < 2:
        results = map(job, chunks)
        return [record for chunk in results for record in chunk]
    with multiprocessing.get_context(_START_METHOD).Pool(workers) as pool:
        return [record for chunk in pool.imap(job, chunks) for record in chunk]


_START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


class _ChunkWriter:
    """Builds and writes a chunk of planned runs (picklable for a pool)."""

    def __init__(self, root, spec, now_us):
        self.root = root
        self.spec = spec
        self.now_us = now_us

    def __call__(self, plans):
        records = []
        for plan in plans:
            built = _build_run(plan, self.spec, self.now_us)
            _write_run(os.path.join(self.root, *_ROOT_PARTS[plan.deleted], plan.id), built)
            records.append(built.record)
        return records


def _write_run(run_dir, built):
    os.mkdir(run_dir)
    for name in built.dirs:
        os.mkdir(os.path.join(run_dir, name))
    for path, data in built.files:
        _write_bytes(os.path.join(run_dir, path), data)
    for event in built.events:
        write_event_file(os.path.join(run_dir, event.path), event.scalars,
                         wall_time=event.wall_time, as_tensor=event.as_tensor)


def _write_bytes(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# Mutation: what users and Guild change in a home between two indexings
# ---------------------------------------------------------------------------

def mutate_home(root, fraction, seed, now):
    """Change about `fraction` of the runs in place; return the changed ids.

    A run still holding a LOCK (or LOCK.remote) finishes. The others are
    dealt, in turn, a new label, changed tags, a toggled mark or a new
    comment; about one in five that printed scalars instead prints more
    steps, growing its output and its `.guild` event file.
    """
    rng = random.Random(f"mutate/{seed}")
    now_us = _epoch_us(now)
    runs = _existing_runs(Path(root))
    count = min(len(runs), max(1, round(len(runs) * fraction))) if fraction > 0 and runs else 0
    changed = sorted(rng.sample(runs, count))
    mutations = _deal_mutations(rng, [run_dir for _run_id, run_dir in changed])
    for run_dir, mutation in mutations.items():
        mutation(rng, run_dir, now_us)
    return [run_id for run_id, _run_dir in changed]


def _existing_runs(root):
    runs = []
    for parts in _ROOT_PARTS.values():
        parent = root.joinpath(*parts)
        if parent.is_dir():
            runs += [(path.name, path) for path in parent.iterdir()
                     if (path / ".guild" / "opref").exists()]
    return sorted(runs)


def _deal_mutations(rng, run_dirs):
    """{run_dir: mutation}, each kind of change about equally often."""
    mutations = {run_dir: _finish_run for run_dir in run_dirs if _still_running(run_dir)}
    idle = [run_dir for run_dir in run_dirs if run_dir not in mutations]
    growable = [run_dir for run_dir in idle if _output_tags(run_dir)]
    growing = min(len(growable), max(1, len(idle) // (len(_EDITS) + 1)))
    mutations.update((run_dir, _grow_events) for run_dir in rng.sample(growable, growing))
    rest = [run_dir for run_dir in idle if run_dir not in mutations]
    mutations.update((run_dir, _EDITS[i % len(_EDITS)]) for i, run_dir in enumerate(rest))
    return mutations


def _still_running(run_dir):
    guild = run_dir / ".guild"
    return not (guild / "attrs" / "exit_status").exists() and (
        (guild / "LOCK").exists() or (guild / "LOCK.remote").exists())


def _finish_run(rng, run_dir, now_us):
    exit_status = rng.choice((0, 0, 0, 1, -15))
    _write_attr(run_dir, "exit_status", exit_status)
    _write_attr(run_dir, "stopped", now_us)
    for marker in ("LOCK", "LOCK.remote"):
        path = run_dir / ".guild" / marker
        if path.exists():
            path.unlink()


def _relabel(rng, run_dir, now_us):
    old = _read_attr(run_dir, "label")
    label = old
    while label == old:
        label = f"{rng.choice(_CUSTOM_LABELS)} {rng.randrange(1000)}"
    _write_attr(run_dir, "label", label)


def _change_tags(rng, run_dir, now_us):
    tags = list(_read_attr(run_dir, "tags") or [])
    if tags and rng.random() < 0.5:
        tags.remove(rng.choice(tags))
    else:
        tags.append(f"tag-{rng.randrange(10 ** 6)}")
    _write_attr(run_dir, "tags", sorted(set(tags)))


def _toggle_mark(rng, run_dir, now_us):
    if _read_attr(run_dir, "marked") is True:
        (run_dir / ".guild" / "attrs" / "marked").unlink()  # as `guild unmark` does
    else:
        _write_attr(run_dir, "marked", True)


def _add_comment(rng, run_dir, now_us):
    comments = list(_read_attr(run_dir, "comments") or [])
    user, host = rng.choice(_COMMENTERS)
    body = rng.choice(_COMMENT_BODIES["realistic"])
    comments.append({"body": body, "host": host, "time": now_us, "user": user})
    _write_attr(run_dir, "comments", comments)


_EDITS = (_relabel, _change_tags, _toggle_mark, _add_comment)


def _grow_events(rng, run_dir, now_us):
    """The run printed more steps: output, output.index and .guild events grow."""
    tags, last_step = _output_tags(run_dir)
    step = last_step + 1
    # Values below -1000 never occur in generated scalars, so every tag's
    # last value really changes.
    lines = [f"step: {step}"] + [f"{tag}: {-1000 - rng.randrange(10 ** 6) / 8:.6f}"
                                 for tag in tags]
    scalars = _parse_output_scalars([(0, line) for line in lines])
    guild = run_dir / ".guild"
    with open(guild / "output", "a") as out:
        out.write("".join(line + "\n" for line in lines))
    with open(guild / "output.index", "ab") as index:
        index.write(b"".join(struct.pack("!QB", now_us // 1000, 0) for _ in lines))
    append_events(_guild_event_file(run_dir), scalars, wall_time=0.0)


def _guild_event_file(run_dir):
    names = sorted(name for name in os.listdir(run_dir / ".guild") if ".tfevents." in name)
    return run_dir / ".guild" / names[-1] if names else None


def _output_tags(run_dir):
    """(sorted scalar tags printed to output, last step), or None."""
    path = run_dir / ".guild" / "output"
    if not path.exists():
        return None
    lines = path.read_text().splitlines()
    scalars = _parse_output_scalars([(0, line) for line in lines])
    if not scalars:
        return None
    return sorted({tag for tag, _value, _step in scalars}), max(s for _t, _v, s in scalars)


def _read_attr(run_dir, name):
    import yaml  # only mutation reads attributes back; generation never does

    path = run_dir / ".guild" / "attrs" / name
    return yaml.safe_load(path.read_text()) if path.exists() else None


def _write_attr(run_dir, name, value):
    # Guild rewrites an attribute file in place (same inode, truncated).
    _write_bytes(str(run_dir / ".guild" / "attrs" / name), encode_attr(value).encode())


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def main(argv=None):
    args = _parse_args(argv)
    runs_dir = args.path / "runs"
    if runs_dir.is_dir() and any(runs_dir.iterdir()):
        sys.exit(f"{runs_dir} already holds runs; give an empty or new directory")
    now = datetime.datetime.fromisoformat(args.now) if args.now else datetime.datetime.now()
    spec = HomeSpec(args.runs, args.deleted_fraction, args.seed, args.profile,
                    args.sourcecode_files)
    began = time.perf_counter()
    manifest = generate_home(args.path, spec, now)
    print(f"Wrote {len(manifest.runs)} runs ({len(manifest.live)} live, "
          f"{len(manifest.deleted)} deleted) to {args.path} "
          f"in {time.perf_counter() - began:.1f}s")


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m runq.engine.samplehome",
        description="Write a realistic Guild home (runs/ and trash/runs/) under PATH.")
    parser.add_argument("path", type=Path, metavar="PATH")
    parser.add_argument("--runs", type=int, required=True, help="number of runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", choices=sorted(_PROFILES), default="realistic")
    parser.add_argument("--deleted-fraction", type=float, default=0.5,
                        help="share of runs put in the trash (default 0.5)")
    parser.add_argument("--sourcecode-files", type=int, default=8,
                        help="source files copied to each run (default 8)")
    parser.add_argument("--now", help="ISO date-time to generate at (default: the clock)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
