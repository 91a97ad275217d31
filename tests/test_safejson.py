"""The bounded JSON parser every user-sent JSON goes through (detector.safejson), and the one
decision on what an input is (detector.works.classify): hostile documents and files are
refused with an InputError naming where and which limit, never a RecursionError, ValueError or
OverflowError; the CLI's readers (manifest lines, sidecars) use the same parser."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from detector import config
from detector.batch import parse_line
from detector.errors import InputError
from detector.safejson import JsonLimitError, JsonLimits, loads
from detector.works import classify, read_item, read_metadata


@pytest.mark.parametrize(("text", "where", "limit"), [
    ("[" * 100_000, "body", "max_depth"),                      # far past the C decoder's recursion guard
    ("[" * 33 + "]" * 33, "body" + "[0]" * 32, "max_depth"),  # one past the limit, parsed, then refused
    ('{"a": ' * 40 + "1" + "}" * 40, "body" + ".a" * 32, "max_depth"),
    ('{"a": NaN}', "body.a", "finite"),
    ('{"a": [1, -Infinity]}', "body.a[1]", "finite"),
    ('{"a": 1e999}', "body.a", "finite"),
    ("[" + "9" * 5000 + "]", "body[0]", "max_int_bits"),  # Python's int() would raise ValueError on it
    (json.dumps({"n": 2**64}), "body.n", "max_int_bits"),
    ('{"s": "\\ud800"}', "body.s", "unicode"),
    ('{"\\udfff": 1}', "body", "unicode"),
    (json.dumps({"k": "x" * (config.JSON_MAX_STRING + 1)}), "body.k", "max_string"),
    (json.dumps({str(i): i for i in range(config.JSON_MAX_KEYS + 1)}), "body", "max_keys"),
    (json.dumps(list(range(config.JSON_MAX_ITEMS + 1))), "body", "max_items"),
])
def test_hostile_documents_are_refused_naming_where_and_the_limit(text: str, where: str, limit: str) -> None:
    with pytest.raises(JsonLimitError) as info:
        loads(text)
    assert (info.value.where, info.value.limit) == (where, limit)
    assert str(info.value).startswith(f"{where}: ")
    assert isinstance(info.value, InputError)  # the CLI's exit 2 and the service's 4xx


def test_within_the_limits_the_document_is_what_json_gives() -> None:
    doc = {"a": [1, 2.5, -(2**64 - 1), None, True, "x[{"], "b": {"c": "\u00e9\U0001f600"}, "d": [[[]]]}
    text = json.dumps(doc)
    assert loads(text) == json.loads(text) == doc
    assert loads(text.encode()) == doc
    assert loads("\ufeff" .encode("utf-8") + text.encode()) == doc  # a BOM is allowed in bytes
    nested = "[" * config.JSON_MAX_DEPTH + "]" * config.JSON_MAX_DEPTH
    assert loads(nested) == json.loads(nested)


def test_malformed_and_oversized_documents() -> None:
    with pytest.raises(JsonLimitError, match=r"line 3: not valid JSON \(Expecting ',' delimiter at line 1 column 9\)"):
        loads('{"a": 1 "b": 2}', "line 3")
    with pytest.raises(JsonLimitError, match="not UTF-8"):
        loads(b'{"a": "\xff"}')
    with pytest.raises(JsonLimitError, match="exceeds the limit of 10 bytes") as info:
        loads(b'{"a": "0123456789"}', limits=JsonLimits(max_bytes=10))
    assert info.value.limit == "max_bytes"
    with pytest.raises(ValueError, match="max_depth"):
        JsonLimits(max_depth=0)


def test_long_paths_are_cut_short() -> None:
    with pytest.raises(JsonLimitError) as info:
        loads("[" * 200 + "]" * 200, limits=JsonLimits(max_depth=150))
    assert len(info.value.where) < 140 and info.value.where.endswith("…")


_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                    st.text(max_size=20))


@settings(max_examples=150, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(_LEAVES, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids,
                                                                                       max_size=4), max_leaves=30))
def test_any_document_is_parsed_or_refused_cleanly(doc: object) -> None:
    text = json.dumps(doc)  # allow_nan: infinities become Infinity, which must be refused
    try:
        assert loads(text, limits=JsonLimits(max_depth=6)) == json.loads(text)
    except JsonLimitError as exc:
        assert exc.limit in {"max_depth", "finite", "max_int_bits", "unicode"}, exc


def test_manifest_lines_use_the_bounded_parser(tmp_path) -> None:
    with pytest.raises(InputError, match=r"line 4: JSON nested deeper than the limit of 32 levels"):
        parse_line('{"text": "a", "model": ' + "[" * 5000 + "]" * 5000 + "}", 4, tmp_path)
    with pytest.raises(InputError, match=r"line 2\.seed: integer out of range"):
        parse_line('{"text": "a", "seed": ' + "9" * 400 + "}", 2, tmp_path)
    assert parse_line('{"text": "a", "seed": 18446744073709551615}', 1, tmp_path).seed == 2**64 - 1


def test_sidecars_use_the_bounded_parser_and_bound_their_fields(tmp_path) -> None:
    deep = tmp_path / "deep.json"
    for depth in (40, 100_000):
        deep.write_text('[{"file": "a.txt", "title": ' + "[" * depth + "]" * depth + "}]")
        with pytest.raises(InputError, match=r"deep.json(\[0\]\.title.*)?: JSON nested deeper than the limit"):
            read_metadata(deep)
    long = tmp_path / "long.json"
    long.write_text(json.dumps({"a.txt": {"title": "t" * (config.META_MAX_CHARS + 1)}}))
    with pytest.raises(InputError, match="META_MAX_CHARS"):
        read_metadata(long)
    ctrl = tmp_path / "ctrl.csv"
    ctrl.write_text("file,title\na.txt,bad\x07bell\n")
    with pytest.raises(InputError, match="control characters"):
        read_metadata(ctrl)


# --- what an input is: one decision for paths and uploads -----------------------------------

_SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(("data", "name", "what"), [
    (_SVG, "drawing.svg", "SVG"),
    (_SVG, "drawing.txt", "SVG"),     # content decides too: a renamed SVG is still refused
    (_SVG, "drawing", "SVG"),
    (_SVG, "drawing.png", "SVG"),
    (b"%PDF-1.7\n%words words words", "paper.txt", "PDF"),
    (b"%PDF-1.7\n%words words words", "paper.pdf", "PDF"),
    (b"%!PS-Adobe-3.0\n/words show", "page", "PostScript"),
    (b"<!DOCTYPE html><html><script>x()</script></html>", "page.md", "HTML"),
    (b"some words", "notes.svgz", "SVGZ"),
])
def test_vector_and_scriptable_formats_are_refused_however_named(tmp_path, data: bytes, name: str,
                                                                  what: str) -> None:
    with pytest.raises(InputError, match=rf"{what} files are refused"):
        classify(data, name)
    with pytest.raises(InputError, match=rf"{what} files are refused"):
        read_item(data=data, name=name)
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError, match=rf"{what} files are refused"):
        read_item(path)


def test_the_same_decision_for_a_path_and_for_bytes(tmp_path) -> None:
    cases = {"a.png": _png(), "b": _png(), "c.txt": b"plain words here", "d": b"plain words here",
             "e.bin": b"plain words here", "f.doc": _png()}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        try:
            by_bytes = read_item(data=data, name=name).modality
        except InputError as exc:
            by_bytes = str(exc)
        try:
            by_path = read_item(tmp_path / name).modality
        except InputError as exc:
            by_path = str(exc).replace(str(tmp_path / name), name)
        assert by_bytes == by_path, name
    assert classify(_png(), "b") == "image" and classify(b"plain words", "d") == "text"
