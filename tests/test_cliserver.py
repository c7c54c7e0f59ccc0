"""The tests' CLI server (``tests/cliserver.py``) answers exactly as a fresh ``python -m kl_filter`` does."""

import subprocess
import sys

import pytest

import conftest


@pytest.mark.parametrize("args", [["list-filters"], ["select", "--name", "nope", "--metadata_dir", "x",
                                                     "--save_path", "y.npy"]])
def test_server_answers_as_a_fresh_interpreter(cli_server, tmp_path, monkeypatch, args):
    if cli_server is None:
        pytest.skip("KL_FILTER_TEST_FRESH_CLI=1: no server")
    monkeypatch.chdir(tmp_path)  # the child works in the caller's directory
    # the server's own environment: a test run earlier in this worker may have set a variable for good (starting
    # Ray in-process sets RAY_USAGE_STATS_ENABLED), and the server then rightly declines os.environ
    env = dict(cli_server.env)
    served = cli_server.run(args, env)
    fresh = subprocess.run([sys.executable, "-m", "kl_filter", *args], capture_output=True, text=True, env=env)
    assert served is not None
    assert (served.returncode, served.stdout, served.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert served.returncode in (0, 2) and not list(tmp_path.iterdir())


def test_another_environment_is_not_served(cli_server):
    if cli_server is None:
        pytest.skip("KL_FILTER_TEST_FRESH_CLI=1: no server")
    assert cli_server.run(["list-filters"], conftest._cli_env({"OPENBLAS_NUM_THREADS": "3"})) is None
