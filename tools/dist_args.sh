# Argument checks shared by the dist_* and slurm_* launchers (sourced):
# torch.distributed.run and srun answer a wrong count with a traceback or a
# hang that names neither the argument nor the fix.

# require_count NAME VALUE HINT: VALUE must be a positive integer
require_count() {
    if ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$2" -lt 1 ]; then
        echo "$(basename "$0"): $1 must be a positive integer (processes to" \
             "start), got '$2'. $3" >&2
        exit 2
    fi
}

# require_index NAME VALUE LIMIT: VALUE must be an integer in [0, LIMIT)
require_index() {
    if ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$2" -ge "$3" ]; then
        echo "$(basename "$0"): $1 must be an integer from 0 to $(($3 - 1))" \
             "(NNODES=$3), got '$2'" >&2
        exit 2
    fi
}

# require_file NAME PATH: a local file that exists (URLs pass)
require_file() {
    case "$2" in
        *://*) return 0 ;;
    esac
    if [ ! -f "$2" ]; then
        echo "$(basename "$0"): $1 '$2' is not a file" >&2
        exit 2
    fi
}
