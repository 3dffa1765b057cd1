"""Every relative link in README.md and docs/*.md leads somewhere (issue 26, item 1).

The README is a front door that sends the reader to pages under docs/, so a moved or renamed page must not leave a
dead link behind. This checks the link forms a page can use — inline links and images (with or without a title,
in angle brackets), reference definitions ``[x]: path`` and HTML ``href``/``src`` — for the file and, when the
target is a Markdown page, the ``#anchor`` among its headings (GitHub's slugs, as ``tests/system/test_provenance.py``
computes them). Code (fenced blocks and inline spans) is not a link. ``test_provenance.py`` checks the simple
inline form across every tracked file; this test covers the docs pages themselves, tracked or not yet.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.system.test_provenance import page

ROOT = Path(__file__).resolve().parents[2]

# [text](target "title") or ![alt](<target with spaces>); the target ends at whitespace or ")".
INLINE = re.compile(r"\]\(\s*(?:<(?P<angled>[^>]*)>|(?P<plain>[^)\s]*))(?:\s+[\"'(][^)]*)?\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(?:<(?P<angled>[^>]*)>|(?P<plain>\S+))")
HTML = re.compile(r"""\b(?:href|src)\s*=\s*["'](?P<plain>[^"']*)["']""")
CODE_SPAN = re.compile(r"(`+).*?\1")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # https:, mailto:, ...


def markdown_pages(root: Path) -> list[Path]:
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.is_file()]


def _targets(text: str) -> list[tuple[int, str]]:
    """(line number, link target) for every link outside code."""
    out: list[tuple[int, str]] = []
    fence: str | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            continue
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            continue
        prose = CODE_SPAN.sub("", line)
        for pattern in (INLINE, REFERENCE, HTML):
            for m in pattern.finditer(prose):
                target = m.group("plain") if m.group("plain") is not None else m.groupdict().get("angled")
                out.append((lineno, target or ""))
    return out


def link_problems(md: Path, root: Path) -> list[str]:
    """Dead relative links in one Markdown file: a missing file, or an anchor that no heading of the target has."""
    problems: list[str] = []
    for lineno, target in _targets(md.read_text(encoding="utf-8")):
        if not target or SCHEME.match(target):
            continue  # an empty link, or a URL
        path_part, _, anchor = target.partition("#")
        dest = (md.parent / unquote(path_part)).resolve() if path_part else md
        where = f"{md.relative_to(root)}:{lineno}: ({target})"
        if not dest.exists():
            problems.append(f"{where}: no such file")
            continue
        if anchor:
            p = page(dest) if dest.suffix == ".md" else None
            if p is None or unquote(anchor) not in p.anchors:
                problems.append(f"{where}: no heading with anchor #{anchor} in {dest.name}")
    return problems


def test_every_docs_link_resolves() -> None:
    pages = markdown_pages(ROOT)
    assert ROOT / "README.md" in pages, pages
    assert len(pages) > 5, pages
    problems = [p for md in pages for p in link_problems(md, ROOT)]
    assert not problems, "dead links:\n" + "\n".join(problems)


def test_the_readme_is_a_front_door() -> None:
    """150–250 lines that link to the pages holding the rest (issue 26): each docs page is reachable from it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 150 <= len(readme.splitlines()) <= 250, len(readme.splitlines())
    linked = {Path(t.partition("#")[0]).name for _, t in _targets(readme) if t.startswith("docs/")}
    for name in ["results.md", "methods.md", "pipeline.md", "evaluation.md", "benchmarks.md", "paper.md", "LOG.md"]:
        assert name in linked, name


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")


GOOD = {
    "README.md": "# Top\n\n[results](docs/results.md#the-cpu-miniature) ![fig](docs/figures/a.png)\n[up](#top)\n",
    "docs/results.md": "# Results\n\n## The CPU miniature\n\n[back](../README.md) [self](#results)\n"
    '[titled](results.md "Results") [angled](<results.md#the-cpu-miniature>)\n\n[ref]: ../README.md#top\n'
    '<a href="results.md">html</a>\n\n```\n[not a link](nowhere.md)\n```\n`[nor this](nowhere.md)` https://x.org/#y\n',
    "docs/figures/a.png": "",
}


def test_the_checker_accepts_good_links(tmp_path: Path) -> None:
    _write(tmp_path, GOOD)
    assert [p for md in markdown_pages(tmp_path) for p in link_problems(md, tmp_path)] == []


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("[gone](gone.md)", "(gone.md): no such file"),
        ("[bad anchor](results.md#the-gpu-miniature)", "no heading with anchor #the-gpu-miniature in results.md"),
        ("[own anchor](#nowhere)", "no heading with anchor #nowhere in x.md"),
        ('[titled](gone.md "a title")', "(gone.md): no such file"),
        ("[angled](<gone page.md>)", "(gone page.md): no such file"),
        ("[ref]: figures/missing.png", "(figures/missing.png): no such file"),
        ('<img src="figures/missing.png">', "(figures/missing.png): no such file"),
        ("[anchor in a picture](figures/a.png#x)", "no heading with anchor #x in a.png"),
    ],
)
def test_the_checker_catches_a_dead_link(tmp_path: Path, line: str, problem: str) -> None:
    page_x = Path("docs", "x.md")  # built, not written out: test_provenance would read a written one as a citation
    _write(tmp_path, {**GOOD, str(page_x): f"# X\n\n{line}\n"})
    problems = link_problems(tmp_path / page_x, tmp_path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{page_x}:3:"), problems
    assert problem in problems[0], problems
