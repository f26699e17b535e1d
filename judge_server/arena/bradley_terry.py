"""Bradley-Terry strengths from soft pairwise comparisons: a MAP fit.

The judge compares traces of one group two at a time and answers ``p``, the probability that
the trace shown first is the better one. This module turns those answers into latent strengths
``beta`` by minimising the soft cross-entropy of the Bradley-Terry model plus a Gaussian prior
(docs/algorithm.md, section 5)::

    sum_k w_k * [-p_k log s(b[first_k] - b[second_k]) - (1 - p_k) log s(b[second_k] - b[first_k])]
        + lam / 2 * sum_{free i} (b_i - prior_mean_i) ** 2

where ``s`` is the logistic sigmoid. For ``lam > 0`` the objective is smooth and strictly
convex, so the optimum is unique and finite on any graph; without the prior the maximum
likelihood estimate exists only when the graph of wins is strongly connected [Hunter04]_,
which a few judge calls per group (or one trace winning everything) often breaks.

Small problems (the usual group of 4 to 64 traces) are solved by damped Newton on the dense
Hessian, which converges in a handful of iterations; large ones by Newton with a sparse Hessian
and conjugate gradients, or on request by L-BFGS-B. :func:`fit_batch` fits many small groups
in one vectorised Newton run.

Everything here is pure numpy/scipy: no I/O, no logging, no state. A fit of 16 to 64 items
with 4 comparisons each takes a few tenths of a millisecond (``judge_server.bench.fit``).
OpenBLAS threads its LAPACK calls from about 100 items up; on a busy machine waking those
threads can cost milliseconds per call, so a server should run with
``OPENBLAS_NUM_THREADS=1`` (or ``threadpoolctl``) around the fits.

References
----------
.. [Hunter04] D. R. Hunter, "MM algorithms for generalized Bradley-Terry models",
   The Annals of Statistics 32(1), 2004.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
from scipy.linalg import lapack
from scipy.optimize import minimize
from scipy.special import expit

from judge_server.errors import InvalidRequest

#: ``method="auto"`` uses the dense Newton solver up to this many free items, and the
#: sparse Newton-CG solver above it.
NEWTON_MAX_FREE = 300

#: ``method="lbfgs"`` may take this many times ``max_iter`` iterations (they are cheap).
LBFGS_ITER_FACTOR = 50

METHODS = ("auto", "newton", "newton-cg", "lbfgs")

_ARMIJO = 1e-4  # sufficient-decrease constant of the backtracking line search
_MAX_HALVINGS = 60
_EPS = float(np.finfo(np.float64).eps)
_CG_RTOL = 1e-10
_MAX_WEIGHT = float(np.finfo(np.float64).max)  # weights must be finite


@dataclass(frozen=True, eq=False)
class Fit:
    """The result of a Bradley-Terry fit. Arrays are read-only.

    Attributes
    ----------
    strengths : numpy.ndarray
        ``(n_items,)`` fitted strengths; fixed items hold their given value.
    stderr : numpy.ndarray
        ``(n_items,)`` Laplace-approximation standard errors, ``sqrt(diag(H^-1))`` over the
        free items with ``H`` the Hessian of the objective at the optimum; ``0.0`` for fixed
        items. On the large-graph paths (``"newton-cg"``, ``"lbfgs"``) this is approximated by
        ``1 / sqrt(diag(H))``, which ignores the correlations between items and so is a lower
        bound on the Laplace value.
    iterations : int
        Newton iterations (L-BFGS-B iterations for ``"lbfgs"``).
    converged : bool
        Whether the stopping criterion was met within ``max_iter``.
    covariance : numpy.ndarray or None
        ``(n_items, n_items)`` ``H^-1`` over the free items, zeros on the rows and columns of
        fixed items; only on the dense Newton path, ``None`` otherwise.
    """

    strengths: np.ndarray
    stderr: np.ndarray
    iterations: int
    converged: bool
    covariance: np.ndarray | None


# ---------------------------------------------------------------------------------------------
# Input validation


@dataclass(frozen=True)
class _Group:
    """One validated comparison graph."""

    n_items: int
    first: np.ndarray  # int64 (m,)
    second: np.ndarray  # int64 (m,)
    p: np.ndarray  # float64 (m,)
    weight: np.ndarray  # float64 (m,)
    prior_mean: np.ndarray  # float64 (n_items,)
    fixed_mask: np.ndarray  # bool (n_items,)
    fixed_values: np.ndarray  # float64 (n_items,), meaningful where fixed_mask


def _field(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _check_n_items(n_items: object, field: str) -> int:
    if isinstance(n_items, bool) or not isinstance(n_items, (int, np.integer)):
        raise InvalidRequest(field, f"must be an integer, got {type(n_items).__name__}")
    if n_items < 1:
        raise InvalidRequest(field, f"must be >= 1, got {n_items}")
    return int(n_items)


def _index_array(values: object, n_items: int, field: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InvalidRequest(field, f"must be a 1-D array of item indices, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise InvalidRequest(field, f"item indices must be integers, got dtype {arr.dtype}")
    bad = np.flatnonzero((arr < 0) | (arr >= n_items))
    if bad.size:
        k = int(bad[0])
        raise InvalidRequest(
            field, f"item index {arr[k]} at position {k} is out of range for n_items={n_items}"
        )
    return arr.astype(np.int64, copy=False)


def _float_array(values: object, field: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(field, "must be an array of numbers") from exc
    return arr


def _comparison_array(values: object, m: int, field: str, *, lo: float, hi: float) -> np.ndarray:
    arr = _float_array(values, field)
    if arr.ndim != 1:
        raise InvalidRequest(field, f"must be a 1-D array, got shape {arr.shape}")
    if arr.shape[0] != m:
        raise InvalidRequest(field, f"has length {arr.shape[0]}, but first has length {m}")
    bad = np.flatnonzero(~((arr >= lo) & (arr <= hi)))  # also catches NaN
    if bad.size:
        k = int(bad[0])
        raise InvalidRequest(field, f"must be in [{lo:g}, {hi:g}], got {arr[k]} at position {k}")
    return arr


def _prior_array(prior_mean: object, n_items: int, field: str) -> np.ndarray:
    if prior_mean is None:
        return np.zeros(n_items)
    arr = _float_array(prior_mean, field)
    if arr.ndim == 0:
        arr = np.full(n_items, float(arr))
    elif arr.shape != (n_items,):
        raise InvalidRequest(
            field, f"must be a scalar or an array of shape ({n_items},), got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise InvalidRequest(field, "must be finite")
    return arr


def _fixed_arrays(fixed: object, n_items: int, field: str) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros(n_items, dtype=bool)
    values = np.zeros(n_items)
    if fixed is None:
        return mask, values
    if isinstance(fixed, Mapping):
        for key, value in fixed.items():
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
                raise InvalidRequest(field, f"keys must be integer item indices, got {key!r}")
            if not 0 <= key < n_items:
                raise InvalidRequest(
                    field, f"item index {key} is out of range for n_items={n_items}"
                )
            if not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise InvalidRequest(field, f"item {key}: strength must be a finite number")
            mask[key] = True
            values[key] = float(value)
        return mask, values
    if isinstance(fixed, tuple) and len(fixed) == 2:
        given_mask = np.asarray(fixed[0])
        if given_mask.dtype != bool or given_mask.shape != (n_items,):
            raise InvalidRequest(
                field,
                f"mask must be a boolean array of shape ({n_items},), "
                f"got {given_mask.dtype} {given_mask.shape}",
            )
        given = _float_array(fixed[1], field)
        n_fixed = int(given_mask.sum())
        if given.ndim == 0:
            given = np.full(n_fixed, float(given))
        elif given.shape == (n_items,):
            given = given[given_mask]
        elif given.shape != (n_fixed,):
            raise InvalidRequest(
                field, f"values must have shape ({n_items},) or ({n_fixed},), got {given.shape}"
            )
        if not np.all(np.isfinite(given)):
            raise InvalidRequest(field, "values must be finite")
        mask[:] = given_mask
        values[given_mask] = given
        return mask, values
    raise InvalidRequest(
        field, "must be None, a mapping {item index: strength} or a tuple (mask, values)"
    )


def _group(
    n_items: object,
    first: object,
    second: object,
    p: object,
    weight: object,
    prior_mean: object,
    fixed: object,
    prefix: str = "",
    prior_field: str = "prior_mean",
    fixed_field: str = "fixed",
) -> _Group:
    """Validate one comparison graph; fields are reported as ``prefix.name``."""
    n = _check_n_items(n_items, _field(prefix, "n_items"))
    first_arr = _index_array(first, n, _field(prefix, "first"))
    second_arr = _index_array(second, n, _field(prefix, "second"))
    m = first_arr.shape[0]
    if second_arr.shape[0] != m:
        raise InvalidRequest(
            _field(prefix, "second"), f"has length {second_arr.shape[0]}, but first has length {m}"
        )
    same = np.flatnonzero(first_arr == second_arr)
    if same.size:
        k = int(same[0])
        raise InvalidRequest(
            _field(prefix, "second"),
            f"comparison {k} compares item {first_arr[k]} with itself",
        )
    p_arr = _comparison_array(p, m, _field(prefix, "p"), lo=0.0, hi=1.0)
    if weight is None:
        w_arr = np.ones(m)
    else:
        w_arr = _comparison_array(weight, m, _field(prefix, "weight"), lo=0.0, hi=_MAX_WEIGHT)
    prior = _prior_array(prior_mean, n, prior_field)
    mask, values = _fixed_arrays(fixed, n, fixed_field)
    return _Group(n, first_arr, second_arr, p_arr, w_arr, prior, mask, values)


def _precision_array(precision: object, group: _Group) -> np.ndarray:
    field, n = "prior_precision", group.n_items
    arr = _float_array(precision, field)
    if arr.shape != (n, n):
        raise InvalidRequest(field, f"must have shape ({n}, {n}), got {arr.shape}")
    if not (np.all(np.isfinite(arr)) and np.allclose(arr, arr.T, rtol=1e-12, atol=1e-12)):
        raise InvalidRequest(field, "must be a finite symmetric matrix")
    free = np.flatnonzero(~group.fixed_mask)
    if free.size and lapack.dpotrf(arr[np.ix_(free, free)], lower=1)[1] != 0:
        raise InvalidRequest(field, "must be positive definite on the free items")
    return arr


def _check_options(lam: object, max_iter: object, tol: object) -> tuple[float, int, float]:
    try:
        lam_f = float(lam)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InvalidRequest("lam", "must be a number") from exc
    if not (math.isfinite(lam_f) and lam_f > 0):
        raise InvalidRequest(
            "lam",
            f"must be > 0 and finite (the prior keeps strengths finite on sparse or "
            f"separated graphs), got {lam!r}",
        )
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise InvalidRequest("max_iter", f"must be an integer >= 1, got {max_iter!r}")
    try:
        tol_f = float(tol)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InvalidRequest("tol", "must be a number") from exc
    if not (math.isfinite(tol_f) and tol_f >= 0):
        raise InvalidRequest("tol", f"must be >= 0 and finite, got {tol!r}")
    return lam_f, int(max_iter), tol_f


# ---------------------------------------------------------------------------------------------
# The objective on a stack of groups


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


class _Stack:
    """Groups padded to a common size, with fixed items moved out of the variables.

    Variables sit in ``X`` of shape ``(B, n)``: group ``g`` uses ``X[g, :n_free_g]``; the
    padding stays at 0 with no comparisons (its gradient is 0, its Hessian ``lam``).
    Comparisons index an extended vector ``concat(X.ravel(), consts)`` in which fixed items
    are constants. Everything per comparison is precomputed here so that an iteration is a
    few vectorised calls: ``np.bincount`` scatters the gradient and the Hessian entries.
    """

    def __init__(
        self, groups: Sequence[_Group], lam: float, precision: np.ndarray | None = None
    ) -> None:
        self.lam = lam
        self.B = B = len(groups)
        self.n_free = [g.n_items - int(np.count_nonzero(g.fixed_mask)) for g in groups]
        self.n = n = max(max(self.n_free, default=0), 1)
        self.size = size = B * n
        self.M = np.zeros((B, n))
        self.free_items: list[np.ndarray] = []
        consts, firsts, seconds, ps, ws, gids = [], [], [], [], [], []
        offset = size
        for b, g in enumerate(groups):
            k = self.n_free[b]
            if k == g.n_items:  # nothing fixed: item i is variable b * n + i
                self.free_items.append(np.arange(k))
                self.M[b, :k] = g.prior_mean
                firsts.append(g.first + b * n if b else g.first)
                seconds.append(g.second + b * n if b else g.second)
                ps.append(g.p)
                ws.append(g.weight)
                if B > 1:
                    gids.append(np.full(g.first.size, b, dtype=np.int64))
                continue
            free = ~g.fixed_mask
            free_items = np.flatnonzero(free)
            self.free_items.append(free_items)
            self.M[b, :k] = g.prior_mean[free_items]
            pos = np.empty(g.n_items, dtype=np.int64)
            pos[free_items] = b * n + np.arange(k)
            pos[g.fixed_mask] = offset + np.arange(g.n_items - k)
            offset += g.n_items - k
            consts.append(g.fixed_values[g.fixed_mask])
            keep = free[g.first] | free[g.second]  # comparisons of two fixed items are constant
            firsts.append(pos[g.first[keep]])
            seconds.append(pos[g.second[keep]])
            ps.append(g.p[keep])
            ws.append(g.weight[keep])
            if B > 1:
                gids.append(np.full(int(np.count_nonzero(keep)), b, dtype=np.int64))
        self.length = offset
        # A full prior precision (one group): its block over the free items replaces lam * I.
        self.P = None
        if precision is not None and self.n_free[0]:
            free = self.free_items[0]
            self.P = precision[np.ix_(free, free)]
        self.consts = _cat(consts, np.float64)
        self.first = _cat(firsts, np.int64)
        self.second = _cat(seconds, np.int64)
        self.p = _cat(ps, np.float64)
        self.w = _cat(ws, np.float64)
        self.gid = _cat(gids, np.int64)
        self.unit_weights = bool(np.all(self.w == 1.0))

        # Where each comparison's curvature h lands in the flattened (B, n, n) Hessian stack:
        # +h on the diagonal of each free end, -h off the diagonal when both ends are free.
        first_free = self.first < size
        second_free = self.second < size
        if self.consts.size == 0:  # every end is free
            self.h_comp = None
            rows = np.concatenate([self.first, self.second, self.first, self.second])
            cols = np.concatenate([self.first, self.second, self.second, self.first])
        else:
            i1, i2 = np.flatnonzero(first_free), np.flatnonzero(second_free)
            i12 = np.flatnonzero(first_free & second_free)
            self.h_comp = np.concatenate([i1, i2, i12, i12])
            self.h_sign = np.concatenate([np.ones(i1.size + i2.size), -np.ones(2 * i12.size)])
            rows = np.concatenate(
                [self.first[i1], self.second[i2], self.first[i12], self.second[i12]]
            )
            cols = np.concatenate(
                [self.first[i1], self.second[i2], self.second[i12], self.first[i12]]
            )
        if B == 1:
            self.h_rows, self.h_cols = rows, cols
            self.h_flat = rows * n + cols
            self.diag_flat = np.arange(0, n * n, n + 1)
        else:  # variable b * n + i is row i of block b
            self.h_rows = rows % n
            self.h_cols = cols % n
            self.h_flat = (rows - self.h_rows) * n + self.h_rows * n + self.h_cols
            self.diag_flat = (np.arange(B)[:, None] * (n * n) + np.arange(n) * (n + 1)).ravel()

    def diff(self, X: np.ndarray) -> np.ndarray:
        """``b[first] - b[second]`` per comparison."""
        ext = np.concatenate([X.ravel(), self.consts]) if self.consts.size else X.ravel()
        return ext[self.first] - ext[self.second]

    def objective(self, X: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Per-group objective, shape ``(B,)``."""
        # p * softplus(-d) + (1 - p) * softplus(d) == softplus(d) - p * d
        loss = np.logaddexp(0.0, d) - self.p * d
        r = X - self.M
        if self.B == 1:
            data = loss.sum() if self.unit_weights else self.w @ loss
            prior = self.lam * np.vdot(r, r) if self.P is None else r[0] @ self.P @ r[0]
            return np.array([0.5 * prior + data])
        prior = (0.5 * self.lam) * np.einsum("ij,ij->i", r, r)
        if not self.unit_weights:
            loss *= self.w
        return prior + np.bincount(self.gid, weights=loss, minlength=self.B)

    def gradient(self, X: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gradient ``(B, n)`` and per-comparison curvature ``w s (1 - s)``."""
        s = expit(d)
        r = s - self.p
        h = s * (1.0 - s)
        if not self.unit_weights:
            r *= self.w
            h *= self.w
        g = np.bincount(self.first, weights=r, minlength=self.length)
        g -= np.bincount(self.second, weights=r, minlength=self.length)
        # (np.bincount returns integers when there are no comparisons)
        r = X - self.M
        prior = self.lam * r if self.P is None else r @ self.P
        G = g[: self.size].reshape(self.B, self.n) + prior
        return G, h

    def curvature(self, d: np.ndarray) -> np.ndarray:
        """Per-comparison curvature ``w s (1 - s)`` alone."""
        s = expit(d)
        h = s * (1.0 - s)
        return h if self.unit_weights else h * self.w

    def dense_hessian(self, h: np.ndarray) -> np.ndarray:
        """Hessian stack ``(B, n, n)``."""
        flat = np.bincount(self.h_flat, weights=self._entries(h), minlength=self.B * self.n**2)
        flat = flat.astype(np.float64, copy=False)  # integers when there are no comparisons
        if self.P is not None:
            return flat.reshape(self.B, self.n, self.n) + self.P
        flat[self.diag_flat] += self.lam
        return flat.reshape(self.B, self.n, self.n)

    def _entries(self, h: np.ndarray) -> np.ndarray:
        """The Hessian entries at ``h_flat`` (``h_rows``, ``h_cols``)."""
        if self.h_comp is None:
            return np.concatenate([h, h, -h, -h])
        return h[self.h_comp] * self.h_sign

    def sparse_hessian(self, h: np.ndarray) -> scipy.sparse.csr_matrix:
        """Hessian of a single group (``B == 1``) as a sparse matrix."""
        n = self.n
        data = np.concatenate([self._entries(h), np.full(n, self.lam)])
        rows = np.concatenate([self.h_rows, np.arange(n)])
        cols = np.concatenate([self.h_cols, np.arange(n)])
        return scipy.sparse.csr_matrix((data, (rows, cols)), shape=(n, n))

    def hessian_diagonal(self, h: np.ndarray) -> np.ndarray:
        """Diagonal of the Hessian stack, ``(B, n)``."""
        on_diag = self.h_rows == self.h_cols
        diag = np.bincount(
            self.h_flat[on_diag],
            weights=self._entries(h)[on_diag],
            minlength=self.B * self.n * self.n,
        )[self.diag_flat]
        return diag.reshape(self.B, self.n) + self.lam


def _solve_spd(H: np.ndarray, G: np.ndarray) -> np.ndarray:
    """``H^-1 G`` for a stack of symmetric positive definite ``H`` (B, n, n) and ``G`` (B, k)."""
    if H.shape[0] == 1:  # LAPACK's Cholesky solve directly: far less overhead than gufuncs
        _, x, info = lapack.dposv(H[0], G[0])
        if info == 0:
            return x[None]
    return np.linalg.solve(H, G[..., None])[..., 0]


def _inverse_spd(H: np.ndarray) -> np.ndarray:
    """``H^-1`` for a stack of symmetric positive definite matrices.

    A single matrix goes through ``L^-T L^-1`` from its Cholesky factor: unlike a solve with
    ``n`` right-hand sides (a threaded ``trsm`` in OpenBLAS), these calls stay single-threaded
    for small ``n``, which avoids milliseconds of thread wake-up on a busy machine.
    """
    if H.shape[0] == 1:
        factor, info = lapack.dpotrf(H[0], lower=1)
        if info == 0:
            inverse_factor, info = lapack.dtrtri(factor, lower=1)
            if info == 0:
                return (inverse_factor.T @ inverse_factor)[None]
    return np.linalg.inv(H)


# ---------------------------------------------------------------------------------------------
# Solvers


def _sufficient(f_new: np.ndarray, f0: np.ndarray, t, decrement: np.ndarray) -> np.ndarray:
    """Armijo's test, with slack for rounding in the objective."""
    return f_new <= f0 - _ARMIJO * t * decrement + 4 * _EPS * np.abs(f0)


def _small(decrement, f0, tol: float):
    """Newton decrement at ``tol`` or at the rounding level of the objective."""
    return decrement <= np.maximum(tol, 64 * _EPS * (1.0 + np.abs(f0)))


def _cg_step(stack: _Stack, h: np.ndarray, G: np.ndarray) -> np.ndarray:
    H = stack.sparse_hessian(h)
    jacobi = scipy.sparse.diags(1.0 / H.diagonal())
    x, _ = scipy.sparse.linalg.cg(H, G[0], rtol=_CG_RTOL, atol=0.0, M=jacobi, maxiter=10 * stack.n)
    return -x[None]


def _newton_one(stack: _Stack, max_iter: int, tol: float, *, sparse: bool = False):
    """Damped Newton on a single group (``B == 1``), dense or sparse.

    Stops when the Newton decrement ``G . H^-1 G`` (twice the predicted decrease) is at most
    ``tol``, or at the rounding level of the objective; that last full step is still taken,
    which in the quadratic region squares the remaining error. Other steps are damped by
    backtracking until the objective decreases enough (Armijo). Returns the strengths
    ``(1, n)``, the iteration count and the convergence flag.

    This is :func:`_newton_stack` without the per-group bookkeeping, which costs more than
    the arithmetic for a group of a few dozen traces.
    """
    X = stack.M.copy()
    d = stack.diff(X)
    f = stack.objective(X, d)
    iterations, converged = 0, False
    while iterations < max_iter:
        iterations += 1
        G, h = stack.gradient(X, d)
        if sparse:
            step = _cg_step(stack, h, G)
        else:
            step = -_solve_spd(stack.dense_hessian(h), G)
        decrement = -float(np.vdot(G, step))
        if _small(decrement, f, tol):
            X = X + step
            converged = True
            break
        t = 1.0
        for _ in range(_MAX_HALVINGS):
            trial = X + t * step
            d_trial = stack.diff(trial)
            f_trial = stack.objective(trial, d_trial)
            if _sufficient(f_trial, f, t, decrement):
                break
            t *= 0.5
        else:  # no decrease found: stop here, not converged
            break
        X, d, f = trial, d_trial, f_trial
    return X, np.array([iterations]), np.array([converged])


def _newton_stack(stack: _Stack, max_iter: int, tol: float):
    """Damped Newton on every group of ``stack`` at once, dense Hessians.

    The same iteration as :func:`_newton_one`, per group: one batched solve per iteration for
    the groups still running, and one batched line search in which each group halves its own
    step. Returns the strengths ``(B, n)`` and per-group iteration counts and convergence
    flags.
    """
    B = stack.B
    X = stack.M.copy()
    iterations = np.zeros(B, dtype=np.int64)
    converged = np.zeros(B, dtype=bool)
    done = np.zeros(B, dtype=bool)
    d = stack.diff(X)
    f = stack.objective(X, d)
    for _ in range(max_iter):
        # a slice while every group runs: fancy indexing would copy the whole Hessian stack
        index = np.flatnonzero(~done)
        active: slice | np.ndarray = slice(None) if index.size == B else index
        iterations[active] += 1
        G, h = stack.gradient(X, d)
        G = G[active]
        step = -_solve_spd(stack.dense_hessian(h)[active], G)
        decrement = -np.einsum("ij,ij->i", G, step)
        f0 = f[active]
        small = _small(decrement, f0, tol)
        converged[index[small]] = True
        done |= converged
        t = np.ones(index.size)
        pending = ~small
        trial = X.copy()
        trial[active] += step
        if done.all():
            X = trial
            break
        for halvings in range(_MAX_HALVINGS + 1):
            d_trial = stack.diff(trial)
            f_trial = stack.objective(trial, d_trial)
            pending &= ~_sufficient(f_trial[active], f0, t, decrement)
            if not pending.any():
                break
            if halvings == _MAX_HALVINGS:  # no decrease found: stay, stop, not converged
                t[pending] = 0.0
                done[index[pending]] = True
                pending[:] = False
            else:
                t[pending] *= 0.5
            trial = X.copy()
            trial[active] += t[:, None] * step
        X, d, f = trial, d_trial, f_trial
    return X, iterations, converged


def _lbfgs(stack: _Stack, max_iter: int, tol: float):
    """L-BFGS-B on a single group (``B == 1``)."""

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        X = x[None, :]
        d = stack.diff(X)
        G, _ = stack.gradient(X, d)
        return float(stack.objective(X, d)[0]), G[0]

    res = minimize(
        fun,
        stack.M[0].copy(),
        jac=True,
        method="L-BFGS-B",
        options={
            "maxiter": LBFGS_ITER_FACTOR * max_iter,
            # the strength error is about |gradient| / lam, and tol is on a squared scale
            "gtol": max(1e-2 * math.sqrt(tol) * min(stack.lam, 1.0), 1e-12),
            "ftol": 16 * _EPS,
            "maxcor": 20,
        },
    )
    return res.x[None, :], np.array([res.nit]), np.array([bool(res.success)])


def _results(
    stack: _Stack,
    groups: Sequence[_Group],
    X: np.ndarray,
    iterations: np.ndarray,
    converged: np.ndarray,
    dense: bool,
) -> list[Fit]:
    """Package every group's solution, with ``H^-1`` (``dense``) or ``1 / diag(H)``."""
    h = stack.curvature(stack.diff(X))
    if dense:
        cov_stack = _inverse_spd(stack.dense_hessian(h))
    else:
        var_stack = 1.0 / stack.hessian_diagonal(h)
    fits = []
    for b, g in enumerate(groups):
        k = stack.n_free[b]
        free = stack.free_items[b]
        if k == g.n_items:
            strengths = X[b, :k].copy()
        else:
            strengths = g.fixed_values.copy()
            strengths[free] = X[b, :k]
        covariance = None
        if dense:
            cov = cov_stack[b, :k, :k]
            if k == g.n_items:
                covariance = cov.copy()
            else:
                covariance = np.zeros((g.n_items, g.n_items))
                covariance[np.ix_(free, free)] = cov
            stderr = np.sqrt(np.diagonal(covariance))
            covariance.setflags(write=False)
        else:
            stderr = np.zeros(g.n_items)
            stderr[free] = np.sqrt(var_stack[b, :k])
        if not (np.isfinite(strengths).all() and np.isfinite(stderr).all()):
            raise FloatingPointError("Bradley-Terry fit produced non-finite strengths")
        strengths.setflags(write=False)
        stderr.setflags(write=False)
        fits.append(Fit(strengths, stderr, int(iterations[b]), bool(converged[b]), covariance))
    return fits


# ---------------------------------------------------------------------------------------------
# Public API


def fit(
    n_items: int,
    first,
    second,
    p,
    weight=None,
    *,
    lam: float = 1.0,
    prior_mean=None,
    fixed=None,
    prior_precision=None,
    max_iter: int = 100,
    tol: float = 1e-10,
    method: str = "auto",
) -> Fit:
    """Fit Bradley-Terry strengths to soft pairwise outcomes (MAP estimate).

    Minimises ``sum_k w_k * [-p_k log s(b_i - b_j) - (1 - p_k) log s(b_j - b_i)]
    + lam / 2 * sum_{free i} (b_i - prior_mean_i) ** 2`` over the strengths of the free items,
    with ``i = first[k]``, ``j = second[k]`` and ``s`` the logistic sigmoid.

    Parameters
    ----------
    n_items : int
        Number of items (traces), at least 1. Items are ``0 .. n_items - 1``.
    first, second : array_like of int, shape (m,)
        The two items of each comparison; ``first[k] != second[k]``.
    p : array_like of float, shape (m,)
        ``P(first beats second)`` in [0, 1]; 1 and 0 are hard outcomes, 0.5 a tie.
    weight : array_like of float, shape (m,), optional
        Non-negative weight of each comparison (default 1), e.g. the number of judge calls
        averaged into ``p``.
    lam : float, optional
        Precision of the Gaussian prior, > 0 (default 1.0, the paper's ``1/2 ||beta||^2``).
        It keeps strengths finite on disconnected graphs and when an item wins everything.
        ``lam = 2 * alpha`` for ``choix``'s ``alpha``.
    prior_mean : float or array_like, shape (n_items,), optional
        Mean of the prior, per item or one for all (default 0). A known strength (say an
        anchor's from an earlier step) can be given *softly* this way: put its known value
        here, and the data may still move it.
    fixed : mapping or tuple, optional
        Known strengths held *exactly*: either ``{item index: strength}`` or ``(mask,
        values)`` with a boolean ``mask`` of shape ``(n_items,)`` and ``values`` of shape
        ``(n_items,)`` (read where ``mask`` is set) or ``(mask.sum(),)``. Fixed items are not
        variables: they keep their value, have ``stderr`` 0, and their prior terms are
        dropped. They anchor the scale: free strengths are placed relative to them.
    prior_precision : array_like, shape (n_items, n_items), optional
        A full precision matrix ``P`` for the prior, in place of ``lam * I``: the prior term
        becomes ``1/2 (b - prior_mean)^T P (b - prior_mean)`` over the free items (the rows
        and columns of fixed items are ignored). Symmetric, and positive definite on the
        free items. It couples items a priori, e.g. a group's traces around a common level
        (:class:`~.tournaments.Tournament` with pool anchors). Dense Newton only: ``method``
        must be ``"auto"`` or ``"newton"``.
    max_iter : int, optional
        Most Newton iterations (default 100); ``"lbfgs"`` may take
        ``LBFGS_ITER_FACTOR * max_iter`` of its cheaper iterations.
    tol : float, optional
        Newton stops when the Newton decrement ``g . H^-1 g`` (twice the predicted decrease
        of the objective) is at most ``tol`` (default 1e-10), after taking that last step;
        strengths are then accurate to far better than ``sqrt(tol)``. ``"lbfgs"`` stops when
        the largest gradient entry is below ``1e-2 * sqrt(tol) * min(lam, 1)`` or the
        objective stops decreasing at rounding level; it is the least precise of the three.
    method : {"auto", "newton", "newton-cg", "lbfgs"}, optional
        ``"newton"``: damped Newton on the dense Hessian with a backtracking line search,
        best for small groups. ``"newton-cg"``: the same with a sparse Hessian and
        Jacobi-preconditioned conjugate gradients, for large graphs. ``"lbfgs"``: scipy's
        L-BFGS-B on the same objective and gradient. ``"auto"`` (default) picks ``"newton"``
        up to ``NEWTON_MAX_FREE`` (300) free items and ``"newton-cg"`` above.

    Returns
    -------
    Fit
        Strengths, Laplace standard errors, iteration count and convergence flag. With no
        comparisons the strengths are the prior mean (and the fixed values). On the
        ``"newton-cg"`` and ``"lbfgs"`` paths ``stderr`` is approximated by
        ``1 / sqrt(diag(H))`` and ``covariance`` is ``None``.

    Raises
    ------
    judge_server.errors.InvalidRequest
        A ``ValueError`` whose message starts with the offending field: ``n_items``,
        ``first``/``second`` (not integers, out of range, different lengths, or
        ``first[k] == second[k]``, reported on ``second``), ``p`` (outside [0, 1] or NaN),
        ``weight`` (negative, NaN or infinite), ``prior_mean``, ``fixed``,
        ``prior_precision``, ``lam``, ``max_iter``, ``tol`` or ``method``.

    Examples
    --------
    >>> r = fit(3, [0, 1], [1, 2], [0.9, 0.7])
    >>> bool(r.strengths[0] > r.strengths[1] > r.strengths[2])
    True
    """
    group = _group(n_items, first, second, p, weight, prior_mean, fixed)
    lam, max_iter, tol = _check_options(lam, max_iter, tol)
    if method not in METHODS:
        raise InvalidRequest("method", f"must be one of {', '.join(METHODS)}, got {method!r}")
    precision = None
    if prior_precision is not None:
        precision = _precision_array(prior_precision, group)
        if method not in ("auto", "newton"):
            raise InvalidRequest("method", f"a prior_precision needs 'newton', got {method!r}")
        method = "newton"
    stack = _Stack([group], lam, precision)
    if method == "auto":
        method = "newton" if stack.n_free[0] <= NEWTON_MAX_FREE else "newton-cg"
    if method == "lbfgs":
        X, iterations, converged = _lbfgs(stack, max_iter, tol)
    else:
        X, iterations, converged = _newton_one(stack, max_iter, tol, sparse=method == "newton-cg")
    return _results(stack, [group], X, iterations, converged, dense=method == "newton")[0]


def fit_batch(
    groups: Sequence[tuple],
    *,
    lam: float = 1.0,
    prior_means: Sequence | None = None,
    fixed: Sequence | None = None,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> list[Fit]:
    """Fit many small groups in one vectorised damped-Newton run.

    The groups are padded to the largest number of free items, their Hessians stacked into
    one ``(B, n, n)`` array and solved with one batched :func:`numpy.linalg.solve` per
    iteration; a group stops iterating once converged. Each result equals what :func:`fit`
    with ``method="newton"`` gives for that group (to the solver's tolerance). Meant for
    groups of up to a few hundred items: the cost grows as ``B * n**3``.

    Parameters
    ----------
    groups : sequence of tuples
        ``(n_items, first, second, p)`` or ``(n_items, first, second, p, weight_or_None)``
        per group, as the arguments of :func:`fit`.
    lam : float, optional
        Prior precision, shared by all groups (see :func:`fit`).
    prior_means : sequence, optional
        One ``prior_mean`` per group (``None``, a scalar or an ``(n_items,)`` array).
    fixed : sequence, optional
        One ``fixed`` per group (``None``, a mapping or a ``(mask, values)`` tuple).
    max_iter, tol : optional
        As for :func:`fit`.

    Returns
    -------
    list of Fit
        One per group, in order, each with its dense ``covariance``.

    Raises
    ------
    judge_server.errors.InvalidRequest
        As :func:`fit`, with the field prefixed by the group, e.g. ``groups[3].p``.
    """
    n_groups = len(groups)
    for name, per_group in (("prior_means", prior_means), ("fixed", fixed)):
        if per_group is not None and len(per_group) != n_groups:
            raise InvalidRequest(
                name, f"has length {len(per_group)}, but there are {n_groups} groups"
            )
    validated = []
    for b, spec in enumerate(groups):
        prefix = f"groups[{b}]"
        if not isinstance(spec, (tuple, list)) or len(spec) not in (4, 5):
            raise InvalidRequest(prefix, "must be a tuple (n_items, first, second, p[, weight])")
        weight = spec[4] if len(spec) == 5 else None
        validated.append(
            _group(
                spec[0],
                spec[1],
                spec[2],
                spec[3],
                weight,
                None if prior_means is None else prior_means[b],
                None if fixed is None else fixed[b],
                prefix,
                prior_field=f"prior_means[{b}]",
                fixed_field=f"fixed[{b}]",
            )
        )
    lam, max_iter, tol = _check_options(lam, max_iter, tol)
    if not validated:
        return []
    stack = _Stack(validated, lam)
    X, iterations, converged = _newton_stack(stack, max_iter, tol)
    return _results(stack, validated, X, iterations, converged, dense=True)


__all__ = ["Fit", "LBFGS_ITER_FACTOR", "METHODS", "NEWTON_MAX_FREE", "fit", "fit_batch"]
