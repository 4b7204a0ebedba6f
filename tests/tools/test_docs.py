"""Every command in the docs runs.

Every command line of the ```bash blocks of docs/*.md and README.md that
starts with ``python tools/``, ``.venv/bin/python tools/``, ``tools/`` or
``bash tools/`` (after optional ``VAR=value`` settings; ``\\``
continuations joined) is run in this process, from a scratch folder that
links the repository's ``configs/``, ``tools/`` and ``demo/``:

* ``tools/train.py`` / ``tools/test.py``: with ``ICAR_DRY_RUN=1`` -- the
  arguments parse, the config and its ``_base_`` files load, every option
  (``--cfg-options``, ``--tta``, ``--show-dir``, ``--vocabulary``,
  ``--amp``, ...) is applied, then the tool stops before building a runner;
* ``dist_*.sh`` / ``slurm_*.sh``: the script exists and the train/test
  command it would start on each rank (its fixed arguments mapped as the
  script maps them, the rest passed through) dry-runs as above;
* any other tool: ``--help`` works and the command's own arguments parse
  with the tool's parser (the tool stops right after parsing).

Synopsis lines (placeholders such as ``CONFIG`` or ``[--amp]``, as in the
README) check that the tool exists and that every ``--option`` they show
is one the tool accepts.  Files that a command reads although they would
come from the user or from an earlier documented command (a ``--vocabulary``
file) are stand-ins written into the scratch folder.  Every ``configs/...py``
path named anywhere in the docs must exist.
"""
import argparse
import contextlib
import glob
import io
import os
import os.path as osp
import re
import runpy
import shlex
import sys
import traceback
from unittest import mock

import pytest

from conftest import REPO

DOCS = sorted(glob.glob(osp.join(REPO, 'docs', '*.md'))) + [
    osp.join(REPO, 'README.md')
]
REQUIRED_DOCS = ('getting_started.md', 'model_zoo.md',
                 'checkpoint_conversion.md', 'ov_protocols.md',
                 'multi_gpu.md', 'troubleshooting.md', 'new_task.md')
INTERPRETERS = ('python', '.venv/bin/python', 'bash')
ENV_ASSIGNMENT = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*=')
PLACEHOLDER = re.compile(r'^[A-Z][A-Z0-9_]{2,}$|[\[\]<>]|\.\.\.')
CONFIG_PATH = re.compile(r'configs/[\w./-]+?\.py\b')
LINKED = ('configs', 'tools', 'demo')
# how a launch script maps its fixed arguments to the tool it starts
LAUNCHERS = {
    'tools/dist_train.sh': ('tools/train.py', 2),
    'tools/dist_test.sh': ('tools/test.py', 3),
    'tools/slurm_train.sh': ('tools/train.py', 4),
    'tools/slurm_test.sh': ('tools/test.py', 4),
}


def _logical_lines(block):
    lines, current = [], ''
    for raw in block.splitlines():
        if raw.rstrip().endswith('\\'):
            current += raw.rstrip()[:-1] + ' '
            continue
        lines.append(current + raw)
        current = ''
    if current:
        lines.append(current)
    return lines


def doc_commands():
    """(doc, line number, env, tokens) of every documented tool command."""
    found = []
    for path in DOCS:
        with open(path, encoding='utf-8') as f:
            text = f.read()
        for match in re.finditer(r'```bash\n(.*?)```', text, flags=re.S):
            first_line = text[:match.start()].count('\n') + 2
            for offset, line in enumerate(_logical_lines(match.group(1))):
                if not line.strip() or line.lstrip().startswith('#'):
                    continue
                tokens = shlex.split(line, comments=True)
                env = {}
                while tokens and ENV_ASSIGNMENT.match(tokens[0]):
                    key, value = tokens.pop(0).split('=', 1)
                    env[key] = value
                if not tokens:
                    continue
                if tokens[0] in INTERPRETERS and len(tokens) > 1:
                    script, args = tokens[1], tokens[2:]
                else:
                    script, args = tokens[0], tokens[1:]
                if not script.startswith('tools/'):
                    continue
                found.append((osp.relpath(path, REPO), first_line + offset,
                              env, script, args))
    return found


COMMANDS = doc_commands()


class _Parsed(Exception):
    """Raised right after a tool's ArgumentParser.parse_args succeeded."""


def run_in_process(script, argv, env=None, parse_only=False):
    """Run ``script argv`` as ``__main__``; return (exit code, output)."""
    saved_argv, saved_path = sys.argv, list(sys.path)
    saved_env = dict(os.environ)
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        raise _Parsed(result)

    out = io.StringIO()
    code = 0
    os.environ.update(env or {})
    sys.argv = [script] + list(argv)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(contextlib.redirect_stdout(out))
            stack.enter_context(contextlib.redirect_stderr(out))
            if parse_only:
                stack.enter_context(
                    mock.patch.object(argparse.ArgumentParser, 'parse_args',
                                      parse_then_stop))
            runpy.run_path(script, run_name='__main__')
    except _Parsed:
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (
            0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            out.write(str(exc.code))
    except Exception:  # noqa: BLE001  (reported with the output)
        code = 1
        out.write(traceback.format_exc())
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        os.environ.clear()
        os.environ.update(saved_env)
    return code, out.getvalue()


def _stand_in(path, option):
    """A user-provided / earlier-command file that a dry run reads."""
    if osp.exists(path):
        return
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    if path.endswith(('.pth', '.pt')):
        import torch
        torch.save(dict(class_names=['wall', 'floor', 'sky'],
                        embeddings=torch.zeros(3, 256), templates=[],
                        meta={}), path)
    elif path.endswith('.json'):
        with open(path, 'w') as f:
            f.write('["wall", "floor", "sky"]')
    else:
        with open(path, 'w') as f:
            f.write('wall\nfloor: a walking surface\nsky\n')


@pytest.fixture(scope='module')
def sandbox(tmp_path_factory):
    root = tmp_path_factory.mktemp('docs_sandbox')
    for name in LINKED:
        os.symlink(osp.join(REPO, name), root / name)
    return root


def _is_synopsis(args):
    return any(PLACEHOLDER.search(a) for a in args)


def _dry_run(script, args, env):
    code, out = run_in_process(script, args,
                               env=dict(env, ICAR_DRY_RUN='1'))
    assert code == 0 and '[dry-run]' in out, (
        f'{script} {" ".join(args)} failed (exit {code}):\n{out[-3000:]}')
    return out


def _check_synopsis(script, args):
    if script.endswith('.sh'):
        return
    code, out = run_in_process(script, ['--help'])
    assert code == 0 and 'usage' in out, out[-2000:]
    for arg in args:
        for option in re.findall(r'--[a-z][a-z0-9-]*', arg):
            assert option in out, f'{script} has no option {option}'


# ---------------------------------------------------------------------------
def test_docs_exist_and_commands_found():
    names = {osp.basename(p) for p in DOCS}
    missing = [d for d in REQUIRED_DOCS if d not in names]
    assert not missing, missing
    per_doc = {}
    for doc, *_ in COMMANDS:
        per_doc[doc] = per_doc.get(doc, 0) + 1
    # every user-facing page shows commands (model_zoo / multi_gpu too)
    for doc in REQUIRED_DOCS:
        assert per_doc.get(f'docs/{doc}', 0) >= 1, (doc, per_doc)
    assert len(COMMANDS) >= 40, per_doc
    scripts = {c[3] for c in COMMANDS}
    for tool in ('tools/train.py', 'tools/test.py', 'tools/dist_train.sh',
                 'tools/dist_test.sh', 'tools/slurm_train.sh',
                 'tools/slurm_test.sh', 'tools/browse_dataset.py',
                 'tools/build_vocab_embeddings.py', 'tools/convert_icar.py'):
        assert tool in scripts, f'no documented command uses {tool}'


def test_every_config_named_in_the_docs_exists():
    missing = []
    for path in DOCS:
        with open(path, encoding='utf-8') as f:
            text = f.read()
        for name in set(CONFIG_PATH.findall(text)):
            if not osp.isfile(osp.join(REPO, name)):
                missing.append((osp.relpath(path, REPO), name))
    assert not missing, missing


@pytest.mark.parametrize(
    'doc,line,env,script,args', COMMANDS,
    ids=[f'{c[0]}:{c[1]}' for c in COMMANDS])
def test_documented_command_runs(doc, line, env, script, args, sandbox,
                                 monkeypatch):
    monkeypatch.chdir(sandbox)
    where = f'{doc}, line {line}: {script} {" ".join(args)}'
    assert osp.isfile(osp.join(REPO, script)), f'{where}: no such tool'
    for arg in args:
        for name in CONFIG_PATH.findall(arg):
            assert osp.isfile(name), f'{where}: {name} does not exist'
    if _is_synopsis(args):
        _check_synopsis(script, args)
        return
    if script in LAUNCHERS:
        tool, fixed = LAUNCHERS[script]
        assert len(args) >= fixed, f'{where}: {script} takes {fixed} ' \
            'fixed arguments'
        if script.startswith('tools/dist_'):
            assert args[fixed - 1].isdigit(), f'{where}: process count'
            tool_args = args[:fixed - 1] + ['--launcher', 'pytorch']
        elif tool.endswith('train.py'):  # PARTITION JOB CONFIG WORK_DIR
            tool_args = [args[2], f'--work-dir={args[3]}',
                         '--launcher=slurm']
        else:  # PARTITION JOB CONFIG CHECKPOINT
            tool_args = [args[2], args[3], '--launcher=slurm']
        script, args = tool, tool_args + args[fixed:]
    if '--vocabulary' in args:
        value = args[args.index('--vocabulary') + 1]
        if value.endswith(('.txt', '.json', '.pth', '.pt')):
            _stand_in(value, '--vocabulary')
    if script in ('tools/train.py', 'tools/test.py'):
        _dry_run(script, args, env)
        return
    code, out = run_in_process(script, ['--help'])
    assert code == 0 and 'usage' in out, f'{where}: --help failed:\n{out}'
    code, out = run_in_process(script, args, env=env, parse_only=True)
    assert code == 0, f'{where}: arguments rejected:\n{out[-2000:]}'


def test_dry_run_catches_a_broken_command(sandbox, monkeypatch):
    """The check above fails for a wrong config path or option."""
    monkeypatch.chdir(sandbox)
    code, out = run_in_process(
        'tools/train.py', ['configs/seg/no_such_config.py'],
        env=dict(ICAR_DRY_RUN='1'))
    assert code != 0
    code, out = run_in_process(
        'tools/test.py', ['configs/seg/example_custom_ov.py', 'x.pth',
                          '--no-such-option'], env=dict(ICAR_DRY_RUN='1'))
    assert code == 2 and 'unrecognized arguments' in out
    code, out = run_in_process(
        'tools/browse_dataset.py',
        ['configs/seg/example_custom_ov.py', '--phase', 'training'],
        parse_only=True)
    assert code == 2 and 'invalid choice' in out
