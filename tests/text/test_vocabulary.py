# Copyright (c) icar_dense contributors. All rights reserved.
import os

if os.environ.get('HF_HUB_OFFLINE') != '1':
    # before transformers is imported: each failed hub call retries for
    # tens of seconds, and there is no hub here
    os.environ['HF_HUB_OFFLINE'] = '1'

import json

import pytest
import torch

import icar_dense  # noqa: F401
from icar_dense.models.text import (Vocabulary, build_prompts, get_templates,
                                    load_vocabulary, readable_name)


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding='utf-8')
    return str(path)


def test_readable_lvis_names():
    assert readable_name('bow_(weapon)') == 'bow (weapon)'
    assert readable_name('traffic_light') == 'traffic light'
    assert readable_name('bow-tie') == 'bow-tie'
    vocab = load_vocabulary(['bow_(weapon)', 'cat'])
    assert vocab.names == ['bow_(weapon)', 'cat']  # label identity kept
    assert vocab.prompt_names == ['bow (weapon)', 'cat']


def test_dataset_vocabularies():
    lvis = load_vocabulary('lvis_v1')
    assert len(lvis) == 1203 and lvis.names[0] == 'aerosol_can'
    assert 'bow (weapon)' in lvis.prompt_names
    assert len(load_vocabulary('coco')) == 80
    ade = load_vocabulary('ade20k')
    assert len(ade) == 150 and ade.names[0] == 'wall'
    k400 = load_vocabulary('kinetics400')
    assert len(k400) == 400 and k400.names[:2] == ['abseiling', 'air drumming']
    with pytest.raises(ValueError, match='lvis_v1'):
        load_vocabulary('not_a_dataset')


def test_txt_file(tmp_path):
    path = _write(
        tmp_path, 'vocab.txt', '# my classes\n'
        'cat: a small domesticated carnivorous mammal\n'
        '\n'
        'dog\n'
        '   bow_(weapon) :  a weapon that shoots arrows  \n')
    vocab = load_vocabulary(path)
    assert vocab.names == ['cat', 'dog', 'bow_(weapon)']
    assert vocab.descriptions == [['a small domesticated carnivorous mammal'],
                                  [], ['a weapon that shoots arrows']]
    assert vocab.subjects() == [[
        'cat, a small domesticated carnivorous mammal'
    ], ['dog'], ['bow (weapon), a weapon that shoots arrows']]
    assert vocab.subjects(use_descriptions=False) == [['cat'], ['dog'],
                                                      ['bow (weapon)']]
    assert not any(load_vocabulary(path, descriptions=False).descriptions)


def test_txt_errors_name_file_and_line(tmp_path):
    bad = _write(tmp_path, 'bad.txt', 'cat\n# comment\ndog:\nbird\n')
    with pytest.raises(ValueError, match=r'bad\.txt, line 3: malformed'):
        load_vocabulary(bad)
    bad = _write(tmp_path, 'bad2.txt', 'cat\n: only a description\n')
    with pytest.raises(ValueError, match=r'bad2\.txt, line 2: malformed'):
        load_vocabulary(bad)
    dup = _write(tmp_path, 'dup.txt', 'cat\ndog\n\ncat: again\nbird\ndog\n')
    with pytest.raises(ValueError) as err:
        load_vocabulary(dup)
    msg = str(err.value)
    assert 'dup.txt' in msg
    assert "'cat' at line 1, line 4" in msg
    assert "'dog' at line 2, line 6" in msg
    empty = _write(tmp_path, 'empty.txt', '# nothing\n\n')
    with pytest.raises(ValueError, match=r'empty\.txt defines no class'):
        load_vocabulary(empty)
    missing = str(tmp_path / 'missing.txt')
    with pytest.raises(FileNotFoundError, match='missing.txt'):
        load_vocabulary(missing)


def test_json_layouts(tmp_path):
    names = _write(tmp_path, 'names.json', json.dumps(['cat', 'dog']))
    assert load_vocabulary(names).names == ['cat', 'dog']

    mapping = _write(
        tmp_path, 'map.json',
        json.dumps({
            'cat': 'a feline',
            'dog': ['a canine', 'a pet that barks'],
            'bird': None
        }))
    vocab = load_vocabulary(mapping)
    assert vocab.names == ['cat', 'dog', 'bird']
    assert vocab.descriptions == [['a feline'],
                                  ['a canine', 'a pet that barks'], []]
    assert vocab.subjects()[1] == ['dog, a canine', 'dog, a pet that barks']

    lvis_style = _write(
        tmp_path, 'lvis_cats.json',
        json.dumps([{
            'name': 'bow_(weapon)',
            'def': 'a weapon for shooting arrows',
            'synonyms': ['bow_(weapon)']
        }, {
            'name': 'cat'
        }]))
    vocab = load_vocabulary(lvis_style)
    assert vocab.names == ['bow_(weapon)', 'cat']
    assert vocab.descriptions == [['a weapon for shooting arrows'], []]

    # a real annotation file: categories listed out of id order
    annotation = _write(
        tmp_path, 'lvis_v1_val.json',
        json.dumps({
            'images': [],
            'annotations': [],
            'categories': [{
                'id': 2,
                'name': 'dog',
                'def': 'a canine',
                'frequency': 'f'
            }, {
                'id': 1,
                'name': 'aerosol_can',
                'def': 'a dispenser',
                'frequency': 'c'
            }]
        }))
    vocab = load_vocabulary(annotation)
    assert vocab.names == ['aerosol_can', 'dog']
    assert vocab.descriptions == [['a dispenser'], ['a canine']]

    # descriptions of an annotation file attached to a dataset vocabulary
    vocab = load_vocabulary(['dog', 'aerosol_can', 'zebra'],
                            descriptions=annotation)
    assert vocab.descriptions == [['a canine'], ['a dispenser'], []]
    with pytest.raises(ValueError, match='right file'):
        load_vocabulary(['zebra'], descriptions=annotation)

    cfg = dict(source=mapping, descriptions=False)
    assert not load_vocabulary(cfg).has_descriptions


def test_json_errors_name_file_and_key(tmp_path):
    dup = _write(tmp_path, 'dup.json', '{"cat": "a", "dog": "b", "cat": "c"}')
    with pytest.raises(ValueError, match=r"dup\.json.*'cat' at key 'cat'"):
        load_vocabulary(dup)
    dup_list = _write(tmp_path, 'dup_list.json', '["cat", "dog", "cat"]')
    with pytest.raises(ValueError, match=r"'cat' at \[0\], \[2\]"):
        load_vocabulary(dup_list)
    bad_value = _write(tmp_path, 'bad_value.json', '{"cat": 3}')
    with pytest.raises(ValueError, match=r"bad_value\.json: key 'cat'"):
        load_vocabulary(bad_value)
    no_name = _write(tmp_path, 'no_name.json',
                     '{"categories": [{"id": 1, "name": "cat"}, {"id": 2}]}')
    with pytest.raises(ValueError, match=r'categories\[1\] has no'):
        load_vocabulary(no_name)
    mixed = _write(tmp_path, 'mixed.json', '["cat", {"name": "dog"}]')
    with pytest.raises(ValueError, match=r'mixed\.json: \[1\] is a dict'):
        load_vocabulary(mixed)
    scalar = _write(tmp_path, 'scalar.json', '42')
    with pytest.raises(ValueError, match=r'scalar\.json: expected a list'):
        load_vocabulary(scalar)
    broken = _write(tmp_path, 'broken.json', '[\n "cat",\n "dog"\n')
    with pytest.raises(ValueError, match=r'broken\.json, line 4'):
        load_vocabulary(broken)
    empty = _write(tmp_path, 'empty.json', '[]')
    with pytest.raises(ValueError, match=r'empty\.json defines no class'):
        load_vocabulary(empty)


def test_list_errors():
    with pytest.raises(ValueError, match='empty'):
        load_vocabulary([])
    with pytest.raises(ValueError, match="'cat' at index 0, index 2"):
        load_vocabulary(['cat', 'dog', 'cat'])
    with pytest.raises(ValueError, match='item 1'):
        load_vocabulary(['cat', ''])


def test_templates():
    from mmseg.utils.get_templates import PREDEFINED_TEMPLATES
    imagenet = get_templates('imagenet80')
    assert imagenet == PREDEFINED_TEMPLATES['imagenet']
    assert len(set(imagenet)) == 80
    assert 'itap of a {}.' in imagenet
    assert get_templates('single') == ['a photo of {}.']
    assert get_templates(['{} here', 'a {}']) == ['{} here', 'a {}']
    with pytest.raises(ValueError, match='Template 1'):
        get_templates(['a {}', 'no placeholder'])
    with pytest.raises(ValueError, match='Unknown template set'):
        get_templates('imagenet81')


def test_prompt_set_grouping():
    vocab = Vocabulary(['cat', 'dog_{x}'], [['a feline', 'a pet'], []])
    prompts = build_prompts(vocab, ['a {}.', 'the {}!'])
    assert prompts.texts == [
        'a cat, a feline.', 'the cat, a feline!', 'a cat, a pet.',
        'the cat, a pet!', 'a dog {x}.', 'the dog {x}!'
    ]
    assert prompts.counts.tolist() == [4, 2]
    assert prompts.offsets.tolist() == [0, 4]
    assert prompts.class_index.tolist() == [0, 0, 0, 0, 1, 1]
    gen = torch.Generator().manual_seed(0)
    picks = torch.stack([prompts.sample(gen) for _ in range(200)])
    # each class only ever draws its own prompts, and all of them
    assert set(picks[:, 0].tolist()) == {0, 1, 2, 3}
    assert set(picks[:, 1].tolist()) == {4, 5}
    without = build_prompts(vocab, ['a {}.'], use_descriptions=False)
    assert without.texts == ['a cat.', 'a dog {x}.']
