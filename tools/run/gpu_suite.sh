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
# `python -m tools.<command> ...` (stopped after ASV_TIMEOUT seconds if set) and leaves
# results.tar.gz in OUT, whatever asv finished.
set -euo pipefail
wheels=$(realpath "$1"); bundle=$(realpath "$2"); out=$(realpath "$3"); shift 3
[ "${1:-}" = "--" ] && shift
site=/tmp/asv-offline-site
python3 -m pip install -q --no-index --no-deps --upgrade --target "$site" $(ls "$wheels"/*.whl | grep -vE '/(pip|setuptools|wheel)-')
export PYTHONPATH="$site" PATH="$site/bin:$PATH" PIP_NO_INDEX=1 PIP_FIND_LINKS="$wheels"
# Hosts whose Python writes no bytecode (PYTHONDONTWRITEBYTECODE=1 on the H100 image) compile
# torch's modules from source in every process asv starts (8 s for dynamo and inductor alone).
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/estimators-pycache
cd "$(dirname "$0")/../.."
# Always: a device kept warm between calls keeps the .git of the previous call's bundle.
git fetch -q --update-head-ok "$bundle" "+refs/heads/*:refs/heads/*"
git reset -q --mixed main
status=0
timeout "${ASV_TIMEOUT:-0}" python3 -m "tools.$1" "${@:2}" || status=$?
tar czf "$out/results.tar.gz" results
exit $status
