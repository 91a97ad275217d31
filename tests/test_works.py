"""Tests of detector.works: safe loading of images and texts, passages, metadata sidecars."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detector import config
from detector.errors import InputError
from detector.works import (
    WORD_RE,
    ImageItem,
    MetadataTable,
    Passage,
    TextItem,
    WorkMeta,
    read_item,
    read_metadata,
    split_passages,
    text_item,
    word_spans,
)


def _gradient(w: int = 64, h: int = 48) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)
    arr = np.stack([np.tile(x, (h, 1)), np.tile(x[::-1], (h, 1)), np.full((h, w), 90, np.uint8)], -1)
    return Image.fromarray(arr)


def _save(img: Image.Image, path: Path, fmt: str | None = None, **kw) -> Path:
    img.save(path, format=fmt, **kw)
    return path


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG whose IHDR claims width x height, with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


# --- images --------------------------------------------------------------------------------


@pytest.mark.parametrize(("ext", "fmt"), [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")])
def test_reads_basic_formats(tmp_path, ext, fmt):
    path = _save(_gradient(), tmp_path / f"work.{ext}")
    item = read_item(path)
    assert isinstance(item, ImageItem) and item.modality == "image"
    assert (item.format, item.image.mode, item.width, item.height) == (fmt, "RGB", 64, 48)
    assert item.name == str(path)
    assert item.size_bytes == path.stat().st_size
    assert item.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_png_pixels_survive_exactly(tmp_path):
    img = _gradient()
    item = read_item(_save(img, tmp_path / "a.png"))
    assert np.array_equal(np.asarray(item.image), np.asarray(img))


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    item = read_item(path)
    assert item.format == "GIF" and item.image.mode == "RGB"
    r, g, b = item.image.getpixel((16, 16))
    assert r > 200 and g < 50 and b < 50


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (80, 40), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    item = read_item(_save(img, tmp_path / "phone.jpg", exif=exif.tobytes()))
    assert (item.width, item.height) == (40, 80)


def test_transparent_pixels_become_background(tmp_path):
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (10, 20, 30, 255))
    item = read_item(_save(rgba, tmp_path / "alpha.png"))
    assert item.image.mode == "RGB"
    assert item.image.getpixel((5, 5)) == config.ALPHA_BACKGROUND
    assert item.image.getpixel((0, 0)) == (10, 20, 30)


def test_palette_with_transparency_is_flattened(tmp_path):
    p = Image.new("P", (16, 16), 1)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    item = read_item(_save(p, tmp_path / "pal.png", transparency=1))
    assert item.image.getpixel((3, 3)) == config.ALPHA_BACKGROUND


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    item = read_item(_save(cmyk, tmp_path / "print.jpg"))
    r, g, b = item.image.getpixel((16, 16))
    assert item.image.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_16bit_png_keeps_mid_grey(tmp_path):
    arr = np.full((32, 32), 32768, dtype=np.uint16)
    arr[:, :16] = 8000
    path = _save(Image.fromarray(arr), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    item = read_item(path)
    assert item.image.getpixel((20, 5)) == (128, 128, 128)
    assert item.image.getpixel((5, 5)) == (31, 31, 31)


@pytest.mark.parametrize("mode", ["L", "1", "LA"])
def test_other_modes_become_rgb(tmp_path, mode):
    item = read_item(_save(Image.new(mode, (16, 16), 0 if mode != "LA" else (0, 255)), tmp_path / "m.png"))
    assert item.image.mode == "RGB" and item.image.getpixel((1, 1)) == (0, 0, 0)


def test_png_named_jpg_is_trusted_by_content(tmp_path):
    item = read_item(_save(_gradient(), tmp_path / "really_png.jpg", "PNG"))
    assert item.format == "PNG"


def test_truncated_jpeg_is_refused(tmp_path):
    raw = _save(_gradient(128, 128), tmp_path / "full.jpg", quality=95).read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(InputError, match=r"cut\.jpg: image is truncated or corrupt"):
        read_item(cut)


def test_truncated_png_is_refused():
    raw = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(raw, "PNG")
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_item(data=raw.getvalue()[:-200], name="cut.png")


def test_corrupt_bytes_with_image_magic_are_refused():
    with pytest.raises(InputError, match="x.png: .*(corrupt|not a readable image)"):
        read_item(data=b"\x89PNG\r\n\x1a\n" + b"\x13\x37" * 100, name="x.png")


def test_text_named_png_is_not_an_image(tmp_path):
    path = tmp_path / "fake.png"
    path.write_text("hello, I am text")
    with pytest.raises(InputError, match="fake.png: not a readable image"):
        read_item(path)


def test_tiny_image_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"too small \(1x1 px; at least 8 px a side\)"):
        read_item(_save(Image.new("RGB", (1, 1)), tmp_path / "dot.png"))


@pytest.mark.parametrize("side", [9000, 30000])  # beyond our limit; beyond Pillow's own too
def test_decompression_bomb_is_refused_before_decoding(side):
    with pytest.raises(InputError, match="decompression bomb"):
        read_item(data=_png_claiming(side, side), name="bomb.png")


def test_bomb_message_gives_size_and_limit():
    with pytest.raises(InputError, match=f"9000x9000 = 81000000 pixels exceeds limit {config.MAX_IMAGE_PIXELS}"):
        read_item(data=_png_claiming(9000, 9000), name="bomb.png")


def test_image_items_compare_by_content(tmp_path):
    path = _save(_gradient(), tmp_path / "a.png")
    assert read_item(path) == read_item(path) and hash(read_item(path)) == hash(read_item(path))


# --- file checks and types -----------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="nope.png: no such file"):
        read_item(tmp_path / "nope.png")


def test_directory_is_not_a_file(tmp_path):
    (tmp_path / "dir.txt").mkdir()
    with pytest.raises(InputError, match="no such file"):
        read_item(tmp_path / "dir.txt")


def test_empty_file(tmp_path):
    (tmp_path / "e.txt").write_bytes(b"")
    with pytest.raises(InputError, match="e.txt: file is empty"):
        read_item(tmp_path / "e.txt")


def test_too_large(monkeypatch):
    monkeypatch.setattr(config, "MAX_FILE_BYTES", 10)
    with pytest.raises(InputError, match=r"big.txt: file is too large \(11 bytes, limit 10\)"):
        read_item(data=b"hello world", name="big.txt")


def test_unsupported_extension(tmp_path):
    (tmp_path / "paper.pdf").write_bytes(b"%PDF-1.4 whatever")
    with pytest.raises(InputError, match=r"paper.pdf: PDF files are refused .*factor4 reads .*\.jpg.*\.md"):
        read_item(tmp_path / "paper.pdf")
    (tmp_path / "notes.doc").write_bytes(b"some words")
    with pytest.raises(InputError, match=r"notes.doc: unsupported file type '\.doc'; factor4 reads .*\.jpg.*\.md"):
        read_item(tmp_path / "notes.doc")


def test_exactly_one_of_path_and_data(tmp_path):
    with pytest.raises(TypeError):
        read_item()
    with pytest.raises(TypeError):
        read_item(tmp_path / "a.txt", data=b"x")


def test_data_with_name_uses_extension():
    buf = io.BytesIO()
    _gradient().save(buf, "PNG")
    item = read_item(data=buf.getvalue(), name="upload.png")
    assert item.name == "upload.png" and item.format == "PNG"
    assert read_item(data=b"some words", name="note.md").text == "some words"


def test_sniffing_without_extension():
    buf = io.BytesIO()
    _gradient().save(buf, "WEBP")
    assert read_item(data=buf.getvalue()).format == "WEBP"
    assert read_item(data=buf.getvalue(), name="blob").modality == "image"
    with pytest.raises(InputError, match=r"blob.bin: unsupported file type '\.bin'"):  # as a path would be
        read_item(data=buf.getvalue(), name="blob.bin")
    text = read_item(data=b"plain words here", name="upload")
    assert isinstance(text, TextItem) and text.name == "upload"
    with pytest.raises(InputError, match="blob: unsupported file type"):
        read_item(data=bytes(range(256)) * 4, name="blob")


# --- texts ---------------------------------------------------------------------------------


def test_reads_utf8_text_unchanged(tmp_path):
    raw = "Ünïcödé words,\r\n  second line\t end\n".encode()
    path = tmp_path / "poem.txt"
    path.write_bytes(raw)
    item = read_item(path)
    assert isinstance(item, TextItem) and item.modality == "text"
    assert item.text == raw.decode() and item.encoding == "utf-8"
    assert item.sha256 == hashlib.sha256(raw).hexdigest() and item.size_bytes == len(raw)


def test_utf8_bom_is_stripped():
    item = read_item(data=b"\xef\xbb\xbfHello there", name="bom.txt")
    assert item.text == "Hello there" and item.encoding == "utf-8"


def test_utf16_with_bom():
    item = read_item(data="Grüße aus Köln".encode("utf-16"), name="w.txt")
    assert item.text == "Grüße aus Köln" and item.encoding.startswith("utf-16")


def test_binary_named_txt_is_refused(tmp_path):
    path = _save(_gradient(), tmp_path / "img.txt", "PNG")
    with pytest.raises(InputError, match="img.txt: looks like a binary file, not text"):
        read_item(path)


def test_many_control_characters_are_binary():
    with pytest.raises(InputError, match="looks like a binary file"):
        read_item(data=b"ab\x01\x02\x03\x1b" * 20, name="ctl.txt")


def test_latin1_text_is_decoded_or_refused_cleanly():
    original = "Le cœur a ses raisons que la raison ne connaît point. Café, crème brûlée, déjà vu."
    raw = original.replace("œ", "oe").encode("latin-1")
    item = read_item(data=raw, name="fr.txt")  # Western text: detected as Windows-1252
    assert item.text == original.replace("œ", "oe") and item.encoding == "cp1252"
    try:
        short = read_item(data="Café".encode("latin-1"), name="short.txt")
    except InputError as exc:
        assert "convert it to UTF-8" in str(exc)
    else:
        assert short.text == "Café"


def test_cyrillic_legacy_encoding_detected():
    original = "Все счастливые семьи похожи друг на друга, каждая несчастливая семья несчастлива."
    item = read_item(data=original.encode("cp1251"), name="ru.txt")
    assert item.text == original


@pytest.mark.parametrize("raw", [b"   \n\t \r\n", b"\xef\xbb\xbf  \n"])
def test_whitespace_text_is_empty(raw):
    with pytest.raises(InputError, match="w.txt: text is empty"):
        read_item(data=raw, name="w.txt")


def test_text_item():
    item = text_item("An output, written by a model.", name="output-1")
    assert item.name == "output-1" and item.modality == "text" and item.encoding == "utf-8"
    assert item.sha256 == hashlib.sha256(b"An output, written by a model.").hexdigest()
    assert text_item("x").name == "<text>"
    for blank in ("", "  \n ", "\ufeff"):
        with pytest.raises(InputError, match="<text>: text is empty"):
            text_item(blank)
    with pytest.raises(InputError, match="invalid characters"):
        text_item("bad \ud800 surrogate")


# --- passages ------------------------------------------------------------------------------


def test_word_spans():
    text = "It's a dog’s life — isn't it? 42 cafés_x"
    words = [text[a:b] for a, b in word_spans(text)]
    assert words == ["It's", "a", "dog’s", "life", "isn't", "it", "42", "cafés_x"]
    assert WORD_RE.pattern == r"\w+(?:['’]\w+)*"


def test_split_passages_offsets_coverage_and_overlap():
    text = "  " + " ".join(f"w{i}," for i in range(23)) + "  end."
    spans = word_spans(text)
    passages = split_passages(text, words=10, overlap=4)
    assert all(isinstance(p, Passage) and text[p.start : p.end] == p.text for p in passages)
    assert [p.ordinal for p in passages] == list(range(len(passages)))
    starts = [spans.index(next(s for s in spans if s[0] == p.start)) for p in passages]
    assert starts == [0, 6, 12, 14]  # step 6; the last window is pulled back to end at the last word
    assert passages[0].start == spans[0][0] and passages[-1].end == spans[-1][1]
    for p in passages:
        assert len(word_spans(p.text)) == 10
    first, second = (set(word_spans(text)[s : s + 10]) for s in starts[:2])
    assert len(first & second) == 4
    covered = {s for p in passages for s in spans if p.start <= s[0] and s[1] <= p.end}
    assert covered == set(spans)


def test_split_passages_exact_fit_has_no_extra_window():
    text = " ".join(["a"] * 16)
    assert [(len(word_spans(p.text))) for p in split_passages(text, 10, 4)] == [10, 10]
    assert len(split_passages(" ".join(["a"] * 10), 10, 4)) == 1


def test_split_passages_edge_cases():
    short = "  just three words!  "
    (only,) = split_passages(short, words=120, overlap=40)
    assert only.text == "just three words" and (only.start, only.end) == (2, 18)
    assert split_passages("") == [] and split_passages(" ... !? ") == []
    assert [p.text for p in split_passages("a b c", words=1, overlap=0)] == ["a", "b", "c"]
    for words, overlap in [(0, 0), (5, 5), (5, -1)]:
        with pytest.raises(ValueError):
            split_passages("a b c", words=words, overlap=overlap)


def test_split_passages_defaults_come_from_config():
    text = " ".join(f"w{i}" for i in range(config.PASSAGE_WORDS + 1))
    passages = split_passages(text)
    assert len(passages) == 2 and len(word_spans(passages[0].text)) == config.PASSAGE_WORDS


# --- metadata sidecars ---------------------------------------------------------------------


def test_read_metadata_csv(tmp_path):
    sidecar = tmp_path / "works" / "meta.csv"
    sidecar.parent.mkdir()
    sidecar.write_text(
        "\ufefffile,Title,creator,license,url,year\n"
        'imgs/a.jpg,"Sunset, Nice",Ann,CC-BY,https://x.org/a,1999\n'
        "\n"
        "b.txt,B,,,,\n",
        encoding="utf-8",
    )
    table = read_metadata(sidecar)
    assert isinstance(table, MetadataTable) and len(table) == 2
    a = table.lookup(tmp_path / "works" / "imgs" / "a.jpg")
    assert a == WorkMeta("Sunset, Nice", "Ann", "CC-BY", "https://x.org/a", {"year": "1999"})
    assert a.to_dict() == {
        "title": "Sunset, Nice",
        "creator": "Ann",
        "licence": "CC-BY",
        "source_url": "https://x.org/a",
        "extra": {"year": "1999"},
    }
    assert table.lookup("/elsewhere/b.txt") == WorkMeta(title="B")  # basename fallback
    assert table.lookup("unknown.png") == WorkMeta()
    assert hash(a) == hash(WorkMeta("Sunset, Nice", "Ann", "CC-BY", "https://x.org/a"))


def test_read_metadata_json_list_and_mapping(tmp_path):
    listed = tmp_path / "m.json"
    listed.write_text(
        json.dumps(
            [
                {"path": "x/one.png", "title": "One", "licence": "CC0", "tags": ["a", "b"], "n": 3},
                {"path": "y/one.png", "title": "Other one"},
            ]
        )
    )
    table = read_metadata(listed)
    one = table.lookup(tmp_path / "x" / "one.png")
    assert one.title == "One" and one.licence == "CC0" and one.extra == {"tags": '["a", "b"]', "n": "3"}
    assert table.lookup(tmp_path / "y" / "one.png").title == "Other one"
    assert table.lookup("/somewhere/one.png") == WorkMeta()  # ambiguous basename: no guess
    mapped = tmp_path / "map.json"
    mapped.write_text(json.dumps({"poem.txt": {"creator": "Bo", "source_url": "https://p"}}))
    assert read_metadata(mapped).lookup("poem.txt") == WorkMeta(creator="Bo", source_url="https://p")


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("m.csv", "title,creator\nA,B\n", "no 'file' \\(or 'path'\\) column"),
        ("m.csv", "", "no 'file'"),
        ("m.csv", "file,title\na.jpg,A,extra\n", "line 2 has more cells"),
        ("m.csv", "file,title\n,Nameless\n", "line 2 has no file"),
        ("m.csv", "file,title\na.jpg,A\na.jpg,B\n", "listed twice"),
        ("m.csv", "file,path\na.jpg,b.jpg\n", "repeats the file field"),
        ("m.json", '[{"file": "a.jpg",}]', "not valid JSON .Expecting property name enclosed in double quotes at line 1 column"),
        ("m.json", '{"a.jpg": "not an object"}', "JSON must be"),
        ("m.json", '[{"title": "no file"}]', "entry 1 has no file"),
        ("m.json", "42", "JSON must be"),
        ("m.yaml", "a: b", "unsupported metadata sidecar type '.yaml'"),
    ],
)
def test_bad_sidecars(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_text(content)
    expected = "file is empty" if not content else problem
    with pytest.raises(InputError, match=f"{name}: .*{expected}"):
        read_metadata(path)


def test_sidecar_not_utf8_or_missing(tmp_path):
    (tmp_path / "m.csv").write_bytes("file,title\na.jpg,Caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="m.csv: sidecar is not UTF-8"):
        read_metadata(tmp_path / "m.csv")
    with pytest.raises(InputError, match="gone.json: no such file"):
        read_metadata(tmp_path / "gone.json")
