"""The numbers in docs/*.md come from running the code: every ```python block of a docs page runs
here, and what it prints must be the ```text block written right after it.

A page's blocks run in order in one fresh process and share one namespace, as a reader following
the page in one Python session would (a later block uses the arrays of an earlier one). A block
that prints must be followed by its output block; a block that prints nothing must not be. Output
is compared line by line with trailing spaces ignored. The pages print rounded numbers
(``np.set_printoptions(precision=6)``, formatted floats), so the comparison is exact.

Marked slow: smooth mode runs the generic kernel builds, which Numba compiles on first use.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n?", re.S | re.M)
MARK = "----- docs block {} -----"
SPLIT = re.compile(r"^----- docs block \d+ -----\n", re.M)


def examples(page):
    """``[(code, expected_output or None)]``: each python block with the text block right after it
    (only blank lines between them)."""
    text = page.read_text(encoding="utf-8")
    fences = list(FENCE.finditer(text))
    pairs = []
    for i, f in enumerate(fences):
        if f.group(1) != "python":
            continue
        after = fences[i + 1] if i + 1 < len(fences) else None
        adjacent = (after is not None and after.group(1) == "text"
                    and text[f.end():after.start()].strip() == "")
        pairs.append((f.group(2), after.group(2) if adjacent else None))
    return pairs


def lines(output):
    return [line.rstrip() for line in output.strip("\n").splitlines()]


def test_the_docs_exist_and_bptt_has_examples():
    names = {p.name for p in PAGES}
    assert {"bptt.md", "neurons.md", "methods.md", "verification.md", "performance.md"} <= names
    assert len(examples(DOCS / "bptt.md")) >= 8


def anchors(path):
    """The anchors of a page's headings, as GitHub makes them: lower case, punctuation dropped,
    spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.*)$", FENCE.sub("", path.read_text(encoding="utf-8")), re.M)}


def test_the_docs_links_resolve():
    for page in PAGES:
        for target, anchor in re.findall(r"\]\(([\w./-]*\.md)?(?:#([^)\s]*))?\)", page.read_text(encoding="utf-8")):
            path = (DOCS / target) if target else page
            assert path.exists(), f"{page.name}: broken link {target}"
            if anchor:
                assert anchor in anchors(path), f"{page.name}: no heading {target}#{anchor}"


def test_the_files_the_docs_name_exist():
    """A page that says `refsnn/neurons/lif.py` or `tests/test_neuron_reference.py` names a real file."""
    for page in PAGES:
        for path in re.findall(r"`((?:refsnn|verify|tests|bench|experiments)/[\w/.]+)`", page.read_text(encoding="utf-8")):
            assert (ROOT / path).exists(), f"{page.name} names {path}, which does not exist"


def test_every_docs_section_the_code_cites_exists():
    """A comment's ``docs/methods.md §4`` needs docs/methods.md with a heading ``## 4. ...``, and
    ``docs/python_mode.md, "What differs"`` a heading that starts with those words."""
    cited = 0
    for folder in ("refsnn", "verify", "bench", "tests", "experiments"):
        for path in (ROOT / folder).rglob("*.py"):
            for page, number in re.findall(r"docs/(\w+\.md)(?: §(\d+))?", path.read_text(encoding="utf-8")):
                cited += 1
                assert (DOCS / page).exists(), f"{path.relative_to(ROOT)} cites docs/{page}, which does not exist"
                if number:
                    assert re.search(rf"^## {number}\. ", (DOCS / page).read_text(encoding="utf-8"), re.M), \
                        f"{path.relative_to(ROOT)} cites docs/{page} §{number}, which has no such section"
            for page, heading in re.findall(r'docs/(\w+\.md),? "([^"]+)"', path.read_text(encoding="utf-8")):
                heading = re.sub(r"\s*\n\s*#?\s*", " ", heading)   # a citation wrapped over lines (or comment lines)
                assert re.search(rf"^#+ {re.escape(heading)}", (DOCS / page).read_text(encoding="utf-8"), re.M), \
                    f'{path.relative_to(ROOT)} cites docs/{page} "{heading}", which has no such section'
    assert cited


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if examples(p)], ids=lambda p: p.name)
def test_every_docs_python_block_prints_what_the_page_shows(page, tmp_path):
    pairs = examples(page)
    script = "\n".join(f"print({MARK.format(i)!r}, flush=True)\nexec(compile({code!r}, "
                       f"'{page.name} block {i}', 'exec'))" for i, (code, _) in enumerate(pairs))
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})
    printed = SPLIT.split(result.stdout)[1:]
    assert result.returncode == 0, f"{page.name}: block {len(printed) - 1} failed\n{result.stderr[-3000:]}"
    for i, ((code, expected), got) in enumerate(zip(pairs, printed)):
        first_line = code.strip().splitlines()[0]
        if expected is None:
            assert not got.strip(), f"{page.name} block {i} ({first_line}) prints but shows no output:\n{got}"
        else:
            assert lines(got) == lines(expected), (f"{page.name} block {i} ({first_line}):\n"
                                                   f"--- page shows\n{expected}--- it prints\n{got}")
