"""The command line's CSV reader (``ppl.cli.read_csv`` / ``read_csv_matrix`` / ``load_data``),
parsed by ``pandas.read_csv`` (issue 16): values, missing cells and the file lines that the
messages name, checked against values written out by hand."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import ppl
from ppl import cli


def write(tmp_path, text: str, name: str = "d.csv", *, raw: bytes | None = None) -> str:
    path = tmp_path / name
    path.write_bytes(raw if raw is not None else text.encode("utf-8"))
    return str(path)


def usage_error(call, *args, **kwargs) -> str:
    with pytest.raises(cli.UsageError) as info:
        call(*args, **kwargs)
    return str(info.value)


def data_error(path, **kwargs) -> str:
    with pytest.raises(ppl.DataError) as info:
        cli.load_data([path], **kwargs)
    return str(info.value)


TAIL = ("; ppl takes no missing values here: drop or impute those rows (a learnable Bayesian network "
        "takes -1 for a missing entry)")


# ------------------------------------------------------------------------- values
def test_ints_floats_and_text_states(tmp_path):
    path = write(tmp_path, "n,x,state\n1,1.5,yes\n-2,2e3,no\n+3,-0.25,yes\n")
    data = cli.read_csv(path)
    assert list(data) == ["n", "x", "state"]
    assert data["n"].dtype == torch.int64 and data["n"].tolist() == [1, -2, 3]
    assert data["x"].dtype == torch.float64 and data["x"].tolist() == [1.5, 2000.0, -0.25]
    assert isinstance(data["state"], np.ndarray) and data["state"].tolist() == ["yes", "no", "yes"]
    assert cli.read_csv(path, float32=True)["x"].dtype == torch.float32
    assert cli.read_csv(path, float32=True)["n"].dtype == torch.int64


def test_floats_are_read_exactly(tmp_path):
    # the float parser of pandas 1.5 is one unit in the last place off on these
    path = write(tmp_path, "x\n987259201033.01293945312\n66872192e231\n105164835967083076e-248\n0.1\n1e999\n-inf\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = cli.read_csv(path)["x"]
    assert x.tolist() == [987259201033.01293945312, 66872192e231, 105164835967083076e-248, 0.1, math.inf, -math.inf]


def test_cells_and_names_are_stripped_and_1_0_is_a_float(tmp_path):
    data = cli.read_csv(write(tmp_path, " a , b ,c\n 1 , yes ,1.0\n2,no , 2\n"))
    assert list(data) == ["a", "b", "c"]
    assert data["a"].tolist() == [1, 2] and data["a"].dtype == torch.int64
    assert data["b"].tolist() == ["yes", "no"]
    assert data["c"].dtype == torch.float64 and data["c"].tolist() == [1.0, 2.0]


def test_missing_markers_in_any_case(tmp_path):
    x = cli.read_csv(write(tmp_path, "x\n1\nNa\nNULL\nNone\nn/a\nNaN\n\n2\n"))["x"]
    assert x.dtype == torch.float64   # an int column with a missing cell: float, NaN there
    assert x[0] == 1 and x[-1] == 2 and torch.isnan(x[1:-1]).all() and len(x) == 8


def test_text_column_keeps_na_as_text(tmp_path):
    data = cli.read_csv(write(tmp_path, "s\nyes\nNA\nno\n"))
    assert data["s"].tolist() == ["yes", "NA", "no"]


def test_a_header_only_file_gives_empty_columns(tmp_path):
    x = cli.read_csv(write(tmp_path, "x,y\n"))["x"]
    assert x.shape == (0,)


# ---------------------------------------------------------------- missing cells
def test_missing_cells_name_column_row_and_line(tmp_path):
    path = write(tmp_path, "a,b\n1,2.5\n3,\n4,NA\n")
    assert data_error(path) == (f"data['b'] holds NaN: data file {path!r}, column 'b', data row 2 (index 1, line 3) "
                                f"is empty (1 more missing cell in the file)" + TAIL)


def test_first_missing_cell_in_file_order_across_columns(tmp_path):
    path = write(tmp_path, "a,b\n1,2\n2,n/a\nnull,3\n")
    assert data_error(path) == (f"data['b'] holds NaN: data file {path!r}, column 'b', data row 2 (index 1, line 3) "
                                f"is 'n/a' (1 more missing cell in the file)" + TAIL)


def test_missing_text_cell(tmp_path):
    path = write(tmp_path, "a,s\n1,yes\n2, \n")
    assert data_error(path) == (f"data['s'] has a missing value: data file {path!r}, column 's', data row 2 "
                                f"(index 1, line 3) is empty" + TAIL)


def test_set_replaces_a_column_with_missing_cells(tmp_path):
    path = write(tmp_path, "a,b\n1,\n2,3\n")
    data = cli.load_data([path], sets={"b": [0.0, 3.0]})
    assert data["a"].tolist() == [1, 2] and data["b"] == [0.0, 3.0]


# ---------------------------------------------------------------- blank lines, BOM
def test_blank_line_between_rows_is_a_row_of_missing_cells(tmp_path):
    path = write(tmp_path, "x,y\n1.0,1\n\n2.0,2\n")
    data = cli.read_csv(path)
    assert torch.isnan(data["x"][1]) and data["x"][2] == 2.0 and len(data["x"]) == 3
    assert data_error(path) == (f"data['x'] holds NaN: data file {path!r}, column 'x', data row 2 (index 1, line 3) "
                                f"is empty (1 more missing cell in the file)" + TAIL)


def test_blank_lines_before_header_and_after_last_row_are_ignored(tmp_path):
    data = cli.read_csv(write(tmp_path, "\n  \n,\nx,y\n1,a\n2,b\n\n \n\n"))
    assert data["x"].dtype == torch.int64 and data["x"].tolist() == [1, 2]
    assert data["y"].tolist() == ["a", "b"]


def test_utf8_bom(tmp_path):
    path = write(tmp_path, "", raw="\ufeffx,y\n1,2\n".encode("utf-8"))
    data = cli.read_csv(path)
    assert list(data) == ["x", "y"] and data["x"].tolist() == [1]


def test_not_utf8(tmp_path):
    path = write(tmp_path, "", raw=b"x\n\xff\n")
    assert usage_error(cli.read_csv, path) == f"cannot read data file {path!r}: not UTF-8 text (invalid start byte)"


# --------------------------------------------------- quoted cells across lines
def test_quoted_cell_with_newline_and_comma_keeps_line_numbers(tmp_path):
    path = write(tmp_path, 'id,note,x\n1,"a, b\nc",1.5\n2,ok,\n3,"x\n\ny",2\n')
    data = cli.read_csv(path)
    assert data["note"].tolist() == ["a, b\nc", "ok", "x\n\ny"]
    assert data["id"].tolist() == [1, 2, 3]
    # the header is line 1, the first row lines 2-3, the second row line 4
    assert data_error(path) == (f"data['x'] holds NaN: data file {path!r}, column 'x', data row 2 (index 1, line 4) "
                                f"is empty" + TAIL)


def test_row_of_wrong_length_after_quoted_newlines(tmp_path):
    path = write(tmp_path, 'a,b\n"1\n2",3\n4\n')
    assert usage_error(cli.read_csv, path) == f"data file {path!r}: line 4 has 1 fields, the header 2"
    path = write(tmp_path, 'a,b\n"1\n\n2",3\n4,5,6\n')
    assert usage_error(cli.read_csv, path) == f"data file {path!r}: line 5 has 3 fields, the header 2"


def test_crlf_line_ends(tmp_path):
    path = write(tmp_path, 'a,b\r\n"x\r\ny",1\r\n\r\nz,2\r\n')
    data = cli.read_csv(path)
    assert data["a"].tolist() == ["x\r\ny", "", "z"]
    assert data_error(path) == (f"data['a'] has a missing value: data file {path!r}, column 'a', data row 2 "
                                f"(index 1, line 4) is empty (1 more missing cell in the file)" + TAIL)


# ------------------------------------------------------------- header and shape
def test_rows_of_the_wrong_length(tmp_path):
    path = write(tmp_path, "x,y\n1,2\n3\n")
    assert usage_error(cli.read_csv, path) == f"data file {path!r}: line 3 has 1 fields, the header 2"
    path = write(tmp_path, "x,y\n1,2\n3,4\n5,6,7\n8,9,10,11\n")
    assert usage_error(cli.read_csv, path) == f"data file {path!r}: line 4 has 3 fields, the header 2"
    path = write(tmp_path, "x,y\n1,2\n3,4,\n")   # a trailing comma is one more (empty) field
    assert usage_error(cli.read_csv, path) == f"data file {path!r}: line 3 has 3 fields, the header 2"


def test_header_errors(tmp_path):
    path = write(tmp_path, "a,a,b\n1,2,3\n")
    assert usage_error(cli.read_csv, path) == f"data file {path!r}: duplicate column name(s) ['a']"
    path = write(tmp_path, "a, ,b\n1,2,3\n")
    assert usage_error(cli.read_csv, path) == f"data file {path!r}: column 2 of the header has no name"
    path = write(tmp_path, "1,2.5\n3,4\n")
    assert usage_error(cli.read_csv, path) == (
        f"data file {path!r}: the first line holds numbers, not column names; add a header line, or bind the "
        "whole table with --data-matrix NAME")
    assert list(cli.read_csv(write(tmp_path, "NA,b\n1,2\n"))) == ["NA", "b"]


def test_empty_file(tmp_path):
    for text in ("", "\n\n", " , \n"):
        path = write(tmp_path, text)
        assert usage_error(cli.read_csv, path) == f"data file {path!r} is empty"


def test_malformed_quoting_is_a_usage_error(tmp_path):
    path = write(tmp_path, 'a,b\n"1"x,2\n')
    assert usage_error(cli.read_csv, path).startswith(f"cannot read data file {path!r}: ")


# ------------------------------------------------------------------ --data-matrix
def test_matrix_with_and_without_header(tmp_path):
    want = torch.tensor([[1.0, 2.5], [-3.0, 4.0]], dtype=torch.float64)
    for text in ("a,b\n1,2.5\n-3,4\n", "1,2.5\n-3,4\n", "\n1, 2.5 \n-3,4\n\n"):
        path = write(tmp_path, text)
        got = cli.read_csv_matrix(path)
        assert got.dtype == torch.float64 and torch.equal(got, want), text
        data = cli.load_data([path], matrices=["X"], sets={"K": 2})
        assert torch.equal(data["X"], want) and data["K"] == 2 and set(data) == {"X", "K"}
    assert cli.read_csv_matrix(path, float32=True).dtype == torch.float32
    other = write(tmp_path, "u,v\n1,2\n", name="other.csv")
    data = cli.load_data([other], matrices=[f"M={path}"])
    assert torch.equal(data["M"], want) and data["u"].tolist() == [1]


def test_matrix_missing_cells(tmp_path):
    path = write(tmp_path, "a,b\n1,2\n3,NA\n\n")
    assert torch.isnan(cli.read_csv_matrix(path)[1, 1])
    with pytest.raises(ppl.DataError) as info:
        cli.load_data([path], matrices=["X"])
    assert str(info.value) == (f"data['X'] holds NaN: data file {path!r}, column 2, data row 2 (index 1, line 3) "
                               f"is 'NA'" + TAIL)
    path = write(tmp_path, '1,2\n"3\n",4\n\n5,6\n')   # a blank line between rows: a row of missing cells
    with pytest.raises(ppl.DataError) as info:
        cli.load_data([path], matrices=["X"])
    assert str(info.value) == (f"data['X'] holds NaN: data file {path!r}, column 1, data row 3 (index 2, line 4) "
                               f"is empty (1 more missing cell in the file)" + TAIL)


def test_matrix_errors(tmp_path):
    path = write(tmp_path, "a,b\n1,2\n3,x\n")
    assert usage_error(cli.read_csv_matrix, path) == (
        f"data file {path!r}: 'x' is not a number (data row 2); --data-matrix needs an all-numeric table")
    path = write(tmp_path, '1,2\n"3\n",5\n6\n')
    assert usage_error(cli.read_csv_matrix, path) == (
        f"data file {path!r}: rows have different lengths (2 and 1, line 4)")
    path = write(tmp_path, "1,2\n3,4,5\n")
    assert usage_error(cli.read_csv_matrix, path) == (
        f"data file {path!r}: rows have different lengths (2 and 3, line 2)")
    path = write(tmp_path, "a,b\n\n")
    assert usage_error(cli.read_csv_matrix, path) == f"data file {path!r} has a header but no rows"
