"""CPU shares of a backfill from a py-spy profile (``--format raw``), by leadflow package.

    py-spy record --gil --rate 100 --format raw -o prof.txt -- \\
        .venv/bin/python -m benchmarks.bench --crm hubspot --leads 10000 --runs backfill
    .venv/bin/python -m benchmarks.profile_shares prof.txt [--detail PART]

Only samples of the thread holding the GIL with a frame in ``flows/`` (the run's page threads
included) or ``connectors/enrichment/`` (the registry client's request threads) count (the sandbox and Prefect's
server are other processes; set-up before the backfill is left out). Each sample goes to the
innermost frame of a leadflow package (``PARTS``, first match from the innermost frame out), so
httpx time under ``connectors/enrichment`` is enrichment's, SQLAlchemy time under ``state/`` is
the state store's. ``--detail PART`` lists that part's heaviest own frames and the libraries its time ends in."""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# (part, pattern on a frame's file path), tried from the innermost frame outwards
PARTS: tuple[tuple[str, str], ...] = (
    ("NPPES enrichment", r"(^|/)connectors/enrichment/"),
    ("state store and audit inserts", r"(^|/)state/"),
    ("conversion into the canonical model", r"(^|/)connectors/crm/convert\.py"),
    ("write-back planning", r"(^|/)connectors/crm/writeback\.py"),
    ("HubSpot / Salesforce reads and writes", r"(^|/)connectors/(crm/|retry|ratelimit)"),
    ("scoring", r"(^|/)scoring/"),
    ("canonical model, redaction (leadflow/)", r"(^|/)leadflow/"),
    ("flows/ glue", r"(^|/)flows/"),
    ("bench instrumentation", r"(^|/)benchmarks/"),
    ("Prefect task and flow engine", r"(^|/)prefect/"),
)
# the run's threads: its page threads (a frame in flows/) and the registry client's request threads
ROOT = r"\((flows|connectors/enrichment)/"
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]+)(?::\d+)?\)$")


def _frames(stack: str) -> list[tuple[str, str]]:
    frames = []
    for text in stack.split(";"):
        match = _FRAME.match(text.strip())
        frames.append((match["func"], match["file"]) if match else (text.strip(), ""))
    return frames


def classify(frames: list[tuple[str, str]]) -> tuple[str, str]:
    """(the part of the innermost frame that belongs to one, else "other"; that frame)."""
    for func, path in reversed(frames):
        for part, pattern in PARTS:
            if re.search(pattern, path):
                return part, f"{func} ({path})"
    return "other", ""


def _library(path: str) -> str:
    """The top package or module a leaf frame's file belongs to (``httpcore``, ``json``, ...)."""
    parts = Path(path).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    return parts[0] if len(parts) > 1 else Path(path).stem


def shares(path: Path, root: str = ROOT) -> tuple[Counter[str], Counter[str], Counter[str], int]:
    """(samples per part, per (part, its innermost own frame), per (part, leaf library), total
    samples under ``root``)."""
    parts: Counter[str] = Counter()
    own: Counter[str] = Counter()
    libraries: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit() or not re.search(root, stack):
            continue
        frames = _frames(stack)
        part, frame = classify(frames)
        parts[part] += int(count)
        own[f"{part} | {frame}"] += int(count)
        libraries[f"{part} | {_library(frames[-1][1])}"] += int(count)
    return parts, own, libraries, sum(parts.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--root", default=ROOT, help="count only stacks matching this pattern")
    parser.add_argument("--detail", help="list this part's heaviest innermost frames")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    parts, own, libraries, total = shares(args.profile, args.root)
    print(f"{total} samples under {args.root}")
    print("| part | share |\n|---|---|")
    for part, count in parts.most_common():
        print(f"| {part} | {100 * count / total:.1f} % |")
    if args.detail:
        for title, counter in (("innermost own frame", own), ("leaf library", libraries)):
            print(f"\n{args.detail}, by {title}:")
            rows = [(key, count) for key, count in counter.most_common() if key.startswith(args.detail)]
            for key, count in rows[: args.top]:
                print(f"{100 * count / total:5.1f} %  {key.split(' | ', 1)[1]}")


if __name__ == "__main__":
    main()
