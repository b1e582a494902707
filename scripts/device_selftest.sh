#!/usr/bin/env bash
# `gpuprobe selftest --gpu` on a GPU node without network, from a checkout of this repository.
#
# Beforehand, on a connected machine, put the wheels the node lacks into .whl/ (ignored by git), e.g.
#   python3 -m gpuprobe wheelhouse --python 3.12 --platform manylinux_2_28_x86_64 --out .whl \
#       --only ncu-report nvtx platformdirs
# On the node:  bash scripts/device_selftest.sh [more selftest options, e.g. --check doctor ceilings]
# It installs .whl/*.whl and gpuprobe (built from this checkout, no network) into /tmp/site, runs
# the selftest into /tmp/gpuprobe-selftest, and copies summary.md, summary.json, evidence.tar.gz and
# its own log (selftest.log) to $OUT (or gpuprobe-out/selftest-device/).
#
# Time: the whole script ends within DEADLINE_S (default 570) of its start, inside a slot that is
# killed at 600 s. The selftest's total budget is what is left after the install, less END_MARGIN_S
# (default 60: stopping the check in flight, up to 15 s, the evidence archive and the copy). A
# watchdog stops the selftest (SIGTERM: it stops the check in flight and writes the summary of what
# ran) if it is still running 40 s before the deadline, and kills it 30 s later; the summaries are
# copied to the destination every 2 s, so even a kill from outside leaves the last one there.
# Environment: DEADLINE_S, END_MARGIN_S, BUDGET_S (overrides the computed budget), PYTHON (default
# python3), GPUPROBE_SITE, GPUPROBE_SELFTEST_DIR.
set -u
t0=$(date +%s)
repo=$(cd "$(dirname "$0")/.." && pwd)
site=${GPUPROBE_SITE:-/tmp/site}
run_dir=${GPUPROBE_SELFTEST_DIR:-/tmp/gpuprobe-selftest}
dest=${OUT:-$repo/gpuprobe-out/selftest-device}
py=${PYTHON:-python3}
deadline_s=${DEADLINE_S:-570}
margin_s=${END_MARGIN_S:-60}
mkdir -p "$dest"
log="$dest/selftest.log"
: >"$log"
say() { echo "device_selftest: $*" | tee -a "$log"; }
elapsed() { echo $(( $(date +%s) - t0 )); }
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
cd "$repo" || exit 1
pip_target() { "$py" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" "$@" >>"$log" 2>&1; }
if compgen -G ".whl/*.whl" >/dev/null; then
  pip_target .whl/*.whl || { say "installing .whl/*.whl failed (see above)"; exit 1; }
fi
# gpuprobe itself from this checkout (its kernels/ and csrc/ install inside the package); else a
# gpuprobe wheel carried in .whl/ (installed above)
if ! pip_target --no-build-isolation .; then
  compgen -G ".whl/gpuprobe-*.whl" >/dev/null || { say "building gpuprobe from the checkout failed"; exit 1; }
fi
# PYTHONSAFEPATH: neither the current folder (the checkout) nor a script's folder goes on sys.path,
# so the checkout's own gpuprobe/ folder (whose kernels and csrc subpackages exist only once
# installed) never shadows the installed package; the tests folder is named explicitly.
export PYTHONPATH="$site" PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1 GPUPROBE_TESTS="$repo/tests"
where=$(cd / && "$py" -c "import gpuprobe, os; print(os.path.dirname(gpuprobe.__file__))" 2>>"$log")
case "$where" in
  "$site"/*) ;;
  *) say "gpuprobe imports from '$where', not from $site: stopping"; exit 1 ;;
esac
budget=${BUDGET_S:-$(( deadline_s - $(elapsed) - margin_s ))}
if [ "$budget" -lt 60 ]; then
  say "only ${budget} s left for the selftest after the install: stopping"; exit 1
fi
say "installed in $(elapsed) s; selftest budget ${budget} s, deadline ${deadline_s} s"
rm -rf "$run_dir"
copy_out() {
  for f in summary.md summary.json evidence.tar.gz; do
    [ -f "$run_dir/$f" ] && cp "$run_dir/$f" "$dest/.$f.tmp" && mv -f "$dest/.$f.tmp" "$dest/$f"
  done
  return 0
}
# SIGTERM makes the selftest stop the check in flight and write the summary of what ran (a
# background job of a non-interactive shell ignores SIGINT, so the watchdog sends TERM).
"$py" -m gpuprobe selftest --gpu --out "$run_dir" --budget-s "$budget" "$@" > >(tee -a "$log") 2>&1 &
st_pid=$!
stop_at=$(( deadline_s - 40 ))
while kill -0 "$st_pid" 2>/dev/null; do
  copy_out
  if [ "$(elapsed)" -ge "$stop_at" ]; then
    say "deadline near: stopping the selftest (pid $st_pid)"
    kill -TERM "$st_pid" 2>/dev/null
    for _ in $(seq 30); do kill -0 "$st_pid" 2>/dev/null || break; sleep 1; done
    kill -KILL "$st_pid" 2>/dev/null
    break
  fi
  sleep 2
done
wait "$st_pid"
rc=$?
sleep 1  # let tee flush the last lines
copy_out
say "done in $(elapsed) s (selftest exit $rc); files in $dest"
exit $rc
