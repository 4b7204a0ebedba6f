"""Convert an official iCAR checkpoint to the icar_dense layout.

    python tools/convert_icar.py icar_swinb.pth icar_swinb_converted.pth

Reads the file as the authors saved it (``{'model', 'optimizer', 'epoch',
'scaler', 'args'}``; only ``model`` is used, the rest is skipped without
running any code), undoes iCAR's renames, maps Swin to OpenMMLab names and
writes ``{'meta', 'state_dict'}`` with keys ``backbone.*``,
``text_classifier.visual_proj.weight`` and ``text_classifier.text_encoder.*``.
Each part is loaded into a model of the inferred architecture and the
matched / missing / unexpected keys are printed; buffers the models rebuild
and weights they do not use are listed on one ``[rebuilt / unused]`` line,
and one ``[backbone]`` line says why the per-stage norms ``norm0..`` are
initialised.  Use the result with ``init_cfg=dict(type='Pretrained',
checkpoint=DST)`` on the backbone and ``prefix='text_classifier.'`` on a
text classifier (official files also load directly).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))


def report(name, missing, unexpected, total):
    print(f'[{name}] matched {total - len(unexpected)} / {total} tensors; '
          f'missing {len(missing)}; unexpected {len(unexpected)}')
    for key in missing[:20]:
        print(f'    missing:    {key}')
    for key in unexpected[:20]:
        print(f'    unexpected: {key}')


def strip(state_dict, prefix):
    return {k[len(prefix):]: v for k, v in state_dict.items()
            if k.startswith(prefix)}


def convert(src, dst, verify=True):
    from icar_dense.checkpoint import (
        CheckpointError, convert_icar_state_dict, describe_rebuilt_unused,
        detect_layout, infer_roberta_config, infer_swin_arch,
        load_checkpoint_file, save_checkpoint_file, stage_norm_keys,
        stage_norm_note, unwrap_state_dict)
    checkpoint = load_checkpoint_file(src)
    state_dict = unwrap_state_dict(checkpoint, src)
    layout = detect_layout(state_dict, src)
    if layout != 'icar':
        raise CheckpointError(
            f'{src}: this is a {layout} checkpoint, not an official iCAR '
            'one; give it to the backbone directly with '
            "init_cfg=dict(type='Pretrained', checkpoint=...)")
    rebuilt = []
    converted, unknown = convert_icar_state_dict(state_dict, src, rebuilt)
    meta = dict(source=osp.abspath(src), layout='icar_dense')
    if unknown:
        print(f'[source] {len(unknown)} keys outside the iCAR prefixes were '
              f'dropped: {unknown[:10]}')

    notes = []
    backbone = strip(converted, 'backbone.')
    if backbone:
        meta['swin'] = infer_swin_arch(backbone)
        print(f"[backbone] Swin {meta['swin']}")
        num_stages = len(meta['swin']['depths'])
        if verify:
            from icar_dense.models.backbones import ICARSwinTransformer
            model = ICARSwinTransformer(arch=None, **meta['swin'])
            missing, unexpected = model.load_state_dict(backbone, strict=False)
            # rebuilt buffers and unused weights go to the one
            # [rebuilt / unused] line; the per-stage norms are explained
            unused = [k for k in unexpected if k == 'pos_embed']
            rebuilt += ['backbone.' + k for k in unused]
            unexpected = [k for k in unexpected if k not in unused]
            norms = stage_norm_keys(missing)
            missing = [k for k in missing
                       if 'relative_position_index' not in k
                       and k not in norms]
            report('backbone', missing, unexpected,
                   len(backbone) - len(unused))
            if norms:
                names = sorted({k.rsplit('.', 1)[0] for k in norms})
                notes.append(f'[backbone] {", ".join(names)} initialised: '
                             f'{stage_norm_note(num_stages)}')
        else:
            notes.append(f'[backbone] {stage_norm_note(num_stages)}')
    proj = converted.get('text_classifier.visual_proj.weight')
    if proj is not None:
        print(f'[visual_proj] {tuple(proj.shape)} (embed_dim x width)')
    text = strip(converted, 'text_classifier.text_encoder.')
    if text:
        meta['roberta_config'] = infer_roberta_config(text)
        print(f"[text] RoBERTa {meta['roberta_config']}")
        if verify:
            from transformers import RobertaConfig, RobertaModel
            roberta = RobertaModel(
                RobertaConfig(**meta['roberta_config']),
                add_pooling_layer=False)
            body = strip(text, 'backbone.')
            missing, unexpected = roberta.load_state_dict(body, strict=False)
            missing = [k for k in missing if 'position_ids' not in k]
            report('text', missing, unexpected, len(body))
        if 'projector.weight' in text:
            print(f"[text projector] {tuple(text['projector.weight'].shape)}")
    body, _ = describe_rebuilt_unused(rebuilt)
    if body:
        kept = (' (pos_embed is kept in the output for a backbone that uses '
                'it)' if 'backbone.pos_embed' in converted else '')
        print(f'[rebuilt / unused] {body}{kept}')
    for note in notes:
        print(note)
    save_checkpoint_file(dict(meta=meta, state_dict=converted), dst)
    print(f'wrote {dst}: {len(converted)} tensors')
    return converted, meta


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0], allow_abbrev=False)
    parser.add_argument('src', help='official iCAR checkpoint')
    parser.add_argument('dst', help='output file')
    parser.add_argument('--no-verify', action='store_true',
                        help='skip loading the parts into models')
    args = parser.parse_args()
    # heavy imports only once the arguments are known to be good
    import icar_dense  # noqa: F401  (safe checkpoint loading)
    from icar_dense.checkpoint import CheckpointError
    try:
        convert(args.src, args.dst, verify=not args.no_verify)
    except (CheckpointError, FileNotFoundError) as err:
        sys.exit(f'convert_icar: {err}')


if __name__ == '__main__':
    main()
