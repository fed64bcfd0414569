"""The host-state record of a GPU run (tools/run/host_state.py) against a fake pynvml: the line it writes, the
decoded throttle reasons, the line without NVML, the reader's flags, and a file name asv and the reporting
tools never read as results."""

from __future__ import annotations

import io
import json
import re
import sys
import types
from pathlib import Path

import pytest
from asv.results import iter_results_paths

from tools.reporting import results
from tools.run import host_state

ROOT = Path(__file__).resolve().parents[1]


class FakeNVMLError(Exception):
    pass


def fake_pynvml(gpus: list[dict], init_error: str | None = None) -> types.ModuleType:
    """A pynvml whose GPU i answers from ``gpus[i]``; a key ``fail`` lists the calls that raise NVMLError."""
    nvml = types.ModuleType("pynvml")
    nvml.NVMLError = FakeNVMLError
    nvml.NVML_CLOCK_SM, nvml.NVML_CLOCK_MEM, nvml.NVML_TEMPERATURE_GPU = 1, 2, 0
    nvml.calls = []

    def init():
        nvml.calls.append("init")
        if init_error:
            raise FakeNVMLError(init_error)

    def answer(name, pick):
        def call(handle, *args):
            if name in handle.get("fail", ()):
                raise FakeNVMLError(f"{name}: Not Supported")
            return pick(handle, *args)

        return call

    nvml.nvmlInit = init
    nvml.nvmlShutdown = lambda: nvml.calls.append("shutdown")
    nvml.nvmlSystemGetDriverVersion = lambda: "550.54.15"
    nvml.nvmlDeviceGetCount = lambda: len(gpus)
    nvml.nvmlDeviceGetHandleByIndex = lambda index: gpus[index]
    nvml.nvmlDeviceGetName = answer("name", lambda h: h["name"].encode())  # older pynvml: bytes
    nvml.nvmlDeviceGetClockInfo = answer("clock", lambda h, kind: h["sm"] if kind == 1 else h["mem"])
    nvml.nvmlDeviceGetMaxClockInfo = answer("max_clock", lambda h, kind: h["sm_max"] if kind == 1 else h["mem_max"])
    nvml.nvmlDeviceGetPowerUsage = answer("power", lambda h: h["power_mw"])
    nvml.nvmlDeviceGetEnforcedPowerLimit = answer("limit", lambda h: h["limit_mw"])
    nvml.nvmlDeviceGetTemperature = answer("temperature", lambda h, sensor: h["temp"])
    nvml.nvmlDeviceGetCurrentClocksThrottleReasons = answer("reasons", lambda h: h["reasons"])
    nvml.nvmlDeviceGetPersistenceMode = answer("persistence", lambda h: 1)
    nvml.nvmlDeviceGetComputeMode = answer("compute", lambda h: 0)
    return nvml


def h100(**changes) -> dict:
    gpu = dict(name="NVIDIA H100 80GB HBM3", sm=1980, sm_max=1980, mem=2619, mem_max=2619)
    gpu.update(power_mw=312_500, limit_mw=700_000, temp=41, reasons=0)
    gpu.update(changes)
    return gpu


@pytest.fixture
def nvml(monkeypatch):
    """Installs a fake pynvml with the GPUs given: ``nvml(gpus)`` returns the module."""

    def install(gpus, **options):
        module = fake_pynvml(gpus, **options)
        monkeypatch.setitem(sys.modules, "pynvml", module)
        return module

    return install


def test_record_appends_one_line_per_call_with_every_gpu(nvml, tmp_path):
    fake = nvml([h100(), h100(sm=1410, reasons=0x4 | 0x20, temp=87)])
    path = tmp_path / "box" / host_state.RECORD_NAME
    assert host_state.main(["--phase", "start", "--record", str(path), "--note", "first"]) == 0
    assert host_state.main(["--phase", "end", "--record", str(path), "--", "run.gate", "HEAD~1", "HEAD"]) == 0
    start, end = [json.loads(line) for line in path.read_text().splitlines()]
    assert fake.calls == ["init", "shutdown", "init", "shutdown"]
    assert (start["phase"], start["note"], end["phase"]) == ("start", "first", "end")
    assert start["time"].endswith("+00:00") and start["driver"] == "550.54.15"
    assert "command" not in start and end["command"] == "run.gate HEAD~1 HEAD"
    head = host_state._git("rev-parse", "HEAD", "HEAD~1")
    assert end["commits"] == head[::-1]
    first, second = end["gpus"]
    assert first == {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "sm_clock_mhz": 1980,
        "sm_clock_max_mhz": 1980,
        "mem_clock_mhz": 2619,
        "mem_clock_max_mhz": 2619,
        "power_draw_w": 312.5,
        "power_limit_w": 700.0,
        "temperature_c": 41,
        "reasons_mask": 0,
        "persistence_mode": True,
        "compute_mode": "default",
        "reasons": [],
        "errors": {},
    }
    assert second["reasons"] == ["sw_power_cap", "sw_thermal_slowdown"] and second["sm_clock_mhz"] == 1410


def test_a_field_nvml_cannot_read_is_null_with_its_error(nvml, tmp_path):
    nvml([h100(fail=("power", "reasons"))])
    (gpu,) = host_state.state_line("start")["gpus"]
    assert gpu["power_draw_w"] is None and gpu["reasons_mask"] is None and gpu["reasons"] is None
    assert gpu["errors"] == {"power_draw_w": "power: Not Supported", "reasons_mask": "reasons: Not Supported"}
    assert gpu["power_limit_w"] == 700.0
    path = tmp_path / "host-state.jsonl"
    host_state.record(path, "end")
    out = io.StringIO()
    host_state.show(path, out)
    assert "gpu 0 unread: power_draw_w (power: Not Supported); reasons_mask (reasons: Not Supported)" in out.getvalue()
    assert "?/700 W" in out.getvalue()


def test_newer_pynvml_reads_the_clock_event_reasons(nvml):
    fake = nvml([h100(reasons=0x8)])
    fake.nvmlDeviceGetCurrentClocksEventReasons = lambda handle: 0x80
    assert host_state.state_line("end")["gpus"][0]["reasons"] == ["hw_power_brake_slowdown"]


@pytest.mark.parametrize(
    "mask, names",
    [
        (0, []),
        (0x1, ["gpu_idle"]),
        (0x4 | 0x40, ["sw_power_cap", "hw_thermal_slowdown"]),
        (0x1FF, list(host_state.REASONS.values())),
        (0x8 | 0x400 | 0x10000, ["hw_slowdown", "unknown_0x400", "unknown_0x10000"]),
    ],
)
def test_reasons_decode_every_bit(mask, names):
    assert host_state.decode_reasons(mask) == names


@pytest.mark.parametrize(
    "install, why",
    [
        (lambda monkeypatch: monkeypatch.setitem(sys.modules, "pynvml", None), "pynvml cannot be imported"),
        (
            lambda monkeypatch: monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], "Driver Not Loaded")),
            "NVML cannot be initialised: Driver Not Loaded",
        ),
        (lambda monkeypatch: monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([])), "NVML finds no GPU"),
    ],
)
def test_without_nvml_the_line_says_why_and_the_command_exits_0(monkeypatch, tmp_path, capsys, install, why):
    install(monkeypatch)
    path = tmp_path / "host-state.jsonl"
    assert host_state.main(["--phase", "end", "--record", str(path), "--note", "exit status 124"]) == 0
    (line,) = [json.loads(text) for text in path.read_text().splitlines()]
    assert line["nvml_unavailable"].startswith(why) and line["gpus"] == [] and line["note"] == "exit status 124"
    assert why in capsys.readouterr().out


def test_bad_arguments_name_the_choices(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        host_state.main(["--phase", "middle", "--record", str(tmp_path / "x.jsonl")])
    assert exit_.value.code == 2 and "choose from 'start', 'end'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        host_state.main(["--record", str(tmp_path / "x.jsonl")])
    assert "--record needs --phase (start, end)" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_measured_commits_read_asv_and_gate_arguments(tmp_path):
    head, parent, grandparent = host_state._git("rev-parse", "HEAD", "HEAD~1", "HEAD~2")
    hashes = tmp_path / "hashes"
    hashes.write_text(f"{grandparent}\nHEAD~1\n")
    assert host_state.measured_commits(["run.asv_project", "run", "--durations", "all", "HEAD^!"]) == [head]
    assert host_state.measured_commits(["run", "HEAD~2..HEAD"]) == [head, parent]
    assert host_state.measured_commits(["run", f"HASHFILE:{hashes}"]) == [grandparent, parent]
    assert host_state.measured_commits(["run.gate", "HEAD~1", "HEAD", "-b", "Estimate.time_backward"]) == [parent, head]


def _show(path: Path) -> tuple[int, str]:
    out = io.StringIO()
    return host_state.show(path, out), out.getvalue()


def _rows(text: str) -> list[str]:
    """The table's GPU rows (a flag column, then the time), without the header, notes and summary."""
    return [line for line in text.splitlines() if re.match(r"[! ]\s+\d{4}-\d\d-\d\dT", line)]


def test_show_flags_a_low_end_clock_and_power_or_thermal_reasons(nvml, tmp_path):
    path = tmp_path / "host-state.jsonl"
    nvml([h100(sm=1500), h100(reasons=0x1, sm=345)])  # start: a low clock at the start is not flagged
    host_state.record(path, "start", "ASV_TIMEOUT=540")
    nvml([h100(sm=1700), h100(reasons=0x1, sm=345), h100(reasons=0x4), h100(sm=1790)])
    host_state.record(path, "end")
    count, text = _show(path)
    rows = _rows(text)
    assert len(rows) == 6 and count == 2
    start_low, start_idle, end_low, end_idle, end_capped, end_fine = rows
    assert not start_low.startswith("!") and "1500/1980 MHz" in start_low and "312/700 W" in start_low
    assert not start_idle.startswith("!") and "gpu_idle" in start_idle
    assert end_low.startswith("!") and "[sm clock 86% of max]" in end_low
    assert not end_idle.startswith("!")  # idle, the clock says nothing of throttling
    assert end_capped.startswith("!") and "sw_power_cap  [sw_power_cap]" in end_capped
    assert not end_fine.startswith("!") and "41 C" in end_fine  # 1790 MHz is 90.4% of 1980
    assert "note: ASV_TIMEOUT=540" in text and text.rstrip().endswith(
        "hw_thermal_slowdown, sw_power_cap, sw_thermal_slowdown"
    )


def test_show_prints_a_line_without_nvml_and_an_unreadable_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    path = tmp_path / "host-state.jsonl"
    host_state.record(path, "start", command=["run.asv_project", "run", "HEAD^!"])
    with path.open("a") as file:
        file.write("{cut short\n")
    assert host_state.main(["--show", str(path)]) == 0
    captured = capsys.readouterr()
    text = captured.out
    assert "no NVML state: pynvml cannot be imported" in text
    assert f"command: run.asv_project run HEAD^! ({host_state._git('rev-parse', 'HEAD')[0][:8]})" in text
    assert f"{path}:2: skipped: not JSON" in captured.err and "flagged" not in text


DAMAGED_LINES = {
    "gpus a string": b'{"phase": 3, "gpus": "x", "time": []}',
    "gpus of ints": b'{"phase": "end", "gpus": [1, 2]}',
    "reasons an int": b'{"phase": "end", "gpus": [{"reasons": 5, "errors": []}]}',
    "errors a list": b'{"phase": "end", "gpus": [{"errors": ["x"]}]}',
    "a clock of text": b'{"phase": "end", "gpus": [{"sm_clock_mhz": "fast", "sm_clock_max_mhz": 1980}]}',
    "commits an int": b'{"phase": "end", "gpus": [], "commits": 5}',
    "no gpus": b'{"phase": "start"}',
    "no phase": b'{"gpus": []}',
    "not UTF-8": b'{"note": "\xff\xfe"}',
    "not JSON": b"not json",
    "not an object": b"[1, 2]",
}


@pytest.mark.parametrize("damage", DAMAGED_LINES)
def test_show_names_and_skips_a_damaged_line_and_fails_when_none_is_readable(damage, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    path = tmp_path / "host-state.jsonl"
    path.write_bytes(DAMAGED_LINES[damage] + b"\n")
    assert host_state.main(["--show", str(path)]) == 1
    captured = capsys.readouterr()
    assert f"{path}:1: skipped: " in captured.err and f"{path}: no readable records" in captured.err
    assert "Traceback" not in captured.err
    host_state.record(path, "end", "after")  # a good line after the damaged one: shown, exit 0
    assert host_state.main(["--show", str(path)]) == 0
    captured = capsys.readouterr()
    assert f"{path}:1: skipped: " in captured.err and "note: after" in captured.out


@pytest.mark.parametrize("content", [b"", b"\n  \n"], ids=["empty", "blank lines"])
def test_show_of_a_file_without_records_exits_1(content, tmp_path, capsys):
    path = tmp_path / "host-state.jsonl"
    path.write_bytes(content)
    assert host_state.main(["--show", str(path)]) == 1
    assert f"{path}: no readable records" in capsys.readouterr().err


def test_the_record_is_read_by_neither_asv_nor_the_reporting_tools(tmp_path, monkeypatch):
    """Beside a machine.json, asv reads every *.json file and tools/reporting every *.json but two: a record
    named host-state.json would be taken for a result set (the control), host-state.jsonl is not."""
    machine = tmp_path / "box"
    machine.mkdir()
    (machine / "machine.json").write_text(json.dumps({"machine": "box", "version": 1}))
    (machine / host_state.RECORD_NAME).write_text("{}\n")
    (machine / "host-state.json").write_text("{}\n")
    found = {filename for _, filename, _ in iter_results_paths(str(tmp_path))}
    assert found == {"host-state.json"}
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path))
    assert [path.name for path in results.result_files("box")] == ["host-state.json"]
    assert results.machines() == ["box"]


def test_gpu_suite_writes_the_record_under_the_ignored_name():
    script = (ROOT / "tools" / "run" / "gpu_suite.sh").read_text()
    assert f'record="results/$machine/{host_state.RECORD_NAME}"' in script
    assert host_state.RECORD_NAME.endswith(".jsonl")
