"""Converting and checking the values of a user's ``data`` as :meth:`ppl.dsl.Model.bind`
binds them (docs/dsl.md, "Binding data to a model").

Every value becomes a new tensor (the user's objects are copied, never modified):
integers -> int64, booleans -> the default float dtype, floats keep their precision.  A
value is refused with :class:`~ppl.errors.DataError`, naming its key, when it holds NaN
or inf, is empty (a dimension of size 0), is a masked array with masked entries (unless
the model says which value stands for a missing entry of that argument), is a
boolean for a site whose states have names that are not booleans, holds uint64 values
above the int64 maximum (they would wrap), or is a complex model argument.  Extended
precision (``np.longdouble``) becomes float64 (a warning where a value is rounded),
float8 tensors float32.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..errors import DataError

__all__ = ["to_tensor", "convert_argument", "convert_observation", "names_to_indices", "unmask", "check_not_empty"]


#: The floating and complex numpy dtypes ``torch.from_numpy`` takes.
_TORCH_FLOATS = tuple(np.dtype(t) for t in (np.float16, np.float32, np.float64, np.complex64, np.complex128))


def to_tensor(key: str, value) -> torch.Tensor:
    """Copy an array-like into a new tensor: integers -> int64, bool -> default float dtype,
    floating values keep their precision (float64 data stays float64), except extended
    precision (``np.longdouble`` -> float64, warning where a value is rounded) and float8
    tensors (-> float32, exactly).

    Raises
    ------
    DataError
        If ``value`` is not numeric, a floating value holds NaN/inf, uint64 values exceed
        the int64 maximum, or extended-precision values exceed the float64 range (the
        message names ``key`` and the first bad index).
    """
    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided or value.is_meta:
            what = "a meta tensor (it holds no values)" if value.is_meta else f"a {value.layout} tensor"
            raise DataError(f"data['{key}'] is {what}; expected a dense tensor of numbers (e.g. x.to_dense())")
        t = value.detach().clone()
        if t.dtype == torch.uint64:
            _check_uint64(key, t.cpu().numpy())
        if t.is_floating_point() and t.dtype.itemsize == 1:  # float8: exact in float32, which has the ops
            t = t.float()
    else:
        t = torch.from_numpy(_to_array(key, value))
    if t.dtype == torch.bool:
        t = t.to(torch.get_default_dtype())
    elif not t.is_floating_point() and not t.is_complex() and t.dtype != torch.int64:
        t = t.long()
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = (~torch.isfinite(t)).nonzero()
        where = tuple(bad[0].tolist())
        raise DataError(
            f"data['{key}'] holds NaN or inf (first at index {where}, value {t[where].item()}); "
            "expected finite numbers. Drop or impute missing values, or mask them with ppl.plate/poutine.mask"
        )
    return t


def _to_array(key: str, value) -> np.ndarray:
    """A numpy copy of a non-tensor value that torch can take (see :func:`to_tensor`)."""
    try:
        arr = np.array(value)  # always a copy
    except Exception as e:  # pragma: no cover - numpy accepts nearly everything
        raise DataError(f"data['{key}']: cannot convert {type(value).__name__} to an array ({e})") from None
    if arr.dtype == object and any(v is None or type(v).__name__ in ("NAType", "NaTType") for v in arr.flat):
        first = next(i for i, v in enumerate(arr.flat) if v is None or type(v).__name__ in ("NAType", "NaTType"))
        raise DataError(
            f"data['{key}'] holds missing values (None or pandas NA; first at flat index {first}); expected "
            "numbers. Drop or impute missing values, or model them with obs_mask= in ppl.sample"
        )
    if arr.dtype == object or arr.dtype.kind in "USVMm":  # strings, bytes, records, dates, durations
        raise DataError(
            f"data['{key}']: expected numbers (array, list or tensor), got values of dtype {arr.dtype}"
        )
    if arr.dtype == np.uint64:
        _check_uint64(key, arr)
    if arr.dtype.kind in "fc" and arr.dtype not in _TORCH_FLOATS:  # np.longdouble / np.clongdouble
        arr = _from_longdouble(key, arr)
    return arr


def _check_uint64(key: str, arr: np.ndarray) -> None:
    """Refuse unsigned 64-bit values above the int64 maximum, which int64 (ppl's integer
    dtype) would wrap to negative numbers.

    Raises
    ------
    DataError
        Naming ``key``, the first such value and its index.
    """
    big = arr > np.uint64(np.iinfo(np.int64).max)
    if big.any():
        where = tuple(int(i) for i in np.argwhere(big)[0])
        raise DataError(
            f"data['{key}'] holds uint64 values that overflow int64 (first at index {where}, value {arr[where]} > "
            f"2**63 - 1), which would wrap to negative numbers; pass them as floats (x.astype(float)) if that is "
            "what you mean"
        )


def _from_longdouble(key: str, arr: np.ndarray) -> np.ndarray:
    """Extended precision (``np.longdouble`` / ``np.clongdouble``, which torch cannot hold) ->
    float64 / complex128, warning where a value changes and refusing one that overflows."""
    out = arr.astype(np.complex128 if arr.dtype.kind == "c" else np.float64)
    overflow = np.isfinite(arr) & ~np.isfinite(out)
    if overflow.any():
        where = tuple(int(i) for i in np.argwhere(overflow)[0])
        raise DataError(f"data['{key}'] holds {arr.dtype} values beyond the float64 range (first at index {where}, "
                        f"value {arr[where]}); expected numbers that fit in float64")
    if bool(np.any((out != arr) & np.isfinite(arr))):
        warnings.warn(f"data['{key}']: {arr.dtype} values were rounded to float64 (torch has no extended precision)",
                      UserWarning, stacklevel=4)
    return out


def convert_argument(key: str, value):
    """Model arguments: arrays become tensors (:func:`to_tensor`); a dict's tensors and
    numpy arrays are copied (the dict is new, its other values are the same objects);
    scalars, strings, callables and other objects (a pandas DataFrame the model indexes by
    column name) pass unchanged.

    Raises
    ------
    DataError
        If an array or number is complex (a cast to real would drop the imaginary part), or
        for any reason :func:`to_tensor` gives.
    """
    if isinstance(value, (torch.Tensor, np.ndarray, list, tuple)):
        t = to_tensor(key, value)
        if t.is_complex():
            raise DataError(f"data['{key}'] is complex ({t.dtype}); expected real numbers "
                            "(pass x.real or x.abs() if that is what you mean)")
        return t
    if isinstance(value, (complex, np.complexfloating)):
        raise DataError(f"data['{key}'] is complex (value {value!r}); expected a real number "
                        "(pass x.real or abs(x) if that is what you mean)")
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(f"data['{key}'] is {value}; expected a finite number")
    if isinstance(value, dict):
        return {k: v.detach().clone() if isinstance(v, torch.Tensor) else np.array(v) if isinstance(v, np.ndarray)
                else v for k, v in value.items()}
    return value


def convert_observation(key: str, value, state_names) -> torch.Tensor:
    """Observed values: state names -> indices (:func:`names_to_indices`), arrays ->
    tensors (copies)."""
    if state_names is not None:
        value = names_to_indices(key, value, state_names)
    return to_tensor(key, value)


def names_to_indices(key: str, value, state_names: list):
    """State names (and booleans, where the states are booleans) -> state indices; other
    values (indices) are returned as they are.

    Raises
    ------
    DataError
        If a name is not a state of site ``key``, or a boolean is given while the states
        are not booleans (``True`` would otherwise be read as state index 1, whatever
        state 1 is called).
    """
    bools = [bool(s) for s in state_names] if all(isinstance(s, (bool, np.bool_)) for s in state_names) else None

    def one(v):
        if isinstance(v, (bool, np.bool_)):
            if bools is not None and bool(v) in bools:
                return bools.index(bool(v))
            raise DataError(
                f"data['{key}'] = {bool(v)!r} is a boolean, but the states of site '{key}' are named {state_names}; "
                f"ppl does not read a boolean as a state index. Give a state name (one of {state_names}) or a state "
                f"index 0..{len(state_names) - 1}"
            )
        if isinstance(v, str):
            try:
                return state_names.index(v)
            except ValueError:
                raise DataError(
                    f"data['{key}'] = {v!r} is not a state of site '{key}'; expected one of {state_names}"
                ) from None
        return v

    if isinstance(value, (str, bool, np.bool_)):
        return one(value)
    if isinstance(value, torch.Tensor) and value.dtype == torch.bool:
        value = value.detach().cpu().numpy()
    if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.dtype.kind in "USOb"):
        return np.vectorize(one, otypes=[np.int64])(np.asarray(value, dtype=object))
    return value


def unmask(key: str, value, *, model: str, what: str, missing_value=None, takes_missing=()):
    """A masked array's data, its masked entries refused or replaced.

    Parameters
    ----------
    key : str
    value : any
        A ``np.ma.MaskedArray`` or ``torch.masked.MaskedTensor`` is unmasked; any other
        value is returned as it is.
    model : str
        The model's name, for messages.
    what : str
        ``"argument"`` or ``"observed site"``, for messages.
    missing_value : optional
        The value that stands for a missing entry of this argument
        (``Model.missing_values``); masked entries take it.  ``None``: masked entries
        are refused.
    takes_missing : sequence of str
        The arguments of the model that take missing entries, for messages.

    Returns
    -------
    The data (a numpy array or tensor, copied), or ``value`` itself.

    Raises
    ------
    DataError
        If ``value`` has masked entries and ``missing_value`` is None; the message names
        the key, how many entries are masked and the first.
    """
    if isinstance(value, np.ma.MaskedArray):
        mask, data = np.ma.getmaskarray(value), np.array(np.ma.getdata(value))
    elif _is_masked_tensor(value):
        mask, data = ~value.get_mask().detach().cpu().numpy().astype(bool), value.get_data().detach().clone()
    else:
        return value
    if not mask.any():
        return data
    if missing_value is not None:
        if isinstance(data, torch.Tensor):
            keep = torch.from_numpy(~mask).to(data.device)
            return torch.where(keep, data, torch.as_tensor(missing_value, dtype=data.dtype, device=data.device))
        return np.where(mask, np.asarray(missing_value, dtype=data.dtype), data)
    n = int(mask.sum())
    first = tuple(int(i) for i in np.argwhere(mask)[0])
    hint = (f"; masked entries are taken as missing only in argument(s) {sorted(takes_missing)}" if takes_missing
            else "; to treat entries as missing, write the model with obs_mask= in ppl.sample (docs/em.md)")
    raise DataError(
        f"data['{key}'] is a masked array with {n} masked entr{'y' if n == 1 else 'ies'} (first at index {first}); "
        f"masked (missing) values are not supported for {what} '{key}' of model '{model}', and ppl will not read "
        f"the values under the mask as data. Drop or impute the masked entries{hint}"
    )


def _is_masked_tensor(value) -> bool:
    cls = getattr(getattr(torch, "masked", None), "MaskedTensor", None)
    return cls is not None and isinstance(value, cls)


def check_not_empty(key: str, value) -> None:
    """Refuse a bound tensor with a dimension of size 0 (no data: a plate of size 0).

    Raises
    ------
    DataError
        If ``value`` is a tensor with a zero-size dimension; the message names ``key``
        and the shape.
    """
    if isinstance(value, torch.Tensor) and value.dim() > 0 and 0 in value.shape:
        raise DataError(
            f"data['{key}'] is empty (shape {tuple(value.shape)}): it holds no values, so there is nothing to "
            "condition on (a plate over it would have size 0); give at least one value, or leave the key out"
        )
