#!/usr/bin/env bash
# `gpuprobe selftest --gpu` on a GPU node without network, from a checkout of this repository.
#
# Beforehand, on a connected machine, put the wheels the node lacks into .whl/ (ignored by git), e.g.
#   python3 -m gpuprobe wheelhouse --python 3.12 --platform manylinux_2_28_x86_64 --out .whl \
#       --only ncu-report nvtx platformdirs
# On the node:  bash scripts/device_selftest.sh [more selftest options, e.g. --check doctor ceilings]
# It installs .whl/*.whl and gpuprobe (built from this checkout, no network) into /tmp/site, runs
# the selftest into /tmp/gpuprobe-selftest, and copies summary.md, summary.json and evidence.tar.gz
# to $OUT (or gpuprobe-out/selftest-device/). Environment: BUDGET_S (default 500, leaving room for the install
# inside a 10-minute slot), PYTHON (default python3), GPUPROBE_SITE, GPUPROBE_SELFTEST_DIR.
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
site=${GPUPROBE_SITE:-/tmp/site}
run_dir=${GPUPROBE_SELFTEST_DIR:-/tmp/gpuprobe-selftest}
dest=${OUT:-$repo/gpuprobe-out/selftest-device}
py=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
cd "$repo" || exit 1
pip_target() { "$py" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" "$@"; }
if compgen -G ".whl/*.whl" >/dev/null; then
  pip_target .whl/*.whl || exit 1
fi
# gpuprobe itself from this checkout (its kernels/ and csrc/ install inside the package)
pip_target --no-build-isolation . || compgen -G ".whl/gpuprobe-*.whl" >/dev/null || exit 1
# PYTHONSAFEPATH: the checkout's own gpuprobe/ folder must not shadow the installed package
export PYTHONPATH="$site:$repo" PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1 GPUPROBE_TESTS="$repo/tests"
rm -rf "$run_dir"
"$py" -m gpuprobe selftest --gpu --out "$run_dir" --budget-s "${BUDGET_S:-500}" "$@"
rc=$?
mkdir -p "$dest"
for f in summary.md summary.json evidence.tar.gz; do
  [ -f "$run_dir/$f" ] && cp "$run_dir/$f" "$dest/"
done
exit $rc
