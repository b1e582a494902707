"""The vectorised trace attribution against brute force on random traces: push/pop stacks per call, and
decode steps per kernel (one Python loop per kernel in the references only)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gpuprobe.nsys.attribution import join_calls, push_pop_stacks
from gpuprobe.nsys.steps import label_steps_by_nvtx, step_stats


def _nested_ranges(rng: np.random.Generator, owners: list[int]) -> tuple[np.ndarray, ...]:
    """Properly nested push/pop ranges per owner (a random walk of pushes and pops), integer ns."""
    s, e, o = [], [], []
    for who in owners:
        t, open_ = 0, []
        for _ in range(int(rng.integers(1, 60))):
            t += int(rng.integers(0, 4))
            if open_ and rng.random() < 0.45:
                s.append(open_.pop()); e.append(t); o.append(who)
            else:
                open_.append(t)
        while open_:
            t += int(rng.integers(0, 3))
            s.append(open_.pop()); e.append(t); o.append(who)
    return np.array(s, np.int64), np.array(e, np.int64), np.array(o, np.int64)


def _stack_brute(s, e, o, label, labels, who, qs, qe) -> tuple[str, ...]:
    """The innermost range of the thread holding the call (the latest started), and the ranges holding it:
    a range that ended the instant its sibling started is not on the sibling's stack."""
    held = [i for i in range(len(s)) if o[i] == who and s[i] <= qs and e[i] >= qe]
    if not held:
        return ()
    inner = max(held, key=lambda i: (s[i], -e[i]))
    # an ancestor is still open when the inner range opens: it ends later, or it is zero-length (its end
    # comes after the starts of its instant)
    chain = sorted((i for i in held if s[i] <= s[inner] and e[i] >= e[inner]
                    and (i == inner or e[i] > s[inner] or e[i] == s[i])), key=lambda i: (s[i], -e[i]))
    return tuple(labels[label[i]] for i in chain)


@pytest.mark.parametrize("seed", range(40))
def test_push_pop_stacks_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    owners = [7, 9, 11][: int(rng.integers(1, 4))]
    s, e, o = _nested_ranges(rng, owners)
    labels = ["decode", "layer0", "attention", "mlp", "norm"]
    label = rng.integers(0, len(labels), len(s))
    m = int(rng.integers(1, 80))
    q_owner = rng.choice(owners + [13], m)
    q_start = rng.integers(0, int(e.max()) + 2, m)
    q_end = q_start + rng.integers(0, 3, m)
    codes, tuples, broken = push_pop_stacks(s, e, o, label, labels, q_owner, q_start, q_end)
    assert broken == 0
    got = [tuples[c] if c >= 0 else () for c in codes]
    want = [_stack_brute(s, e, o, label, labels, w, a, b) for w, a, b in zip(q_owner, q_start, q_end)]
    assert got == want


@pytest.mark.parametrize("seed", range(12))
def test_push_pop_stacks_hold_with_unclosed_ranges_and_any_time_span(seed):
    """Outermost ranges that never closed end after everything; times spread over about 2**61 ns (too wide for
    one (owner, time) key per range: read by their rank instead) give the stacks of the same trace unspread,
    and both match brute force."""
    from gpuprobe.nsys.attribution import _NEVER

    rng = np.random.default_rng(500 + seed)
    owners = [3, 8, 21, 40][: int(rng.integers(2, 5))]
    s, e, o = _nested_ranges(rng, owners)
    roots = np.flatnonzero([not any(o[j] == o[i] and s[j] <= s[i] and e[j] >= e[i] and j != i
                                    for j in range(len(s))) for i in range(len(s))])
    e = e.copy()
    e[roots[rng.random(len(roots)) < 0.5]] = _NEVER
    labels = ["decode", "layer0", "attention", "mlp"]
    label = rng.integers(0, len(labels), len(s))
    m = 60
    q_owner = rng.choice(owners + [99], m)
    q_start = rng.integers(0, int(s.max()) + 3, m)
    q_end = q_start + rng.integers(0, 3, m)
    want = [_stack_brute(s, e, o, label, labels, w, a, b) for w, a, b in zip(q_owner, q_start, q_end)]
    for scale in (1, (1 << 61) // (int(q_end.max()) + 1)):
        spread = lambda t: np.where(t == _NEVER, _NEVER, t * scale)  # noqa: E731
        codes, tuples, broken = push_pop_stacks(spread(s), spread(e), o, label, labels, q_owner,
                                                spread(q_start), spread(q_end))
        assert broken == 0
        assert [tuples[c] if c >= 0 else () for c in codes] == want


@pytest.mark.parametrize("seed", range(20))
def test_join_calls_match_brute_force(seed):
    """Each kernel's call: the first call of its process with its correlation id; calls in rising order (the
    search), shuffled or repeated (the hash join), and process ids too large for one key."""
    rng = np.random.default_rng(900 + seed)
    m = int(rng.integers(1, 300))
    big = seed % 4 == 3
    procs = np.array([1 << 30, 5 << 30] if big else [3, 4])
    call_process = rng.choice(procs, m)
    call_corr = rng.choice(400, m, replace=False) if seed % 2 == 0 else rng.integers(0, 400, m)
    if seed % 2 == 0:  # distinct and rising: the search
        order = np.lexsort((call_corr, call_process))
        call_process, call_corr = call_process[order], call_corr[order]
    n = int(rng.integers(1, 300))
    kernel_process = rng.choice(np.append(procs, 9), n)
    kernel_corr = rng.integers(0, 420, n)
    want = [next((j for j in range(m) if call_process[j] == p and call_corr[j] == c), -1)
            for p, c in zip(kernel_process, kernel_corr)]
    assert join_calls(kernel_process, kernel_corr, call_process, call_corr).tolist() == want


def _steps_brute(launch_ns, tid, ranges) -> list[int | None]:
    out = []
    for t, who in zip(launch_ns, tid):
        hit = None
        for i, r in ranges.iterrows():
            owner = who if r["kind"] == "push_pop" else (who >> 24 if who >= 0 else -1)
            if who >= 0 and owner == r["owner"] and r["start"] <= t <= r["end"]:
                hit = i
                break
        out.append(hit)
    return out


@pytest.mark.parametrize("seed", range(25))
def test_decode_steps_match_brute_force(seed):
    """Each kernel's step is the first (earliest-starting) outermost matching range of its thread (push/pop)
    or process (start/end) holding its launch; the per-step figures agree with a direct computation."""
    rng = np.random.default_rng(100 + seed)
    tids = [(1 << 24) | 5, (1 << 24) | 6, (2 << 24) | 7]
    n = int(rng.integers(1, 200))
    tid = rng.choice(tids, n)
    launch = np.sort(rng.uniform(0, 1000, n))
    start = launch + rng.uniform(0, 5, n)
    end = start + rng.uniform(0, 3, n)
    kernels = pd.DataFrame({"launch_s": launch * 1e-9, "thread_id": pd.array(tid, dtype="Int64"),
                            "start_s": start, "end_s": end, "time_s": end - start,
                            "op": pd.Categorical(rng.choice(["attention", "mlp"], n)),
                            "graph_node_id": pd.array([None] * n, dtype="Int64")})
    m = int(rng.integers(1, 25))
    rs = rng.uniform(0, 1000, m)
    nvtx = pd.DataFrame({"start": rs, "end": rs + rng.uniform(1, 150, m),
                         "kind": rng.choice(["push_pop", "start_end"], m),
                         "name": pd.Categorical(rng.choice(["decode b=2 c=5", "decode", "prefill"], m)),
                         "global_tid": rng.choice(tids, m), "process": rng.choice([1, 2], m), "payload": np.nan})
    nvtx["name"] = nvtx["name"].cat.set_categories(["decode b=2 c=5", "decode", "prefill"])
    nvtx.loc[0, "name"] = "decode"  # at least one step range
    got = label_steps_by_nvtx(kernels, nvtx)
    # the outermost matching ranges (a range starting before the last kept one of its owner ends is inside
    # it), numbered by start, as the labeller keeps them
    r = nvtx[nvtx["name"].astype(str).str.startswith("decode")].copy()
    r["owner"] = np.where(r["kind"] == "push_pop", r["global_tid"], r["process"])
    keep = []
    for _, g in r.groupby("owner"):
        last_end = -np.inf
        for i, a in g.sort_values(["start", "end"], ascending=[True, False]).iterrows():
            if a["start"] >= last_end:
                keep.append(i)
                last_end = a["end"]
    r = r.loc[keep].sort_values("start", kind="stable").reset_index(drop=True)
    want = _steps_brute(kernels["launch_s"].to_numpy() * 1e9, tid, r)
    assert [None if pd.isna(x) else int(x) for x in got["step"]] == want
    if got["step"].notna().any():
        stats = step_stats(got).steps
        for step, g in kernels.assign(step=want).dropna(subset=["step"]).groupby("step"):
            row = stats.loc[int(step)]
            assert row["n_kernels"] == len(g)
            assert row["kernel_time_s"] == pytest.approx(g["time_s"].sum())
            iv = sorted(zip(g["start_s"], g["end_s"]))
            busy, cur_s, cur_e = 0.0, *iv[0]
            for a, b in iv[1:]:
                if a > cur_e:
                    busy, cur_s, cur_e = busy + cur_e - cur_s, a, b
                else:
                    cur_e = max(cur_e, b)
            assert row["busy_s"] == pytest.approx(busy + cur_e - cur_s)
