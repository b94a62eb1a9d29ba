"""Lint: ``ruff check .`` passes with the configuration in ``ruff.toml``.

pycodestyle, pyflakes, import sorting and pep257 docstrings as ament_pep257 checks them. ruff is a
declared requirement (requirements.txt), so a missing ruff fails here instead of skipping.
"""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_passes():
    if importlib.util.find_spec("ruff") is None:
        pytest.fail("ruff is not installed in this Python; run scripts/setup_env.sh (ruff is in requirements.txt)")
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, f"ruff check . failed (exit {r.returncode}):\n{r.stdout}{r.stderr}"
