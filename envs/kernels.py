"""Compiled kernels of the observation encoder (numba), bit-identical to its numpy form.

:func:`envs.spaces.encode_and_mask` at 100 hosts is some forty numpy operations on arrays of a
few hundred values, each costing about a microsecond of call overhead whatever its size. These
kernels fuse them into loops. They perform the same IEEE-754 operations, in the same order, on
the same values and in the same precision as the numpy expressions they stand for (float32
where numpy computes in float32, Python-float constants and thresholds rounded to float32 as
numpy 2 does), so the observation vector and the mask are the same to the last bit:

* ``.sum()`` of a float32 array is numpy's pairwise summation (eight accumulators over blocks
  of at most 128 terms, halved recursively above that) added to a starting ``0.0``;
  :func:`_pairwise` repeats it term for term.
* ``max`` and ``min`` are written as numpy's ``maximum`` and ``minimum`` behave: a NaN wins,
  and of two equal values (``-0.0`` and ``0.0``) the second operand is returned. A maximum does
  not depend on the order of its terms except for which of two tying zeros it returns. Maxima
  over a service's instances are floored at ``0.0``, which settles that. Host maxima and
  minima are stored as they are, and numpy's vectorised reduction picks its zero in an order
  of its own: where both zeros tie for one, :func:`aggregate` says so and the caller
  recomputes those reductions with numpy.
* The two matrix products (the per-service sums and the request-weighted sums) are left to
  numpy: BLAS accumulates in blocks and with fused multiply-adds, in an order that depends on
  the library and the processor (a sequential float32 sum does not reproduce it, even for the
  0/1 membership). :func:`aggregate` lays out their operands as the numpy form does (the same
  shapes and strides), and the caller multiplies them.
* Transcendental functions (``log1p`` of the queue feature, ``sin`` and ``cos`` of the time of
  day) are not in them: numba calls the C library's, which may differ from numpy's vectorised
  ones in the last bit, so those stay numpy calls between kernels.
* Counts, any-tests and comparisons are exact in any order.

What depends on placement alone (which slots are used, by which service, on which host) is
derived once per placement by :func:`placement` into two workspaces that
:class:`envs.spaces.EncodeCache` keeps: a float32 one (:func:`workspace_layout`; also the
scratch of the per-call kernels, so they allocate nothing) and an int64 one (the ``W_*``
offsets). Which column of the metric tables feeds which feature is not compiled in either: it
comes in a *plan* (an int64 array indexed by the ``P_*`` offsets, built by
:mod:`envs.spaces`), so a cached compilation never outlives a change of the feature order.

``tests/envs/test_encoder_kernels.py`` checks the kernels against a numpy composition of the
same formulas, bit for bit, on environment observations and edge cases (NaN, infinities,
signed zeros, services without instances).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from sim.kernels import Real, _maximum, _minimum

# Offsets into the plan (int64): instance and host columns read, and where results land.
P_SUM_COLS = 0
"""6 instance columns averaged per service (matrix product with the membership)."""
P_SUM_TO = 6
"""6 positions of those means in a service's row (the last one holds ``log1p`` of its mean)."""
P_W_COLS = 12
"""2 instance columns averaged per service weighted by requests."""
P_W_TO = 14
"""2 positions of the weighted means in a service's row."""
P_MAX_COLS = 16
"""3 instance columns whose per-service maximum is a feature."""
P_MAX_TO = 19
"""3 positions of those maxima in a service's row."""
P_HMAX_COLS = 22
"""5 host columns whose maximum over hosts is a feature."""
P_HMAX_TO = 27
"""5 positions of those maxima among the cluster features."""
P_HMIN_COLS = 32
"""2 host columns whose scaled minimum over hosts is a feature."""
P_HMIN_TO = 34
"""2 positions of those minima among the cluster features."""
P_I_RPS = 36
"""Instance column: requests per second (the weights; summed per host)."""
P_I_UP = 37
"""Instance column: process up (> 0.5)."""
P_I_READY = 38
"""Instance column: ready (> 0.5)."""
P_I_VM_UP = 39
"""Instance column: VM up (< 0.5 strands the instance)."""
P_I_ERR = 40
"""Instance column: error rate (erroring above the ``errors`` threshold)."""
P_I_MEM = 41
"""Instance column: memory use (full above the ``memory`` threshold)."""
P_H_UP = 42
"""Host column: up (> 0.5)."""
P_H_CPU = 43
"""Host column: CPU utilisation (mean over hosts)."""
P_HMAX_LINK = 44
"""Which of the host maxima is the link loss (a positive one enables ``repair_link``)."""
P_MAXI_MEM = 45
"""Which of the per-service maxima is memory use."""
P_MAXI_ERR = 46
"""Which of the per-service maxima is the error rate."""
P_RATIO_TO = 47
"""Position of the replica ratio in a service's row."""
P_ADVISORY_TO = 48
"""Position of the advisory flag in a service's row."""
P_C_UP = 49
"""Position of the up-host share among the cluster features."""
P_C_CPU = 50
"""Position of the mean host CPU utilisation among the cluster features."""
P_C_DARK = 51
"""Position of the unhealthy-instance share among the cluster features."""
P_C_RPS = 52
"""Position of the requests per host among the cluster features."""
P_C_SHED = 53
"""Position of the shed fraction among the cluster features."""
P_C_SIN = 54
"""Position of the sine of the time of day among the cluster features."""
P_C_COS = 55
"""Position of the cosine of the time of day among the cluster features."""
P_N_PER = 56
"""Features per service (the width of a service's row)."""
P_N_CLUSTER = 57
"""Number of cluster features (after the service rows)."""
P_N_ACTIONS = 58
"""Actions per service in the action table (the first three aim at an instance)."""
PLAN_SIZE = 59
"""Length of the plan."""

# The int64 workspace of a placement: the plan; the counts below; the stack of the pairwise
# sums; the used slots (3, used), the runs (runs, 3) and the chunks (chunks, 2).
W_N_USED = PLAN_SIZE
"""Position of the number of used slots."""
W_N_RUNS = PLAN_SIZE + 1
"""Position of the number of runs (services with instances)."""
W_N_CHUNKS = PLAN_SIZE + 2
"""Position of the number of chunks (runs of consecutive used slots)."""
W_FRAMES = PLAN_SIZE + 3
"""Start of the (3, 64) stack of :func:`_pairwise`."""
W_SLOTS = W_FRAMES + 3 * 64
"""Start of the used slots."""

# Rows of the per-service block of a placement's float32 workspace.
S_COUNT = 0
"""Used slots of each service (whole numbers)."""
S_INV = 1
"""``1 / maximum(count, 1)``."""
S_RATIO = 2
"""``count / initial replicas``."""
S_W_SUM = 3
"""Scratch: the per-service sums of the request weights."""
S_QUEUE = 4
"""Scratch: the floored queue means, ``log1p``'s input."""
S_MAX = 5
"""Scratch: 3 rows, the floored per-service maxima."""
S_SICK = 8
"""Scratch: 1.0 where a service has an erroring or full instance on an up host."""
S_ROWS = 9
"""Rows of the per-service block."""
M_HMIN_SCALE = 0
"""Offset of the 2 divisors of the host minima in the float32 workspace's constants."""
M_PARTIAL = 2
"""Offset of the 64 partial sums of :func:`_pairwise` in the same section."""
M_SIZE = M_PARTIAL + 64
"""Length of that section."""


@numba.njit(inline="always")
def _pairwise_block(a: np.ndarray, lo: int, n: int) -> Real:
    """The pairwise sum of ``a[lo:lo + n]`` as numpy's, for ``n <= 128`` (in float32)."""
    if n < 8:
        res = np.float32(-0.0)
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    end = n - n % 8
    while i < end:
        k = lo + i
        r0 += a[k]
        r1 += a[k + 1]
        r2 += a[k + 2]
        r3 += a[k + 3]
        r4 += a[k + 4]
        r5 += a[k + 5]
        r6 += a[k + 6]
        r7 += a[k + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _pairwise(a: np.ndarray, lo: int, n: int, frames: np.ndarray, partial: np.ndarray) -> Real:
    """The pairwise sum of ``a[lo:lo + n]`` as numpy's (in float32).

    Blocks of at most 128 terms are summed with eight accumulators; a longer run is split in
    two at half its length rounded down to a multiple of 8 and the halves' sums are added.
    numpy recurses; this walks the same tree with an explicit stack.

    Args:
        a: One-dimensional float32 array (any stride).
        lo: First term.
        n: Number of terms.
        frames: (3, 64) int64 workspace: first term, count and stage of the open runs.
        partial: (64,) float32 workspace: sums of the finished runs not yet added.

    Returns:
        The sum; ``a.sum()`` is ``0.0`` plus this over the whole array.
    """
    if n <= 128:
        return _pairwise_block(a, lo, n)
    top = 0
    n_partial = 0
    frames[0, 0], frames[1, 0], frames[2, 0] = lo, n, 0
    while top >= 0:
        lo_t, n_t = frames[0, top], frames[1, top]
        if n_t <= 128:
            partial[n_partial] = _pairwise_block(a, lo_t, n_t)
            n_partial += 1
            top -= 1
            continue
        half = n_t // 2
        half -= half % 8
        stage = frames[2, top]
        frames[2, top] = stage + 1
        if stage == 0:  # the left half next
            top += 1
            frames[0, top], frames[1, top], frames[2, top] = lo_t, half, 0
        elif stage == 1:  # then the right half
            top += 1
            frames[0, top], frames[1, top], frames[2, top] = lo_t + half, n_t - half, 0
        else:  # both done: left + right
            n_partial -= 1
            partial[n_partial - 1] = partial[n_partial - 1] + partial[n_partial]
            top -= 1
    return partial[0]


@numba.njit(inline="always")
def _sum(a: np.ndarray, frames: np.ndarray, partial: np.ndarray) -> Real:
    """``a.sum()`` of a one-dimensional float32 array, bit for bit.

    The workspace is :func:`_pairwise`'s.
    """
    return np.float32(0.0) + _pairwise(a, 0, a.shape[0], frames, partial)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _host_extrema(host: np.ndarray, plan: np.ndarray) -> tuple[Real, ...]:
    """The 5 host maxima and 2 host minima of the plan, as numpy's but for a zero's sign.

    One pass over the hosts: a maximum does not depend on the order of its terms, except which
    of two tying zeros it returns (see :func:`_zero_tie`).
    """
    c0, c1, c2 = plan[P_HMAX_COLS], plan[P_HMAX_COLS + 1], plan[P_HMAX_COLS + 2]
    c3, c4 = plan[P_HMAX_COLS + 3], plan[P_HMAX_COLS + 4]
    d0, d1 = plan[P_HMIN_COLS], plan[P_HMIN_COLS + 1]
    m0, m1, m2, m3, m4 = host[0, c0], host[0, c1], host[0, c2], host[0, c3], host[0, c4]
    n0, n1 = host[0, d0], host[0, d1]
    for h in range(1, host.shape[0]):
        m0 = _maximum(m0, host[h, c0])
        m1 = _maximum(m1, host[h, c1])
        m2 = _maximum(m2, host[h, c2])
        m3 = _maximum(m3, host[h, c3])
        m4 = _maximum(m4, host[h, c4])
        n0 = _minimum(n0, host[h, d0])
        n1 = _minimum(n1, host[h, d1])
    return m0, m1, m2, m3, m4, n0, n1


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _zero_tie(a: np.ndarray, col: int, extremum: Real) -> bool:
    """Whether ``extremum`` of ``a[:, col]`` is a zero that both ``0.0`` and ``-0.0`` reach."""
    if extremum != 0.0:
        return False
    pos = neg = False
    for i in range(a.shape[0]):
        v = a[i, col]
        if v == 0.0:
            if math.copysign(1.0, v) < 0.0:
                neg = True
            else:
                pos = True
    return pos and neg


@numba.njit(cache=True, nogil=True)
def workspace_layout(n_s: int, n_used: int, n_feat: int) -> tuple[int, ...]:
    """Where the sections of a placement's float32 workspace start, and its length.

    The sections, each starting at a multiple of 16 values (64 bytes): the membership ``m``
    (services, used); the request weights ``w`` (services, used); the matrix products'
    right-hand operands (8, used), in the used slots' order: the averaged columns, then the
    weighted ones (so ``operands[:6].T`` and ``operands[6:].T`` have the shapes and strides of
    the numpy form's column selections); the requests per second of the used slots; the
    per-service block (``S_ROWS``, services), rows ``S_*``; constants and scratch (``M_*``);
    the feature bounds (2, features).

    Args:
        n_s: Number of services.
        n_used: Number of used slots.
        n_feat: Length of the observation vector.

    Returns:
        Start of ``m``, ``w``, the operands, the requests, the per-service block, the
        constants and the bounds; the length.
    """
    at_w = (n_s * n_used + 15) // 16 * 16
    at_ops = at_w + (n_s * n_used + 15) // 16 * 16
    at_rps = at_ops + (8 * n_used + 15) // 16 * 16
    at_svc = at_rps + (n_used + 15) // 16 * 16
    at_misc = at_svc + (S_ROWS * n_s + 15) // 16 * 16
    at_bounds = at_misc + (M_SIZE + 15) // 16 * 16
    return 0, at_w, at_ops, at_rps, at_svc, at_misc, at_bounds, at_bounds + 2 * n_feat


@numba.njit(inline="always")
def _views(f32: np.ndarray, n_s: int, n_used: int, n_feat: int) -> tuple[np.ndarray, ...]:
    """``m``, ``w``, operands, requests, per-service block, constants, bounds of a workspace."""
    at_m, at_w, at_ops, at_rps, at_svc, at_misc, at_bounds, _ = workspace_layout(
        n_s, n_used, n_feat
    )
    return (
        f32[at_m : at_m + n_s * n_used].reshape((n_s, n_used)),
        f32[at_w : at_w + n_s * n_used].reshape((n_s, n_used)),
        f32[at_ops : at_ops + 8 * n_used].reshape((8, n_used)),
        f32[at_rps : at_rps + n_used],
        f32[at_svc : at_svc + S_ROWS * n_s].reshape((S_ROWS, n_s)),
        f32[at_misc : at_misc + M_SIZE],
        f32[at_bounds : at_bounds + 2 * n_feat].reshape((2, n_feat)),
    )


@numba.njit(inline="always")
def _index(i64: np.ndarray) -> tuple[np.ndarray, ...]:
    """The plan, pairwise stack, used slots, runs and chunks of an int64 workspace."""
    n_used, n_runs, n_chunks = i64[W_N_USED], i64[W_N_RUNS], i64[W_N_CHUNKS]
    at_runs = W_SLOTS + 3 * n_used
    at_chunks = at_runs + 3 * n_runs
    return (
        i64[:PLAN_SIZE],
        i64[W_FRAMES:W_SLOTS].reshape((3, 64)),
        i64[W_SLOTS:at_runs].reshape((3, n_used)),
        i64[at_runs:at_chunks].reshape((n_runs, 3)),
        i64[at_chunks : at_chunks + 2 * n_chunks].reshape((n_chunks, 2)),
    )


@numba.njit(cache=True, nogil=True, error_model="numpy")
def placement(
    inst_used: np.ndarray,
    inst_service: np.ndarray,
    inst_host: np.ndarray,
    initial: np.ndarray,
    n_actions: int,
    plan: np.ndarray,
    bounds: np.ndarray,
    hmin_scale: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the encoder derives from placement alone (:class:`envs.spaces.EncodeCache`).

    The numpy form: ``idx = flatnonzero(inst_used)``; ``m = (inst_service[idx] ==
    arange(n_s)[:, None]).astype(float32)``; ``count = m.sum(axis=1)`` (whole numbers, so
    exact in any order); ``order = argsort(inst_service[idx], kind="stable")``; the present
    services and their first positions in that order (``searchsorted``); ``inv = 1 /
    maximum(count, 1)`` and ``ratio = count / initial`` in float32; the mask as far as
    placement fixes it (scale-in only above two replicas, nothing aimed at an instance of a
    service without any). A used slot whose service is outside ``[0, services)`` is left to
    the numpy form (an empty float32 workspace says so).

    Args:
        inst_used: Whether each slot is used (bool).
        inst_service: Service of each slot (int64; outside ``[0, services)`` for none).
        inst_host: Host of each slot (int64).
        initial: Initial replicas per service (float32; one service at least).
        n_actions: Size of the action table.
        plan: Column and position plan (the ``P_*`` offsets).
        bounds: (2, features) float32 lower and upper bounds of the features.
        hmin_scale: Divisors of the host minima (float32).

    Returns:
        The float32 workspace (:func:`workspace_layout`; ``m``, the counts, ``inv``, the
        ratios, the constants and the bounds filled); the int64 workspace (``W_*``: the plan;
        the numbers of used slots, runs and chunks; the used slots (3, used): in slot order,
        grouped by service (stable) and the latter's hosts; the runs (runs, 3): service,
        first and end position of its run in the grouped order (``reduceat``'s segments);
        the chunks (chunks, 2): first slot and length of each run of consecutive used
        slots); ``idx``; ``order``; the mask.
    """
    n_s = initial.shape[0]
    n_slots = inst_used.shape[0]
    n_used = 0
    for i in range(n_slots):
        n_used += inst_used[i]
    idx = np.empty(n_used, dtype=np.int64)
    svc = np.empty(n_used, dtype=np.int64)
    k = 0
    for i in range(n_slots):
        if inst_used[i]:
            idx[k] = i
            svc[k] = inst_service[i]
            k += 1
    n_feat = bounds.shape[1]
    f32 = np.zeros(workspace_layout(n_s, n_used, n_feat)[-1], dtype=np.float32)
    m, _, _, _, per_service, misc, bounds_out = _views(f32, n_s, n_used, n_feat)
    for i in range(n_feat):
        bounds_out[0, i] = bounds[0, i]
        bounds_out[1, i] = bounds[1, i]
    for j in range(hmin_scale.shape[0]):
        misc[M_HMIN_SCALE + j] = hmin_scale[j]
    counts = np.zeros(n_s, dtype=np.int64)
    for k in range(n_used):
        s = svc[k]
        if 0 <= s < n_s:
            m[s, k] = 1.0
            counts[s] += 1
    total = 0
    for s in range(n_s):
        total += counts[s]
    if total != n_used:  # a used slot of no service: left to the numpy form
        return np.empty(0, dtype=np.float32), idx, idx, svc, np.empty(0, dtype=np.bool_)
    # Every used slot is of a service: a counting sort gives the stable order.
    order = np.empty(n_used, dtype=np.int64)
    at = np.empty(n_s, dtype=np.int64)
    total = 0
    for s in range(n_s):
        at[s] = total
        total += counts[s]
    for k in range(n_used):
        s = svc[k]
        order[at[s]] = k
        at[s] += 1
    n_runs = 0
    for s in range(n_s):
        n_runs += counts[s] > 0
    n_chunks = 0
    for k in range(n_used):
        n_chunks += k == 0 or idx[k] != idx[k - 1] + 1
    i64 = np.empty(W_SLOTS + 3 * n_used + 3 * n_runs + 2 * n_chunks, dtype=np.int64)
    for i in range(PLAN_SIZE):
        i64[i] = plan[i]
    i64[W_N_USED] = n_used
    i64[W_N_RUNS] = n_runs
    i64[W_N_CHUNKS] = n_chunks
    _, _, slots, segs, chunks = _index(i64)
    at_chunk = -1
    for k in range(n_used):
        if k == 0 or idx[k] != idx[k - 1] + 1:
            at_chunk += 1
            chunks[at_chunk, 0] = idx[k]
            chunks[at_chunk, 1] = 0
        chunks[at_chunk, 1] += 1
    for k in range(n_used):
        r = idx[order[k]]
        slots[0, k] = idx[k]
        slots[1, k] = r
        slots[2, k] = inst_host[r]
    g = 0
    q = 0
    for s in range(n_s):
        if counts[s] > 0:
            while q < n_used and svc[order[q]] < s:
                q += 1
            segs[g, 0] = s
            segs[g, 1] = q
            g += 1
    for g in range(n_runs):
        segs[g, 2] = segs[g + 1, 1] if g + 1 < n_runs else n_used
    one = np.float32(1.0)
    mask = np.ones(n_actions, dtype=np.bool_)
    n_act = plan[P_N_ACTIONS]
    for s in range(n_s):
        count = np.float32(counts[s])
        per_service[S_COUNT, s] = count
        per_service[S_INV, s] = one / _maximum(count, one)
        per_service[S_RATIO, s] = count / initial[s]
        first = 1 + s * n_act
        mask[first + 4] = count > 2.0
        mask[first] = mask[first + 1] = mask[first + 2] = False
    return f32, i64, idx, order, mask


@numba.njit(cache=True, nogil=True, error_model="numpy")
def aggregate(
    inst: np.ndarray,
    host: np.ndarray,
    inst_live: np.ndarray,
    f32: np.ndarray,
    i64: np.ndarray,
    advisory: np.ndarray,
    out: np.ndarray,
    mask: np.ndarray,
    shed: float,
    day_sin: float,
    day_cos: float,
    memory_thr: float,
    errors_thr: float,
) -> bool:
    """Everything of one encoding but the matrix products and ``log1p``; the whole mask.

    Args:
        inst: Instance metrics, (slots, features) float32, any layout.
        host: Host metrics, (hosts, features) float32, any layout, at least one host.
        inst_live: Liveness probe per slot (bool).
        f32: The placement's float32 workspace (:func:`placement`); fills the operands, the
            request weights ``m * rps`` (the weighted product's left-hand operand) and their
            per-service sums (``w.sum(axis=1)``).
        i64: The placement's int64 workspace (:func:`placement`).
        advisory: 1.0 per service with a public advisory (float32).
        out: The observation vector, filled but for each service's means, weighted means
            and ``log1p`` (:func:`finish` does those, the non-finite values and the clip).
        mask: The mask as far as placement fixes it (a copy); completed.
        shed: Shed fraction.
        day_sin: ``numpy.sin`` of the day angle.
        day_cos: ``numpy.cos`` of the day angle.
        memory_thr: Memory-use threshold of a full instance (compared in float32).
        errors_thr: Error-rate threshold of an erroring instance (compared in float32).

    Returns:
        Whether a host maximum or minimum is a zero that both signed zeros tie for: numpy's
        reduction picks one of them in an order of its own, so the caller recomputes them.
    """
    f0 = np.float32(0.0)
    plan, frames, slots, segs, chunks = _index(i64)
    n_used = slots.shape[1]
    n_runs = segs.shape[0]
    n_s = advisory.shape[0]
    m, w, operands, rps, per_service, misc, _ = _views(f32, n_s, n_used, out.shape[0])
    partial = misc[M_PARTIAL:]
    n_h = host.shape[0]
    n_per = plan[P_N_PER]
    n_act = plan[P_N_ACTIONS]
    base = n_s * n_per

    # The matrix products' right-hand operands (column by column) and the requests per
    # second, of the used slots in slot order; the request weights with their pairwise sums.
    for j in range(9):
        if j < 6:
            col = plan[P_SUM_COLS + j]
        elif j < 8:
            col = plan[P_W_COLS + j - 6]
        else:
            col = plan[P_I_RPS]
        dst = operands[j] if j < 8 else rps
        at = 0
        for c in range(chunks.shape[0]):
            # A run of consecutive slots: contiguous in a feature-major table.
            src = inst[chunks[c, 0] : chunks[c, 0] + chunks[c, 1], col]
            for k in range(src.shape[0]):
                dst[at + k] = src[k]
            at += src.shape[0]
    for s in range(n_s):
        for k in range(n_used):
            w[s, k] = m[s, k] * rps[k]
        per_service[S_W_SUM, s] = _sum(w[s], frames, partial)

    # Per used slot, grouped by service: the maxima of each run (floored at 0: which zero a
    # run meets first does not matter), the unhealthy count, and the mask's instance flags.
    c_up, c_ready, c_vm = plan[P_I_UP], plan[P_I_READY], plan[P_I_VM_UP]
    c_err, c_mem, h_up = plan[P_I_ERR], plan[P_I_MEM], plan[P_H_UP]
    x0, x1, x2 = plan[P_MAX_COLS], plan[P_MAX_COLS + 1], plan[P_MAX_COLS + 2]
    mem32 = np.float32(memory_thr)
    err32 = np.float32(errors_thr)
    for s in range(n_s):  # services without instances: 0
        per_service[S_MAX, s] = per_service[S_MAX + 1, s] = per_service[S_MAX + 2, s] = f0
    n_dark = 0
    unprobed = False
    for g in range(n_runs):  # every used slot is in one (placement sees to it)
        s, lo, hi = segs[g, 0], segs[g, 1], segs[g, 2]
        r = slots[1, lo]
        a0, a1, a2 = inst[r, x0], inst[r, x1], inst[r, x2]
        dark_g = sick_g = stranded = alive = False
        for q in range(lo, hi):
            r = slots[1, q]
            a0 = _maximum(a0, inst[r, x0])
            a1 = _maximum(a1, inst[r, x1])
            a2 = _maximum(a2, inst[r, x2])
            up_host = host[slots[2, q], h_up] > 0.5
            live = inst[r, c_up] > 0.5
            dark = up_host and not (live and inst[r, c_ready] > 0.5)
            n_dark += dark
            dark_g = dark_g or dark
            sick_g = sick_g or (up_host and (inst[r, c_err] > err32 or inst[r, c_mem] > mem32))
            stranded = stranded or inst[r, c_vm] < 0.5 or not up_host
            alive = alive or live
            unprobed = unprobed or (up_host and live and not inst_live[r])
        per_service[S_MAX, s] = _maximum(a0, f0)
        per_service[S_MAX + 1, s] = _maximum(a1, f0)
        per_service[S_MAX + 2, s] = _maximum(a2, f0)
        per_service[S_SICK, s] = sick_g
        first = 1 + s * n_act
        mask[first] = dark_g
        mask[first + 1] = stranded
        mask[first + 2] = alive
    # Restart targets: the unhealthy ones; erroring or full ones too where some service's
    # maximum reaches a threshold (a NaN maximum reaches none).
    at_mem, at_err = S_MAX + plan[P_MAXI_MEM], S_MAX + plan[P_MAXI_ERR]
    mem_max = per_service[at_mem, 0]
    err_max = per_service[at_err, 0]
    for s in range(1, n_s):
        mem_max = _maximum(mem_max, per_service[at_mem, s])
        err_max = _maximum(err_max, per_service[at_err, s])
    if mem_max >= mem32 or err_max >= err32:
        for g in range(n_runs):
            s = segs[g, 0]
            if per_service[S_SICK, s]:
                mask[1 + s * n_act] = True
    for s in range(n_s):
        row = s * n_per
        for j in range(3):
            out[row + plan[P_MAX_TO + j]] = per_service[S_MAX + j, s]
        out[row + plan[P_RATIO_TO]] = per_service[S_RATIO, s]
        out[row + plan[P_ADVISORY_TO]] = advisory[s]

    # Cluster-wide: host extrema in one pass (a tie of signed zeros noted after), shares and
    # means.
    extrema = _host_extrema(host, plan)
    n_up = 0
    for h in range(n_h):
        n_up += host[h, h_up] > 0.5
    tie = False
    for j in range(7):
        v = extrema[j]
        if j < 5:
            col = plan[P_HMAX_COLS + j]
            out[base + plan[P_HMAX_TO + j]] = v
        else:
            col = plan[P_HMIN_COLS + j - 5]
            out[base + plan[P_HMIN_TO + j - 5]] = v / misc[M_HMIN_SCALE + j - 5]
        tie = tie or _zero_tie(host, col, v)
    link = extrema[plan[P_HMAX_LINK]]
    n_hf = np.float32(n_h)
    out[base + plan[P_C_UP]] = n_up / n_h
    out[base + plan[P_C_CPU]] = _sum(host[:, plan[P_H_CPU]], frames, partial) / n_hf
    out[base + plan[P_C_DARK]] = n_dark / max(n_used, 1)
    out[base + plan[P_C_RPS]] = _sum(rps, frames, partial) / n_hf
    out[base + plan[P_C_SHED]] = shed
    out[base + plan[P_C_SIN]] = day_sin
    out[base + plan[P_C_COS]] = day_cos

    row = 1 + n_s * n_act
    mask[row] = mask[row + 1] = n_up > 0
    mask[row + 2] = n_up < n_h
    mask[row + 3] = unprobed
    mask[row + 4] = link > 0.0
    mask[row + 5] = shed < 0.6 - 1e-9
    mask[row + 6] = shed > 0.0
    return tie


@numba.njit(cache=True, nogil=True, error_model="numpy")
def scale_means(sums: np.ndarray, f32: np.ndarray, n_used: int) -> None:
    """Turn the per-service sums into means in place; floor the queue means for ``log1p``.

    Args:
        sums: (services, 6) float32 product of the membership and the averaged columns.
        f32: The placement's float32 workspace; fills the ``S_QUEUE`` row of its per-service
            block with ``maximum(means[:, 5], 0.0)``.
        n_used: Number of used slots.
    """
    n_s, n_c = sums.shape
    per_service = _views(f32, n_s, n_used, 0)[4]
    for s in range(n_s):
        f = per_service[S_INV, s]
        for j in range(n_c):
            sums[s, j] = sums[s, j] * f
        per_service[S_QUEUE, s] = _maximum(sums[s, n_c - 1], np.float32(0.0))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def finish(
    out: np.ndarray,
    means: np.ndarray,
    weighted: np.ndarray,
    f32: np.ndarray,
    i64: np.ndarray,
) -> None:
    """Store the means, divide the weighted sums, map non-finite values and clip, in place.

    As the numpy form: ``nan_to_num(nan=0, posinf=high.max(), neginf=0)``, then
    ``minimum(high, maximum(low, out))`` (so a ``-0.0`` at a bound of ``0.0`` stays).

    Args:
        out: The observation vector from :func:`aggregate`.
        means: (services, 6) means, the last column already through ``log1p``.
        weighted: (services, 2) request-weighted sums.
        f32: The placement's float32 workspace (the weights' sums, the bounds).
        i64: The placement's int64 workspace (the plan).
    """
    n_s = means.shape[0]
    n = out.shape[0]
    plan = i64[:PLAN_SIZE]
    _, _, _, _, per_service, _, bounds = _views(f32, n_s, i64[W_N_USED], n)
    n_per = plan[P_N_PER]
    floor = np.float32(1e-9)
    for s in range(n_s):
        row = s * n_per
        for j in range(6):
            out[row + plan[P_SUM_TO + j]] = means[s, j]
        d = _maximum(per_service[S_W_SUM, s], floor)
        for j in range(2):
            out[row + plan[P_W_TO + j]] = weighted[s, j] / d
    top = bounds[1, 0]
    for i in range(1, n):
        top = _maximum(top, bounds[1, i])
    for i in range(n):
        v = out[i]
        if v != v or v == -np.inf:
            v = np.float32(0.0)
        elif v == np.inf:
            v = top
        out[i] = _minimum(bounds[1, i], _maximum(bounds[0, i], v))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def admissible(
    observations: np.ndarray,
    feature: np.ndarray,
    sign: np.ndarray,
    signed_threshold: np.ndarray,
    symptom_ptr: np.ndarray,
    symptom_idx: np.ndarray,
    requires_ptr: np.ndarray,
    requires_idx: np.ndarray,
    free: np.ndarray,
) -> np.ndarray:
    """Admissible actions of a batch of encoded observations (float32, ``(batch, width)``).

    Condition ``k`` holds where ``x[feature[k]] * sign[k] > signed_threshold[k]`` (float32);
    action ``a`` is admissible when one of its symptom conditions
    (``symptom_idx[symptom_ptr[a]:symptom_ptr[a + 1]]``) holds, or it has none (``free``),
    and every condition it requires (likewise ``requires_*``) holds. These are the nonzeros
    of the 0/1 incidence matrices of :class:`envs.spaces.SymptomRules`, whose products in
    :func:`envs.spaces.admissible_mask`'s definition are exact small integers, so "any" and
    "all" here are the same tests.
    """
    n_b, n_k, n_a = observations.shape[0], feature.shape[0], free.shape[0]
    out = np.empty((n_b, n_a), dtype=np.bool_)
    held = np.empty(n_k, dtype=np.bool_)
    for b in range(n_b):
        for k in range(n_k):
            held[k] = observations[b, feature[k]] * sign[k] > signed_threshold[k]
        for a in range(n_a):
            ok = free[a]
            for j in range(symptom_ptr[a], symptom_ptr[a + 1]):
                if held[symptom_idx[j]]:
                    ok = True
                    break
            if ok:
                for j in range(requires_ptr[a], requires_ptr[a + 1]):
                    if not held[requires_idx[j]]:
                        ok = False
                        break
            out[b, a] = ok
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def down_count(used: np.ndarray, ready: np.ndarray) -> tuple[int, int]:
    """``(used slots not ready, used slots)``: the downtime reward's counts."""
    down = 0
    n_used = 0
    for i in range(used.shape[0]):
        if used[i]:
            n_used += 1
            if not ready[i]:
                down += 1
    return down, n_used
