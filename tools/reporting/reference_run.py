"""Parse the reference run's output (docs/reference-run.txt, the script this project grew from)."""

from __future__ import annotations

import re
from pathlib import Path

from .results import NoResults

_ENTRY = re.compile(
    r"^\d+\. (?P<name>\w+) \(batch_size=(?P<batch>\d+)\)\.\.\.\n"
    r"\s+Forward: (?P<forward>[\d.]+) ± [\d.]+ ms\n"
    r"\s+Backward: (?P<backward>[\d.]+) ± [\d.]+ ms\n"
    r"\s+Total: (?P<total>[\d.]+) ms\n"
    r"\s+Memory: (?P<memory>[\d.]+) MB",
    re.MULTILINE,
)


def parse_reference_run(path: str | Path) -> dict[tuple[str, str, int], dict[str, float]]:
    """{(estimator, implementation, batch): {forward, backward, total (ms), memory (MB)}}; NoResults for a
    missing file or one without the reference run's entries."""
    if not Path(path).is_file():
        raise NoResults(f"no reference run at {path!r}: the project's is docs/reference-run.txt")
    text = Path(path).read_text()
    headings = [(m.start(), m.group(1).lower()) for m in re.finditer(r"^ESTIMATOR: (\w+)$", text, re.MULTILINE)]
    figures = {}
    for entry in _ENTRY.finditer(text):
        estimator = [name for start, name in headings if start < entry.start()][-1]
        key = (estimator, entry["name"].lower(), int(entry["batch"]))
        figures[key] = {field: float(entry[field]) for field in ("forward", "backward", "total", "memory")}
    if not figures:
        raise NoResults(f"{path!r} holds no reference-run entries (the project's is docs/reference-run.txt)")
    return figures
