"""tools/demo.py for segmentation: a colour-coded picture with a legend."""
import os
import os.path as osp
import re

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import check_ok, run_tool  # noqa: E402
from data_factory import load_photo  # noqa: E402
from mmengine.config import Config  # noqa: E402
from conftest import REPO  # noqa: E402
from helpers_seg import (make_icar_checkpoint,  # noqa: E402
                         make_tokenizer, shrink)

from icar_dense.apis.seg_demo import (class_palette,  # noqa: E402
                                      draw_segmentation, legend_entries)


def _panel_colours(picture, width):
    panel = picture[:, width:].reshape(-1, 3)
    return {tuple(int(c) for c in px) for px in np.unique(panel, axis=0)}


def test_draw_segmentation_legend_lists_present_classes():
    names = ['wall', 'sky', 'dog', 'tree']
    palette = class_palette(names)
    # ADE20K colours for ADE20K names, a stable colour for others
    assert palette[0] == (120, 120, 120) and palette[1] == (6, 230, 230)
    assert class_palette(['dog'])[0] == palette[2]
    labels = np.zeros((60, 80), np.int64)
    labels[:, 50:] = 2  # dog: 30 of 80 columns
    labels[:10, :10] = 3  # tree: a small patch
    image = np.full((60, 80, 3), 200, np.uint8)
    entries = legend_entries(labels, names)
    assert [names[i] for i, _ in entries] == ['wall', 'dog', 'tree']
    assert entries[1][1] == 30 * 60 / (60 * 80)
    picture = draw_segmentation(image, labels, names, palette)
    assert picture.shape[0] >= 60 and picture.shape[1] > 80
    bgr = [tuple(c[::-1]) for c in palette]
    colours = _panel_colours(picture, 80)
    assert {bgr[0], bgr[2], bgr[3]} <= colours
    assert bgr[1] not in colours  # sky is absent: not in the legend
    # the image part is the 50 % blend of photo and class colour
    expected = (0.5 * 200 + 0.5 * np.array(bgr[2])).round()
    assert np.abs(picture[30, 60].astype(float) - expected).max() <= 1


def test_demo_tool_writes_picture(tmp_path, tiny_ade_root):
    tok = make_tokenizer(str(tmp_path / 'tok'))
    icar = make_icar_checkpoint(tmp_path / 'icar.pth', tok)
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/seg/icar_swinb_upernet_ade20k_zeroshot.py'))
    cfg = shrink(cfg, tiny_ade_root, tmp_path / 'work', icar['path'], tok)
    config = str(tmp_path / 'zeroshot_tiny.py')
    cfg.dump(config)
    image_path = str(tmp_path / 'photo.jpg')
    cv2.imwrite(image_path, load_photo(0, (96, 72)))
    out_file = str(tmp_path / 'out' / 'photo_seg.png')
    vocabulary = ['wall', 'sky', 'dog', 'tree']
    proc = check_ok(run_tool([
        'python', 'tools/demo.py', image_path, config, icar['path'],
        '--vocabulary', ','.join(vocabulary), '--out-file', out_file
    ]))
    match = re.search(r'(\d+) of (\d+) classes present: (.*)', proc.stdout)
    assert match and int(match.group(2)) == 4, proc.stdout
    present = [item.rsplit(' ', 1)[0] for item in match.group(3).split(', ')]
    assert len(present) == int(match.group(1)) >= 1
    assert set(present) <= set(vocabulary)
    picture = cv2.imread(out_file)
    assert picture.shape[0] >= 72 and picture.shape[1] > 96
    colours = _panel_colours(picture, 96)
    palette = class_palette(vocabulary)
    for name in present:  # every class present has its swatch
        rgb = palette[vocabulary.index(name)]
        swatch = np.array(rgb[::-1], float)
        assert min(np.abs(np.array(c, float) - swatch).max()
                   for c in colours) <= 2, name


def test_inference_pipeline_of_wrapped_datasets():
    """The demos' pipeline: through dataset wrappers (ConcatDataset's
    datasets[0] too), annotation loading of any scope dropped."""
    from icar_dense.apis.pipeline import inference_pipeline
    steps = [dict(type='LoadImageFromFile'),
             dict(type='mmdet.LoadAnnotations', with_bbox=True),
             dict(type='PackDetInputs')]
    for dataset in (dict(pipeline=steps),
                    dict(type='RepeatDataset', dataset=dict(pipeline=steps)),
                    dict(type='ConcatDataset', datasets=[dict(pipeline=steps)
                                                         ])):
        cfg = Config(dict(test_dataloader=dict(dataset=dataset)))
        assert [t['type'] for t in inference_pipeline(cfg)] == [
            'LoadImageFromFile', 'PackDetInputs']
    only_top = Config(dict(test_pipeline=steps))
    assert len(inference_pipeline(only_top)) == 2
    with pytest.raises(KeyError, match='neither'):
        inference_pipeline(Config(dict(test_dataloader=dict(dataset={}))))
