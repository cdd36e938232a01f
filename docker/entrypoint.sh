#!/bin/sh
# The images' entrypoint: runs `medssl` as the non-root user with /input read-only and
# /output writable, offline.
#
#   docker run --rm -v /data/studies:/input:ro -v /data/out:/output IMAGE \
#       denoise --batch /input -o /output/denoised          # any medssl command
#   docker run ... IMAGE /input/pipeline.yaml               # a pipeline file: pipeline run
set -eu

OUT=${MEDSSL_OUTPUT:-/output}
if [ "$(id -u)" = "0" ]; then
    echo "error: medssl's image runs as a non-root user; do not pass --user 0" >&2
    exit 2
fi
if [ ! -d "$OUT" ] || [ ! -w "$OUT" ]; then
    echo "error: $OUT is not a writable folder; mount one with -v HOST_FOLDER:$OUT" >&2
    exit 2
fi
# caches and settings of the tools inside, never in the read-only image or the input
export HOME="${MEDSSL_HOME:-/tmp/medssl-home}"
export XDG_CACHE_HOME="$HOME/.cache"
export MPLCONFIGDIR="$HOME/.config/matplotlib"
export HF_HUB_OFFLINE=1 PIP_NO_INDEX=1
mkdir -p "$XDG_CACHE_HOME" "$MPLCONFIGDIR"

case "${1:-}" in
    "" | -h | --help)
        exec medssl --help
        ;;
    *.yaml | *.yml)
        file=$1
        shift
        name=$(basename "$file")
        exec medssl pipeline run "$file" --output "$OUT/${name%.*}" "$@"
        ;;
    *)
        exec medssl "$@"
        ;;
esac
