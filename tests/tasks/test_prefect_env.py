"""Prefect's home follows ``--work-dir``; the implicit default never wins over it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, os, sys
import tasks  # applies the implicit default, as importing the flow does
from tasks._prefect_env import use_work_dir
implicit = os.environ["PREFECT_HOME"]
use_work_dir(sys.argv[1])
import prefect.settings
print(json.dumps({"implicit": implicit, "explicit": os.environ["PREFECT_HOME"],
                  "prefect": str(prefect.settings.get_current_settings().home)}))
"""


def _probe(cwd: Path, work_dir: Path, **env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "POOLCAST_"))}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(work_dir)],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_work_dir_decides_prefect_home_even_after_tasks_was_imported(tmp_path):
    a, b = _probe(tmp_path, tmp_path / "a"), _probe(tmp_path, tmp_path / "b")
    assert a["implicit"] == str(tmp_path / ".poolcast" / "prefect")
    assert a["explicit"] == a["prefect"] == str(tmp_path / "a" / "prefect")
    assert b["prefect"] == str(tmp_path / "b" / "prefect")  # no shared Prefect database
    assert (tmp_path / "a" / "prefect").is_dir()
    assert not (tmp_path / ".poolcast").exists()  # the implicit default created nothing


def test_a_prefect_home_the_user_set_wins(tmp_path):
    mine = tmp_path / "mine"
    got = _probe(tmp_path, tmp_path / "a", PREFECT_HOME=str(mine))
    assert got["explicit"] == got["prefect"] == str(mine)
