"""The README's Python quickstart and the tutorial run as written, from an empty directory.

Each document is read as a terminal session, in the order of its code blocks:

- a block with ``title="NAME"`` (```` ```python title="label.py" ````) is a file the reader
  writes: it is written as is;
- a ``bash`` block is typed into the terminal: it runs with ``set -e``, and the environment it
  leaves (``source .venv/bin/activate``, ``export ...``) carries over to the next command;
- in a ``console`` block, each ``$ command`` runs the same way and the lines below it are the
  output the page shows: they must appear in the command's output, in order (``...`` lines
  are elisions); ``$ batchor emulator ...`` is the reader's second terminal: it starts in the
  background, and must print the line the page shows;
- any other block (an untitled fragment, a listing) is not run.

The only substitutions are the clone's path for ``/path/to/batchor`` and a free port for
the emulator's ``8000``. Every command must exit 0.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
CLONE = "/path/to/batchor"
DOC_PORT = 8000
COMMAND_TIMEOUT = 120.0

_FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_TITLE = re.compile(r'title="(?P<title>[^"]+)"')


@dataclass(frozen=True)
class Step:
    kind: str  # "write", "shell" or "command"
    text: str  # the file's content, the shell script, or the command
    path: str = ""  # "write": the file's name
    expected: tuple[str, ...] = ()  # "command": the output lines the page shows


def section(markdown: str, heading: str) -> str:
    """The part of a page under ``heading`` (a ``## `` line), up to the next ``## `` heading."""
    start = markdown.index(f"\n{heading}\n")
    end = markdown.find("\n## ", start + len(heading) + 2)
    return markdown[start : end if end >= 0 else None]


def steps(markdown: str) -> list[Step]:
    """The steps a reader takes, in the page's order (see the module docstring)."""
    found = []
    for fence in _FENCE.finditer(markdown):
        info, body = fence["info"].strip(), fence["body"]
        lang = info.split()[0] if info else ""
        title = _TITLE.search(info)
        if title:
            found.append(Step("write", body, path=title["title"]))
        elif lang in ("bash", "sh"):
            found.append(Step("shell", body))
        elif lang == "console":
            for chunk in re.split(r"^\$ ", body, flags=re.MULTILINE)[1:]:
                command, *output = chunk.rstrip("\n").split("\n")
                found.append(Step("command", command, expected=tuple(output)))
    return found


def in_order(expected: tuple[str, ...], output: str) -> list[str]:
    """The lines of ``expected`` (but ``...`` and blank ones) that ``output`` lacks, when each
    must come after the one before it."""
    lines = [line.rstrip() for line in output.splitlines()]
    at, missing = 0, []
    for line in (line.rstrip() for line in expected):
        if not line or line == "...":
            continue
        try:
            at = lines.index(line, at) + 1
        except ValueError:
            missing.append(line)
    return missing


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean_env() -> dict[str, str]:
    """A new terminal's environment: no virtual environment active (the test's own venv is
    taken off PATH, so a missing install step fails), no OpenAI or batchor settings, no
    bytecode switches (a reader's shell has none; they would recompile every import)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OPENAI_", "BATCHOR_", "UV_", "PYTHON", "PYTEST_"))
        and key not in ("VIRTUAL_ENV", "CONDA_PREFIX")
    }
    path = [
        entry
        for entry in os.environ.get("PATH", "").split(os.pathsep)
        if entry and not (Path(entry).parent / "pyvenv.cfg").exists()
    ]
    env["PATH"] = os.pathsep.join(path)
    # The real CAs (the tests point theirs at a single certificate: tests/conftest.py).
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        original = os.environ.get(f"BATCHOR_TESTS_ORIGINAL_{name}")
        if original is not None:
            env.pop(name, None)
            if original:
                env[name] = original
    env["UV_PYTHON"] = "3.11"  # the oldest supported Python for `uv venv`
    if "UV_CACHE_DIR" in os.environ:
        env["UV_CACHE_DIR"] = os.environ["UV_CACHE_DIR"]
    return env


class Terminal:
    """The reader's terminal in an empty directory, plus the emulator's second terminal."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.env = _clean_env()
        self.background: list[subprocess.Popen[str]] = []
        self.log: list[str] = []

    def write(self, step: Step) -> None:
        (self.cwd / step.path).write_text(step.text, encoding="utf-8")
        self.log.append(f"wrote {step.path}")

    def shell(self, script: str) -> str:
        """Runs ``script`` in bash; the environment it ends with becomes the terminal's."""
        dump = self.cwd.parent / f"{self.cwd.name}.env"
        wrapped = f'set -e\n{script}\nenv -0 > "$__DOC_ENV__"\n'
        started = time.monotonic()
        done = subprocess.run(
            ["bash", "-c", wrapped],
            cwd=self.cwd,
            env={**self.env, "__DOC_ENV__": str(dump)},
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        self.log.append(f"$ {script.strip()}  [{time.monotonic() - started:.1f} s]")
        assert done.returncode == 0, (
            f"this step of the page fails (exit {done.returncode}):\n{script}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
        entries = dump.read_text(encoding="utf-8").split("\0")
        dump.unlink()
        env = dict(entry.split("=", 1) for entry in entries if "=" in entry)
        for key in ("__DOC_ENV__", "_", "PWD", "OLDPWD", "SHLVL"):
            env.pop(key, None)
        self.env = env
        return done.stdout

    def command(self, step: Step) -> None:
        if step.text.startswith("batchor emulator"):
            self.emulator(step)
            return
        output = self.shell(step.text)
        missing = in_order(step.expected, output)
        assert not missing, (
            f"`{step.text}` does not print what the page shows; missing, in order:\n"
            + "\n".join(missing)
            + f"\nit printed:\n{output}"
        )

    def emulator(self, step: Step) -> None:
        """The second terminal: the same environment, the command left running."""
        argv = shlex.split(step.text)
        exe = shutil.which(argv[0], path=self.env["PATH"])
        assert exe, f"`{argv[0]}` is not installed in the page's environment"
        proc = subprocess.Popen(
            [exe, *argv[1:]],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.background.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], COMMAND_TIMEOUT)
        first = proc.stdout.readline().rstrip() if ready else ""
        self.log.append(f"$ {step.text} &  -> {first}")
        shown = [line for line in step.expected if line.strip() and line != "..."]
        assert first == shown[0], f"the emulator printed {first!r}, the page shows {shown[0]!r}"

    def close(self) -> None:
        for proc in self.background:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    cwd = tmp_path / "empty"
    cwd.mkdir()
    term = Terminal(cwd)
    try:
        yield term
    finally:
        term.close()


def follow(markdown: str, terminal: Terminal) -> list[Step]:
    """Takes every step of ``markdown`` in ``terminal``; returns them."""
    assert CLONE in markdown, f"the page installs batchor from {CLONE}/core"
    assert f"--port {DOC_PORT}" in markdown, "the page starts the emulator on a port"
    port = _free_port()
    markdown = (
        markdown.replace(CLONE, str(ROOT))
        .replace(f"--port {DOC_PORT}", f"--port {port}")
        .replace(f"127.0.0.1:{DOC_PORT}", f"127.0.0.1:{port}")
    )
    taken = steps(markdown)
    for step in taken:
        if step.kind == "write":
            terminal.write(step)
        elif step.kind == "shell":
            terminal.shell(step.text)
        else:
            terminal.command(step)
    return taken


def test_steps_are_read_in_page_order() -> None:
    page = (
        "Install:\n\n```bash\nuv pip install x\n```\n\n"
        '```python title="a.py"\nprint(1)\n```\n\n'
        "```python\nfragment()\n```\n\n"
        "```console\n$ python a.py\n1\n...\n$ true\n```\n"
    )
    assert steps(page) == [
        Step("shell", "uv pip install x\n"),
        Step("write", "print(1)\n", path="a.py"),
        Step("command", "python a.py", expected=("1", "...")),
        Step("command", "true"),
    ]
    assert in_order(("a", "...", "c"), "a\nb\nc\n") == []
    assert in_order(("c", "a"), "a\nb\nc\n") == ["a"]
    assert section("# t\n\n## A\nx\n## B\ny\n", "## A") == "\n## A\nx"


@pytest.mark.slow
def test_the_readme_python_quickstart_runs_as_written(terminal: Terminal) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    taken = follow(section(readme, "## Python quickstart"), terminal)
    assert [s.text for s in taken if s.kind == "command"][-1] == "python quickstart.py"
    assert (terminal.cwd / ".batchor" / "batchor.db").exists(), "\n".join(terminal.log)


@pytest.mark.slow
def test_the_tutorial_runs_as_written(terminal: Terminal) -> None:
    tutorial = (ROOT / "docs" / "tutorial.md").read_text(encoding="utf-8")
    taken = follow(tutorial, terminal)
    commands = [s.text for s in taken if s.kind == "command"]
    assert "python label.py" in commands
    assert "python read_results.py" in commands
    assert (terminal.cwd / "labels.jsonl").exists(), "\n".join(terminal.log)
