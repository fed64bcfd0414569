"""The GPU host's state at a benchmark run's start and end, read through NVML: record it, show it.

``python -m tools.run.host_state --phase start|end --record FILE [--note TEXT] [-- COMMAND ...]``
appends one JSON line to FILE: the UTC time, the phase, the note, the measured command (``COMMAND``:
``tools.run.gpu_suite.sh``'s, e.g. ``run.asv_project run HEAD^!``) and the commits it names, NVML's
driver version, and for every GPU its name, SM and memory clocks (current and max, MHz), power draw
and limit (W), temperature (C), the clock event ("throttle") reasons, decoded, and the persistence and
compute modes. A field NVML cannot read is ``null``, with NVML's message under the GPU's ``errors``.
Where NVML cannot be used at all (no ``pynvml``, from the ``nvidia-ml-py`` package; no driver; no GPU)
the line says why under ``nvml_unavailable`` and the command still exits 0: a missing record never
fails a benchmark run. Only a bad argument (exit 2) or an unwritable FILE (exit 1) fail ``--record``.

``python -m tools.run.host_state --show FILE`` prints one row per GPU and line (time, phase, GPU, SM
clock/max, power draw/cap, temperature, reasons) and flags a row where the SM clock at the end was
under ``LOW_CLOCK`` of its max while the GPU was not idle, or a thermal or power reason
(``SLOWDOWN_REASONS``) was active; a note, the command, fields NVML could not read or why NVML was
unavailable are printed under their line. A damaged line (not UTF-8, not JSON, a field of the wrong type) is
named with its line number on stderr and skipped; a FILE with no readable line exits 1.

gpu_suite.sh keeps the record in ``results/<machine>/host-state.jsonl`` (``RECORD_NAME``): asv and
tools/reporting/results.py read only files ending in ``.json`` there, so they never see it.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECORD_NAME = "host-state.jsonl"
PHASES = ("start", "end")
# The SM clock at the end under this fraction of its max (and the GPU not idle) is flagged.
LOW_CLOCK = 0.9
# NVML's clock event reason bits (nvml.h, nvmlClocksEventReason*; the same values as the older
# nvmlClocksThrottleReason*), so that a record decodes without pynvml.
REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# The reasons that mean the host, not the commit, held the clock down (hw_slowdown: heat, power draw or an
# external power brake).
SLOWDOWN_REASONS = frozenset(
    {"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"}
)
COMPUTE_MODES = {0: "default", 1: "exclusive_thread", 2: "prohibited", 3: "exclusive_process"}


def decode_reasons(mask: int) -> list[str]:
    """The names of the reason bits set in ``mask``, lowest bit first; a bit NVML's header does not name
    is ``unknown_0x...``."""
    names = [name for bit, name in REASONS.items() if mask & bit]
    rest = mask & ~sum(REASONS)
    bit = 1
    while rest:
        if rest & bit:
            names.append(f"unknown_{bit:#x}")
            rest &= ~bit
        bit <<= 1
    return names


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _gpu_state(nvml, index: int) -> dict:
    """One GPU's fields; each one NVML cannot read is None, with NVML's message in ``errors``."""
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    errors: dict[str, str] = {}

    def read(field, call):
        try:
            return call()
        except nvml.NVMLError as error:
            errors[field] = str(error)
        except AttributeError as error:  # a call this pynvml's version lacks
            errors[field] = f"not in this pynvml: {error}"
        return None

    def reasons_mask():
        # nvmlDeviceGetCurrentClocksEventReasons replaces the ...ThrottleReasons call in newer nvidia-ml-py.
        get = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        return (get or nvml.nvmlDeviceGetCurrentClocksThrottleReasons)(handle)

    def watts(call):
        milliwatts = call(handle)
        return milliwatts / 1000

    state = {
        "index": index,
        "name": read("name", lambda: _text(nvml.nvmlDeviceGetName(handle))),
        "sm_clock_mhz": read("sm_clock_mhz", lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
        "sm_clock_max_mhz": read(
            "sm_clock_max_mhz", lambda: nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM)
        ),
        "mem_clock_mhz": read("mem_clock_mhz", lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)),
        "mem_clock_max_mhz": read(
            "mem_clock_max_mhz", lambda: nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_MEM)
        ),
        "power_draw_w": read("power_draw_w", lambda: watts(nvml.nvmlDeviceGetPowerUsage)),
        "power_limit_w": read("power_limit_w", lambda: watts(nvml.nvmlDeviceGetEnforcedPowerLimit)),
        "temperature_c": read(
            "temperature_c", lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
        ),
        "reasons_mask": read("reasons_mask", reasons_mask),
        "persistence_mode": read("persistence_mode", lambda: bool(nvml.nvmlDeviceGetPersistenceMode(handle))),
        "compute_mode": read(
            "compute_mode",
            lambda: COMPUTE_MODES.get(mode := nvml.nvmlDeviceGetComputeMode(handle), f"unknown_{mode}"),
        ),
    }
    state["reasons"] = None if state["reasons_mask"] is None else decode_reasons(state["reasons_mask"])
    state["errors"] = errors
    return state


def read_gpus() -> tuple[dict, str | None]:
    """``({"driver": ..., "gpus": [...]}, None)`` from NVML, or ``({}, why)`` where NVML cannot be used."""
    try:
        import pynvml as nvml
    except ImportError as error:
        return {}, f"pynvml cannot be imported ({error}); it comes with the nvidia-ml-py package"
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as error:
        return {}, f"NVML cannot be initialised: {error}"
    try:
        try:
            driver = _text(nvml.nvmlSystemGetDriverVersion())
        except nvml.NVMLError as error:
            driver = f"unknown ({error})"
        try:
            count = nvml.nvmlDeviceGetCount()
            gpus = [_gpu_state(nvml, index) for index in range(count)]
        except nvml.NVMLError as error:
            return {}, f"NVML cannot list the GPUs: {error}"
        if not gpus:
            return {}, "NVML finds no GPU"
        return {"driver": driver, "gpus": gpus}, None
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass  # the state is read; a failed shutdown changes nothing in it


def _git(*args: str) -> list[str]:
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    return result.stdout.split() if result.returncode == 0 else []


def measured_commits(command: list[str]) -> list[str]:
    """The commits ``command``'s arguments name, as asv reads them: ``A^!`` (A alone), ``A..B`` (the commits
    of B's first-parent history not in A: asv's ``rev-list --first-parent``), ``HASHFILE:path`` (one a line,
    resolved), and any other argument git resolves to a commit (gate's BASE HEAD). An argument that names
    none (an option, a benchmark pattern) adds nothing."""
    commits: list[str] = []
    for argument in command:
        if argument.startswith("-"):
            continue
        if argument.startswith("HASHFILE:"):
            path = Path(argument.removeprefix("HASHFILE:"))
            path = path if path.is_absolute() else ROOT / path
            names = path.read_text().split() if path.is_file() else []
        elif argument.endswith("^!"):
            names = [argument[:-2]]
        elif ".." in argument:
            commits += _git("rev-list", "--first-parent", argument, "--")
            continue
        else:
            names = [argument]
        for name in names:
            commits += _git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}")
    return list(dict.fromkeys(commits))


def state_line(phase: str, note: str | None = None, command: list[str] | None = None) -> dict:
    """The record of this moment: always a dict, NVML's state or why there is none."""
    if phase not in PHASES:
        raise ValueError(f"phase {phase!r}; valid choices: {', '.join(PHASES)}")
    line: dict = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "phase": phase,
        "host": socket.gethostname(),
    }
    if note is not None:
        line["note"] = note
    if command:
        line["command"] = " ".join(command)
        try:
            line["commits"] = measured_commits(command)
        except (OSError, subprocess.SubprocessError) as error:
            line["commits"] = None
            line["commits_error"] = str(error)
    state, why = read_gpus()
    if why is not None:
        line["nvml_unavailable"] = why
        line["gpus"] = []
    else:
        line.update(state)
    return line


def record(path: Path, phase: str, note: str | None = None, command: list[str] | None = None) -> dict:
    """Append this moment's line to ``path`` (its folder is made where missing); return the line."""
    line = state_line(phase, note, command)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")
    return line


def flags(line: dict, gpu: dict) -> list[str]:
    """What a row shows of a throttled host: the SM clock at the end under LOW_CLOCK of its max while the GPU
    was not idle (idle, the clock says nothing), and any active reason of SLOWDOWN_REASONS."""
    found = []
    clock, top, reasons = gpu.get("sm_clock_mhz"), gpu.get("sm_clock_max_mhz"), gpu.get("reasons") or []
    if line.get("phase") == "end" and clock is not None and top and clock < LOW_CLOCK * top:
        if "gpu_idle" not in reasons:
            found.append(f"sm clock {clock / top:.0%} of max")
    found += [reason for reason in reasons if reason in SLOWDOWN_REASONS]
    return found


def _pair(value, top, unit: str, digits: int = 0) -> str:
    show = lambda v: "?" if v is None else f"{v:.{digits}f}"  # noqa: E731
    return f"{show(value)}/{show(top)} {unit}"


class NoRecords(ValueError):
    """A file ``show`` was given holds no readable line."""


# A GPU's fields that ``show`` reads: the types each may have (null: NVML could not read it).
_NUMBER = (int, float)
GPU_FIELDS = {
    "index": (int, str),
    "name": (str,),
    "sm_clock_mhz": _NUMBER,
    "sm_clock_max_mhz": _NUMBER,
    "power_draw_w": _NUMBER,
    "power_limit_w": _NUMBER,
    "temperature_c": _NUMBER,
    "reasons": (list,),
    "errors": (dict,),
}


def _damage(line: object) -> str | None:
    """Why a parsed line cannot be shown (a field of the wrong type), or None."""
    if not isinstance(line, dict):
        return f"not a JSON object but {type(line).__name__}"
    if line.get("phase") not in PHASES:
        return f"phase is {line.get('phase')!r}, not one of {', '.join(PHASES)}"
    if "gpus" not in line:
        return "no gpus (a record lists them, empty where NVML was unavailable)"
    commits = line.get("commits")
    if commits is not None and not (isinstance(commits, list) and all(isinstance(c, str) for c in commits)):
        return "commits is not a list of strings"
    gpus = line["gpus"]
    if not isinstance(gpus, list):
        return f"gpus is not a list but {type(gpus).__name__}"
    for position, gpu in enumerate(gpus):
        if not isinstance(gpu, dict):
            return f"gpus[{position}] is not an object but {type(gpu).__name__}"
        for field, types in GPU_FIELDS.items():
            value = gpu.get(field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
                return f"gpus[{position}].{field} has the wrong type ({type(value).__name__})"
        if not all(isinstance(reason, str) for reason in gpu.get("reasons") or []):
            return f"gpus[{position}].reasons is not a list of strings"
    return None


def read_records(path: Path, err=None) -> list[dict]:
    """``path``'s readable lines, parsed; each damaged one (not UTF-8, not JSON, not an object, without a phase of
    ``PHASES`` or a gpus list, a field of the wrong type) is named with its line number on ``err`` (stderr) and
    skipped. Blank lines are ignored."""
    err = err or sys.stderr
    records = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            text = raw.decode("utf-8")
            if not text.strip():
                continue
            line = json.loads(text)
            problem = _damage(line)
        except UnicodeDecodeError as error:
            problem = f"not UTF-8 text ({error.reason} at byte {error.start})"
        except ValueError as error:
            problem = f"not JSON ({error})"
        if problem:
            print(f"warning: {path}:{number}: skipped: {problem}", file=err)
        else:
            records.append(line)
    return records


def show(path: Path, out=None, err=None) -> int:
    """Print ``path``'s lines as a table to ``out`` (stdout), flagged rows marked ``!``; return how many rows
    were flagged. A damaged line is named on ``err`` (stderr) and skipped (``read_records``).

    Raises:
        NoRecords: no line of ``path`` is readable (or it is empty).
    """
    out = out or sys.stdout
    header = ("", "time", "phase", "gpu", "sm clock/max", "power draw/cap", "temp", "reasons")
    rows, notes, flagged = [], {}, 0
    records = read_records(path, err)
    if not records:
        raise NoRecords(f"{path}: no readable records")
    for line in records:
        time, phase = str(line.get("time", "?")), str(line.get("phase", "?"))
        extra = [f"note: {line['note']}"] if line.get("note") else []
        if line.get("command"):
            extra.append(f"command: {line['command']} ({', '.join(c[:8] for c in line.get('commits') or [])})")
        if line.get("nvml_unavailable"):
            extra.append(f"no NVML state: {line['nvml_unavailable']}")
        for gpu in line.get("gpus") or []:
            if gpu.get("errors"):
                unread = "; ".join(f"{field} ({message})" for field, message in gpu["errors"].items())
                extra.append(f"gpu {gpu.get('index', '?')} unread: {unread}")
            found = flags(line, gpu)
            flagged += bool(found)
            temperature = gpu.get("temperature_c")
            rows.append(
                (
                    "!" if found else "",
                    time,
                    phase,
                    f"{gpu.get('index', '?')} {gpu.get('name') or '?'}",
                    _pair(gpu.get("sm_clock_mhz"), gpu.get("sm_clock_max_mhz"), "MHz"),
                    _pair(gpu.get("power_draw_w"), gpu.get("power_limit_w"), "W"),
                    "?" if temperature is None else f"{temperature} C",
                    ", ".join(gpu.get("reasons") or []) + (f"  [{'; '.join(found)}]" if found else ""),
                )
            )
        if not line.get("gpus"):
            rows.append(("", time, phase, "-", "", "", "", ""))
        if extra:
            notes[len(rows) - 1] = extra
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    fmt = lambda row: "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()  # noqa: E731
    print(fmt(header), file=out)
    for index, row in enumerate(rows):
        print(fmt(row), file=out)
        for text in notes.get(index, []):
            print(f"    {text}", file=out)
    if flagged:
        print(
            f"{flagged} row(s) flagged: SM clock at the end under {LOW_CLOCK:.0%} of max (not idle), "
            f"or one of {', '.join(sorted(SLOWDOWN_REASONS))}",
            file=out,
        )
    return flagged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.run.host_state", description=__doc__.split("\n\n")[0].strip()
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--record", type=Path, metavar="FILE", help="append this moment's state to FILE")
    action.add_argument("--show", type=Path, metavar="FILE", help="print FILE's lines as a table")
    parser.add_argument("--phase", choices=PHASES, help="with --record: which end of the run this is")
    parser.add_argument("--note", help="with --record: a note kept in the line")
    parser.add_argument("command", nargs="*", help="with --record, after --: the measured command")
    args = parser.parse_args(argv)
    if args.show is not None:
        if args.phase or args.note is not None or args.command:
            parser.error("--show takes no --phase, --note or command")
        if not args.show.is_file():
            parser.error(f"{args.show}: no such file")
        try:
            show(args.show)
        except (NoRecords, OSError) as error:
            print(f"host_state: {error}", file=sys.stderr)
            return 1
        return 0
    if args.phase is None:
        parser.error(f"--record needs --phase ({', '.join(PHASES)})")
    try:
        line = record(args.record, args.phase, args.note, args.command)
    except OSError as error:
        print(f"host_state: cannot write {args.record}: {error}", file=sys.stderr)
        return 1
    why = f" without the GPUs' state: {line['nvml_unavailable']}" if "nvml_unavailable" in line else ""
    print(f"host_state: {args.phase} recorded in {args.record}{why}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
