"""Helpers that example_flyray_py_modules ships to the Ray cluster through ``runtime_env`` ``py_modules``.

They live in the DAG folder (listed in ``.airflowignore``: not a DAG file) and are imported only by
the Ray job, on the head and on the workers: the Airflow worker zips them, the cluster imports them.
"""

from __future__ import annotations


def shout(word: str) -> str:
    return word.upper() + "!"


def longest(words: list[str]) -> str:
    return max(words, key=len)
