"""asv's history detection on a throwaway clone, CPU small preset: the regressions page and ``asv find``.

Six commits on the clone's main, one of them planting a 1.5 s sleep in the
straight-through backward (tests/test_gate.py's plant, about 8x
``Estimate.time_backward('ste')``, several times what a loaded 2-core machine
adds to it: a 0.5 s plant went undetected while other asv runs shared the
cores): asv runs that one cell on each, ``asv publish`` must name the planted commit on the regressions page
(html/regressions.json) with asv.conf.json's thresholds, a range without the
plant must name nothing, and ``asv find`` through ``tools.run.asv_project``
must bisect to the planted commit. The plant is far above the thresholds and
any load's effect, so the verdicts do not depend on the machine's load.
"""

import json
import os
import subprocess
import sys

import pytest
from test_gate import REPO, _commit, _git, plant_slowdown

CELL = r"bench_estimators.Estimate.time_backward\('ste'\)"
SERIES = "bench_estimators.Estimate.time_backward('ste')"

pytestmark = pytest.mark.slow


def _asv(root, *args, timeout=600):
    command = [sys.executable, "-m", "tools.run.asv_project", *args]
    env = {**os.environ, "ESTIMATORS_ASV_MACHINE": "gate-history"}
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """The clone, its scratch asv configuration and its six measured commits: HEAD, two no-ops, the plant, two more."""
    scratch = tmp_path_factory.mktemp("history")
    root = scratch / "repo"
    _git(REPO, "clone", "-q", str(REPO), str(root))
    _git(root, "checkout", "-q", "-B", "main")  # asv.conf.json's branch: the dashboard follows main
    commits = [_git(root, "rev-parse", "HEAD")]
    readme = root / "README.md"
    for step in range(5):
        if step == 2:
            plant_slowdown(root, seconds=1.5)
        else:
            readme.write_text(readme.read_text() + "\n")
        commits.append(_commit(root, f"History step {step}"))
    # asv.conf.json's thresholds, not its regressions_first_commits: its commit has no results here, and asv 0.6.6
    # then starts after the newest commit that has, finding nothing (docs/BENCHMARKING.md, "The regressions page").
    make_config = (
        "import sys; from pathlib import Path; from tools.run.asv_project import scratch_config; "
        "print(scratch_config(Path(sys.argv[1]), results_dir=sys.argv[1] + '/results', "
        "html_dir=sys.argv[1] + '/html', regressions_first_commits={}))"
    )
    config = subprocess.run(
        [sys.executable, "-c", make_config, str(scratch)], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()
    hashes = scratch / "commits.txt"
    hashes.write_text("\n".join(commits) + "\n")
    _asv(root, "run", f"--config={config}", f"--bench={CELL}", "--show-stderr", f"HASHFILE:{hashes}")
    return root, scratch, config, commits


def _regressions(root, scratch, config, *range_spec):
    _asv(root, "publish", f"--config={config}", *range_spec)
    index = json.loads((scratch / "html" / "index.json").read_text())
    revisions = {int(revision): commit for revision, commit in index["revision_to_hash"].items()}
    found = {}
    for name, _, params, _, _, _, jumps in json.loads((scratch / "html" / "regressions.json").read_text())[
        "regressions"
    ]:
        if params.get("machine", "gate-history") == "gate-history":
            found[name] = [(revisions.get(before), revisions[after]) for before, after, *_ in jumps]
    return found


def test_regressions_page_names_the_planted_commit(history):
    root, scratch, config, commits = history
    planted = commits[3]
    found = _regressions(root, scratch, config)
    assert SERIES in found, found
    # asv names the commit itself (before is None) or the commits between which the step happened.
    assert [after for _, after in found[SERIES]] == [planted], (found[SERIES], commits)
    assert all(before in (None, commits[2]) for before, _ in found[SERIES])


def test_regressions_page_of_a_range_without_the_plant_names_nothing(history):
    root, scratch, config, commits = history
    assert _regressions(root, scratch, config, f"{commits[0]}~1..{commits[2]}") == {}


def test_asv_find_bisects_to_the_planted_commit(history):
    root, _, config, commits = history
    output = _asv(root, "find", f"--config={config}", "--skip-save", f"{commits[0]}~1..{commits[-1]}", CELL)
    assert f"Greatest regression found: {commits[3][:8]}" in output, output[-3000:]
