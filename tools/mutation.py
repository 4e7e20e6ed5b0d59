"""Run mutmut over one module of the core (docs/contributing/mutation-testing.md).

    uv run python tools/mutation.py batchor/engine/backoff.py        # run, then print the score
    uv run python tools/mutation.py batchor/engine/backoff.py --fresh  # forget earlier results
    uv run python tools/mutation.py batchor/engine/backoff.py --show   # diff of each survivor

mutmut 3 names a mutant after its file's path (``src/batchor/engine/pack.py`` becomes
``batchor.engine.pack``) and puts ``mutants/src`` first on ``sys.path``; this workspace keeps
the package in ``core/src``. So the script stages a copy of the workspace under
``.mutation/<module>/`` with ``src/batchor`` copied from ``core/src/batchor``, narrows
``[tool.mutmut] only_mutate`` of that copy's pyproject.toml to the one module, and runs
``mutmut run`` there. The working tree itself is never touched, and the staging directory is
kept between runs so mutmut only re-tests what changed (``--fresh`` starts over).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "core" / "src" / "batchor"
#: What the staged copy needs besides the package: the tests, the files they read, the config.
COPIED = ["tests", "examples", "docs", "mkdocs.yml", "README.md", "pyproject.toml", "core"]
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "mutants")


def _module_path(arg: str) -> str:
    """``batchor/engine/pack.py``, ``core/src/batchor/engine/pack.py`` or
    ``batchor.engine.pack`` -> ``src/batchor/engine/pack.py`` (the staged path)."""
    text = arg.strip().removeprefix("core/").removeprefix("src/")
    if not text.endswith(".py"):
        text = text.replace(".", "/") + ".py"
    if not (ROOT / "core" / "src" / text).is_file():
        raise SystemExit(f"no such module: core/src/{text}")
    return f"src/{text}"


def _stage(stage: Path, module: str, *, fresh: bool) -> None:
    if fresh and stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source, target = ROOT / name, stage / name
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True, ignore=IGNORED)
        elif source.is_file():
            shutil.copy2(source, target)
    # copy2 keeps the modification times: mutmut regenerates a file's mutants only when the
    # source is newer than its copy in mutants/.
    shutil.copytree(PACKAGE, stage / "src" / "batchor", dirs_exist_ok=True, ignore=IGNORED)
    pyproject = stage / "pyproject.toml"
    text = pyproject.read_text()
    narrowed, count = re.subn(
        r"(?ms)^only_mutate = \[.*?^\]", f'only_mutate = ["{module}"]', text, count=1
    )
    if count != 1:
        raise SystemExit("pyproject.toml has no [tool.mutmut] only_mutate list to narrow")
    pyproject.write_text(narrowed)


def _score(stage: Path, mutmut: str) -> int:
    out = subprocess.run(
        [mutmut, "results", "--all", "true"], cwd=stage, capture_output=True, text=True
    ).stdout
    statuses: dict[str, str] = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            statuses[name] = status
    total = len(statuses)
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    print(f"\nmutants: {total}  " + "  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    if total:
        print(f"score (killed + timeout) / all: {killed}/{total} = {100 * killed / total:.1f}%")
    survivors = sorted(n for n, s in statuses.items() if s not in ("killed", "timeout"))
    if survivors:
        print(f"not killed (see each with `mutmut show NAME` in {stage.relative_to(ROOT)}):")
        for name in survivors:
            print(f"  {statuses[name]:>12}  {name}")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", help="e.g. batchor/engine/pack.py or batchor.engine.pack")
    parser.add_argument("--fresh", action="store_true", help="discard earlier mutmut results")
    parser.add_argument("--show", action="store_true", help="print the diff of each survivor")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    module = _module_path(args.module)
    stage = ROOT / ".mutation" / module.removeprefix("src/").removesuffix(".py").replace("/", ".")
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    started = time.monotonic()
    _stage(stage, module, fresh=args.fresh)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    # The glob keeps mutmut's "clean run" to the tests that reach this module (without it,
    # every selected test runs once more before the first mutant).
    dotted = module.removeprefix("src/").removesuffix(".py").replace("/", ".")
    dotted = dotted.removesuffix(".__init__")
    run = subprocess.run(
        [mutmut, "run", "--max-children", str(args.max_children), f"{dotted}.*"],
        cwd=stage,
        env=env,
    )
    print(f"\nmutmut run exited {run.returncode} after {time.monotonic() - started:.0f}s")
    _score(stage, mutmut)
    if args.show:
        out = subprocess.run([mutmut, "results"], cwd=stage, capture_output=True, text=True).stdout
        for line in out.splitlines():
            name = line.strip().rpartition(": ")[0]
            if name:
                subprocess.run([mutmut, "show", name], cwd=stage)
    sys.exit(run.returncode)


if __name__ == "__main__":
    main()
