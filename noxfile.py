"""Sessions for the grafos monorepo. `nox` runs everything except `bench`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "typecheck", "imports", "tests", "wheels", "demo"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
CORE = ROOT / "packages" / "pipeline-core"
SCHEDULER = ROOT / "packages" / "scheduler-service"
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
PYTHON = "3.11"


def group(name: str) -> list[str]:
    return list(nox.project.dependency_groups(PYPROJECT, name))


def pytest_ini() -> str:
    """The root pyproject's pytest settings as a pytest.ini, for a copy of the tests."""
    lines = ["[pytest]"]
    for key, value in PYPROJECT["tool"]["pytest"]["ini_options"].items():
        if isinstance(value, list):
            lines.append(f"{key} =" + "".join(f"\n    {item}" for item in value))
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def with_extras(wheel: Path, package: Path) -> str:
    """The wheel with every extra its package declares, so that no test lacks its store."""
    project = nox.project.load_toml(package / "pyproject.toml")["project"]
    extras = sorted(project.get("optional-dependencies", {}))
    return f"{wheel}[{','.join(extras)}]" if extras else str(wheel)


def install_project(session: nox.Session, *extra: str) -> None:
    # By path, never by name: an unrelated `pipeline-core` lives on the public index.
    # With the `postgres` extra: the tests and the types cover PostgresStore too.
    session.install("-e", str(CORE), "-e", f"{SCHEDULER}[postgres]", *extra)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install(*group("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    install_project(session, *group("typecheck"), *group("test"), *group("service-test"))
    session.run("mypy")


# One deliberately bad import per rule: (the contract that must refuse it, the files to
# add to a copy of the sources). Each file is named _smuggled*, so the refusal can be
# told from any other failure.
BAD_IMPORTS: list[tuple[str, dict[str, str]]] = [
    ("core-dependency-free", {"grafos_pipeline/_smuggled.py": "import attrs\n"}),
    # A lower layer importing a higher one, and a sibling importing its sibling.
    (
        "scheduler-layers",
        {"grafos_scheduler/_domain/_smuggled.py": "from .._store import _sqlite\n"},
    ),
    (
        "scheduler-layers",
        {"grafos_scheduler/_remote/_smuggled.py": "from .._service import _app\n"},
    ),
    # sqlite3 is the standard library's: the contract must see it all the same.
    ("light-half", {"grafos_scheduler/_wire/_smuggled.py": "import sqlite3\n"}),
    # An indirect import, through a module the remote side may import.
    (
        "light-half",
        {
            "grafos_scheduler/_remote/_smuggled.py": "from .._domain import _smuggled_relay\n",
            "grafos_scheduler/_domain/_smuggled_relay.py": "import litestar\n",
        },
    ),
]


@nox.session(python=PYTHON)
def imports(session: nox.Session) -> None:
    install_project(session, *group("imports"))
    session.run("lint-imports")
    # Show that every contract bites: the real contracts (the root pyproject.toml), run
    # over a copy of both packages, must refuse each bad import above.
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        shutil.copytree(CORE / "src" / "grafos_pipeline", copy / "grafos_pipeline")
        shutil.copytree(SCHEDULER / "src" / "grafos_scheduler", copy / "grafos_scheduler")
        shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
        env = {"PYTHONPATH": tmp}
        with session.chdir(tmp):
            # The honest copy passes first, so each failure below is its import's fault.
            session.run("lint-imports", "--no-cache", env=env)
            for contract, files in BAD_IMPORTS:
                for name, text in files.items():
                    (copy / name).write_text(text)
                output = session.run(
                    "lint-imports",
                    "--no-cache",
                    "--contract",
                    contract,
                    env=env,
                    success_codes=[1],
                    silent=True,
                )
                for name in files:
                    (copy / name).unlink()
                if (
                    not isinstance(output, str)
                    or "BROKEN" not in output
                    or "_smuggled" not in output
                ):
                    session.error(f"{contract} did not refuse {', '.join(files)}:\n{output}")
                session.log(f"{contract} refused {', '.join(files)}, as it should")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    install_project(session, *group("test"), *group("service-test"))
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def wheels(session: nox.Session) -> None:
    session.install("build", "uv")
    dist = Path(session.create_tmp()) / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    for package in (CORE, SCHEDULER):
        session.run("uv", "build", "--wheel", "--out-dir", str(dist), str(package))
    core_wheel = next(dist.glob("grafos_pipeline-*.whl"))
    scheduler_wheel = next(dist.glob("grafos_scheduler-*.whl"))

    with tempfile.TemporaryDirectory() as tmp:
        # 1. The core wheel alone, by path and with no index, in a bare environment.
        bare = Path(tmp) / "bare"
        session.run("uv", "venv", "--quiet", "--python", sys.executable, str(bare))
        bare_python = str(bare / "bin" / "python")
        session.run("uv", "pip", "install", "--python", bare_python, "--no-index", str(core_wheel))
        session.run(
            bare_python, str(ROOT / "tests" / "wheel_checks" / "core_alone.py"), external=True
        )

        # 2. The scheduler wheel with the core wheel, by path (its own deps from the index).
        full = Path(tmp) / "full"
        session.run("uv", "venv", "--quiet", "--python", sys.executable, str(full))
        full_python = str(full / "bin" / "python")
        session.run(
            "uv", "pip", "install", "--python", full_python, str(core_wheel), str(scheduler_wheel)
        )
        session.run(
            full_python,
            str(ROOT / "tests" / "wheel_checks" / "scheduler_with_core.py"),
            external=True,
        )

        # 3. The core's own tests against the installed core wheel, from outside the tree.
        tested = Path(tmp) / "tested"
        session.run("uv", "venv", "--quiet", "--python", sys.executable, str(tested))
        tested_python = str(tested / "bin" / "python")
        session.run(
            "uv", "pip", "install", "--python", tested_python, str(core_wheel), *group("test")
        )
        outside = Path(tmp) / "outside"
        shutil.copytree(ROOT / "tests" / "pipeline", outside / "tests_pipeline")
        (outside / "pytest.ini").write_text(
            "[pytest]\nmarkers =\n    slow: runs real subprocesses many times\n"
            "addopts = --strict-markers\n"
        )
        with session.chdir(outside):
            session.run(
                tested_python,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "--import-mode=importlib",
                "-q",
                "tests_pipeline",
                env={"GRAFOS_EXPECT_INSTALLED_WHEEL": "1"},
                external=True,
            )

        # 4. The scheduler's whole suite against both installed wheels, from outside the
        #    tree: tests/scheduler with tests/support beside it, and examples/ for the
        #    tests that run an example script. The console script comes from this venv.
        both = Path(tmp) / "both"
        session.run("uv", "venv", "--quiet", "--python", sys.executable, str(both))
        both_python = str(both / "bin" / "python")
        session.run(
            "uv",
            "pip",
            "install",
            "--python",
            both_python,
            str(core_wheel),
            with_extras(scheduler_wheel, SCHEDULER),
            *group("test"),
            *group("service-test"),
        )
        copy = Path(tmp) / "copy"
        for part in ("tests/scheduler", "tests/support", "examples"):
            shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
        # The README test runs the README's commands; its install block builds the wheels
        # from packages/ by path, as a user would. Neither is importable from here.
        shutil.copy(ROOT / "README.md", copy / "README.md")
        (copy / "packages").symlink_to(ROOT / "packages")
        (copy / "pytest.ini").write_text(pytest_ini())
        with session.chdir(copy):
            session.run(
                both_python,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-q",
                "tests/scheduler",
                env={
                    "GRAFOS_EXPECT_INSTALLED_WHEEL": "1",
                    # A command looked up on PATH (grafos-scheduler) is this venv's.
                    "PATH": f"{both / 'bin'}:{os.environ.get('PATH', '')}",
                },
                external=True,
            )


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    install_project(session)
    # The end-to-end run: service, worker processes, preemption, resume, verification.
    session.run("grafos-scheduler", "demo", *session.posargs)


# The peer benchmark's tools: executable -> Debian package.
PEER_TOOLS = {"etcd": "etcd-server", "wrk": "wrk"}


def ensure_peer_tools(session: nox.Session) -> None:
    """Install etcd and wrk with apt-get when missing; say so plainly when that fails.

    Missing tools fail the session under CI=true; elsewhere the peer benchmark is skipped
    with a warning (benchmarks/bench_peer.py says so again in its output).
    """
    missing = [pkg for tool, pkg in PEER_TOOLS.items() if shutil.which(tool) is None]
    if not missing:
        return
    apt = shutil.which("apt-get")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    problem = ""
    if apt is None:
        problem = "apt-get is not available on this machine"
    elif sudo and shutil.which("sudo") is None:
        problem = "installing needs root, and there is no sudo"
    else:
        session.log(f"the peer benchmark needs {' '.join(missing)}: installing with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for step in (["update", "-q"], ["install", "-y", "-q", *missing]):
            done = subprocess.run([*sudo, apt, *step], env=env, check=False)
            if done.returncode != 0:
                problem = f"`apt-get {' '.join(step)}` failed (exit {done.returncode})"
                break
    still = [pkg for tool, pkg in PEER_TOOLS.items() if shutil.which(tool) is None]
    if not still:
        return
    message = (
        f"cannot install {' '.join(still)} for the peer benchmark: "
        f"{problem or 'apt-get ran, but they are still missing'}. "
        f"Install them by hand: apt-get install {' '.join(still)}"
    )
    if os.environ.get("CI") == "true":
        session.error(message)
    session.warn(f"{message}. The peer benchmark will be SKIPPED.")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    install_project(session)
    ensure_peer_tools(session)
    env = {"PYTHONPATH": str(ROOT / "benchmarks")}
    session.run("python", str(ROOT / "benchmarks" / "run.py"), *session.posargs, env=env)
