"""The `factor4` command: help for every command, exit codes, output forms."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from detector.cli import EXIT_ERROR, EXIT_OK, build_parser, main
from tests.conftest import edited_copy, module_doc


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_command_has_help_text() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) >= {"create", "add", "scan", "works", "remove", "demo", "serve", "collections"}
    for name, cmd in sub.choices.items():
        assert cmd.description, f"factor4 {name} has no help text"
        for action in cmd._actions:
            if action.dest != "help":
                assert action.help, f"factor4 {name}: argument {action.dest} has no help"


def test_console_script_help_runs() -> None:
    exe = shutil.which("factor4", path=str(Path(sys.executable).parent))
    assert exe, "the factor4 console script is not installed next to this Python"
    proc = subprocess.run([exe, "scan", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--json" in proc.stdout


def test_create_add_works_scan_remove(capsys: pytest.CaptureFixture[str], tmp_path: Path, corpus: dict) -> None:
    home = str(tmp_path)
    code, out, _ = run(capsys, "--home", home, "create", "c", "--encoders", "sscd,pdq,shingles")
    assert code == EXIT_OK and "created collection 'c'" in out
    code, out, _ = run(capsys, "--home", home, "add", "c", str(corpus["works"] / "astronaut.png"),
                       str(corpus["works"] / "coffee.png"), str(corpus["works"] / "json.txt"))
    assert code == EXIT_OK and "3 added" in out  # two images: enough for a null, so for error rates
    code, out, _ = run(capsys, "--home", home, "works", "c", "--json")
    works = json.loads(out)
    assert {w["title"] for w in works} == {"astronaut", "coffee", "json"}

    copy = edited_copy(corpus["works"] / "astronaut.png", tmp_path / "a.jpg")
    code, out, _ = run(capsys, "--home", home, "scan", "c", str(copy), "--json")
    assert code == EXIT_OK
    [result] = json.loads(out)
    assert result["input"] == str(copy) and result["modality"] == "image"
    assert result["matches"][0]["verdict"] == "copy"
    assert result["matches"][0]["work"]["source"].endswith("astronaut.png")

    code, out, _ = run(capsys, "--home", home, "scan", "c", str(copy))
    assert code == EXIT_OK and "COPY" in out and "astronaut" in out
    assert "why: " in out and "false-positive rate" in out and "95 % upper bound" in out

    astro = next(w["id"] for w in works if w["title"] == "astronaut")
    code, out, _ = run(capsys, "--home", home, "remove", "c", astro)
    assert code == EXIT_OK and astro in out
    code, out, _ = run(capsys, "--home", home, "works", "c")
    assert "astronaut" not in out and "2 works" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["scan", "missing", "x.png"], "no collection named 'missing'"),
        (["create", "bad/name"], "invalid collection name"),
        (["create", "c2", "--encoders", "bogus"], "bogus"),
        (["remove", "c", "0123456789abcdef"], "no work"),
    ],
)
def test_errors_are_one_line_with_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          argv: list[str], message: str) -> None:
    main(["--home", str(tmp_path), "create", "c", "--encoders", "pdq"])
    capsys.readouterr()
    code, _, err = run(capsys, "--home", str(tmp_path), *argv)
    assert code == EXIT_ERROR
    assert message in err and err.startswith("factor4: error:") and err.count("\n") == 1
    assert "Traceback" not in err


def test_bad_inputs_give_exit_2_and_name_the_file(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                 corpus: dict) -> None:
    home = str(tmp_path / "home")
    main(["--home", home, "create", "c", "--encoders", "pdq,shingles"])
    main(["--home", home, "add", "c", str(corpus["works"] / "rocket.jpg")])
    capsys.readouterr()
    bad = {
        "empty.txt": b"",
        "notes.pdf": b"%PDF-1.4 hello",
        "binary.txt": bytes(range(256)) * 8,
        "broken.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        for cmd in ("add", "scan"):
            code, _, err = run(capsys, "--home", home, cmd, "c", str(tmp_path / name))
            assert code == EXIT_ERROR, (cmd, name)
            assert name in err and "Traceback" not in err
    code, out, _ = run(capsys, "--home", home, "works", "c")
    assert "1 works" in out


def test_a_closed_pipe_ends_quietly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`factor4 works NAME | head`: the reader goes away; no traceback, exit 141 (SIGPIPE)."""
    import os

    home = str(tmp_path / "h")
    assert main(["--home", home, "create", "c", "--encoders", "shingles"]) == EXIT_OK
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    with os.fdopen(write, "w") as out:
        monkeypatch.setattr(sys, "stdout", out)
        assert main(["--home", home, "collections"]) == 141
        monkeypatch.undo()
    assert "Traceback" not in capsys.readouterr().err


def test_each_error_is_printed_once_and_encoder_forms_come_from_the_registry(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "h")
    (tmp_path / "a.txt").write_text("some words to add here", encoding="utf-8")
    (tmp_path / "b.svg").write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg"/>')
    assert main(["--home", home, "create", "c", "--encoders", "shingles"]) == EXIT_OK
    capsys.readouterr()
    assert main(["--home", home, "add", "c", str(tmp_path / "a.txt"), str(tmp_path / "b.svg")]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("b.svg") == 1 and "SVG files are refused" in err, err
    assert main(["--home", home, "create", "d", "--encoders", "foo"]) == EXIT_ERROR
    err = capsys.readouterr().err
    for form in ("'sscd'", "'sscd_distilled'", "'minilm'", "'minilm:int8'", "'clip:", "'pdq'", "'shingles'"):
        assert form in err, (form, err)


def test_cli_acts_as_a_service_tenant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--tenant NAME` works on the collections the service serves to that tenant's keys."""
    from service.access import Detectors

    home = tmp_path / "home"
    works = tmp_path / "works"
    works.mkdir()
    (works / "a.txt").write_text(module_doc("json"), encoding="utf-8")
    assert main(["--home", str(home), "--tenant", "acme", "create", "art", "--encoders", "shingles",
                 "--no-background"]) == 0
    assert main(["--home", str(home), "--tenant", "acme", "add", "art", str(works)]) == 0
    capsys.readouterr()
    assert main(["--home", str(home), "collections"]) == 0
    out = capsys.readouterr().out
    assert "0 collections" in out and "--tenant NAME" in out and "acme" in out
    dets = Detectors(home)
    try:
        assert dets.get("acme").collections() == ["art"]  # what the service opens for tenant acme
    finally:
        dets.close()
    assert main(["--home", str(home), "--tenant", "../x", "collections"]) == 2
    assert "tenant" in capsys.readouterr().err
