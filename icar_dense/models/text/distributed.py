# Copyright (c) icar_dense contributors. All rights reserved.
"""Sharded text encoding over the ranks of a process group.

With a large vocabulary (LVIS: 1203 classes x 80 templates) every rank
encoding every prompt wastes world_size times the work.  Each rank encodes one
contiguous shard and the shards are all-gathered; when the text encoder is
trained the gather must carry gradients back to the rank that produced each
shard, as the iCAR authors do.

Every function here is a collective when a process group with more than one
rank exists: all ranks must call it in the same order with the same
arguments' shapes.
"""
import warnings
from typing import Callable, List, Sequence, Tuple

import torch
from mmengine.dist import all_gather, all_reduce, get_dist_info
from mmengine.dist.utils import get_comm_device

__all__ = ['get_dist_info', 'shard_range', 'all_ranks_true', 'encode_sharded']


def shard_range(num: int, rank: int, world_size: int) -> Tuple[int, int]:
    """Contiguous ``[start, end)`` of ``num`` items owned by ``rank``.

    Every rank gets ``ceil(num / world_size)`` items except the last ones,
    which may get fewer or none.
    """
    per_rank = -(-num // world_size)
    start = min(rank * per_rank, num)
    return start, min(start + per_rank, num)


def all_ranks_true(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (logical AND over the group)."""
    if get_dist_info()[1] == 1:
        return flag
    value = torch.tensor([int(flag)], device=get_comm_device())
    all_reduce(value, op='min')
    return bool(value.item())


def _gather_with_grad(local: torch.Tensor) -> List[torch.Tensor]:
    from torch.distributed.nn.functional import \
        all_gather as differentiable_all_gather
    with warnings.catch_warnings():
        # torch points to its private _functional_collectives instead; the
        # public function is kept because its backward also runs on gloo
        # (alltoall), which CPU multi-process training relies on.
        warnings.simplefilter('ignore', FutureWarning)
        return list(differentiable_all_gather(local))


def encode_sharded(encode: Callable[[List[str]], torch.Tensor],
                   texts: Sequence[str],
                   embed_dim: int,
                   device: torch.device,
                   differentiable: bool = False) -> torch.Tensor:
    """Encode ``texts`` split over the ranks and gather the result.

    Args:
        encode (Callable[[list[str]], Tensor]): Maps texts to (N, D)
            embeddings.
        texts (Sequence[str]): All texts, as many on every rank; each rank
            encodes its own shard of its own list (in training the texts
            are per-rank random template draws, which is fine).
        embed_dim (int): D, needed to build an empty shard.
        device (torch.device): Device of the result.
        differentiable (bool): Gather with autograd so gradients flow back to
            the rank that encoded each text. Defaults to False.

    Returns:
        torch.Tensor: float32 embeddings of all texts, shape (len(texts), D).
    """
    rank, world_size = get_dist_info()
    if world_size == 1:
        return encode(list(texts)).float()
    start, end = shard_range(len(texts), rank, world_size)
    per_rank = -(-len(texts) // world_size)
    if end > start:
        # float32 so ranks agree on the dtype under autocast
        local = encode(list(texts[start:end])).float()
    else:
        local = torch.zeros(0, embed_dim, device=device)
    if local.shape[0] < per_rank:
        # all_gather needs equal shapes: pad the short last shards
        pad = local.new_zeros(per_rank - local.shape[0], embed_dim)
        local = torch.cat([local, pad])
    if differentiable:
        shards = _gather_with_grad(local.to(get_comm_device()))
    else:
        shards = all_gather(local.detach().contiguous())
    return torch.cat([s.to(device) for s in shards])[:len(texts)]
