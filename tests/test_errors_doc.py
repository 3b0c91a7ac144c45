"""docs/errors.md is true: every python block of the page that is followed directly by a
block of messages is run (in order, in one namespace, so a later block may use an earlier
block's model), and the first line of each error it raises, ``Type: message``, must equal
the documented lines, in order.  A changed message or a block that no longer raises fails
here, so the page cannot drift from the code."""

from __future__ import annotations

import ast
import math
import pathlib
import re
import warnings

import numpy as np
import pyro
import pytest
import torch

import ppl
import ppl.distributions as dist

PAGE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "errors.md"
BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.S)
MESSAGE = re.compile(r"^\w+(Error|Warning): ")


def _blocks():
    text = PAGE.read_text()
    found = [(m.group(1), m.group(2), m.start(), m.end()) for m in BLOCK.finditer(text)]
    out = []
    for i, (lang, body, _, end) in enumerate(found):
        if lang != "python":
            continue
        nxt = found[i + 1] if i + 1 < len(found) else None
        adjacent = nxt is not None and nxt[0] == "" and not text[end:nxt[2]].strip()
        expected = [line for line in nxt[1].splitlines() if MESSAGE.match(line)] if adjacent else []
        out.append((text[:end].count("\n") + 1, body, expected))
    return out


def _run(body, ns) -> list:
    raised = []
    for node in ast.parse(body).body:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # as typed at a prompt: no source file (an error's source line would be the page's)
                exec(compile(ast.Module([node], []), f"<{PAGE.name}>", "exec"), ns)
        except Exception as e:  # noqa: BLE001 - the documented errors are what is compared
            first = str(e).splitlines()[0] if str(e) else ""
            raised.append(f"{type(e).__name__}: {first}")
    return raised


def test_every_documented_message_is_the_one_raised():
    ns = {"torch": torch, "ppl": ppl, "dist": dist, "np": np, "pyro": pyro, "math": math, "F": torch.float64}
    checked, wrong = 0, []
    pyro.clear_param_store()
    for line, body, expected in _blocks():
        raised = _run(body, ns)
        if expected:
            checked += 1
            if raised != expected:
                wrong.append(f"docs/errors.md block ending at line {line}:\n  documented {expected}\n  raised     {raised}")
    pyro.clear_param_store()
    assert checked >= 20, f"only {checked} documented blocks were found"
    assert not wrong, "\n".join(wrong)
