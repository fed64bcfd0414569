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
set -euo pipefail
started=$SECONDS
wheels=$(realpath "$1"); bundle=$(realpath "$2"); out=$(realpath "$3"); shift 3
[ "${1:-}" = "--" ] && shift
call_limit=${CALL_LIMIT_S:-600}
case "$call_limit${ASV_TIMEOUT:-}" in
  *[!0-9]*) echo "CALL_LIMIT_S and ASV_TIMEOUT are whole seconds, got '$call_limit' and '${ASV_TIMEOUT:-}'" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/../.."
# From here on, whatever happens (a failed install, the command's failure or its time limit), OUT gets results/
# as it stands; asv's temporary files (a write cut short) stay out.
trap 'tar czf "$out/results.tar.gz" --exclude="*.tmp" results' EXIT
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
echo "gpu_suite: python -m tools.$1 ${*:2} ($limit)"
status=0
timeout -k 10 "$ASV_TIMEOUT" python3 -m "tools.$1" "${@:2}" || status=$?
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
  echo "gpu_suite: stopped at ASV_TIMEOUT=${ASV_TIMEOUT} s; results.tar.gz holds the benchmarks that finished" >&2
fi
exit $status
