#!/usr/bin/env bash
# `gpuprobe selftest --gpu` on a GPU node without network, from a checkout of this repository.
#
# Beforehand, on a connected machine, put the wheels the node lacks into .whl/ (ignored by git), e.g.
#   python3 -m gpuprobe wheelhouse --python 3.12 --platform manylinux_2_28_x86_64 --out .whl \
#       --only ncu-report nvtx platformdirs
# On the node:  bash scripts/device_selftest.sh [selftest options, e.g. --check splitk_bandwidth decode_gemm]
#
# What it does, and what it promises:
# - Installs .whl/*.whl into $GPUPROBE_SITE (/tmp/site) one by one (a wheel for another Python fails
#   alone and the log names it), except any gpuprobe wheel there: gpuprobe always comes from this
#   checkout, built with pip; when the build fails, its pure-Python tree is copied instead (gpuprobe/,
#   kernels/ as gpuprobe/kernels, csrc/ as gpuprobe/csrc). The log says which source was used; a stale
#   gpuprobe wheel is never installed.
# - Appends to PYTHONPATH (the site first) and runs Python from outside the checkout, so the
#   checkout's gpuprobe/ folder (without kernels/ and csrc/) can never shadow the installed one.
# - A whole-run watchdog: everything ends within WALL_S (420) seconds of the start. The selftest's
#   budget (--budget-s, which its plan is made for) is what the install leaves, less END_MARGIN_S (30).
#   The selftest stops itself at its budget (the check in flight is skipped, the summary and evidence
#   written); the watchdog's SIGTERM comes no sooner than 15 s after that deadline (20 s after the
#   selftest's start + budget, WALL_S - 10 by default), its SIGKILL at WALL_S - 4.
# - Ends the whole tree: every process the run started carries GPUPROBE_RUN_TAG in its environment,
#   also those in sessions of their own (check processes, ncu, an MPS daemon and its server); on exit
#   the script stops them (SIGTERM, then SIGKILL), so nothing of this run can disturb a later call.
# - Always leaves summary.md and summary.json in $OUT (or gpuprobe-out/selftest-device/): the
#   selftest's, copied every 2 s while it runs; or, when the run could not start or died before
#   writing one, a pair written on exit that says why. Also its own log, selftest.log, and
#   evidence.tar.gz when the selftest wrote one.
# Environment: WALL_S, END_MARGIN_S, BUDGET_S (overrides the computed budget), GPUPROBE_SITE,
# GPUPROBE_SELFTEST_DIR, OUT. A second call in the same lease: WALL_S=240 (docs/gpu-nodes.md).
set -u
t0=$(date +%s)
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
repo=$(cd "$(dirname "$0")/.." && pwd)
site=${GPUPROBE_SITE:-/tmp/site}
run_dir=${GPUPROBE_SELFTEST_DIR:-/tmp/gpuprobe-selftest}
work=$(mktemp -d "${TMPDIR:-/tmp}/gpuprobe-device.XXXXXX")
dest=${OUT:-$repo/gpuprobe-out/selftest-device}
wall_s=${WALL_S:-420}
margin_s=${END_MARGIN_S:-30}
reason="the script stopped before the selftest started"
args="$*"
st_pid=""
run_tag="device-selftest-$$-$t0"
export GPUPROBE_RUN_TAG="$run_tag"
mkdir -p "$dest"
log="$dest/selftest.log"
: >"$log"
say() { echo "device_selftest: $*" | tee -a "$log"; }
elapsed() { echo $(( $(date +%s) - t0 )); }
left() { echo $(( wall_s - $(elapsed) )); }

json_string() {  # a JSON string literal of $1 (control characters dropped)
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$(printf '%s' "$s" | tr -d '\000-\037')"
}

copy_out() {
  local f
  for f in summary.md summary.json evidence.tar.gz; do
    if [ -f "$run_dir/$f" ]; then
      cp "$run_dir/$f" "$dest/.$f.tmp" && mv -f "$dest/.$f.tmp" "$dest/$f"
    fi
  done
  return 0
}

write_fallback_summaries() {  # the run left no summary: say why, in both files
  local wall tail_lines
  wall=$(elapsed)
  tail_lines=$(tail -n 15 "$log" 2>/dev/null)
  {
    printf '{\n  "gpu": null,\n  "started": "%s",\n  "wall_s": %s,\n  "budget_s": null,\n' "$started" "$wall"
    printf '  "interrupted": false,\n  "could_not_start": true,\n  "reason": %s,\n' "$(json_string "$reason")"
    printf '  "command": %s,\n' "$(json_string "bash scripts/device_selftest.sh $args")"
    printf '  "counts": {"passed": 0, "failed": 0, "skipped": 0},\n  "environment": {},\n  "checks": [],\n'
    printf '  "log_tail": %s\n}\n' "$(json_string "$(printf '%s' "$tail_lines" | tr '\n' '|')")"
  } >"$dest/.summary.json.tmp" && mv -f "$dest/.summary.json.tmp" "$dest/summary.json"
  {
    printf '# gpuprobe selftest\n\n'
    printf -- '- started: %s; wall time %s s\n' "$started" "$wall"
    printf -- '- result: THE RUN COULD NOT START OR DIED BEFORE WRITING ITS SUMMARY: no check has a verdict\n'
    printf -- '- reason: %s\n\n' "$reason"
    printf '## Last lines of selftest.log\n\n```\n%s\n```\n' "$tail_lines"
  } >"$dest/summary.md"
}

tagged_pids() {  # processes of this run (GPUPROBE_RUN_TAG in their environment), this script left out
  local e pid
  for e in /proc/[0-9]*/environ; do
    pid=${e#/proc/}; pid=${pid%/environ}
    [ "$pid" = "$$" ] && continue
    if tr '\0' '\n' <"$e" 2>/dev/null | grep -qx "GPUPROBE_RUN_TAG=$run_tag"; then echo "$pid"; fi
  done
}

end_tree() {  # stop every process of this run still alive: SIGTERM (their clean-up), then SIGKILL
  local pids left
  pids=$(tagged_pids)
  [ -z "$pids" ] && return 0
  say "ending what the run left running: pids $(echo $pids)"
  kill -TERM $pids 2>/dev/null
  for _ in 1 2 3 4 5; do
    left=$(for p in $pids; do kill -0 "$p" 2>/dev/null && echo "$p"; done)
    [ -z "$left" ] && return 0
    sleep 1
  done
  say "still alive after SIGTERM: $(echo $left); killing"
  kill -KILL $left 2>/dev/null
  return 0
}

on_exit() {
  local rc=$?
  trap - EXIT
  end_tree
  copy_out
  if [ ! -f "$dest/summary.json" ] || [ ! -f "$dest/summary.md" ]; then
    say "no summary from the selftest: writing one that says why ($reason)"
    write_fallback_summaries
  fi
  rm -rf "$work"
  say "done in $(elapsed) s (exit $rc); files in $dest"
  exit "$rc"
}
trap on_exit EXIT
on_signal() {  # stop the selftest as the watchdog would, give it time to write its summary, then leave
  reason="stopped by a signal before the selftest wrote its summary"
  if [ -n "$st_pid" ] && kill -0 "$st_pid" 2>/dev/null; then
    kill -TERM "$st_pid" 2>/dev/null
    for _ in $(seq 20); do kill -0 "$st_pid" 2>/dev/null || break; sleep 1; done
    kill -KILL "$st_pid" 2>/dev/null
  fi
  exit 143
}
trap on_signal TERM INT HUP

export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
rm -f "$dest"/summary.md "$dest"/summary.json "$dest"/evidence.tar.gz
say "started $started; checkout $repo; site $site; wall limit ${wall_s} s"

pip_target() {  # pip install into the site, bounded by what is left of the wall time
  timeout "$(( $(left) > 30 ? $(left) - 30 : 1 ))" \
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" "$@" >>"$log" 2>&1
}

mkdir -p "$site"
rm -rf "$site/gpuprobe" "$site"/gpuprobe-*.dist-info "$site"/gpuprobe-*.egg-info
wheels=()
for w in "$repo"/.whl/*.whl; do
  [ -e "$w" ] || continue
  case "$(basename "$w")" in
    gpuprobe-*) say "ignoring $(basename "$w"): gpuprobe comes from this checkout, never from a carried wheel" ;;
    *) wheels+=("$w") ;;
  esac
done
installed=0
for w in "${wheels[@]}"; do  # one by one: a wheel for another Python or platform fails alone
  if pip_target "$w"; then
    installed=$((installed + 1))
  else
    say "installing $(basename "$w") failed (see above); going on without it"
  fi
done
[ "${#wheels[@]}" -gt 0 ] && say "installed $installed of ${#wheels[@]} carried wheel(s) from .whl/"

source_used=""
if (cd "$work" && pip_target --no-build-isolation "$repo"); then
  source_used="built from the checkout with pip"
else
  say "building gpuprobe from the checkout failed (see above): copying its pure-Python tree instead"
  rm -rf "$site/gpuprobe" "$site"/gpuprobe-*.dist-info
  if cp -r "$repo/gpuprobe" "$site/gpuprobe" && cp -r "$repo/kernels" "$site/gpuprobe/kernels" \
      && cp -r "$repo/csrc" "$site/gpuprobe/csrc"; then
    source_used="copied the checkout's tree (gpuprobe/, kernels/ as gpuprobe/kernels, csrc/ as gpuprobe/csrc)"
  else
    reason="gpuprobe could not be installed: the build failed and the checkout's tree could not be copied"
    say "$reason"; exit 1
  fi
fi
say "gpuprobe source: $source_used"

export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1 GPUPROBE_TESTS="$repo/tests"
cd "$work" || { reason="cannot enter the scratch folder $work"; exit 1; }
where=$(python3 -c "import gpuprobe, gpuprobe.kernels, gpuprobe.csrc, os; print(os.path.dirname(gpuprobe.__file__))" \
        2>>"$log")
case "$where" in
  "$site"/*) say "gpuprobe imports from $where (PYTHONPATH=$PYTHONPATH; working folder $work)" ;;
  *) reason="gpuprobe (with its kernels and csrc) does not import from $site (got '${where:-nothing}'; python3 is $(command -v python3))"
     say "$reason"; exit 1 ;;
esac

budget=${BUDGET_S:-$(( $(left) - margin_s ))}
if [ "$budget" -lt 60 ]; then
  reason="only ${budget} s left for the selftest after the install"
  say "$reason: stopping"; exit 1
fi
say "installed in $(elapsed) s; selftest budget ${budget} s; wall limit ${wall_s} s"
rm -rf "$run_dir"
reason="the selftest was started but wrote no summary (see selftest.log)"
# SIGTERM makes the selftest stop the check in flight and write the summary of what ran (a
# background job of a non-interactive shell ignores SIGINT, so the watchdog sends TERM).
python3 -m gpuprobe selftest --gpu --out "$run_dir" --budget-s "$budget" "$@" > >(tee -a "$log") 2>&1 &
st_pid=$!
# the selftest's deadline is its start + budget (+ up to 5 s to start Python and import the checks):
# TERM at least 15 s after it, SIGKILL 6 s before the wall limit
term_at=$(( $(elapsed) + budget + 20 ))
[ "$term_at" -lt $(( wall_s - 10 )) ] && term_at=$(( wall_s - 10 ))
kill_at=$(( wall_s - 4 ))
[ "$term_at" -gt "$kill_at" ] && term_at=$kill_at
while kill -0 "$st_pid" 2>/dev/null; do
  copy_out
  now=$(elapsed)
  if [ "$now" -ge "$kill_at" ]; then
    say "wall limit near: killing the selftest (pid $st_pid)"
    kill -KILL "$st_pid" 2>/dev/null
    reason="killed by the watchdog at ${now} s before writing its summary"
    break
  elif [ "$now" -ge "$term_at" ] && [ -z "${termed:-}" ]; then
    say "wall limit near: stopping the selftest (pid $st_pid)"
    kill -TERM "$st_pid" 2>/dev/null
    termed=1
  fi
  sleep 1
done
wait "$st_pid"
rc=$?
sleep 1  # let tee flush the last lines
say "selftest exit $rc"
exit "$rc"
