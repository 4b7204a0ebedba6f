import os
import os.path as osp
import subprocess
import sys

import pytest

# No hub access on CI machines: fail fast instead of retrying for a minute.
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tests'))


@pytest.fixture(scope='session')
def repo_root():
    return REPO


@pytest.fixture(scope='session')
def tiny_ade_root(tmp_path_factory):
    from data_factory import make_ade20k
    return make_ade20k(str(tmp_path_factory.mktemp('tiny_ade')))


def run_tool(args, cwd=REPO, timeout=600, env=None):
    """Run a repo command with this interpreter; return the completed process.

    The venv's bin directory goes first on PATH so that shell scripts calling
    ``python`` use this interpreter.
    """
    full_env = dict(os.environ)
    full_env['PATH'] = osp.dirname(sys.executable) + os.pathsep + \
        full_env.get('PATH', '')
    full_env['PYTHON'] = sys.executable
    full_env['PYTHONPATH'] = REPO + os.pathsep + full_env.get('PYTHONPATH', '')
    full_env.setdefault('OMP_NUM_THREADS', '1')
    if env:
        full_env.update(env)
    proc = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    return proc


def check_ok(proc):
    assert proc.returncode == 0, (
        f'command failed ({proc.returncode}): {proc.args}\n'
        f'--- stdout ---\n{proc.stdout[-6000:]}\n'
        f'--- stderr ---\n{proc.stderr[-6000:]}')
    return proc


# ---------------------------------------------------------------------------
# CPU settings, opted into per module with
# ``pytestmark = pytest.mark.usefixtures('one_thread')`` (or 'fast_cpu')
# ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def one_thread():
    """One torch thread: the models here are tiny and the CI machine has 2
    shared cores, where more threads only contend."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def fast_cpu(one_thread):
    """``one_thread`` and no yapf formatting of configs (mmengine formats a
    config several times per runner, ~2 s each, only to log and dump it)."""
    import mmengine.config.config as mmengine_config
    format_code = mmengine_config.FormatCode
    mmengine_config.FormatCode = lambda text, **kwargs: (text, None)
    yield
    mmengine_config.FormatCode = format_code
