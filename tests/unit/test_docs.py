"""The docs (docs/, Sphinx + MyST): a broken reference fails their build, and no relative link is dead.

`make docs` (part of `make test`) builds the real docs with ``-W -n``; here a copy of them with two broken
references must fail that same build, naming both, and nothing else may warn.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
# [text](target) and ![alt](target), outside fenced code blocks; the target up to a space or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)")
FENCE = re.compile(r"^(```|~~~)")


def _relative_links(path: Path) -> list[str]:
    links, fenced = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            links += [t for t in LINK.findall(line) if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]
    return links


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", *sorted(DOCS.glob("*.md"))], ids=lambda p: str(p.relative_to(ROOT))
)
def test_relative_links_point_to_existing_files(page: Path):
    """What GitHub renders: every relative link of the README and of each docs page names a file there."""
    links = _relative_links(page)
    dead = [t for t in links if not (page.parent / t.split("#", 1)[0]).exists()]
    assert not dead, f"{page.relative_to(ROOT)} links to missing files: {dead}"


def test_readme_links_to_every_docs_page():
    linked = {t.split("#", 1)[0] for t in _relative_links(ROOT / "README.md")}
    pages = {f"docs/{p.name}" for p in DOCS.glob("*.md")}
    assert pages <= linked, f"not linked from the README: {sorted(pages - linked)}"


def test_a_broken_reference_fails_the_docs_build(tmp_path: Path):
    # The docs reach outside docs/ (the README's included part, ../docker/..., the package for autodoc):
    # the copy gets the same neighbours, as links.
    shutil.copytree(DOCS, tmp_path / "docs", ignore=shutil.ignore_patterns("_build"))
    for name in ("README.md", "airflow_provider_flyray", "dags", "docker", "benchmarks", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    page = tmp_path / "docs" / "connection.md"
    page.write_text(
        page.read_text()
        + "\nSee [the pools page](no-such-page.md) and {py:class}`airflow_provider_flyray.NoSuchOperator`.\n"
    )

    # -W -n as `make docs`; the dummy builder resolves every reference and writes nothing (faster).
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-E", "-q", "-b", "dummy"]
    build = subprocess.run(
        [*command, "-d", str(tmp_path / "doctrees"), str(tmp_path / "docs"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )

    warnings = [line for line in build.stderr.splitlines() if "WARNING" in line]
    assert build.returncode != 0, build.stderr
    assert any("connection.md" in w and "no-such-page" in w for w in warnings), build.stderr
    assert any("connection.md" in w and "airflow_provider_flyray.NoSuchOperator" in w for w in warnings), build.stderr
    assert len(warnings) == 2, build.stderr  # the rest of the docs builds clean
