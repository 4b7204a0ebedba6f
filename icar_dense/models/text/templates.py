# Copyright (c) icar_dense contributors. All rights reserved.
"""Prompt templates and the prompt set of a vocabulary."""
from dataclasses import dataclass
from typing import List, Sequence, Union

import torch

from .vocabulary import Vocabulary

__all__ = [
    'get_templates', 'PromptSet', 'build_prompts', 'SINGLE_TEMPLATE',
    'KINETICS28_TEMPLATES', 'TEMPLATE_SETS'
]

SINGLE_TEMPLATE = 'a photo of {}.'


# The 28 Kinetics templates of the iCAR authors' video language head
# (weiyx16/Video-Swin-Transformer, mmaction/models/heads/language_head.py,
# ``LanguageHead.templates``; their final version, which replaced 16 ActionCLIP
# prompts kept there as a comment): 4 nouns (photo, video, example,
# demonstration) x 7 forms, in the authors' order and spelling ("a example").
# Training draws one per class per step; testing averages all 28 (normalise,
# mean, normalise), as PromptSet does for every set.
KINETICS28_TEMPLATES = (
    'a photo of {}.',
    'a photo of a person {}.',
    'a photo of a person using {}.',
    'a photo of a person doing {}.',
    'a photo of a person during {}.',
    'a photo of a person performing {}.',
    'a photo of a person practicing {}.',
    'a video of {}.',
    'a video of a person {}.',
    'a video of a person using {}.',
    'a video of a person doing {}.',
    'a video of a person during {}.',
    'a video of a person performing {}.',
    'a video of a person practicing {}.',
    'a example of {}.',
    'a example of a person {}.',
    'a example of a person using {}.',
    'a example of a person doing {}.',
    'a example of a person during {}.',
    'a example of a person performing {}.',
    'a example of a person practicing {}.',
    'a demonstration of {}.',
    'a demonstration of a person {}.',
    'a demonstration of a person using {}.',
    'a demonstration of a person doing {}.',
    'a demonstration of a person during {}.',
    'a demonstration of a person performing {}.',
    'a demonstration of a person practicing {}.',
)

# Named sets of this module (besides mmseg's, see get_templates).
TEMPLATE_SETS = {
    'single': (SINGLE_TEMPLATE, ),
    'kinetics28': KINETICS28_TEMPLATES,
}


def _mmseg_templates(name: str) -> List[str]:
    # mmsegmentation ships CLIP's prompt ensembles (used by its open-vocabulary
    # SAN models); reusing them keeps one copy of the 80 ImageNet templates.
    from mmseg.utils.get_templates import PREDEFINED_TEMPLATES
    if name not in PREDEFINED_TEMPLATES:
        raise ValueError(
            f'Unknown template set {name!r}: use "imagenet80", "single", '
            '"kinetics28", one '
            f'of mmseg\'s {sorted(PREDEFINED_TEMPLATES)} or a list of '
            'strings containing "{}".')
    return list(PREDEFINED_TEMPLATES[name])


def get_templates(templates: Union[str, Sequence[str]]) -> List[str]:
    """Resolve a template specification.

    Args:
        templates (str | list[str]): ``'imagenet80'`` (CLIP's 80 ImageNet
            templates), ``'single'`` (``"a photo of {}."``), ``'kinetics28'``
            (the 28 Kinetics templates of the iCAR authors' video language
            head, ``KINETICS28_TEMPLATES``), another template set of
            ``mmseg.utils.get_templates`` (e.g. ``'vild'``), or a list of
            strings each containing ``{}``.

    Returns:
        list[str]: The templates.
    """
    if isinstance(templates, str):
        if templates in TEMPLATE_SETS:
            return list(TEMPLATE_SETS[templates])
        if templates == 'imagenet80':
            result = _mmseg_templates('imagenet')
            if len(result) != 80:
                raise RuntimeError(
                    'mmseg.utils.get_templates "imagenet" holds '
                    f'{len(result)} templates, expected CLIP\'s 80.')
            return result
        return _mmseg_templates(templates)
    templates = list(templates)
    if not templates:
        raise ValueError('The template list is empty.')
    for i, template in enumerate(templates):
        if not isinstance(template, str) or '{}' not in template:
            raise ValueError(f'Template {i} ({template!r}) must be a string '
                             'containing "{}" where the class name goes.')
    return templates


@dataclass
class PromptSet:
    """All prompts of a vocabulary, grouped by class.

    The prompts of class ``c`` are ``texts[offsets[c]:offsets[c] +
    counts[c]]`` (every description crossed with every template), so a random
    prompt per class and the per-class ensemble are both index operations.

    Args:
        texts (list[str]): The prompts, class by class.
        counts (torch.Tensor): Number of prompts per class, shape (C, ).
    """

    texts: List[str]
    counts: torch.Tensor

    @property
    def num_classes(self) -> int:
        return self.counts.numel()

    @property
    def offsets(self) -> torch.Tensor:
        return torch.cumsum(self.counts, 0) - self.counts

    @property
    def class_index(self) -> torch.Tensor:
        """The class of every prompt, shape (P, )."""
        return torch.repeat_interleave(
            torch.arange(self.num_classes), self.counts)

    def sample(self, generator: torch.Generator = None) -> torch.Tensor:
        """One random prompt index per class, shape (C, )."""
        rand = torch.rand(self.num_classes, generator=generator)
        picks = (rand * self.counts).long().clamp_(max=self.counts - 1)
        return self.offsets + picks

    def ensemble(self, prompt_embeds: torch.Tensor) -> torch.Tensor:
        """Per class: normalise each prompt, average, normalise again.

        Args:
            prompt_embeds (torch.Tensor): Shape (P, D), any scale.

        Returns:
            torch.Tensor: Unit-norm class embeddings, shape (C, D).
        """
        normed = torch.nn.functional.normalize(prompt_embeds.float(), dim=-1)
        index = self.class_index.to(normed.device)
        sums = normed.new_zeros(self.num_classes, normed.shape[-1])
        sums.index_add_(0, index, normed)
        means = sums / self.counts.to(normed.device, normed.dtype)[:, None]
        return torch.nn.functional.normalize(means, dim=-1)


def build_prompts(vocabulary: Vocabulary,
                  templates: Sequence[str],
                  use_descriptions: bool = True) -> PromptSet:
    """Cross every class phrase with every template.

    Args:
        vocabulary (Vocabulary): The classes.
        templates (list[str]): Templates containing ``{}``.
        use_descriptions (bool): Write ``"name, description"`` for classes
            that have descriptions. Defaults to True.

    Returns:
        PromptSet: The prompts grouped by class.
    """
    texts, counts = [], []
    for subjects in vocabulary.subjects(use_descriptions):
        # str.replace, not str.format: a class name may contain braces
        texts.extend(
            template.replace('{}', subject) for subject in subjects
            for template in templates)
        counts.append(len(subjects) * len(templates))
    return PromptSet(texts, torch.tensor(counts, dtype=torch.long))
