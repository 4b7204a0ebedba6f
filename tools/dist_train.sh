#!/usr/bin/env bash
# tools/dist_train.sh CONFIG NUM_PROCS [train.py args...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, PORT on every node.
# Without GPUs the processes use the gloo backend on the CPU.
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG NUM_PROCS [train.py args...]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}
source "$(dirname "$0")/dist_args.sh"
require_file CONFIG "${CONFIG}"
require_count NUM_PROCS "${GPUS}" "Use one per GPU (nvidia-smi -L); without GPUs, the CPU processes to run (gloo)."
require_count NNODES "${NNODES}" "The number of machines."
require_index NODE_RANK "${NODE_RANK}" "${NNODES}"
require_count PORT "${PORT}" "A free TCP port for the rendezvous."

PYTHONPATH="$(dirname "$0")/..":${PYTHONPATH} \
exec "${PYTHON}" -m torch.distributed.run \
    --nnodes="${NNODES}" \
    --node_rank="${NODE_RANK}" \
    --master_addr="${MASTER_ADDR}" \
    --nproc_per_node="${GPUS}" \
    --master_port="${PORT}" \
    "$(dirname "$0")/train.py" \
    "${CONFIG}" \
    --launcher pytorch "${@:3}"
