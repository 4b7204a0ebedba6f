"""Write a tiny dataset for a first run on the CPU (docs/getting_started.md).

    python tools/make_tiny_data.py ade20k data/tiny_ade
    python tools/make_tiny_data.py videos data/tiny_videos

The data are the ones the tests use (tests/data_factory.py), built from real
photographs that ship with installed packages (scikit-image, scikit-learn;
no download):

* ``ade20k``: the ADE20K layout (``images/{training,validation}/*.jpg``,
  ``annotations/{training,validation}/*.png``, label 0 = other) with 5
  classes from the photographs' colour clusters; used by
  ``configs/seg/demo_ade_tiny.py``;
* ``videos``: short mp4 clips of a crop moving over a photograph, the lists
  ``train_list.txt`` / ``val_list.txt`` (``path label``) and
  ``classnames.txt``; used by ``configs/action/demo_videos_tiny.py``.
"""
import argparse
import os
import os.path as osp
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
VIDEO_CLASSES = ('panning over an astronaut', 'panning over a cat',
                 'panning over coffee', 'panning over a rocket')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0], allow_abbrev=False)
    parser.add_argument('kind', choices=['ade20k', 'videos'])
    parser.add_argument('out_dir', help='folder to write the dataset into')
    return parser.parse_args(argv)


def make_videos(factory, root, per_class=2):
    video_dir = osp.join(root, 'videos')
    os.makedirs(video_dir, exist_ok=True)
    lists = dict(train=[], val=[])
    for label in range(len(VIDEO_CLASSES)):
        for i in range(per_class + 1):
            name = f'class{label}_{i}.mp4'
            factory.make_video(osp.join(video_dir, name), num_frames=16,
                               size=(64, 48), photo=label)
            lists['val' if i == per_class else 'train'].append(
                f'{name} {label}')
    for split, lines in lists.items():
        with open(osp.join(root, f'{split}_list.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
    with open(osp.join(root, 'classnames.txt'), 'w') as f:
        f.write('\n'.join(VIDEO_CLASSES) + '\n')
    return sum(len(v) for v in lists.values())


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, osp.join(REPO, 'tests'))
    import data_factory as factory
    if args.kind == 'ade20k':
        factory.make_ade20k(args.out_dir, num_train=4, num_val=2,
                            size=(64, 64), num_classes=5)
        print(f'wrote a 5-class ADE20K-layout dataset (4 training, 2 '
              f'validation images) to {args.out_dir}')
    else:
        count = make_videos(factory, args.out_dir)
        print(f'wrote {count} videos of {len(VIDEO_CLASSES)} classes with '
              f'train_list.txt / val_list.txt to {args.out_dir}')


if __name__ == '__main__':
    main()
