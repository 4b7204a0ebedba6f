import os
import os.path as osp
import re
import subprocess
import sys

import pytest

# No hub access on CI machines: fail fast instead of retrying for a minute.
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TESTS = osp.join(REPO, 'tests')
# the helpers (tests/*.py), and the test modules whose fixtures and
# shrinking helpers other modules import by name (``from test_det_ov import
# det_data``): importable whichever folder pytest collects first
sys.path[:0] = [TESTS] + sorted(
    osp.join(TESTS, name) for name in os.listdir(TESTS)
    if osp.isdir(osp.join(TESTS, name))
    and name not in ('configs', '__pycache__'))


@pytest.fixture(scope='session')
def repo_root():
    return REPO


@pytest.fixture(scope='session')
def tok_dir(tmp_path_factory):
    """A small RoBERTa BPE tokenizer folder (vocab.json + merges.txt)."""
    from helpers_text import build_tokenizer_dir
    return build_tokenizer_dir(str(tmp_path_factory.mktemp('tokenizer')))


def write_lines(path, lines):
    """Write ``lines`` as a text file; return its path as a string."""
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
    return str(path)


@pytest.fixture(scope='session')
def tiny_ade_root(tmp_path_factory):
    from data_factory import make_ade20k
    return make_ade20k(str(tmp_path_factory.mktemp('tiny_ade')))


def tool_env(env=None):
    """The environment of a repo command: this interpreter first on PATH
    (shell scripts calling ``python`` use it), the repo importable, one
    OpenMP thread per process (2 shared cores)."""
    full_env = dict(os.environ)
    full_env['PATH'] = osp.dirname(sys.executable) + os.pathsep + \
        full_env.get('PATH', '')
    full_env['PYTHON'] = sys.executable
    full_env['PYTHONPATH'] = REPO + os.pathsep + full_env.get('PYTHONPATH', '')
    full_env.setdefault('OMP_NUM_THREADS', '1')
    if env:
        full_env.update(env)
    return full_env


def free_port():
    """A TCP port free on this machine now, for a torchrun rendezvous (a
    fixed one can be held by another job on a shared CI host)."""
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return str(sock.getsockname()[1])


def run_tool(args, cwd=REPO, timeout=600, env=None):
    """Run a repo command; return the completed process."""
    return subprocess.run(args, cwd=cwd, env=tool_env(env),
                          capture_output=True, text=True, timeout=timeout)


class BackgroundTool:
    """A repo command started in the background; ``finish`` waits for it
    and checks it succeeded (a worker that died of a signal fails the test
    like any other error: the tools end their process group before Python
    shuts down, see ``icar_dense.engine.end_distributed``)."""

    def __init__(self, args, env=None, timeout=300):
        self.args, self.timeout = list(args), timeout
        self.proc = subprocess.Popen(
            self.args, cwd=REPO, env=tool_env(env), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def finish(self):
        try:
            out, err = self.proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise
        return check_ok(subprocess.CompletedProcess(
            self.args, self.proc.returncode, out, err))


def run_dist_tool(args, env=None, timeout=300):
    return BackgroundTool(args, env=env, timeout=timeout).finish()


def _interesting(text, keep=40):
    """The lines of a failed run's stderr that say why (C++ aborts, Python
    errors, torchrun's summary), most recent last."""
    pattern = re.compile(r'what\(\)|terminate called|Error|Exception|'
                         r'Signal \d+|exitcode|Traceback|Aborted|rank')
    lines = [line for line in text.splitlines() if pattern.search(line)]
    return '\n'.join(lines[-keep:])


def check_ok(proc):
    # stderr first: CI shows a bounded part of a failure, and the reason a
    # tool failed is in its stderr, behind pages of config in its stdout
    assert proc.returncode == 0, (
        f'command failed ({proc.returncode}): {proc.args}\n'
        f'--- why (stderr lines) ---\n{_interesting(proc.stderr)}\n'
        f'--- stderr ---\n{proc.stderr[-6000:]}\n'
        f'--- stdout ---\n{proc.stdout[-2000:]}')
    return proc


# ---------------------------------------------------------------------------
# CPU settings, opted into per module with
# ``pytestmark = pytest.mark.usefixtures('one_thread')`` (or 'fast_cpu')
# ---------------------------------------------------------------------------
def requested_threads():
    """``make test TEST_THREADS=N`` (exported as ``ICAR_TEST_THREADS``): the
    thread count every test runs with, or None for the defaults."""
    value = os.environ.get('ICAR_TEST_THREADS', '').strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise pytest.UsageError(
            f'ICAR_TEST_THREADS={value!r}: expected a positive integer '
            '(make test TEST_THREADS=N)')
    return int(value)


def xdist_workers():
    """How many pytest-xdist processes run the suite (``make test
    TEST_WORKERS=N``); 0 when it runs in one process."""
    return int(os.environ.get('PYTEST_XDIST_WORKER_COUNT') or 0)


def session_threads():
    """The torch thread count of this test process: TEST_THREADS when
    given, else the cores shared out among the xdist workers (more threads
    than cores only contend), else None (torch's default)."""
    threads = requested_threads()
    if threads is None and xdist_workers() > 1:
        cores = (len(os.sched_getaffinity(0))
                 if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1)
        threads = max(1, cores // xdist_workers())
    return threads


@pytest.fixture(scope='session', autouse=True)
def _requested_threads():
    threads = session_threads()
    if threads is not None:
        import torch
        torch.set_num_threads(threads)
    yield


@pytest.fixture(scope='module')
def one_thread():
    """One torch thread (or TEST_THREADS when given): the models here are
    tiny and the CI machine has 2 shared cores, where more threads only
    contend."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(requested_threads() or 1)
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
