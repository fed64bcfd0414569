"""The suite's and the tools' bad input: a bad argument is a usage error (exit 2) that says what is wrong, never a
verdict; a result or preset that is missing is said, not a traceback."""

import json
import subprocess
import sys

import pytest
import torch

import estimators
from benchmarks.workload import random_tokens

from conftest import CONFIGS

INF, NAN = float("inf"), float("nan")


# The suite: a commit that lacks the preset shows n/a instead of failing the import.
def test_a_commit_without_the_preset_is_not_applicable(monkeypatch):
    from benchmarks import workload

    monkeypatch.setattr(workload, "PRESET", "no-such-preset")
    with pytest.raises(NotImplementedError, match="does not exist at this commit"):
        workload.preset_config()


# The tools: a bad argument is a usage error (exit 2) that says what is wrong, never a verdict.
@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["tools.run.gate", "no-such-commit", "HEAD"], "unknown commit"),
        (["tools.run.gate", "HEAD", "HEAD", "-b", "no-such-benchmark"], "selects no benchmark"),
        (["tools.run.gate", "HEAD", "HEAD", "--factor", "0"], "--factor"),
        (["tools.run.gate", "HEAD", "HEAD", "--factor", "0.9"], "must be > 1"),
        (["tools.run.bench", "--commits", "-1"], "--commits"),
        (["tools.probes.floor", "--preset", "nope"], "invalid choice"),
        (["tools.probes.floor", "--tflops", "0"], "--tflops"),
        (["tools.run.gate", "HEAD", "HEAD", "-b", "("], "not a regular expression"),
        (["tools.run.gate", "HEAD", "HEAD", "-a", "repeat=x"], "repeat takes an int >= 1, or min_repeat,max_repeat"),
        (["tools.run.gate", "HEAD", "HEAD", "-a", "repeat=0"], "repeat takes an int >= 1"),
        (["tools.run.gate", "HEAD", "HEAD", "-a", "repeat=(5,2,1.0)"], "1 <= min_repeat <= max_repeat"),
        (["tools.run.gate", "HEAD", "HEAD", "-a", "number=0"], "number takes an int >= 1, got '0'"),
        (["tools.run.gate", "HEAD", "HEAD", "-a", "timeout=-1"], "timeout takes a number > 0"),
        (["tools.run.gate", "HEAD", "HEAD", "-a", "cpu_affinity=100000"], "cpu_affinity takes CPU numbers"),
        (["tools.reporting.spread", "--machine", "no-such-machine"], "no results for machine"),
        (["tools.reporting.spread", "--machine", "cpu-2core-avx2", "--min-batch", "-5"], "--min-batch"),
        (["tools.reporting.report", "--machine", ""], "no results for machine ''"),
        (["tools.reporting.report", "--machine", "cpu-2core-avx2", "--commit", "fffffff"], "matches 0 result sets"),
        (
            ["tools.reporting.report", "--machine", "h100-80gb", "--reference", "docs/BENCHMARKING.md"],
            "no reference-run",
        ),
        (["tools.reporting.report", "--machine", "h100-80gb", "--reference", "missing.txt"], "no reference run at"),
        (["tools.probes.ddp_scaling", "--out", "x.json", "--worlds", "0"], "--worlds"),
        (["tools.probes.ddp_scaling", "--out", "x.json", "--device", "cpu", "--steps", "0"], "--steps"),
        (["tools.probes.ddp_scaling", "--out", "x.json", "--implementations", "bogus"], "invalid choice"),
    ],
)
def test_tools_refuse_bad_arguments(command, message):
    result = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where CUDA is missing")
@pytest.mark.parametrize("probe", ["tools.probes.host_cost", "tools.probes.profile_gpu"])
def test_gpu_probes_say_they_need_cuda(probe, tmp_path):
    result = subprocess.run([sys.executable, "-m", probe, "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert result.returncode == 2 and "needs a CUDA device" in result.stderr, result.stderr


def test_the_host_cost_probe_switches_the_value_checks_off_and_back():
    """The probe's "without checks" steps must skip the checks that the package runs now, and only inside."""
    from tools.probes.host_cost import value_checks_off

    model = estimators.build_model(CONFIGS["tiny"])
    with torch.no_grad():
        model.stochastic_layers()[0].logits[0, 0, 0] = NAN

    def forward():
        return model(random_tokens(CONFIGS["tiny"], 2, 0), estimator="ste", implementation="bmm", seed=0)

    with value_checks_off():
        forward()
    with pytest.raises(ValueError, match="mask logits are not finite"):
        forward()


def test_report_refuses_a_missing_reference_and_leaves_out_invalid_values(tmp_path):
    from tools.reporting import reference_run, results

    with pytest.raises(results.NoResults, match="no reference run"):
        reference_run.parse_reference_run(tmp_path / "missing.txt")

    class FakeResults:  # asv's Results API, as Measurements reads it
        commit_hash = "0" * 40

        def get_all_result_keys(self):
            return ["bench.T.time_x"]

        def get_result_params(self, name):
            return [["1", "2", "3", "4", "5", "6"]]

        def get_result_value(self, name, params):
            return [0.5, -1.0, "x", None, INF, True]

        def get_result_stats(self, name, params):
            return [None] * 6

    with pytest.warns(UserWarning, match="invalid value"):
        measurements = results.Measurements(FakeResults())
    assert [params for (_, params), _ in measurements.items()] == [(1,)]
    assert json.dumps(measurements.get("T.time_x", 1).median) == "0.5"
