"""Process starts: what an operator waits for at every deploy and command, and what most of the test suite's
time goes to. Wall seconds and CPU seconds (user + system) of:
- `vidfactory serve --workers 0` until /healthz answers (SQLite, a migrated database, the tiny model built);
- one admin command, `admin tenant list --json`;
- a generation refused for its size, `generate --size 64x50` (told before any engine loads).
The median of `rounds`, for this tree and, with `--baseline REV`, another commit's `src/`, alternating on
the same database and models folder. Prints Markdown.
Run: .venv/bin/python bench/process_start.py [--baseline REV]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import httpx  # noqa: E402

from admission import Server, served  # noqa: E402
from common import extract_src, git_revision, is_tiny, machine, sized  # noqa: E402

rounds = sized(5, 1)
command_s_max = 120


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def command_cost(env: dict[str, str], *args: str, status: int) -> tuple[float, float]:
    """(wall s, CPU s) of one `python -m vidfactory.cli` run, which must exit with `status`."""
    cpu_before, started = children_cpu_s(), time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "vidfactory.cli", *args], env=env, capture_output=True,
                            text=True, timeout=command_s_max)
    wall = time.perf_counter() - started
    assert result.returncode == status, (args, result.returncode, result.stderr[-2000:])
    return wall, children_cpu_s() - cpu_before


def serve_cost(url: str, root: Path, src: Path | None) -> tuple[float, float]:
    """(wall s, CPU s) from starting `serve` to its first healthy answer."""
    started = time.perf_counter()
    with served(url, root, src) as server:
        wall = time.perf_counter() - started
        cpu = Server.cpu_s(server)
        httpx.get(f"{server.base}/healthz").raise_for_status()
    return wall, cpu


def measure(tree_env: dict[str, str], url: str, root: Path, src: Path | None) -> dict[str, tuple[float, float]]:
    return {"serve until /healthz": serve_cost(url, root, src),
            "admin tenant list": command_cost(tree_env, "admin", "tenant", "list", "--json", status=0),
            "generate, refused size": command_cost(tree_env, "generate", "x", "--size", "64x50", "--out",
                                                   str(root / "never.mp4"), status=2)}


def environment(root: Path, url: str, src: Path | None) -> dict[str, str]:
    env = {**os.environ, "VIDFACTORY_DATABASE_URL": url, "VIDFACTORY_DATA_DIR": str(root / "var"),
           "VIDFACTORY_ADMIN_TOKEN": "bench", "HF_HUB_OFFLINE": "1"}
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))
    return env


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", help="a commit whose src/ starts the same processes, alternating")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="vf-process-start-"))
    url = f"sqlite:///{root / 'bench.db'}"
    trees: dict[str, Path | None] = {"this tree": None}
    if args.baseline:
        trees = {args.baseline: extract_src(args.baseline, root / "baseline"), **trees}
    subprocess.run([sys.executable, "-m", "vidfactory.cli", "db", "upgrade"], env=environment(root, url, None),
                   check=True, capture_output=True, timeout=command_s_max)
    if not is_tiny():  # the first start builds the tiny model: not what is measured
        serve_cost(url, root, None)
    costs: dict[str, list[dict[str, tuple[float, float]]]] = {tree: [] for tree in trees}
    for _ in range(rounds):
        for tree, src in trees.items():
            costs[tree].append(measure(environment(root, url, src), url, root, src))
    print(f"# process starts — {machine()}, commit {git_revision()}, median of {rounds}, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print("| process | tree | wall s | CPU s |")
    print("|---|---|---|---|")
    for process in costs["this tree"][0]:
        for tree in trees:
            print(f"| {process} | {tree} | {median_of(costs[tree], process, lambda c: c[0]):.2f} | "
                  f"{median_of(costs[tree], process, lambda c: c[1]):.2f} |")


def median_of(runs: list[dict[str, tuple[float, float]]], process: str,
              part: Callable[[tuple[float, float]], float]) -> float:
    return statistics.median(part(run[process]) for run in runs)


if __name__ == "__main__":
    main()
