"""The NIR agreement table (verify/nir_table.py), as `python -m verify --nir only` prints it.

The frameworks' own NIR exporters and importers against refsnn.from_nir / to_nir, one framework per
test, each skipped with the reason when the framework (or nir) is missing. Each departure's reason
is checked through its repair (the repaired run must agree); the table's own logic (where the
spikes part, a departure no repair explains being refsnn's fault) is checked on planted spikes.
"""
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("nir")
pytest.importorskip("nirtorch")
from refsnn.verify import nir_table  # noqa: E402


@pytest.fixture(scope="module")
def printed():
    """`python -m verify --nir only`, run once: (exit status, what it prints)."""
    import contextlib
    import io
    from refsnn.verify.__main__ import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--nir", "only"])
    return code, out.getvalue()


def rows_of(printed, framework):
    """{(direction, network): Exchange} parsed from the printed table's columns, for one framework."""
    pytest.importorskip(framework)
    code, text = printed
    assert code == 0 and "refsnn at fault in 0" in text, text
    lines, rows = text.splitlines(), {}
    for line, why in zip(lines, lines[1:]):
        if line[:14].strip() == framework:
            row = nir_table.Exchange(framework, line[14:38].strip(), line[38:78].strip(), line[78:87].strip(),
                                     line[87:].strip(), why.strip().removeprefix("why: "))
            rows[row.direction, row.network] = row
    return rows


def test_spikingjelly_and_refsnn_agree_both_ways_mlp_and_conv_but_at_ties(printed):
    rows = rows_of(printed, "spikingjelly")
    tie = rows.pop(("spikingjelly → refsnn", "Linear(identity)→IFNode, v = v_th"))
    assert tie.result == "DEPART" and "fires on v >= v_th" in tie.why and tie.why.endswith("(repaired: agree)")
    assert len(rows) == 10 and {r.result for r in rows.values()} == {"agree"}  # refsnn's IF fires on >= too
    assert ("refsnn → spikingjelly", "Linear→LIF×2, v_reset = -0.3") in rows
    assert ("spikingjelly → refsnn", "Conv→LIFNode→AvgPool→Linear→LIFNode") in rows
    assert ("refsnn → spikingjelly", "Conv→IF→AvgPool→Linear→IF") in rows


def test_snntorch_findings(printed):
    rows = rows_of(printed, "snntorch")
    scalar = rows["snntorch → refsnn", "Linear→Leaky×2, scalar β"]
    assert scalar.result == "REFUSED" and "Type inference error" in scalar.where
    subtract = rows["snntorch → refsnn", "Linear→Leaky×2, vector β, no batch"]
    assert subtract.result == "DEPART" and subtract.where.startswith("neuron layer 1 ('1'), t = ")
    assert "reset_mechanism='subtract'" in subtract.why and subtract.why.endswith("(repaired: agree)")
    assert rows["refsnn → snntorch", "Linear→LIF×2"].result == "agree"
    if_row = rows["refsnn → snntorch", "Linear→IF×2"]
    assert if_row.result == "REFUSED" and "r != 1" in if_row.where and "Leaky(beta=0.9)" in if_row.why
    assert "v_leak not supported" in rows["refsnn → snntorch", "Linear→LIF×2, v_reset = -0.3"].where
    tie = rows["refsnn → snntorch", "Linear(identity)→LIF, v = v_th"]
    assert tie.result == "DEPART" and "strict=True (>) agrees (repaired: agree)" in tie.why


def test_norse_findings(printed):
    rows = rows_of(printed, "norse")
    shapes = rows["norse → refsnn", "Linear→LIFBoxCell×2"]
    assert shapes.result == "REFUSED" and "infer_types refuses it too" in shapes.why
    tau = rows["norse → refsnn", "Linear→LIFBoxCell×2, shapes repaired"]
    assert tau.result == "REFUSED" and "tau must be >= dt" in tau.where and tau.why.endswith("(repaired: agree)")
    dt = rows["refsnn → norse", "Linear→LIF×2"]
    assert dt.result == "DEPART" and "dt = 1e-3" in dt.why and dt.why.endswith("(repaired: agree)")
    assert rows["refsnn → norse", "Linear→IF×2"].result == "agree"
    reset = rows["refsnn → norse", "Linear→LIF×2, v_reset = -0.3 (dt=1e-4)"]
    assert reset.result == "DEPART" and "not the node's v_reset" in reset.why and reset.why.endswith("(repaired: agree)")
    tie = rows["refsnn → norse", "Linear(identity)→IF, v = v_th"]
    assert tie.result == "DEPART" and tie.where.endswith("t = 0: 8 of 16 spikes differ") and "repaired: agree" in tie.why


def test_the_readme_shows_the_table_as_printed(printed):
    """README.md's "NIR agreement" table is this run's output, line for line."""
    import re
    from pathlib import Path
    for framework in nir_table.NIR_FRAMEWORKS:
        pytest.importorskip(framework)  # the README shows every framework's rows
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    shown = re.search(r"^### NIR agreement with the frameworks\n.*?^```text\n(.*?)^```", readme, re.S | re.M).group(1)
    assert [line.rstrip() for line in shown.strip().splitlines()] == \
        [line.rstrip() for line in printed[1].strip().splitlines()]


def test_where_the_spikes_part_and_who_is_at_fault():
    """The table's logic on planted spikes: the first layer and step that differ are named, and a
    departure that no repair removes is refsnn's fault."""
    a = np.zeros((4, 2, 3), np.float32)
    b = a.copy()
    b[2, 1, 0] = b[3, 0, 2] = 1
    mine, theirs = [("1", a), ("3", a)], [("x", a), ("y", b)]
    assert nir_table.first_departure(mine, mine) is None
    assert nir_table.first_departure(mine, theirs) == "neuron layer 2 ('3'), t = 2: 2 of 24 spikes differ"
    fixed = nir_table._compare("fw", "fw → refsnn", "net", mine, theirs, [("the cause", lambda: (mine, mine))])
    assert fixed.result == "DEPART" and fixed.refsnn_ok and fixed.why == "the cause (repaired: agree)"
    unexplained = nir_table._compare("fw", "fw → refsnn", "net", mine, theirs, [("a guess", lambda: (mine, theirs))])
    assert not unexplained.refsnn_ok and "no repair explains it" in unexplained.why
    assert "refsnn at fault in 1" in nir_table.format_nir_table([fixed, unexplained])
