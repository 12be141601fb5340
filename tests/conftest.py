"""Fixtures shared by the tests; plain helpers live in tests/helpers.py.

Two layers: unit tests run in this process alone; tests that start processes (torchrun,
mpirun, horovodrun, network namespaces, `torch.multiprocessing`) carry the `integration`
marker, and `gpu` marks those that need a CUDA GPU. `pytest -m "not integration"` runs the
unit layer. A unit test that starts a process fails, saying to mark it, so the layers stay
apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing.process
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import matplotlib
import pytest
import torch  # noqa: F401 (its first import runs ldconfig: here, not inside a unit test)

# Matplotlib builds its font cache on first use by running `fc-list` where fontconfig is
# installed: built here, once per test run, before the guard below refuses processes.
matplotlib.use("Agg")
from matplotlib import font_manager  # noqa: E402

font_manager.fontManager.get_default_weight()

from tests.helpers import TINY, cluster_leftovers, train_torchrun  # noqa: E402

# dist_sqz's own cache (models' facts, dist_sqz/models_cache.py) starts empty for each test
# run, here and in every process the tests start: nothing a test sees was left by another
# run on this machine.
CACHE = tempfile.mkdtemp(prefix="dist-sqz-cache-")  # this process's; removed at its end
os.environ["DIST_SQZ_CACHE"] = CACHE


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: starts processes or namespaces (deselect: -m 'not integration')"
    )
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skips without one)")
    config.addinivalue_line("markers", "xdist_group(name): the pytest-xdist worker's group")
    config.addinivalue_line("markers", "alone: runs with no other test beside it (see BESIDE)")
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        os.environ[LOCKS] = tempfile.mkdtemp(prefix="dist-sqz-test-locks-")  # workers inherit it


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(CACHE, ignore_errors=True)
    if not hasattr(config, "workerinput") and LOCKS in os.environ:
        shutil.rmtree(os.environ.pop(LOCKS), ignore_errors=True)


# Two workers (`pytest -n 2 --dist loadgroup`, the README's command). Most integration tests
# spend much of their time waiting (on Slurm's timers, a collective's timeout, a restart, a
# shaped link), so two of them at once fill the two cores better than one. The modules of
# BESIDE run in one worker, every other test in the other, the unit layer first. A test that
# asserts timings measured here, or leaves a stale cluster on purpose, is marked `alone`: it
# waits until the other worker's test ends and holds the machine to itself (a lock shared by
# the run's workers). Without xdist the tests run one at a time, as written.
BESIDE = ("test_slurm.py", "test_cluster.py", "test_cluster_tools.py", "test_faults.py")
BESIDE += ("test_compare.py", "test_resume.py")
LOCKS = "DIST_SQZ_TEST_LOCKS"


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("integration") is not None)
    for item in items:
        group = "beside" if item.path.name in BESIDE else "main"
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    locks = os.environ.get(LOCKS)  # made by the run's controller, when it starts workers
    if not locks or not hasattr(item.config, "workerinput"):
        yield
        return
    with _share_of_the_machine(Path(locks), alone=item.get_closest_marker("alone") is not None):
        yield


@contextlib.contextmanager
def _share_of_the_machine(folder: Path, alone: bool):
    """A shared hold on the machine for a test, an exclusive one for a test that runs alone.
    A test waiting to run alone holds the gate, so no test starts beside it meanwhile."""
    with open(folder / "gate", "a") as gate, open(folder / "machine", "a") as machine:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(machine, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(machine, fcntl.LOCK_UN)


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
def need_netns():
    """Skips where network namespaces are not permitted (fails instead where
    DIST_SQZ_REQUIRE_NETNS=1, as .ci/run sets); after the test, no cluster is left behind."""
    from dist_sqz.cluster import namespaces_permitted

    ok, why = namespaces_permitted()
    if not ok:
        if os.environ.get("DIST_SQZ_REQUIRE_NETNS") == "1":
            pytest.fail(f"network namespaces required here but not permitted: {why}")
        pytest.skip(f"network namespaces not permitted: {why}")
    yield
    assert cluster_leftovers() == [], "the cluster was not torn down"


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
