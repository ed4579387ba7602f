"""torch for the kernels, loaded on first use, and the helpers several families share.

The primitive modules define their kernels beside their entries but must not import torch
when a program is only read or checked (`check` and `fmt` start in well under a second), so
they reach torch through `torch` and `F` below: the first attribute read imports the real
module and caches the attribute on the proxy (later reads are plain attribute lookups).
"""

from __future__ import annotations

import importlib


class _Lazy:
    def __init__(self, name: str):
        self.__dict__["_name"] = name

    def __getattr__(self, attr):
        value = getattr(importlib.import_module(self._name), attr)
        self.__dict__[attr] = value
        return value


torch = _Lazy("torch")
F = _Lazy("torch.nn.functional")
np = _Lazy("numpy")

NEG_INF = float("-inf")
FLOOR = 1e4  # relaxed masks: an excluded token sits >= FLOOR below every kept one
BIG = 1e4  # relaxed Bool constants: log-odds of #t (and -BIG for #f)


def col(v, x):
    """A Real as something that broadcasts against (B, V) rows of x."""
    if isinstance(v, (float, int)):
        return v
    v = v.to(x.dtype)
    return v if v.dim() == 0 else v[:, None]


def colt(v, x):
    """Like col, always a tensor of x's dtype."""
    if isinstance(v, (float, int)):
        return torch.tensor(float(v), dtype=x.dtype, device=x.device)
    return col(v, x)


def one_minus(p, x):
    return (1 - p) if isinstance(p, (float, int)) else (1 - col(p, x))


def as_tensor(v):
    if isinstance(v, torch.Tensor):
        return v
    return torch.tensor(float(v), dtype=torch.float64)


def excluded(x):
    return x == NEG_INF


def all_finite(x) -> bool:
    """No inf or NaN in x (conservative: a sum overflowing to inf says False); one cheap
    reduction, several times faster than isfinite(x).all() on the CPU."""
    return bool(torch.isfinite(x.sum()))


def finite_range(x):
    """(B, 1) max - min over the finite scores of each row (0 for a single finite score)."""
    fin = torch.isfinite(x)
    hi = torch.where(fin, x, NEG_INF).amax(-1, keepdim=True)
    lo = torch.where(fin, x, float("inf")).amin(-1, keepdim=True)
    return torch.where(torch.isfinite(hi - lo), hi - lo, torch.zeros_like(hi))


def apply_soft_mask(x, z):
    """x + log sigmoid(z), floored; -inf scores stay -inf (gradient-safe)."""
    fin = torch.isfinite(x)
    floor = -(FLOOR + finite_range(x.detach()))
    logm = torch.maximum(F.logsigmoid(torch.where(fin, z, torch.zeros_like(z))), floor)
    return torch.where(fin, torch.where(fin, x, torch.zeros_like(x)) + logm, x)


def finite_only(fn, x, *args):
    """fn applied where x is finite (-inf stays -inf); no inf enters fn, so no NaN gradient."""
    fin = torch.isfinite(x)
    return torch.where(fin, fn(torch.where(fin, x, torch.zeros_like(x)), *args), x)


def sorted_soft_mask(order, margin_of_sorted):
    """z in original positions from margins computed along `order`; first position kept."""
    z = torch.cat([torch.full_like(margin_of_sorted[:, :1], BIG), margin_of_sorted[:, 1:]],
                  dim=1)
    return torch.empty_like(z).scatter(1, order, z)


# --- sorting on integer keys (truncations and the fused chain) -------------------------------

INT_KEY_MAX_V = 8192  # below this, topk/sort on integer keys beat them on floats (measured)


def order_key(x):
    """Integers in the same order as the (non-NaN) floats x; topk and sort are faster on them."""
    int_of = {torch.float32: (torch.int32, 31), torch.float64: (torch.int64, 63)}
    if x.dtype not in int_of:
        return x
    int_dtype, bits = int_of[x.dtype]
    i = x.contiguous().view(int_dtype)
    return i ^ ((i >> bits) & ((1 << bits) - 1))  # negative floats: flip the magnitude bits


NUMPY_MAX_V = 8192  # rows up to this long: NumPy's partition and sort (see top_scores)


def top_scores(x, n: int):
    """(values, positions): the n highest scores of each row of x (B, V), ascending (n = V:
    each row sorted), and where they are in x, or None for the positions where NumPy chose.

    On the CPU, for float rows up to NUMPY_MAX_V long, NumPy's vectorised partition and sort
    of the values alone are several times faster than torch's topk and sort, which order
    (value, index) pairs one row at a time (256 x 256: NumPy's sort 0.3 ms, torch's topk of
    41 1.1 ms, its sort 3.9 ms; 64 x 4096, n = 41: partition 0.5 ms, topk 1.6 ms); they give
    no positions."""
    V = x.size(-1)
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) \
            and x.dim() == 2 and V <= NUMPY_MAX_V:
        a = x.detach().numpy()
        if 8 * n < V:  # (else sorting the whole row is faster)
            return torch.from_numpy(np.sort(np.partition(a, V - n, axis=-1)[:, V - n :],
                                            axis=-1)), None
        return torch.from_numpy(np.sort(a, axis=-1)[:, V - n :]), None
    if n < V:
        vals, idx = torch.topk(x, n, dim=-1)
        return vals.flip(-1), idx.flip(-1)
    return torch.sort(x, dim=-1)


def ascending(x):
    """(values, indices) of x sorted ascending along the last dim, sorting integer keys
    (`order_key`: about twice as fast as a float sort on the CPU). The values come out in
    the same order as `torch.sort(x)`'s; only the order among exactly equal values may
    differ, so callers whose result depends on it re-sort those rows (`resort`)."""
    if x.dtype not in (torch.float32, torch.float64) or x.size(-1) > INT_KEY_MAX_V:
        return torch.sort(x, descending=False)
    idx = torch.sort(order_key(x), descending=False).indices
    return x.gather(-1, idx), idx


def resort(x, idx, rows) -> bool:
    """Put `torch.sort`'s order (the warpers') into idx at the rows where `rows` (B,) is
    True; whether there were any."""
    if not bool(rows.any()):
        return False
    idx[rows] = torch.sort(x[rows], descending=False).indices
    return True


def tie_at_cut(vals, remove):
    """(B,) bool: does a run of equal sorted values straddle the cut of the prefix mask
    `remove`?"""
    n = remove.sum(-1, keepdim=True)
    inside = (n > 0) & (n < vals.size(-1))
    at = n.clamp(min=1, max=vals.size(-1) - 1)
    return (inside & (vals.gather(-1, at) == vals.gather(-1, at - 1))).squeeze(-1)
