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


class MalformedReference(NoResults):
    """A reference run file that cannot be read as one (a usage error, like a missing file)."""


def parse_reference_run(path: str | Path) -> dict[tuple[str, str, int], dict[str, float]]:
    """{(estimator, implementation, batch): {forward, backward, total (ms), memory (MB)}}.

    NoResults for a missing file or one without the reference run's entries; MalformedReference (naming the
    file and line) for one that is not text or has an entry before its first ``ESTIMATOR:`` heading.
    """
    if not Path(path).is_file():
        raise NoResults(f"no reference run at {path!r}: the project's is docs/reference-run.txt")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise MalformedReference(f"{path}: cannot be read as text ({error})") from None
    headings = [(m.start(), m.group(1).lower()) for m in re.finditer(r"^ESTIMATOR: (\w+)$", text, re.MULTILINE)]
    figures = {}
    for entry in _ENTRY.finditer(text):
        above = [name for start, name in headings if start < entry.start()]
        if not above:
            line = text.count("\n", 0, entry.start()) + 1
            raise MalformedReference(
                f"{path}:{line}: entry {entry.group(0).splitlines()[0]!r} comes before the first "
                "'ESTIMATOR: <name>' heading, so its estimator is unknown"
            )
        key = (above[-1], entry["name"].lower(), int(entry["batch"]))
        figures[key] = {field: float(entry[field]) for field in ("forward", "backward", "total", "memory")}
    if not figures:
        raise NoResults(f"{path!r} holds no reference-run entries (the project's is docs/reference-run.txt)")
    return figures
