"""Sphinx configuration of the provider's docs (``make docs``: ``sphinx-build -W --keep-going -n``).

Pages are Markdown (MyST) so that they read the same on GitHub; the API reference is autodoc of the
package's docstrings. Warnings are errors and references are checked (nitpicky), so a broken link or
cross-reference fails the build.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

from docutils import nodes
from sphinx import addnodes

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# autodoc imports the package, which imports Airflow: give it a throwaway home, never the user's.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="flyray-docs-airflow-")
atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], ignore_errors=True)

project = "airflow-provider-flyray"
author = "airflow-provider-flyray contributors"
copyright = "the airflow-provider-flyray contributors"

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]

# GitHub-style heading anchors (connection.md#kuberay-prerequisites), so links work there and here.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

html_theme = "furo"
html_title = "airflow-provider-flyray"

autodoc_member_order = "bysource"
autodoc_typehints = "none"
autodoc_default_options = {"members": True, "show-inheritance": True}

# Base classes from outside the package (Airflow's, the standard library's) have no page here; every
# reference into airflow_provider_flyray must resolve.
nitpick_ignore_regex = [
    ("py:class", r"(airflow|kubernetes|kubernetes_asyncio|aiohttp|enum|typing|collections\.abc)\..*"),
]


def _repo_file_links(app, doctree: nodes.document) -> None:
    """A Markdown link to a repository file outside docs/ that is itself Markdown (``../docker/README.md``)
    reads as a link to an unknown document to MyST; make it a download of that file, as MyST does for every
    other file (``../docker/rbac.yaml``). A link to a file that does not exist stays a broken reference."""
    srcdir = Path(app.srcdir)
    for node in list(doctree.findall(addnodes.pending_xref)):
        if node.get("reftype") != "myst" or node.get("refdomain") != "doc":
            continue
        target = Path(node["reftarget"])
        if not target.is_absolute() or target.is_relative_to(srcdir):
            continue
        path = target.with_suffix(".md")
        if path.is_file():
            download = addnodes.download_reference(
                "",
                "",
                *node.children,
                refdomain=None,
                reftype="myst",
                refexplicit=True,
                reftarget=os.path.relpath(path, srcdir / Path(node["refdoc"]).parent),
                refdoc=node["refdoc"],
            )
            node.replace_self(download)


def setup(app) -> None:
    # Before Sphinx collects the downloads of the document (its collectors run at priority 500).
    app.connect("doctree-read", _repo_file_links, priority=400)
