"""Design stage: parse an lme4-style formula and build X, the Z blocks, y, offset and weights.

The fixed part goes through formulaic (pandas at that boundary) with treatment contrasts and
the first level as baseline; column names are mapped to R's (``period[T.2]`` -> ``period2``,
``Intercept`` -> ``(Intercept)``). Random terms ``(expr | g)`` are cut out of the right-hand side
first; each becomes a :class:`ReBlock` with its raw model matrix ``Z`` (n, k), the level index of
every row and the slice of ``theta`` holding its relative Cholesky factor (lme4's Λ_θ: the lower
triangle of a k x k block, column-major, diagonal bounded below by 0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from formulaic import Formula, model_matrix

from poolcast.errors import FormulaError, InvalidParameterError, ModelSpecificationError
from poolcast.glmm.control import GlmmControl
from poolcast.glmm.families import get_family

__all__ = [
    "GlmmDesign",
    "NewBlock",
    "NewDesign",
    "ReBlock",
    "build_design",
    "design_for_newdata",
    "parse_formula",
    "r_style_name",
]

_T_LEVEL = re.compile(r"(?:C\()?([A-Za-z_.][\w.]*)\)?\[T\.([^\]]*)\]")
_FULL_LEVEL = re.compile(r"(?:C\()?([A-Za-z_.][\w.]*)\)?\[([^\]]*)\]")
_IDENT = re.compile(r"[A-Za-z_.][\w.]*")


def r_style_name(name: str) -> str:
    """Map a formulaic column name to lme4/R's: ``Intercept`` -> ``(Intercept)``, ``x[T.b]`` -> ``xb``.

    >>> r_style_name("lbase:trt[T.progabide]")
    'lbase:trtprogabide'
    """
    if name == "Intercept":
        return "(Intercept)"
    return _T_LEVEL.sub(lambda m: m.group(1) + m.group(2), name)


@dataclass(frozen=True)
class ParsedFormula:
    """A formula split into its parts.

    Attributes
    ----------
    lhs : str
        Left-hand side (a column, an expression, or ``cbind(s, f)``).
    fixed_rhs : str
        Right-hand side without random terms (``"1"`` when only an intercept).
    random : tuple[tuple[str, str], ...]
        ``(expr, group)`` of each random term, ``||`` and ``a/b`` expanded.
    """

    lhs: str
    fixed_rhs: str
    random: tuple[tuple[str, str], ...]


def _split_top(text: str, sep: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [s.strip() for s in out]


def parse_formula(formula: str) -> ParsedFormula:
    """Split an lme4 formula into response, fixed part and random terms.

    >>> parse_formula("y ~ x + (1 + x | g) + (1 | a/b)").random
    (('1 + x', 'g'), ('1', 'a'), ('1', 'a:b'))
    """
    if not isinstance(formula, str) or formula.count("~") != 1:
        raise FormulaError(
            f"formula={formula!r} must be a string with one '~', e.g. 'y ~ x + (1 | g)'."
        )
    lhs, rhs = (s.strip() for s in formula.split("~"))
    if not lhs:
        raise FormulaError(f"formula={formula!r} has no response; write 'y ~ ...'.")
    random: list[tuple[str, str]] = []
    fixed_parts: list[str] = []
    for part in _split_top(rhs, "+"):
        if part.startswith("(") and part.endswith(")") and "|" in part:
            inner = part[1:-1]
            double = "||" in inner
            expr, group = (s.strip() for s in inner.split("||" if double else "|", 1))
            if not expr or not group:
                raise FormulaError(f"random term {part!r} needs the form (expr | group).")
            groups = _expand_nesting(group)
            for g in groups:
                if double:
                    random.extend(_uncorrelated(expr, g))
                else:
                    random.append((expr, g))
        elif part:
            fixed_parts.append(part)
    fixed_rhs = " + ".join(fixed_parts) if fixed_parts else "1"
    if not random:
        raise FormulaError(
            f"formula={formula!r} has no random-effects term; add one such as '(1 | group)'."
        )
    return ParsedFormula(lhs=lhs, fixed_rhs=fixed_rhs, random=tuple(random))


def _expand_nesting(group: str) -> list[str]:
    parts = [p.strip() for p in group.split("/")]
    return [":".join(parts[: i + 1]) for i in range(len(parts))]


def _uncorrelated(expr: str, group: str) -> list[tuple[str, str]]:
    terms = [t.strip() for t in expr.split("+")]
    has_int = not any(t in ("0", "-1") for t in terms)
    out = [("1", group)] if has_int else []
    out += [(f"0 + {t}", group) for t in terms if t not in ("0", "1", "-1")]
    return out


@dataclass(frozen=True)
class ReBlock:
    """One random-effects term ``(expr | group)``.

    Attributes
    ----------
    factor : str
        Name used in results (the grouping expression; ``g.1`` if repeated).
    group : str
        Grouping expression, e.g. ``"category:sku"``.
    group_vars : tuple[str, ...]
        Columns forming the grouping factor.
    term_names : tuple[str, ...]
        R-style names of the k columns of Z, e.g. ``("(Intercept)", "promo")``.
    spec : formulaic.ModelSpec
        Frozen spec that rebuilds Z for new data.
    levels : tuple[str, ...]
        Levels of the grouping factor (sorted), G of them.
    level_index : np.ndarray
        (n,) int level of each row.
    Z : np.ndarray
        (n, k) raw random-effects model matrix.
    theta_slice : slice
        Where this block's k(k+1)/2 Cholesky entries sit in theta (column-major lower triangle).
    """

    factor: str
    group: str
    group_vars: tuple[str, ...]
    term_names: tuple[str, ...]
    spec: Any
    levels: tuple[str, ...]
    level_index: np.ndarray
    Z: np.ndarray
    theta_slice: slice

    @property
    def k(self) -> int:
        """Number of random effects per level."""
        return self.Z.shape[1]

    @property
    def n_levels(self) -> int:
        """Number of levels G."""
        return len(self.levels)

    def tril_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) of the theta entries in the k x k Λ block, lme4's column-major order."""
        rows, cols = [], []
        for c in range(self.k):
            for r in range(c, self.k):
                rows.append(r)
                cols.append(c)
        return np.array(rows), np.array(cols)

    def lambda_block(self, theta: np.ndarray) -> np.ndarray:
        """The k x k lower-triangular relative covariance factor Λ of this block."""
        lam = np.zeros((self.k, self.k))
        r, c = self.tril_index()
        lam[r, c] = theta[self.theta_slice]
        return lam


@dataclass(frozen=True)
class GlmmDesign:
    """Everything the objective needs, built once from formula and data.

    Attributes
    ----------
    formula : str
        The formula as given.
    family : str
        Family name.
    X : np.ndarray
        (n, p) fixed-effects model matrix.
    fixef_names : tuple[str, ...]
        R-style names of the columns of X.
    y : np.ndarray
        (n,) response (successes for binomial).
    trials : np.ndarray or None
        (n,) binomial trials, None for count families.
    offset : np.ndarray
        (n,) offset on the linear predictor.
    weights : np.ndarray
        (n,) prior weights (multiply each observation's log-likelihood).
    blocks : tuple[ReBlock, ...]
        The random-effects terms.
    theta_lower : np.ndarray
        Lower bounds of theta (0 for Λ diagonals, -inf otherwise).
    theta_names : tuple[str, ...]
        Names of the theta entries, e.g. ``"sku.(Intercept)"``, ``"sku.promo.(Intercept)"``.
    fixed_spec : formulaic.ModelSpec
        Frozen spec of the fixed part (rebuilds X for new data).
    response : str
        Left-hand side of the formula.
    offset_source, trials_source : str or None
        Column name / expression the offset and trials came from (reused for new data).
    messages : tuple[str, ...]
        Messages of the data checks that warned.
    family_object : Family or None
        The family object when it carries a parameter of its own (``Tweedie(power=p)``);
        None for the parameter-free families, looked up by ``family``.
    dispformula : str or None
        The one-sided dispersion formula (glmmTMB's ``dispformula``, e.g. ``"~ disp_class"``);
        None for one dispersion parameter shared by all rows.
    X_disp : np.ndarray or None
        (n, k_d) model matrix of ``dispformula`` (log NB2 size = ``X_disp @ gamma``).
    disp_names : tuple[str, ...]
        R-style names of the columns of ``X_disp``.
    disp_spec : formulaic.ModelSpec or None
        Frozen spec of the dispersion part (rebuilds ``X_disp`` for new data).
    """

    formula: str
    family: str
    X: np.ndarray
    fixef_names: tuple[str, ...]
    y: np.ndarray
    trials: np.ndarray | None
    offset: np.ndarray
    weights: np.ndarray
    blocks: tuple[ReBlock, ...]
    theta_lower: np.ndarray
    theta_names: tuple[str, ...]
    fixed_spec: Any
    response: str
    offset_source: str | None = None
    trials_source: str | None = None
    messages: tuple[str, ...] = ()
    family_object: Any = None
    dispformula: str | None = None
    X_disp: np.ndarray | None = None
    disp_names: tuple[str, ...] = ()
    disp_spec: Any = None

    @property
    def n_obs(self) -> int:
        """Number of observations n."""
        return self.X.shape[0]

    @property
    def n_theta(self) -> int:
        """Length of theta."""
        return len(self.theta_lower)

    def theta_start(self) -> np.ndarray:
        """lme4's start: 1 on Λ diagonals, 0 elsewhere (an ar1 term: sigma = 1, rho = 0)."""
        return np.where(np.isfinite(self.theta_lower), 1.0, 0.0)

    def theta_bounds(self) -> list[tuple[float | None, float | None]]:
        """(lower, upper) of each theta entry for the optimiser (None = unbounded)."""
        bounds = [(lo if np.isfinite(lo) else None, None) for lo in self.theta_lower]
        for b in self.blocks:
            if getattr(b, "time_var", None):
                from poolcast.glmm.ar1 import RHO_PARAM_MAX

                bounds[b.theta_slice.start + 1] = (-RHO_PARAM_MAX, RHO_PARAM_MAX)
        return bounds

    @property
    def disp_indicator(self) -> bool:
        """True when the dispersion matrix is a full dummy coding (``"~ 0 + class"``: each row
        has one 1): each coefficient is then the log size of its class, bounded like the
        scalar size."""
        X = self.X_disp
        if X is None:
            return False
        return bool(np.all((X == 0.0) | (X == 1.0)) and np.all(X.sum(axis=1) == 1.0))

    @property
    def ar1_block(self) -> Any:
        """The ar1 term's block, None when the model has none."""
        for b in self.blocks:
            if getattr(b, "time_var", None):
                return b
        return None


def _to_pandas(data: Any, argument: str = "data") -> pd.DataFrame:
    if isinstance(data, pl.DataFrame):
        return data.to_pandas()
    if isinstance(data, pd.DataFrame):
        return data.reset_index(drop=True)
    raise InvalidParameterError(
        f"{argument} is a {type(data).__name__}; pass a polars or pandas DataFrame."
    )


def _lhs_variables(lhs: str) -> set[str]:
    names = set()
    for m in _IDENT.finditer(lhs):
        rest = lhs[m.end() :].lstrip()
        if not rest.startswith("("):
            names.add(m.group(0))
    return names


def _check_columns(df: pd.DataFrame, names: set[str], formula: str, what: str = "formula") -> None:
    missing = sorted(n for n in names if n not in df.columns)
    if missing:
        raise FormulaError(
            f"{what} {formula!r} names column(s) {missing} that the data do not have; "
            f"available columns: {list(df.columns)}. Fix the formula or add the column."
        )
    for n in sorted(names):
        col = df[n]
        if col.isna().any():
            bad = np.flatnonzero(col.isna().to_numpy())
            raise InvalidParameterError(
                f"column {n!r} used by {what} {formula!r} has {len(bad)} missing value(s) "
                f"(NaN/null), first at row {bad[0]}; drop or impute those rows before fitting."
            )


def _eval_expr(df: pd.DataFrame, expr: str) -> np.ndarray:
    expr = expr.strip()
    if expr in df.columns:
        return np.asarray(df[expr], dtype=float)
    try:
        return np.asarray(df.eval(expr), dtype=float)
    except Exception as exc:  # pandas raises many types for a bad expression
        raise FormulaError(
            f"cannot evaluate {expr!r} on the data ({exc}); use column names and + - * /."
        ) from exc


def _vector(
    df: pd.DataFrame, value: Any, argument: str, n: int
) -> tuple[np.ndarray | None, str | None]:
    """Resolve an offset/trials/weights argument given as a column name or an array."""
    if value is None:
        return None, None
    if isinstance(value, str):
        if value not in df.columns:
            raise InvalidParameterError(
                f"{argument}={value!r} is not a column of the data; pass an existing column "
                f"name or an array of length {n}."
            )
        arr, source = np.asarray(df[value], dtype=float), value
    else:
        arr, source = np.asarray(value, dtype=float).ravel(), None
    if arr.shape != (n,):
        raise InvalidParameterError(
            f"{argument} has length {arr.shape[0]}, the data have {n} rows; pass one value per row."
        )
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.isfinite(arr))
        raise InvalidParameterError(
            f"{argument} has {len(bad)} non-finite value(s), first at row {bad[0]}; "
            "drop those rows or fix the values."
        )
    return arr, source


def _group_keys(df: pd.DataFrame, group_vars: tuple[str, ...]) -> pd.Series:
    keys = df[group_vars[0]].astype(str)
    for v in group_vars[1:]:
        keys = keys + ":" + df[v].astype(str)
    return keys


def _apply_check(
    level: str, message: str, messages: list[str], error=ModelSpecificationError
) -> None:
    import warnings

    if level == "raise":
        raise error(message)
    if level == "warn":
        from poolcast.errors import PoolcastWarning

        warnings.warn(message, PoolcastWarning, stacklevel=3)
        messages.append(message)


def _response(
    df: pd.DataFrame, lhs: str, family: str, trials_arg: Any, n: int
) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    m = re.fullmatch(r"cbind\((.*)\)", lhs.strip())
    if m:
        if family != "binomial":
            raise FormulaError(
                f"response {lhs!r} uses cbind(), which is only for family='binomial' "
                f"(got family={family!r}); use a count column as response."
            )
        args = _split_top(m.group(1), ",")
        if len(args) != 2:
            raise FormulaError(f"response {lhs!r} must be cbind(successes, failures).")
        succ, fail = _eval_expr(df, args[0]), _eval_expr(df, args[1])
        return succ, succ + fail, f"({args[0]}) + ({args[1]})"
    y = _eval_expr(df, lhs)
    if family != "binomial":
        return y, None, None
    trials, source = _vector(df, trials_arg, "trials", n)
    if trials is None:
        trials = np.ones(n)
    return y, trials, source


def _check_response(y, trials, family: str, lhs: str, level: str, messages: list[str]) -> None:
    if level == "ignore":
        return
    if not np.all(np.isfinite(y)):
        raise InvalidParameterError(f"response {lhs!r} has non-finite values; drop those rows.")
    if family == "truncated_negbin":
        bad = np.flatnonzero((y < 1) | (y != np.round(y)))
        if bad.size:
            _apply_check(
                level,
                f"response {lhs!r} must hold positive integer counts for "
                f"family='truncated_negbin' (the count part of a hurdle model); row {bad[0]} "
                f"has {y[bad[0]]!r} ({bad.size} such rows). Fit it to the rows with y > 0.",
                messages,
                InvalidParameterError,
            )
    elif family == "tweedie":
        bad = np.flatnonzero(y < 0)
        if bad.size:
            _apply_check(
                level,
                f"response {lhs!r} must be non-negative for family='tweedie'; row {bad[0]} "
                f"has {y[bad[0]]!r} ({bad.size} such rows).",
                messages,
                InvalidParameterError,
            )
    elif family == "gamma":
        bad = np.flatnonzero(y <= 0)
        if bad.size:
            _apply_check(
                level,
                f"response {lhs!r} must be strictly positive for family='gamma'; row {bad[0]} "
                f"has {y[bad[0]]!r} ({bad.size} such rows). Drop the zeros or use a family for "
                "counts (negbin) or with exact zeros.",
                messages,
                InvalidParameterError,
            )
    elif family in ("poisson", "negbin"):
        bad = np.flatnonzero((y < 0) | (y != np.round(y)))
        if bad.size:
            _apply_check(
                level,
                f"response {lhs!r} must hold non-negative integer counts for family={family!r}; "
                f"row {bad[0]} has {y[bad[0]]!r} ({bad.size} such rows). Round or fix the counts, "
                "or use another family.",
                messages,
                InvalidParameterError,
            )
    else:
        bad = np.flatnonzero(
            (y < 0) | (y > trials) | (y != np.round(y)) | (trials != np.round(trials))
        )
        if bad.size:
            _apply_check(
                level,
                f"binomial response {lhs!r} must be an integer number of successes in "
                f"[0, trials]; row {bad[0]} has y={y[bad[0]]!r} with trials={trials[bad[0]]!r} "
                f"({bad.size} such rows). Pass trials= (or cbind(successes, failures)) or fix y.",
                messages,
                InvalidParameterError,
            )


def build_design(
    formula: str,
    data: Any,
    *,
    family: str = "poisson",
    offset: Any = None,
    trials: Any = None,
    weights: Any = None,
    control: GlmmControl | None = None,
    dispformula: str | None = None,
) -> GlmmDesign:
    """Build the model matrices of a GLMM from an lme4-style formula.

    Parameters
    ----------
    formula : str
        ``response ~ fixed + (expr | group) + ...``. For binomial the response may be
        ``cbind(successes, failures)``.
    data : polars.DataFrame or pandas.DataFrame
        The data (converted to pandas here, the formulaic boundary).
    family : str
        "poisson", "negbin" or "binomial".
    offset, trials, weights : str or array-like, optional
        Column name or array (length n).
    control : GlmmControl, optional
        Check levels.
    dispformula : str, optional
        One-sided fixed-effects formula of the log NB2 size (glmmTMB's ``dispformula``),
        e.g. ``"~ disp_class"``; see :func:`dispersion_matrix`.

    Returns
    -------
    GlmmDesign

    Examples
    --------
    >>> import polars as pl
    >>> d = build_design("y ~ x + (1 | g)", pl.DataFrame({"y": [1, 2, 0, 3], "x": [0.1, 0.2, 0.3, 0.4],
    ...                  "g": ["a", "a", "b", "b"]}))
    >>> d.fixef_names, d.blocks[0].levels
    (('(Intercept)', 'x'), ('a', 'b'))
    """
    control = control or GlmmControl()
    family_object = get_family(family)
    fam = family_object.name
    from poolcast.glmm.ar1 import split_ar1_term

    ar1_term = split_ar1_term(formula)
    parsed = parse_formula(ar1_term[0] if ar1_term else formula)
    df = _to_pandas(data)
    n = len(df)
    messages: list[str] = []
    try:
        fixed_vars = set(Formula(parsed.fixed_rhs).required_variables)
        re_vars = set()
        for expr, group in parsed.random:
            re_vars |= set(Formula(expr).required_variables)
            re_vars |= {g.strip() for g in group.split(":")}
    except Exception as exc:  # formulaic parse errors
        raise FormulaError(f"cannot parse formula {formula!r}: {exc}") from exc
    _check_columns(df, fixed_vars | re_vars | _lhs_variables(parsed.lhs), formula)

    y, trials_arr, trials_source = _response(df, parsed.lhs, fam, trials, n)
    _check_response(y, trials_arr, fam, parsed.lhs, control.check_response, messages)
    off, offset_source = _vector(df, offset, "offset", n)
    w, _ = _vector(df, weights, "weights", n)
    if w is not None and np.any(w < 0):
        raise InvalidParameterError("weights has negative values; prior weights must be >= 0.")

    mm = model_matrix(parsed.fixed_rhs, df, na_action="raise")
    X = np.asarray(mm, dtype=float)
    names = tuple(r_style_name(c) for c in mm.columns)
    rank = np.linalg.matrix_rank(X) if X.size else 0
    if rank < X.shape[1]:
        _apply_check(
            control.check_rank_x,
            f"fixed-effects model matrix of {parsed.fixed_rhs!r} is rank deficient "
            f"(rank {rank} < {X.shape[1]} columns {list(names)}); drop collinear terms.",
            messages,
        )

    blocks: list[ReBlock] = []
    lower: list[float] = []
    theta_names: list[str] = []
    used: dict[str, int] = {}
    for expr, group in parsed.random:
        zmm = model_matrix(expr, df, na_action="raise")
        Z = np.asarray(zmm, dtype=float)
        if Z.shape[1] == 0:
            raise FormulaError(f"random term ({expr} | {group}) has no columns.")
        gvars = tuple(g.strip() for g in group.split(":"))
        codes, uniques = pd.factorize(_group_keys(df, gvars), sort=True)
        levels = tuple(str(u) for u in uniques)
        if len(levels) < 2:
            raise ModelSpecificationError(
                f"grouping factor {group!r} has {len(levels)} level(s) ({list(levels)}); "
                "a random effect needs at least 2 levels. Drop the term or use a fixed effect."
            )
        if len(levels) >= n:
            _apply_check(
                control.check_n_levels,
                f"grouping factor {group!r} has {len(levels)} levels for {n} observations; "
                "the number of levels must be < the number of observations. Drop the term.",
                messages,
            )
        count = used.get(group, 0)
        used[group] = count + 1
        factor = group if count == 0 else f"{group}.{count}"
        k = Z.shape[1]
        start = len(lower)
        tnames = tuple(r_style_name(c) for c in zmm.columns)
        block = ReBlock(
            factor=factor,
            group=group,
            group_vars=gvars,
            term_names=tnames,
            spec=zmm.model_spec,
            levels=levels,
            level_index=codes.astype(np.int64),
            Z=Z,
            theta_slice=slice(start, start + k * (k + 1) // 2),
        )
        r, c = block.tril_index()
        for ri, ci in zip(r, c, strict=True):
            lower.append(0.0 if ri == ci else -np.inf)
            theta_names.append(
                f"{factor}.{tnames[ri]}" if ri == ci else f"{factor}.{tnames[ri]}.{tnames[ci]}"
            )
        blocks.append(block)

    q = sum(b.n_levels * b.k for b in blocks)
    if q >= n:
        _apply_check(
            control.check_z_rank,
            f"the random effects have q = {q} coefficients for n = {n} observations "
            f"({[f'{b.factor}: {b.n_levels} x {b.k}' for b in blocks]}); q must be < n (lme4's "
            "check.nobs.vs.nRE). Simplify the random part, e.g. drop a random slope.",
            messages,
        )
    if ar1_term:
        blocks, lower, theta_names = _ar1_blocks(blocks, ar1_term, df, formula)
    X_disp, disp_names, disp_spec = None, (), None
    if dispformula is not None:
        X_disp, disp_names, disp_spec = dispersion_matrix(dispformula, df, control, messages)
    return GlmmDesign(
        dispformula=dispformula,
        X_disp=X_disp,
        disp_names=disp_names,
        disp_spec=disp_spec,
        family_object=family_object if getattr(family_object, "power", None) else None,
        formula=formula,
        family=fam,
        X=X,
        fixef_names=names,
        y=y,
        trials=trials_arr,
        offset=off if off is not None else np.zeros(n),
        weights=w if w is not None else np.ones(n),
        blocks=tuple(blocks),
        theta_lower=np.array(lower),
        theta_names=tuple(theta_names),
        fixed_spec=mm.model_spec,
        response=parsed.lhs,
        offset_source=offset_source,
        trials_source=trials_source,
        messages=tuple(messages),
    )


def dispersion_matrix(
    dispformula: str, df: pd.DataFrame, control: GlmmControl, messages: list[str]
) -> tuple[np.ndarray, tuple[str, ...], Any]:
    """The model matrix of a one-sided dispersion formula (glmmTMB's ``dispformula``).

    Fixed effects only, as in glmmTMB 1.1.5 (no ``(expr | group)`` terms), with the same
    treatment contrasts and R-style names as the fixed part; ``"~ 1"`` is one size for all
    rows (the scalar model, parametrised as its log).

    Returns
    -------
    (X_disp, names, spec)
    """
    if not isinstance(dispformula, str):
        raise InvalidParameterError(
            f"dispformula={dispformula!r} must be a one-sided formula string such as "
            "'~ disp_class', or None."
        )
    text = dispformula.strip()
    if not text.startswith("~"):
        raise FormulaError(
            f"dispformula={dispformula!r} must be one-sided (start with '~'), e.g. '~ disp_class'."
        )
    rhs = text[1:].strip()
    if "|" in rhs:
        raise FormulaError(
            f"dispformula={dispformula!r} has a random-effects term; the dispersion model takes "
            "fixed effects only (as glmmTMB 1.1.5). Use a fixed factor such as '~ disp_class'."
        )
    try:
        needed = set(Formula(rhs or "1").required_variables)
    except Exception as exc:  # formulaic parse errors
        raise FormulaError(f"cannot parse dispformula {dispformula!r}: {exc}") from exc
    _check_columns(df, needed, dispformula, "dispformula")
    mm = model_matrix(rhs or "1", df, na_action="raise")
    X = np.asarray(mm, dtype=float).reshape(len(df), -1)
    # R names the full dummy coding of "~ 0 + f" "fa", "fb" (formulaic: "f[a]", "f[b]")
    names = tuple(_FULL_LEVEL.sub(r"\1\2", r_style_name(c)) for c in mm.columns)
    if X.shape[1] == 0:
        raise FormulaError(f"dispformula={dispformula!r} has no columns; use '~ 1' at least.")
    rank = np.linalg.matrix_rank(X)
    if rank < X.shape[1]:
        _apply_check(
            control.check_rank_x,
            f"dispersion model matrix of dispformula={dispformula!r} is rank deficient "
            f"(rank {rank} < {X.shape[1]} columns {list(names)}); drop collinear terms.",
            messages,
        )
    return X, names, mm.model_spec


def _ar1_blocks(blocks: list[ReBlock], ar1_term: tuple[str, str, str], df, formula: str):
    """Swap the placeholder (1 | group) block of an ar1 term for the Ar1Block."""
    from poolcast.glmm.ar1 import make_ar1_block

    if len(blocks) != 1:
        raise ModelSpecificationError(
            f"formula {formula!r} combines ar1() with other random-effects terms; the engine "
            "fits an ar1(time + 0 | group) term alone (with any fixed effects). Drop the other "
            "random terms (the AR(1) process already gives each group its own level)."
        )
    block = make_ar1_block(blocks[0], ar1_term[1], df)
    return [block], [0.0, -np.inf], [f"{block.factor}.sd", f"{block.factor}.atanh(rho)"]


@dataclass(frozen=True)
class NewBlock:
    """Random-effects rows of new data for one block.

    Attributes
    ----------
    factor : str
        Factor name (as in :attr:`ReBlock.factor`).
    level_index : np.ndarray
        (n,) int index into the fitted levels, -1 for a level not seen in the fit.
    Z : np.ndarray
        (n, k) raw random-effects model matrix.
    time_index : np.ndarray or None
        (n,) calendar step of each row for an ar1 term (beyond the calendar's end for a
        forecast), None otherwise.
    """

    factor: str
    level_index: np.ndarray
    Z: np.ndarray
    time_index: np.ndarray | None = None


@dataclass(frozen=True)
class NewDesign:
    """Model matrices of new data, built from a fitted design's frozen specs.

    Attributes
    ----------
    X : np.ndarray
        (n, p) fixed-effects matrix, columns in the fitted order.
    offset : np.ndarray
        (n,) offset (zeros when the fit had none).
    trials : np.ndarray or None
        (n,) binomial trials, None for count families.
    blocks : list[NewBlock]
        One per fitted random-effects block, same order.
    X_disp : np.ndarray or None
        (n, k_d) dispersion model matrix when the fit had a ``dispformula``.
    """

    X: np.ndarray
    offset: np.ndarray
    trials: np.ndarray | None
    blocks: list[NewBlock]
    X_disp: np.ndarray | None = None


def design_for_newdata(
    design: GlmmDesign, newdata: Any, *, offset: Any = None, trials: Any = None
) -> NewDesign:
    """Rebuild X, offset, trials and the Z blocks for new data from a fitted design.

    Parameters
    ----------
    design : GlmmDesign
        The fitted design (its frozen formulaic specs are reused, so factor codings match).
    newdata : polars.DataFrame or pandas.DataFrame
        Rows to predict; the response column is not needed.
    offset : str or array-like, optional
        Offset for the new rows. Default: the fitted offset column if the fit named one and
        ``newdata`` has it, else zeros.
    trials : str or array-like, optional
        Binomial trials. Default: the fitted trials column / ``cbind`` expression evaluated on
        ``newdata`` when possible, ones for a Bernoulli fit; otherwise an error asks for it.

    Returns
    -------
    NewDesign
        ``level_index`` is -1 for levels of a grouping factor not seen in the fit (predict
        them at the population level).

    Examples
    --------
    >>> import polars as pl
    >>> d = build_design("y ~ x + (1 | g)", pl.DataFrame({"y": [1, 2, 0, 3], "x": [0.1, 0.2, 0.3, 0.4],
    ...                  "g": ["a", "a", "b", "b"]}))
    >>> nd = design_for_newdata(d, pl.DataFrame({"x": [0.5, 0.6], "g": ["b", "z"]}))
    >>> nd.blocks[0].level_index.tolist(), nd.X.shape
    ([1, -1], (2, 2))
    """
    df = _to_pandas(newdata, "newdata")
    n = len(df)
    needed = set(design.fixed_spec.required_variables)
    for b in design.blocks:
        needed |= set(b.spec.required_variables) | set(b.group_vars)
    _check_columns(df, needed, design.formula, "newdata for formula")
    X_disp = None
    if design.disp_spec is not None:
        _check_columns(
            df,
            set(design.disp_spec.required_variables),
            design.dispformula,
            "newdata for dispformula",
        )
        X_disp = np.asarray(design.disp_spec.get_model_matrix(df), dtype=float).reshape(n, -1)
    X = np.asarray(design.fixed_spec.get_model_matrix(df), dtype=float).reshape(n, -1)
    if offset is None and design.offset_source is not None and design.offset_source in df.columns:
        offset = design.offset_source
    off, _ = _vector(df, offset, "offset", n)
    off = off if off is not None else np.zeros(n)
    tr = None
    if design.family == "binomial":
        if trials is not None:
            tr, _ = _vector(df, trials, "trials", n)
        elif design.trials_source is not None:
            try:
                tr = _eval_expr(df, design.trials_source)
            except FormulaError as exc:
                raise InvalidParameterError(
                    f"newdata cannot give the binomial trials {design.trials_source!r}; "
                    "pass trials= (a column name or an array)."
                ) from exc
        elif design.trials is not None and np.all(design.trials == 1):
            tr = np.ones(n)
        else:
            raise InvalidParameterError(
                "the fit used binomial trials given as an array; pass trials= for newdata."
            )
    blocks = []
    for b in design.blocks:
        Z = np.asarray(b.spec.get_model_matrix(df), dtype=float).reshape(n, -1)
        keys = _group_keys(df, b.group_vars)
        idx = pd.Index(list(b.levels)).get_indexer(keys).astype(np.int64)
        steps = None
        if getattr(b, "time_var", None):
            from poolcast.glmm.ar1 import newdata_steps

            steps = newdata_steps(b, df)
        blocks.append(NewBlock(factor=b.factor, level_index=idx, Z=Z, time_index=steps))
    return NewDesign(X=X, offset=off, trials=tr, blocks=blocks, X_disp=X_disp)
