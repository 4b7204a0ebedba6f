# Copyright (c) icar_dense contributors. All rights reserved.
"""The summary rows of ``run_all.py``: one per figure, each with its goal,
met / missed and, when missed, why (from the figure's own numbers).

A row is ``dict(name, value, goal, met, reason, figure, details)``; ``met``
is a bool for every figure: the "reported" figures of issue #8 (text cache,
InMaP, training step), which set no target, are met when measured.  Kept
apart from ``run_all.py`` so that the runner stays about running.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import _common as C  # noqa: E402

LVIS_PROMPTS = 1203 * 80
REPORTED = 'reported (issue #8 sets no target)'
LVIS_GOAL_S = 300.0
LVIS_GOAL_MB = 8192.0

# what each script measures against the full size, and why the
# figure still answers its question (printed with the summary)
SIZES = dict(
    ov_overhead='full size: 512 x 512, 1203 classes, 5 interleaved rounds; '
    "the stock head with mmdet's NMS (a secondary comparison, 3-4x slower "
    'than ours, 15-46 s per run) is not run here (bench_ov_overhead.py '
    '--mmdet-nms-repeats 1); the warm-up run also counts the scores above '
    'the threshold (was a separate run)',
    vocab_scaling='full size: 512 x 512, 1203 -> 21,841 classes; 3 '
    'interleaved rounds (was 5: the ratios sit 0.02-0.08 under the goal, '
    'pairs spread ~0.03); peak memory from 1 image per fresh process (was '
    '2; the second allocates no more); the argmax statistics come from the '
    'timed runs (was 2 extra runs); the segmenter at 21,841 classes also '
    'with the screening forced to float32 and to int8 (the dtypes a CPU '
    'without fast bfloat16 takes), in the same rounds',
    text_cache='measured: 400 prompts (1 template; was 1203: the cache '
    'read is mostly the fingerprint of the encoder weights, whatever the '
    'classes); the full 1203 x 80 '
    'build is a linear extrapolation of the per-prompt time (every prompt '
    'is encoded alike), labelled',
    inmap='measured: 3 gradient steps (1 timed run, was 2) at the full '
    'n = 50,000, C = 1000, d = 256; 2000 steps extrapolated (every step '
    'does the same work), labelled',
    train_step='full size: 512 x 512, batch 1, 1203 classes; 1 round '
    'after the warm-up (was 5, then 3, then 2; a reported ratio, no '
    'target)',
    lvis_eval='full size: 19,809 images x 300 detections, boxes and masks, '
    'by 2 gloo ranks on the 2 cores (each matches its own images, rank 0 '
    'accumulates; the separate one-process run is '
    'left to bench_lvis_eval.py --single-process); the synthetic data '
    'draws 2,048 distinct images and repeats them under new ids (the '
    'per-image evaluation work is unchanged; drawing all 19,809 took '
    '235 s); mmdet side by side at 500 images (was 2,000, then 1,000; '
    'boxes; its time and memory are linear in the images), extrapolated '
    'linearly, labelled; the mask encoding (30 images) runs while the '
    'side-by-side workers run on the other core (all single-threaded)')


def row(name, value, goal, met, reason=None, figure=None, details=None):
    return dict(name=name, value=value, goal=goal, met=bool(met),
                reason=None if met else (reason or 'goal not met'),
                figure=figure or name, details=details)


def _spread(fig) -> str:
    lo, hi = fig['ratio_min_max_of_pairs']
    fastest = fig.get('ratio_of_fastest')
    return f'pairs {lo:.3f}-{hi:.3f}' + (
        f', fastest runs {fastest:.3f}x' if fastest is not None else '')


def ov_rows(fig) -> list:
    only = fig.get('classifier_only', {})
    cls = only.get('median_ms', {})
    share = only.get('share_of_predict', {}).get('value')
    counts = fig.get('scores_above_threshold', {})
    reason = (f'{fig["ratio"]:.3f}x > 1.03 ({_spread(fig)}; medians '
              f'{fig["median_s"]}); classifier alone on 1000 RoIs: text '
              f'{cls.get("text")} ms vs linear {cls.get("linear")} ms '
              f'({share} of a predict); '
              f'scores above the threshold (NMS work): {counts}')
    return [row(f'OV head overhead ({fig["classes"]} classes, '
                f'{fig["input"]})', f'{fig["ratio"]:.3f}x ({_spread(fig)})',
                '<= 1.03', fig['meets_goal'], reason, 'ov_head_overhead',
                fig)]


def vocab_rows(fig) -> list:
    label = (f'vocabulary scaling {fig["task"]} {fig["classes"][0]} -> '
             f'{fig["classes"][1]}')
    value = f'{fig["ratio"]:.3f}x time ({_spread(fig)})'
    if 'peak_rss_ratio' in fig:
        value += f', {fig["peak_rss_ratio"]:.3f}x peak RSS'
    large = str(fig['classes'][1])
    stats = fig.get(f'argmax_stats_{large}', {})
    if fig.get('screen_dtype'):
        value += f' (screening {fig["screen_dtype"]})'
    reason = f'{fig["ratio"]:.3f}x > 1.2 ({_spread(fig)})'
    if stats:
        reason += (f'; exact argmax at {large} classes: screening '
                   f'{stats.get("screen_s")} s ({stats.get("screen_dtype")})'
                   f', tiles {stats.get("tiles_s")} s')
    out = [row(label, value, '<= 1.2', fig['meets_goal'], reason,
               f'vocabulary_scaling_{fig["task"]}', fig)]
    for name, forced in fig.get('forced_screenings', {}).items():
        if forced.get('median_s') is None:
            continue
        sts = fig.get(f'argmax_stats_{large}_{name}', {})
        gflop, secs = sts.get('screen_gflop'), sts.get('screen_s')
        rate = (f'{gflop:.0f} GFLOP at {gflop / secs:.0f} GFLOP/s: '
                'compute-bound, ' if gflop and secs else '')
        out.append(row(
            f'{label}, screening forced to {name}',
            f'{forced["ratio"]:.3f}x time ({_spread(forced)})', '<= 1.2',
            forced['meets_goal'],
            f'{forced["ratio"]:.3f}x > 1.2 ({_spread(forced)}): {name} '
            f'screening of the {large} class embeddings took {secs} s per '
            f'image ({rate}every position against every class; tiles '
            f'{sts.get("tiles_s")} s)',
            f'vocabulary_scaling_seg_{name}', forced))
    return out


def train_rows(fig) -> list:
    value = f'{fig["ratio"]:.3f}x time ({_spread(fig)})'
    if 'peak_rss_ratio' in fig:
        value += f', {fig["peak_rss_ratio"]:.3f}x peak RSS'
    return [row('training step ours / mmdet stock', value, REPORTED, True,
                figure='training_step', details=fig)]


def text_rows(doc) -> list:
    prompts = doc['prompts']
    full = doc['encode_s'] / prompts * LVIS_PROMPTS
    doc['extrapolated'] = dict(
        note='LINEAR EXTRAPOLATION from the measured subset: per-prompt '
        'encode time x 96,240 prompts (1203 classes x 80 templates); the '
        'cache read does not depend on the number of templates (it stores '
        'one ensembled embedding per class)',
        prompts=LVIS_PROMPTS, encode_s=round(full, 1),
        encode_h=round(full / 3600, 2),
        speedup_vs_disk_cache=round(full / doc['disk_cache_load_s'], 1))
    value = (f'measured {prompts} prompts: encode {doc["encode_s"]:.1f} s vs '
             f'cache {doc["disk_cache_load_s"]:.2f} s; extrapolated 1203x80: '
             f'{full / 3600:.2f} h ({full / doc["disk_cache_load_s"]:.0f}x)')
    return [row('text embedding cache (roberta-base size)', value, REPORTED,
                True, figure='text_cache', details=doc)]


def inmap_rows(doc) -> list:
    res = doc['results'][0]
    if 'seconds_total_2000_extrapolated' in res:
        value = (f'measured {res["measured_iters"]} steps: '
                 f'{res["seconds_per_iter"]:.3f} s/step; extrapolated 2000 '
                 f'steps: {res["seconds_total_2000_extrapolated"]:.0f} s')
    else:
        value = f'2000 steps: {res["seconds_total_2000"]:.1f} s'
    return [row(f'InMaP n={res["n"]} C={res["classes"]} d={res["dim"]} '
                f'({res["device"]})', value, REPORTED, True, figure='inmap',
                details=doc)]


def _lvis_full(fig):
    value = (f'{fig["images"]} images bbox+segm: {fig["total_s"]:.0f} s (gt '
             f'{fig["gt_s"]:.0f} + process {fig["process_s"]:.0f} + evaluate'
             f' {fig["evaluate_s"]:.0f}), peak RSS '
             f'{fig["peak_rss_mb"] / 1024:.2f} GB ({fig.get("run", "")})')
    reason = (f'{fig["total_s"]:.0f} s (goal {LVIS_GOAL_S:.0f}), peak '
              f'{fig["peak_rss_mb"]:.0f} MB (goal {LVIS_GOAL_MB:.0f})')
    return value, fig['goal'], fig.get('meets_goal'), reason


def _lvis_vs_mmdet(fig):
    diff = fig['max_abs_metric_diff']
    mmdet, ours = fig['mmdet'], fig['ours']
    value = (f'{fig["images"]} images bbox: mmdet {mmdet["total_s"]:.1f} s / '
             f'{mmdet["peak_rss_mb"]:.0f} MB vs ours {ours["total_s"]:.1f} '
             f's / {ours["peak_rss_mb"]:.0f} MB '
             f'({fig["ratio_time_mmdet_over_ours"]}x time, '
             f'{fig["ratio_peak_rss_mmdet_over_ours"]}x peak); max |metric '
             f'diff| {diff}')
    return (value, 'same metrics as lvis-api (<= 1e-4)',
            diff is not None and diff <= 1e-4,
            f'the metrics differ by {diff}')


def _lvis_encoding(fig):
    m = fig['mean_s_per_image']
    full = fig.get('full_size_total_with_encoding_s')
    one = fig.get('one_process_total_with_encoding_s')
    value = (f'per image of 300 masks: mmdet {m["mmdet"]:.3f} s, ours '
             f'{m["ours"]:.4f} s ({fig["speedup"]}x; all 300 cropped '
             f'{m["ours_all_masks"]:.3f} s), identical RLE '
             f'{fig["identical_rle"]}')
    if full is not None:
        value += (f'; full size with this encoding (estimate): {full:.0f} s '
                  'on 2 cores (2 ranks, each encoding its images)')
    if one is not None:
        value += f', {one:.0f} s in one process'
    met = (full is not None and full <= LVIS_GOAL_S
           and bool(fig['identical_rle']))
    floor = m.get('read_once')
    floor_text = (f'; reading the same masks once takes {floor:.4f} s per '
                  'image (the floor for dense (300, H, W) masks: every '
                  'pixel is read)' if floor else '')
    return (value, 'not dominant: the full-size evaluation with the '
            'encoding stays <= 300 s on 2 cores; identical RLE', met,
            f'full size with the encoding {full} s on 2 cores (estimate); '
            f'ours {m["ours"]:.4f} s per image{floor_text}; identical RLE '
            f'{fig["identical_rle"]}')


def _lvis_dist(fig):
    peak = fig['rank0_peak_rss_mb']
    value = (f'{fig["world_size"]} gloo ranks, {fig["images"]} images: rank 0 '
             f'peak RSS {peak:.0f} MB, wall {fig["wall_s"]:.0f} s')
    return (value, 'rank 0 peak <= 8 GB', peak <= LVIS_GOAL_MB,
            f'rank 0 peaks at {peak:.0f} MB')


# figure kind -> (key present when it ran, summariser)
_LVIS = dict(lvis_eval_full=('total_s', _lvis_full),
             lvis_eval_vs_mmdet=('ratio_time_mmdet_over_ours',
                                 _lvis_vs_mmdet),
             mask_encoding=('mean_s_per_image', _lvis_encoding),
             lvis_eval_dist=('rank0_peak_rss_mb', _lvis_dist))


def lvis_rows(figs: list) -> list:
    full = [f for f in figs if f.get('figure') == 'lvis_eval_full']
    est = full[0].get('estimate_with_dense_mask_encoding') if full else None
    out = []
    for fig in figs:
        kind = fig.get('figure')
        if kind not in _LVIS:
            continue
        key, summarise = _LVIS[kind]
        if kind == 'mask_encoding' and est:
            fig['full_size_total_with_encoding_s'] = est['total_s']
            one = full[0].get('one_process_with_encoding_estimate_s') or \
                (full[0].get('single_process') or {}).get(
                    'total_with_encoding_estimate_s')
            if one is not None:
                fig['one_process_total_with_encoding_s'] = one
        if key in fig:
            value, goal, met, reason = summarise(fig)
        else:
            errors = [fig.get('error')] + [
                f'{side}: {fig[side].get("error")}'
                for side in ('ours', 'mmdet')
                if isinstance(fig.get(side), dict) and 'error' in fig[side]]
            reason = 'failed: ' + ('; '.join(filter(None, errors))
                                   or 'no results')
            value, goal, met = reason, '-', False
        out.append(row(f'LVIS evaluation: {kind}', value, goal, met, reason,
                       kind, fig))
    return out


def summarise(name: str, stdout: str) -> list:
    """The rows of one script's output."""
    if name == 'lvis_eval':
        return lvis_rows(C.parse_json_lines(stdout))
    per_fig = dict(ov_overhead=ov_rows, vocab_scaling=vocab_rows,
                   train_step=train_rows)
    if name in per_fig:
        return [r for fig in C.parse_json_lines(stdout)
                for r in per_fig[name](fig)]
    doc = stdout[stdout.index('{'):stdout.rindex('}') + 1]
    import json
    doc = json.loads(doc)
    return text_rows(doc) if name == 'text_cache' else inmap_rows(doc)
