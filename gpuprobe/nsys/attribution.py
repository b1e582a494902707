"""Which NVTX ranges, op and layer each kernel of an nsys trace belongs to.

A kernel belongs to the ranges open on the thread that *launched* it, at the time it was launched
(not to whatever range is open while the GPU runs it, which with an asynchronous queue is often a
later one): the kernel is joined to its CUDA runtime or driver launch call by (process, correlation
id), and that call's thread and interval are matched against NVTX ranges. A range holds a call when
it starts at or before the call starts and ends at or after the call ends, as ``nsys stats``
``nvtx_kern_sum`` counts. Push/pop ranges (event type 59) belong to one thread; start/end ranges
(60) may end on another thread, so they are matched per process. Ranges of a named domain are
spelled ``domain@name``, as the ncu readers do.

A kernel replayed from a CUDA graph (``graph_node_id`` set, traced with ``--cuda-graph-trace=node``)
carries the correlation id of its ``cudaGraphLaunch``, so it takes the ranges around the graph
launch; :func:`align_to_eager` maps such kernels to ops by aligning each launch's kernel sequence
with an eager, NVTX-ranged step of the same shapes.

Op and layer come from the stack by :func:`gpuprobe.ncu.attribution.default_rule` (the one rule of
docs/contracts.md); a kernel with no known range is named by the kernel rule table
(:func:`gpuprobe.kernel_rules.classifier`), else ``other:<short name>``. ``op_source`` says which.
"""
from __future__ import annotations

import difflib
from typing import Sequence

import numpy as np
import pandas as pd

from gpuprobe.kernel_rules import KernelClassifier, classifier
from gpuprobe.ncu.attribution import AttributionRule, attribute, default_rule


def range_label(name: str, domain: str | None) -> str:
    """``domain@name`` for a named domain, ``name`` for the default one."""
    return f"{domain}@{name}" if isinstance(domain, str) and domain else name


_NEVER = np.iinfo(np.int64).max  # the end of a range that never closed


def _int_times(values: np.ndarray) -> np.ndarray:
    """Float ns (``inf`` for an unclosed range) -> int64 ns."""
    v = np.asarray(values, dtype=float)
    out = np.full(len(v), _NEVER, dtype=np.int64)
    fin = np.isfinite(v)
    out[fin] = v[fin].astype(np.int64)
    return out


def join_calls(kernel_process: np.ndarray, kernel_corr: np.ndarray, call_process: np.ndarray,
               call_corr: np.ndarray) -> np.ndarray:
    """For each kernel: the position of its launch call (same process and correlation id; the first such
    call), -1 where the trace has none. A search where the calls' keys rise (the usual trace), else a hash
    join."""
    if len(call_corr) == 0 or len(kernel_corr) == 0:
        return np.full(len(kernel_corr), -1, dtype=np.int64)
    small = (call_process.min() >= 0 and kernel_process.min() >= 0 and call_corr.min() >= 0
             and kernel_corr.min() >= 0 and max(call_process.max(), kernel_process.max()) < 1 << 23
             and max(call_corr.max(), kernel_corr.max()) < 1 << 40)
    if small:  # one int64 key per pair
        call_key = (call_process << 40) | call_corr
        kernel_key = (kernel_process << 40) | kernel_corr
        if (call_key[1:] > call_key[:-1]).all():  # the usual trace: ids rise with the calls, a search each
            at = np.minimum(call_key.searchsorted(kernel_key), len(call_key) - 1)
            return np.where(call_key[at] == kernel_key, at, -1)
        keys, wanted = pd.Index(call_key), pd.Index(kernel_key)  # a plain hash join
    else:
        keys = pd.MultiIndex.from_arrays([call_process, call_corr])
        wanted = pd.MultiIndex.from_arrays([kernel_process, kernel_corr])
    first = ~keys.duplicated(keep="first")
    index = keys[first]
    pos = index.get_indexer(wanted)
    where = np.flatnonzero(first)
    return np.where(pos >= 0, where[np.maximum(pos, 0)], -1)


class _Stacks:
    """Distinct stacks as (parent stack, label) pairs, each a tuple of labels built once."""

    def __init__(self, labels: Sequence[str]):
        self.labels = list(labels)
        self.parent: list[int] = []
        self.label: list[int] = []

    def add_level(self, parent_code: np.ndarray, label: np.ndarray) -> np.ndarray:
        width = len(self.labels) + 1
        keys = (parent_code.astype(np.int64) + 1) * width + label.astype(np.int64)
        uniq, inv = _dense_unique(keys)
        offset = len(self.parent)
        self.parent.extend((uniq // width - 1).tolist())
        self.label.extend((uniq % width).tolist())
        return offset + inv

    def tuples(self) -> list[tuple[str, ...]]:
        out: list[tuple[str, ...]] = []
        for p, lab in zip(self.parent, self.label):
            out.append((out[p] if p >= 0 else ()) + (self.labels[lab],))
        return out


def _dense_unique(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_inverse=True)`` for non-negative keys; by a table over the key range when
    that range is small next to the count (no sort), by ``np.unique`` otherwise."""
    if len(keys) == 0 or keys.min() < 0 or keys.max() >= 4 * len(keys) + 1024:
        return np.unique(keys, return_inverse=True)
    seen = np.zeros(int(keys.max()) + 1, dtype=bool)
    seen[keys] = True
    uniq = np.flatnonzero(seen)
    rank = np.cumsum(seen, dtype=np.int64) - 1
    return uniq, rank[keys]


def _owner_time_keys(owner: np.ndarray, times: list[np.ndarray],
                     q_owner: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, int]:
    """Owners as ranks (``q_owner`` ranked in the same list, -1 for an owner without ranges) and ``times``
    as they are when non-negative and small enough, else shifted to start at 0, else (where their span times
    the owner count would overflow a key) replaced by their dense rank, so that ``rank * span + time`` orders
    by (owner, time) in one int64. Returns the ranks, the times, the calls' ranks and the span (each time
    below it)."""
    owners = np.sort(pd.unique(owner))  # few owners: a hash pass, not a sort of every range
    rank = np.searchsorted(owners, owner)
    q_rank = np.searchsorted(owners, q_owner)
    q_rank = np.where(owners[np.minimum(q_rank, len(owners) - 1)] == q_owner, q_rank, -1)
    lo = min(int(t.min()) for t in times if len(t))
    hi = max(int(t.max()) for t in times if len(t))
    fits = lambda span: (len(owners) + 1) * (2 * span + 4) < 1 << 62  # noqa: E731
    if lo >= 0 and fits(hi + 1):  # times since the session's start, as nsys writes them: used as they are
        return rank.astype(np.int64), times, q_rank, hi + 1
    if fits(hi - lo + 1):
        return rank.astype(np.int64), [t - lo for t in times], q_rank, hi - lo + 1
    every = np.unique(np.concatenate(times))
    return rank.astype(np.int64), [np.searchsorted(every, t) for t in times], q_rank, len(every)


def _range_order(key: np.ndarray, e: np.ndarray) -> np.ndarray | None:
    """The order by (``key``, longer first): a stable sort of ``key`` (fast on the nearly sorted ranges of
    a trace), then each run of equal keys ordered by end, latest first; None where that is the order given."""
    step = key[1:] > key[:-1]
    if step.all() or ((key[1:] >= key[:-1]) & (step | (e[1:] <= e[:-1]))).all():
        return None
    o = np.argsort(key, kind="stable")
    k = key[o]
    tie = np.flatnonzero(k[1:] == k[:-1])
    if len(tie):
        at = np.unique(np.concatenate([tie, tie + 1]))
        sub = o[at]
        o[at] = sub[np.lexsort((-e[sub], key[sub]))]
    return o


def _depths(rank: np.ndarray, s: np.ndarray, e: np.ndarray, span: int) -> np.ndarray:
    """Nesting depth of each range (sorted by owner rank, start, longer first; times below ``span``): its
    place among its owner's ranges less the ranges of that owner closed before it opens. At one instant an
    end comes before a start, except a zero-length range's end, which comes after (it closes after it
    opens): the event sweep of ``nsys stats``, as keys ``2 * t + kind`` searched in one sort of the ends."""
    width = 2 * span + 4
    end_key = rank * width + 2 * e + np.where(e > s, 0, 2)
    end_key.sort()
    return np.arange(len(s)) - np.searchsorted(end_key, rank * width + 2 * s + 1)


def push_pop_stacks(s: np.ndarray, e: np.ndarray, owner: np.ndarray, label: np.ndarray, labels: Sequence[str],
                    q_owner: np.ndarray, q_start: np.ndarray, q_end: np.ndarray) -> tuple[np.ndarray, list, int]:
    """Nested (push/pop) ranges of each owner thread, and calls (``q_*``): per call the code of the stack
    of ranges of its thread that hold it (start <= call start, end >= call end), -1 for none; the stacks
    (tuples, outermost first) by code; how many ranges were not nested in their thread (kept as roots).

    All in numpy, each step one sort or search over int64 keys of (owner, time): depths by the event sweep,
    parents by a search per depth level, and per call the last range started before it, walked up to the
    innermost one that holds the call."""
    n = len(s)
    if n == 0 or len(q_start) == 0:
        return np.full(len(q_start), -1, dtype=np.int64), [], 0
    closed = e != _NEVER
    rank, (ts, te, tq), q_rank, span = _owner_time_keys(owner, [s, e[closed], q_start], q_owner)
    e_key = np.full(n, span, dtype=np.int64)  # an unclosed range ends after everything
    e_key[closed] = te
    span += 1
    start_key = rank * span + ts
    order = _range_order(start_key, e_key)
    if order is not None:
        s, e, owner, label = s[order], e[order], owner[order], label[order]
        rank, ts, e_key, start_key = rank[order], ts[order], e_key[order], start_key[order]
        del order
    depth = _depths(rank, ts, e_key, span)
    del e_key
    parent = np.full(n, -1, dtype=np.int64)
    code = np.full(n, -1, dtype=np.int64)
    stacks = _Stacks(labels)
    broken = 0
    prev = np.flatnonzero(depth == 0)
    code[prev] = stacks.add_level(np.full(len(prev), -1), label[prev])
    bad_depth = depth < 0
    if bad_depth.any():
        q = np.flatnonzero(bad_depth)
        code[q] = stacks.add_level(np.full(len(q), -1), label[q])
        broken += len(q)
    for d in range(1, int(depth.max()) + 1):
        q = np.flatnonzero(depth == d)
        if len(q) == 0:
            break
        j = np.searchsorted(prev, q) - 1
        par = prev[np.maximum(j, 0)]
        ok = (j >= 0) & (owner[par] == owner[q]) & (e[par] >= e[q]) & (s[par] <= s[q])
        parent[q[ok]] = par[ok]
        broken += int((~ok).sum())
        code[q] = stacks.add_level(np.where(ok, code[par], -1), label[q])
        prev = q
    del depth
    # the last range (of the call's owner) started at or before each call
    cand = np.searchsorted(start_key, np.maximum(q_rank, 0) * span + tq, side="right") - 1
    cand[(q_rank < 0) | (cand >= 0) & (rank[np.maximum(cand, 0)] != q_rank)] = -1
    while True:  # up to the innermost range that holds the whole call: at most the nesting depth
        c = np.maximum(cand, 0)
        out = (cand >= 0) & (e[c] < q_end)
        if not out.any():
            break
        cand[out] = parent[cand[out]]
    return np.where(cand >= 0, code[np.maximum(cand, 0)], -1), stacks.tuples(), broken


def start_end_sets(s: np.ndarray, e: np.ndarray, owner: np.ndarray, label: np.ndarray, labels: Sequence[str],
                   q_owner: np.ndarray, q_start: np.ndarray, q_end: np.ndarray) -> tuple[np.ndarray, list]:
    """Start/end ranges (any overlap) of each owner process, and calls: per call the code of the tuple of
    ranges that hold it (ordered by start, longer first), -1 for none; the tuples by code. One pass per
    range boundary in Python, numpy per call; only a call that some open range ends inside is checked
    on its own."""
    m = len(q_start)
    result = np.full(m, -1, dtype=np.int64)
    interned: dict[tuple[str, ...], int] = {}
    if len(s) == 0 or m == 0:
        return result, []

    def intern(t: tuple[str, ...]) -> int:
        if not t:
            return -1
        return interned.setdefault(t, len(interned))

    for who in np.unique(owner):
        mine = owner == who
        rs, re_, lab = s[mine], e[mine], label[mine]
        o = np.lexsort((-re_, rs))
        rs, re_, lab = rs[o], re_[o], lab[o]
        qi = np.flatnonzero(q_owner == who)
        if len(qi) == 0:
            continue
        closes = np.where(re_ == _NEVER, _NEVER, re_ + 1)
        bounds = np.unique(np.concatenate([rs, closes]))
        seg_code = np.full(len(bounds), -1, dtype=np.int64)
        active: list[int] = []
        j = 0
        for k, b in enumerate(bounds.tolist()):
            while j < len(rs) and rs[j] <= b:
                active.append(j)
                j += 1
            active = [a for a in active if re_[a] >= b]
            seg_code[k] = intern(tuple(labels[lab[a]] for a in active))
        qs, qe = q_start[qi], q_end[qi]
        k = np.searchsorted(bounds, qs, side="right") - 1
        result[qi] = np.where(k >= 0, seg_code[np.maximum(k, 0)], -1)
        ends = np.sort(re_)
        inside = np.searchsorted(ends, qe, side="left") - np.searchsorted(ends, qs, side="left") > 0
        for i in np.flatnonzero(inside):  # a range ends during the call: it does not hold it
            held = (rs <= qs[i]) & (re_ >= qe[i])
            result[qi[i]] = intern(tuple(labels[lab[a]] for a in np.flatnonzero(held)))
    tuples: list[tuple[str, ...]] = [()] * len(interned)
    for t, c in interned.items():
        tuples[c] = t
    return result, tuples


def _label_codes(nvtx: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Per range: the code of its label (``domain@name``), and the labels, each built once."""
    name = nvtx["name"].astype("category")
    domain = nvtx["domain"].astype("category")
    nc = name.cat.codes.to_numpy(np.int64)
    dc = domain.cat.codes.to_numpy(np.int64)
    pair = (nc + 1) * (len(domain.cat.categories) + 1) + (dc + 1)
    uniq, inv = _dense_unique(pair)
    ncat, dcat = list(name.cat.categories), list(domain.cat.categories)
    width = len(dcat) + 1
    labels = [range_label(ncat[u // width - 1] if u // width > 0 else "",
                          dcat[u % width - 1] if u % width > 0 else None) for u in uniq.tolist()]
    return inv.astype(np.int64), labels


def nvtx_stacks(kernel_process: np.ndarray, kernel_corr: np.ndarray, calls, nvtx: pd.DataFrame,
                null: int) -> tuple[pd.DataFrame, list[str]]:
    """Per kernel (positional): ``thread_id`` (launching ``globalTid``), ``launch_s`` (the call's start,
    seconds), ``launch_api`` (the call's name), ``nvtx_stack`` (push/pop ranges of the launching thread)
    and ``nvtx_ranges`` (start/end ranges of its process), both outermost first; and warnings.
    ``calls``: :class:`gpuprobe.nsys.sqlite_reader.LaunchCalls`; ``null``: the readers' missing value."""
    n = len(kernel_corr)
    warnings: list[str] = []
    ok = (kernel_corr != null) & (kernel_process != null)
    pos = np.full(n, -1, dtype=np.int64)
    if ok.any() and len(calls):
        pos[ok] = join_calls(kernel_process[ok], kernel_corr[ok], calls.process, calls.correlation_id)
    known = pos >= 0
    kp = np.maximum(pos, 0)
    thread = np.where(known, calls.global_tid[kp] if len(calls) else null, null)
    cstart = np.where(known, calls.start[kp] if len(calls) else 0, 0)
    cend = np.where(known, calls.end[kp] if len(calls) else 0, 0)
    empty: tuple[str, ...] = ()
    stack = np.full(n, None, dtype=object)
    ranges = np.full(n, None, dtype=object)
    stack_code = np.full(n, -1, dtype=np.int64)
    range_code = np.full(n, -1, dtype=np.int64)
    stack_tuples: list = []
    range_tuples: list = []
    if len(nvtx) and known.any():
        lab, labels = _label_codes(nvtx)
        s, e = _int_times(nvtx["start"].to_numpy()), _int_times(nvtx["end"].to_numpy())
        kind = nvtx["kind"]
        qi = np.flatnonzero(known)
        pp = (kind.cat.codes.to_numpy() == list(kind.cat.categories).index("push_pop")
              if isinstance(kind.dtype, pd.CategoricalDtype) and "push_pop" in list(kind.cat.categories)
              else (kind.astype(object) == "push_pop").to_numpy(dtype=bool))
        if pp.any():
            mine = (lambda a: a) if pp.all() else (lambda a: a[pp])  # noqa: E731 (no copy of every range)
            codes, stack_tuples, broken = push_pop_stacks(
                mine(s), mine(e), mine(nvtx["global_tid"].to_numpy(np.int64)), mine(lab), labels,
                thread[qi], cstart[qi], cend[qi])
            stack_code[qi] = codes
            if broken:
                warnings.append(f"{broken} push/pop NVTX range(s) are not nested inside the range open on their "
                                "thread; they are taken as outermost ranges")
        se = ~pp
        if se.any():
            codes, range_tuples = start_end_sets(s[se], e[se], nvtx["process"].to_numpy(np.int64)[se], lab[se],
                                                 labels, thread[qi] >> 24, cstart[qi], cend[qi])
            range_code[qi] = codes
    st = np.empty(len(stack_tuples) + 1, dtype=object)
    st[:] = [*stack_tuples, empty]
    stack = st[stack_code]  # -1 -> the last element: ()
    rt = np.empty(len(range_tuples) + 1, dtype=object)
    rt[:] = [*range_tuples, empty]
    ranges = rt[range_code]
    api = pd.Categorical.from_codes(np.where(known, calls.name.codes[kp] if len(calls) else -1, -1).astype(np.int32),
                                    categories=calls.name.categories if len(calls) else pd.Index([], dtype=object))
    thread_ids = pd.arrays.IntegerArray(np.where(known, thread, 0).astype(np.int64), ~known)
    return pd.DataFrame({
        "thread_id": thread_ids,
        "launch_s": np.where(known, cstart * 1e-9, np.nan),
        "launch_api": api,
        "nvtx_stack": stack, "nvtx_ranges": ranges,
    }), warnings


def assign_ops(df: pd.DataFrame, rule: AttributionRule = default_rule,
               classify: KernelClassifier | None = None) -> pd.DataFrame:
    """``df`` with ``op``, ``layer`` (nullable int) and ``op_source`` by the one attribution of every reader
    (:func:`gpuprobe.ncu.attribution.attribute`: NVTX first, then the kernel rule table). Rows whose
    ``op_source`` is already ``eager_alignment`` keep their op and layer."""
    keep = (df["op_source"] == "eager_alignment").to_numpy(dtype=bool) if "op_source" in df.columns \
        else np.zeros(len(df), dtype=bool)
    out = attribute(df, rule, classify=classify or classifier())
    if keep.any():
        for col in ("op", "layer", "op_source"):
            merged = out[col].astype(object).to_numpy(copy=True)
            merged[keep] = df[col].astype(object).to_numpy()[keep]
            out[col] = pd.array(merged, dtype="Int64") if col == "layer" else merged
    return out


def graph_launches(df: pd.DataFrame) -> list[pd.DataFrame]:
    """The kernels of each CUDA graph launch (rows with ``graph_node_id``), grouped by (process,
    correlation id), each in GPU start order, launches in time order."""
    g = df[df["graph_node_id"].notna()]
    if g.empty:
        return []
    groups = [grp.sort_values("start_s", kind="stable") for _, grp in g.groupby(["process", "correlation_id"])]
    return sorted(groups, key=lambda x: float(x["start_s"].iloc[0]))


def align_sequences(a: Sequence[str], b: Sequence[str]) -> list[tuple[int, int]]:
    """Pairs (i, j) of positions of ``a`` and ``b`` that correspond: equal runs of the longest matching
    blocks, plus replaced runs of equal length (a kernel whose name differs, e.g. another GEMM variant
    in the graph than in the eager step), paired in order. Inserted or deleted kernels stay unpaired."""
    pairs: list[tuple[int, int]] = []
    sm = difflib.SequenceMatcher(None, list(a), list(b), autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            pairs += list(zip(range(i1, i2), range(j1, j2)))
    return pairs


def align_to_eager(df: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Graph-replayed kernels of ``df`` take ``nvtx_stack``, ``op`` and ``layer`` of the kernel they align
    with in ``reference`` (the kernels of one eager step, in launch order, with ops assigned);
    ``op_source`` becomes ``eager_alignment`` for them and ``df.attrs['alignment']`` records, per graph
    launch, how many kernels were paired."""
    out = df.copy()
    if "op_source" not in out.columns:
        out["op_source"] = None
    out["op_source"] = out["op_source"].astype(object)
    out["op"] = out["op"].astype(object) if "op" in out.columns else None
    if "layer" not in out.columns:
        out["layer"] = pd.array([None] * len(out), dtype="Int64")
    ref = reference.sort_values("start_s", kind="stable")
    ref_names = list(ref["kernel_short"])
    stats = []
    for launch in graph_launches(out):
        pairs = align_sequences(list(launch["kernel_short"]), ref_names)
        for i, j in pairs:
            ix, r = launch.index[i], ref.iloc[j]
            outer = tuple(out.at[ix, "nvtx_stack"] or ())
            out.at[ix, "nvtx_stack"] = outer + tuple(x for x in (r["nvtx_stack"] or ()) if x not in outer)
            out.at[ix, "op"] = r["op"]
            out.at[ix, "layer"] = r["layer"]
            out.at[ix, "op_source"] = "eager_alignment"
        stats.append({"correlation_id": int(launch["correlation_id"].iloc[0]), "kernels": len(launch),
                      "reference_kernels": len(ref_names), "paired": len(pairs)})
    out.attrs = dict(df.attrs)
    out.attrs["alignment"] = stats
    return out
