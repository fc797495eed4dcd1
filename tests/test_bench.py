"""Every CPU bench script still runs: each is run whole in its tiny mode (VIDFACTORY_BENCH_TINY=1), so an
API change that breaks one fails here instead of on the next person who measures. Its figures mean nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

bench_dir = Path(__file__).resolve().parent.parent / "bench"
# common.py is not a script; gpu_*.py need a GPU host and run through bench/gpu_*device.sh.
scripts = sorted(path.name for path in bench_dir.glob("*.py")
                 if path.name != "common.py" and not path.name.startswith("gpu_"))
run_s_max = 900


def test_the_bench_list_is_the_folder():
    assert "admission.py" in scripts and "platform_overhead.py" in scripts


@pytest.mark.slow
@pytest.mark.timeout(run_s_max + 60)
@pytest.mark.parametrize("script", scripts)
def test_bench_script_runs_in_tiny_mode(script, tmp_path):
    source = str(bench_dir.parent / "src")
    env = {**os.environ, "VIDFACTORY_BENCH_TINY": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, str(bench_dir / script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=run_s_max)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "|---" in result.stdout, f"{script} printed no table:\n{result.stdout[-2000:]}"
