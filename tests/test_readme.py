"""The README's commands are the ones CI runs, and its Python example works as written."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import edited_copy, module_doc

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
#: The README and the documents it links to (docs/*.md), as one text for the examples' checks.
DOCS = README + "".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md")))


def code_blocks(lang: str, text: str = README) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.DOTALL)


def test_readme_opens_with_the_two_commands_ci_runs() -> None:
    first = code_blocks("sh")[0].strip().splitlines()
    assert len(first) == 2
    assert "demo" in first[0] and "pytest" in first[1]
    ci = (ROOT / ".ci" / "run").read_text()
    for command in first:
        assert command in ci, f"README command not run by .ci/run: {command}"


def test_readme_python_example_runs(tmp_path: Path, corpus: dict, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    [example] = [b for b in code_blocks("python") if "Detector()" in b]
    monkeypatch.setenv("FACTOR4_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "works").mkdir()
    for name in ("chelsea.png", "rocket.jpg", "json.txt", "csv.txt"):  # two of each: enough for error rates
        shutil.copy(corpus["works"] / name, tmp_path / "works" / name)
    (tmp_path / "works.csv").write_text("file,title,creator\nchelsea.png,Chelsea the cat,scikit-image\n")
    edited_copy(tmp_path / "works" / "chelsea.png", tmp_path / "out1.png")
    words = module_doc("json").split()
    (tmp_path / "story.txt").write_text(" ".join(words[20:140]))
    exec(compile(example, "README.md", "exec"), {})  # noqa: S102 - the README example, run as written
    out = capsys.readouterr().out
    assert "4 added; []" in out
    assert re.search(r"out1\.png copy \('Chelsea the cat'", out)
    assert re.search(r"story\.txt copy \('json'", out)


def _curl_calls() -> set[tuple[str, str]]:
    """(method, path) of every curl command in the README's shell blocks."""
    calls = set()
    for block in code_blocks("sh", DOCS):
        for command in block.replace("\\\n", " ").splitlines():
            if not command.strip().startswith("curl "):
                continue
            url = re.search(r"(?:\$S|localhost:\d+)(/[^\s\"'?]*)", command)
            if url is None:
                continue
            method = re.search(r"-X (\w+)", command)
            posts = re.search(r"\s(?:-d|-F)\s", command)
            calls.add((method.group(1) if method else "POST" if posts else "GET", url.group(1)))
    return calls


def test_readme_has_a_curl_example_for_every_endpoint() -> None:
    from service.main import create_app

    calls = _curl_calls()
    paths = create_app().openapi()["paths"]
    assert len(paths) >= 15
    missing = []
    for path, operations in paths.items():
        pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")
        for method in operations:
            if not any(m == method.upper() and pattern.match(p) for m, p in calls):
                missing.append(f"{method.upper()} {path}")
    assert not missing, f"README has no curl example for: {', '.join(sorted(missing))}"


def test_readme_is_short_and_its_links_resolve() -> None:
    assert len(README.encode("utf-8")) <= 10_240, "the README is the door: keep it under 10 kB, details in docs/"
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    assert {"docs/USAGE.md", "docs/METHOD.md", "docs/SERVICE.md", "docs/ARCHITECTURE.md"} <= set(links)
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert not missing, f"README links to missing files: {missing}"
    anchors = re.findall(r"\]\(#([^)]+)\)", README)
    headings = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", README, re.M)}
    assert anchors and set(anchors) <= headings, set(anchors) - headings
