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


def run_tiny(command: list[str], cwd: Path, models_dir: Path) -> subprocess.CompletedProcess:
    """Every process of every script reads the tiny models from one folder, built once, as a deployment's
    API and workers share one models path."""
    source = str(bench_dir.parent / "src")
    env = {**os.environ, "VIDFACTORY_BENCH_TINY": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "VIDFACTORY_MODELS_PATH": str(models_dir),
           "PYTHONPATH": os.pathsep.join(filter(None, [source, str(bench_dir), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=run_s_max)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "|---" in result.stdout, f"{command} printed no table:\n{result.stdout[-2000:]}"
    return result


@pytest.mark.slow
@pytest.mark.timeout(run_s_max + 60)
@pytest.mark.parametrize("script", scripts)
def test_bench_script_runs_in_tiny_mode(script, tmp_path, models_dir):
    run_tiny([sys.executable, str(bench_dir / script)], tmp_path, models_dir)


@pytest.mark.slow
@pytest.mark.timeout(run_s_max + 60)
def test_the_gpu_scripts_run_on_the_cpu_with_the_tiny_model(tmp_path, models_dir):
    """What a GPU host runs (bench/gpu_device.sh, bench/gpu_parallel_device.sh), with --tiny on CPUs."""
    from test_processes import free_port

    one = run_tiny([sys.executable, str(bench_dir / "gpu_wan.py"), "--tiny"], tmp_path, models_dir)
    assert "speed-up" in one.stdout
    two = run_tiny([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                    f"--master_port={free_port()}", str(bench_dir / "gpu_parallel.py"), "--tiny"],
                   tmp_path, models_dir)
    assert "relative difference 0" in two.stdout
    training = run_tiny([sys.executable, str(bench_dir / "gpu_training.py"), "--tiny"], tmp_path, models_dir)
    assert "wan-tiny" in training.stdout
