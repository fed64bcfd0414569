"""Run asv the way this project needs it: ``python -m tools.run.asv_project <asv command> [arguments]``.

- Links the host's torch into asv's environments: ESTIMATORS_HOST_SITE_PACKAGES
  names the site-packages of the python running this (read by
  tools/run/link_host_packages.py, asv's first build command).
- Names the machine after its hardware and preset (``h100-80gb``, ``h100-80gb-x2`` for a host
  with two, ``cpu-2core-avx2``; a forced non-default preset is appended), so results of
  different presets never share a series. ESTIMATORS_ASV_MACHINE overrides it.
- Registers that machine non-interactively (``asv machine --yes``, with the GPU,
  torch and CUDA versions in its description) and passes ``--machine`` to the
  commands that take one.
- After ``publish``, serves the dashboard's CDN libraries from html/vendor/, so
  the page works on hosts without internet access (tools/reporting/dashboard.py).
- Runs asv through tools/run/asv_patches.py: results are saved after every
  benchmark (a run cut short keeps what finished), asv's JSON files are
  written atomically, ``setup`` exits 0 on success, and ``publish`` draws the
  front page's summaries from one machine (ESTIMATORS_SUMMARY_MACHINE).

Everything else is plain asv: ``python -m tools.run.asv_project run HEAD~3..HEAD``,
``python -m tools.run.asv_project publish``, ``python -m tools.run.asv_project preview``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.grid import DEFAULT_PRESET
from benchmarks.machine import DEVICE, GPUS, PRESET

ROOT = Path(__file__).resolve().parents[2]
COMMANDS_WITH_MACHINE = {"run", "continuous", "compare", "find", "show"}


def summary_machine() -> str:
    """The machine the dashboard's front page summarises: this host's if it has results, else the one with most."""
    results = ROOT / "results"
    machines = [d for d in results.iterdir() if (d / "machine.json").exists()] if results.exists() else []
    counts = {d.name: len(list(d.glob("*-*.json"))) for d in machines}
    here = machine_name()
    return here if counts.get(here) else max(sorted(counts), key=counts.get, default=here)


def _check_preset() -> None:
    import estimators

    if PRESET not in estimators.PRESETS:
        raise SystemExit(f"ESTIMATORS_BENCH_PRESET={PRESET!r}; valid choices: {', '.join(estimators.PRESETS)}")


def machine_name() -> str:
    _check_preset()
    if os.environ.get("ESTIMATORS_ASV_MACHINE"):
        return os.environ["ESTIMATORS_ASV_MACHINE"]
    if DEVICE == "cuda":
        words = torch.cuda.get_device_name().lower().replace("nvidia", "").split()
        name = "-".join(words[:2])  # "NVIDIA H100 80GB HBM3" -> "h100-80gb"
        if GPUS > 1:  # a multi-GPU host is a machine of its own (its host and interconnect differ)
            name += f"-x{GPUS}"
    else:
        # The vector ISA torch's CPU kernels use (avx2, avx512, ...): 2-core VMs of different
        # hardware generations ran the same suite 2.6x apart, and must not share a series.
        name = f"cpu-{os.cpu_count()}core-{torch.backends.cpu.get_cpu_capability()}".lower()
    name = re.sub(r"[^a-z0-9.-]+", "-", name)
    return name if PRESET == DEFAULT_PRESET[DEVICE] else f"{name}-{PRESET}"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _ram() -> str:
    if Path("/proc/meminfo").exists():
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        return f"{kib / 2**20:.0f}GB"
    return "unknown"


def machine_info() -> dict[str, str]:
    """What `asv machine` records: the GPU (if any) leads the CPU description; torch and CUDA the OS line."""
    cpu = f"{_cpu_model()} ({os.cpu_count()} cores)"
    software = f"torch {torch.__version__}"
    if DEVICE == "cuda":
        cpu = f"{torch.cuda.get_device_name()}; host {cpu}"
        software += f", CUDA {torch.version.cuda}"
    return {
        "machine": machine_name(),
        # No kernel release: it changes with every VM image and would rewrite machine.json each run.
        "os": f"{platform.system()}; {software}; preset {PRESET}",
        "arch": platform.machine(),
        "cpu": cpu,
        "num_cpu": str(os.cpu_count()),
        "ram": _ram(),
    }


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["ESTIMATORS_HOST_SITE_PACKAGES"] = str(Path(torch.__file__).resolve().parent.parent)
    env["ESTIMATORS_BENCH_DEVICE"] = DEVICE
    env["ESTIMATORS_BENCH_PRESET"] = PRESET
    if "ESTIMATORS_SUMMARY_MACHINE" not in env:
        env["ESTIMATORS_SUMMARY_MACHINE"] = summary_machine()
    return env


def check_recorded_torch(info: dict[str, str]) -> None:
    """Refuse to add results to a machine's series that was measured with another torch."""
    recorded = ROOT / "results" / info["machine"] / "machine.json"
    if recorded.exists():
        before = json.loads(recorded.read_text()).get("os", "")
        if f"torch {torch.__version__}" not in before:
            sys.exit(
                f"results/{info['machine']} was measured with '{before}', this host has torch "
                f"{torch.__version__}: set ESTIMATORS_ASV_MACHINE to start a new series"
            )


def scratch_config(directory: Path, **overrides: str) -> Path:
    """A copy of asv.conf.json in ``directory`` with ``overrides`` (e.g. results_dir, html_dir).

    asv reads paths relative to its configuration file, so the copy names the
    repository, the suite, the environments and the build script absolutely.
    """
    from asv.util import load_json

    config = load_json(str(ROOT / "asv.conf.json"), js_comments=True)
    for key in ("repo", "benchmark_dir", "env_dir", "results_dir", "html_dir"):
        config[key] = str(ROOT / config[key])
    config["build_command"] = [command.replace("{conf_dir}", str(ROOT)) for command in config["build_command"]]
    config.update(overrides)
    path = Path(tempfile.mkdtemp(dir=directory)) / "asv.conf.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def _asv_command_line(args: list[str]) -> list[str]:
    """asv with this project's patches for its command (tools/run/asv_patches.py): atomic JSON files, results
    saved after each benchmark, ``setup``'s exit status, ``publish``'s one-machine summaries."""
    return [sys.executable, "-m", "tools.run.asv_patches", *args]


def run_asv(args: list[str], check: bool = False) -> int:
    """Run ``asv *args`` from the repository root with the project's environment; return its exit code."""
    return subprocess.run(_asv_command_line(args), cwd=ROOT, env=environment(), check=check).returncode


def exec_asv(args: list[str]):
    """Become ``asv *args`` (this process's PID is asv's: stopping it stops asv, e.g. ``preview``'s server)."""
    os.chdir(ROOT)
    command = _asv_command_line(args)
    os.execve(command[0], command, environment())


def register_machine() -> str:
    info = machine_info()
    check_recorded_torch(info)
    run_asv(["machine", "--yes", *[f"--{key}={value}" for key, value in info.items()]], check=True)
    return info["machine"]


def asv_command(args: list[str]) -> list[str]:
    """``args`` with ``--machine`` added where the command takes one and none was given."""
    if args and args[0] in COMMANDS_WITH_MACHINE and not any(a.startswith(("--machine", "-m")) for a in args):
        return [args[0], f"--machine={register_machine()}", *args[1:]]
    return args


def publish(config: Path | None = None) -> int:
    """``asv publish``, then the dashboard's CDN libraries served from html/vendor/ and its pages opened on the
    front page's machine (tools/reporting/dashboard.py)."""
    from asv.util import load_json

    from ..reporting.dashboard import one_machine_pages, vendor

    status = run_asv(["publish"] + ([f"--config={config}"] if config else []))
    if status == 0:
        html_dir = load_json(str(config or ROOT / "asv.conf.json"), js_comments=True)["html_dir"]
        vendor(ROOT / html_dir)
        one_machine_pages(ROOT / html_dir, os.environ.get("ESTIMATORS_SUMMARY_MACHINE") or summary_machine())
    return status


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if args[0] == "publish" and all(a.startswith("--config") for a in args[1:]):
        config = next((Path(a.split("=", 1)[1]) for a in args[1:]), None)
        return publish(config)
    if args[0] == "preview" and not (ROOT / "html" / "index.html").exists():
        print("nothing is published in html/ yet: run `make bench` or `python -m tools.run.asv_project publish`")
        return 1
    exec_asv(asv_command(args))


if __name__ == "__main__":
    raise SystemExit(main())
