#!/usr/bin/env bash
# Run the asv suite on a GPU host with no package index (docs/DESIGN.md, "GPU hosts without a package index").
#
#   bash tools/run/gpu_suite.sh WHEELHOUSE REPO_BUNDLE OUT -- run.asv_project run HEAD^!   (python -m tools.run.asv_project ...)
#   bash tools/run/gpu_suite.sh WHEELHOUSE REPO_BUNDLE OUT -- run.gate BASE HEAD ...       (python -m tools.run.gate ...)
#
# Installs asv and its helpers from WHEELHOUSE (shared/offline/wheels) beside the host's torch,
# without touching it. The device's copy of the working tree comes with an empty .git, so asv
# gets the history from REPO_BUNDLE (`git bundle create FILE --all`): the working tree is made
# a checkout of it, keeping its files (the benchmarks asv runs are the working tree's). Runs
# `python -m tools.<command> ...` and always leaves results.tar.gz in OUT, with every benchmark
# that finished (asv saves a commit's results after each benchmark, tools/run/asv_patches.py),
# also when the command fails or is stopped.
#
# Time limit: the command is stopped (SIGTERM, SIGKILL 10 s later) after ASV_TIMEOUT seconds. Unset,
# ASV_TIMEOUT is 90% of CALL_LIMIT_S (the limit of the call running this script, default 600 s),
# counted from this script's start, so the tarball is written before the call's own limit kills
# everything. ASV_TIMEOUT=0 or CALL_LIMIT_S=0: no limit.
#
# Host state: a `start` line before the command and an `end` line after it (also when it fails or is
# stopped, before the tarball) record the GPUs' clocks, power, temperature and throttle reasons through
# NVML (tools/run/host_state.py) in results/<machine>/host-state.jsonl, a file asv and tools/reporting
# do not read (they read *.json). A record that cannot be made fails nothing.
set -euo pipefail
started=$SECONDS
wheels=$(realpath "$1"); bundle=$(realpath "$2"); out=$(realpath "$3"); shift 3
[ "${1:-}" = "--" ] && shift
command=("$@")
call_limit=${CALL_LIMIT_S:-600}
case "$call_limit${ASV_TIMEOUT:-}" in
  *[!0-9]*) echo "CALL_LIMIT_S and ASV_TIMEOUT are whole seconds, got '$call_limit' and '${ASV_TIMEOUT:-}'" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/../.."
# From here on, whatever happens (a failed install, the command's failure or its time limit), OUT gets results/
# as it stands; asv's temporary files (a write cut short) stay out.
record=""
host_state() {  # PHASE NOTE: one line of the GPUs' state in $record, never failing the script
  [ -n "$record" ] || return 0
  timeout -k 5 60 python3 -m tools.run.host_state --phase "$1" --record "$record" --note "$2" -- "${command[@]}" ||
    echo "gpu_suite: no $1 line in $record" >&2
}
finish() {
  local status=$?
  host_state end "exit status $status"
  tar czf "$out/results.tar.gz" --exclude="*.tmp" results
}
trap finish EXIT
trap 'exit 143' TERM INT
site=/tmp/asv-offline-site
python3 -m pip install -q --no-index --no-deps --upgrade --target "$site" $(ls "$wheels"/*.whl | grep -vE '/(pip|setuptools|wheel)-')
export PYTHONPATH="$site" PATH="$site/bin:$PATH" PIP_NO_INDEX=1 PIP_FIND_LINKS="$wheels"
# Hosts whose Python writes no bytecode (PYTHONDONTWRITEBYTECODE=1 on the H100 image) compile
# torch's modules from source in every process asv starts (8 s for dynamo and inductor alone).
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/estimators-pycache
# Always: a device kept warm between calls keeps the .git of the previous call's bundle.
git fetch -q --update-head-ok "$bundle" "+refs/heads/*:refs/heads/*"
git reset -q --mixed main
# The machine as tools.run.asv_project names it (ESTIMATORS_ASV_MACHINE, else the GPU and preset).
if machine=$(timeout -k 5 120 python3 -c 'from tools.run.asv_project import machine_name; print(machine_name())') && [ -n "$machine" ]; then
  record="results/$machine/host-state.jsonl"
else
  echo "gpu_suite: the machine's name is unknown: no host-state lines" >&2
fi
if [ -z "${ASV_TIMEOUT:-}" ]; then
  ASV_TIMEOUT=0
  if [ "$call_limit" -gt 0 ]; then
    ASV_TIMEOUT=$(( call_limit * 9 / 10 - (SECONDS - started) ))
    if [ "$ASV_TIMEOUT" -le 0 ]; then
      echo "no time left for asv: $((SECONDS - started)) s of CALL_LIMIT_S=$call_limit went to the setup" >&2
      exit 1
    fi
  fi
fi
limit="stopped after ${ASV_TIMEOUT} s"; [ "$ASV_TIMEOUT" -gt 0 ] || limit="no time limit"
host_state start "CALL_LIMIT_S=$call_limit ASV_TIMEOUT=$ASV_TIMEOUT"
echo "gpu_suite: python -m tools.$1 ${*:2} ($limit)"
status=0
timeout -k 10 "$ASV_TIMEOUT" python3 -m "tools.$1" "${@:2}" || status=$?
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
  echo "gpu_suite: stopped at ASV_TIMEOUT=${ASV_TIMEOUT} s; results.tar.gz holds the benchmarks that finished" >&2
fi
exit $status
