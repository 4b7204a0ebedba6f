"""tools/fingerprint_configs.py: the refactoring check of issue 17 sees a
changed state dict, and refuses files it did not write, naming them."""
import json
import sys

from conftest import REPO, check_ok, run_tool

TOOL = 'tools/fingerprint_configs.py'
CONFIG = 'tests/configs/tiny_seg_fcn.py'


def test_fingerprint_then_compare(tmp_path):
    out = str(tmp_path / 'a.json')
    check_ok(
        run_tool([sys.executable, TOOL, out, '--configs', CONFIG],
                 cwd=REPO, timeout=300))
    with open(out) as f:
        data = json.load(f)
    entry = data[CONFIG]
    assert 'error' not in entry, entry.get('error')
    assert entry['cfg']['model']['type'] == 'EncoderDecoder'
    assert 'decode_head.conv_seg.weight' in entry['state_dict']

    same = run_tool([sys.executable, TOOL, '--compare', out, out], cwd=REPO)
    assert same.returncode == 0, same.stdout + same.stderr
    assert '1 of 1 built models have the same' in same.stdout

    # a renamed tensor is a different model
    key = 'decode_head.conv_seg.weight'
    entry['state_dict']['decode_head.cls.weight'] = \
        entry['state_dict'].pop(key)
    changed = str(tmp_path / 'b.json')
    with open(changed, 'w') as f:
        json.dump(data, f)
    diff = run_tool([sys.executable, TOOL, '--compare', out, changed],
                    cwd=REPO)
    assert diff.returncode == 1
    assert f'{CONFIG}.state_dict.{key}: removed' in diff.stdout
    assert '0 of 1 built models have the same' in diff.stdout


def test_bad_files_are_named(tmp_path):
    missing = str(tmp_path / 'missing.json')
    proc = run_tool([sys.executable, TOOL, '--compare', missing, missing],
                    cwd=REPO)
    assert proc.returncode != 0
    assert f'cannot read {missing}' in proc.stderr
    other = tmp_path / 'other.json'
    other.write_text('[1, 2]')
    proc = run_tool([sys.executable, TOOL, '--compare', str(other),
                     str(other)], cwd=REPO)
    assert f'{other} is not a fingerprint' in proc.stderr
    proc = run_tool([sys.executable, TOOL, str(tmp_path / 'x.json'),
                     '--configs', 'configs/no_such/*.py'], cwd=REPO)
    assert 'no config matches' in proc.stderr
