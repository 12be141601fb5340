"""Fixtures shared by the tests; plain helpers live in tests/helpers.py.

Two layers: unit tests run in this process alone; tests that start processes (torchrun,
mpirun, horovodrun, network namespaces, `torch.multiprocessing`) carry the `integration`
marker, and `gpu` marks those that need a CUDA GPU. `pytest -m "not integration"` runs the
unit layer. A unit test that starts a process fails, saying to mark it, so the layers stay
apart.
"""

from __future__ import annotations

import multiprocessing.process
import os
import subprocess
import tempfile

import matplotlib
import pytest
import torch  # noqa: F401 (its first import runs ldconfig: here, not inside a unit test)

# Matplotlib builds its font cache on first use by running `fc-list` where fontconfig is
# installed: built here, once per test run, before the guard below refuses processes.
matplotlib.use("Agg")
from matplotlib import font_manager  # noqa: E402

font_manager.fontManager.get_default_weight()

from tests.helpers import TINY, train_torchrun  # noqa: E402

# dist_sqz's own cache (models' facts, dist_sqz/models_cache.py) starts empty for each test
# run, here and in every process the tests start: nothing a test sees was left by another
# run on this machine.
os.environ["DIST_SQZ_CACHE"] = tempfile.mkdtemp(prefix="dist-sqz-cache-")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: starts processes or namespaces (deselect: -m 'not integration')"
    )
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skips without one)")


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch):
    if request.node.get_closest_marker("integration"):
        yield
        return

    def refuse(*_args, **_kw):
        raise AssertionError(
            f"{request.node.nodeid} starts a process: mark it @pytest.mark.integration"
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)
    yield


@pytest.fixture
def tiny() -> list[str]:
    return list(TINY)


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory):
    """`shared_run(nproc, *flags)`: the folder of a finished `dist-sqz train` of those flags
    under torchrun with nproc workers, trained once per test session however many tests read
    it (the same run checked by several tests: a reference to resume against, a run to
    report on). Read it only; a test that resumes or damages a run copies it first
    (`shutil.copytree`)."""
    root = tmp_path_factory.mktemp("shared-runs")
    made: dict[tuple, object] = {}

    def get(nproc: int, *flags: str):
        key = (nproc, *flags)
        if key not in made:
            out = root / f"run{len(made)}"
            train_torchrun(nproc, out, *flags)
            made[key] = out
        return made[key]

    return get


class Proc:
    """What a finished command showed: its exit status and its streams."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """`dist-sqz ARGS...` run in this process from tmp_path (the same `main` the console
    script calls, without a fresh interpreter per case)."""
    from dist_sqz.cli import main

    monkeypatch.chdir(tmp_path)

    def call(*args: str) -> Proc:
        code = main(list(args))
        out = capsys.readouterr()
        return Proc(code, out.out, out.err)

    return call
