#!/usr/bin/env bash
# Builds medssl's CPU image (docker/Dockerfile.cpu) or CUDA image (docker/Dockerfile.cuda) with
# docker where a docker engine answers, else with podman (chroot isolation, runc). Run from
# anywhere; the context is the repository.
#
#   docker/build.sh [EXTRA BUILD OPTIONS...]
#
# Environment:
#   MEDSSL_IMAGE_KIND    cpu or cuda (default cpu): the Dockerfile
#   MEDSSL_IMAGE         image name (default medssl:KIND)
#   MEDSSL_ENGINE        docker or podman (default: docker if `docker info` answers, else podman)
#   MEDSSL_BASE_IMAGE    build argument BASE_IMAGE (default: the Dockerfile's, python:3.11-slim-bookworm
#                        pinned by digest); Debian 12 with python3 3.11, checked at the build's start
#   MEDSSL_TORCH_SPEC    build argument MEDSSL_TORCH_SPEC (default: the Dockerfile's: the CPU
#                        wheels of PyTorch's index, or PyPI's CUDA build for cuda);
#                        "torch==2.14.1 torchvision==0.29.1" takes torch from wherever this
#                        machine's pip finds it
#   TORCH_CUDA_ARCH_LIST cuda only: build argument (default: the Dockerfile's)
#   MEDSSL_PIP_SETTINGS  0: pass none of this machine's pip settings (default 1)
#   MEDSSL_DRY_RUN       1: print the build command, build nothing
#
# Pip settings: this machine's effective pip configuration (`pip config list`: pip.conf files
# and PIP_* variables) goes in as PIP_* build arguments of the build stage only, as a site
# behind its own package mirror would pass its own; the final image carries none. The local
# paths it names (constraint file, find-links folders, file:// indexes, certificate bundle) are
# mounted read-only into the build with podman; docker cannot mount them, so settings naming
# one are left out there, with a warning.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KIND=${MEDSSL_IMAGE_KIND:-cpu}
case $KIND in
    cpu | cuda) ;;
    *)
        echo "error: MEDSSL_IMAGE_KIND must be cpu or cuda, not '$KIND'" >&2
        exit 2
        ;;
esac
IMAGE=${MEDSSL_IMAGE:-medssl:$KIND}
PIP=${PIP:-python3 -m pip}

engine=${MEDSSL_ENGINE:-}
if [ -z "$engine" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        engine=docker
    elif command -v podman >/dev/null; then
        engine=podman
    else
        echo "error: no container engine: neither a docker daemon nor podman answers" >&2
        exit 2
    fi
fi

args=(build -f "$ROOT/docker/Dockerfile.$KIND")
if [ "$engine" = podman ]; then
    # the default OCI isolation fails on setrlimit in some sandboxes; chroot runs RUN steps.
    # Docker's image format: the OCI one drops the Dockerfile's SHELL (sh -eu)
    args+=(--isolation chroot --runtime runc --format docker --layers)
fi
[ -n "${MEDSSL_BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=$MEDSSL_BASE_IMAGE")
[ -n "${MEDSSL_TORCH_SPEC:-}" ] && args+=(--build-arg "MEDSSL_TORCH_SPEC=$MEDSSL_TORCH_SPEC")
if [ "$KIND" = cuda ] && [ -n "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    args+=(--build-arg "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST")
fi

# the settings the Dockerfile takes (its ARG PIP_* lines)
PASSED=" index-url extra-index-url find-links constraint cert trusted-host default-timeout retries proxy no-index "
declare -A value=() rank=()
mounts=()
if [ "${MEDSSL_PIP_SETTINGS:-1}" != 0 ]; then
    # "global.cert='/etc/ssl/…'", ":env:.find-links='/opt/wheels'": PIP_* variables win over
    # [install] sections, which win over [global]
    while IFS= read -r line; do
        section=${line%%.*}
        rest=${line#*.}
        key=${rest%%=*}
        val=${rest#*=}
        val=${val#\'}
        val=${val%\'}
        case $section in
            :env:) r=3 ;;
            install) r=2 ;;
            global) r=1 ;;
            *) continue ;;
        esac
        case $PASSED in
            *" $key "*) ;;
            *) continue ;;
        esac
        if [ "${rank[$key]:-0}" -le "$r" ]; then
            value[$key]=$val
            rank[$key]=$r
        fi
    done < <($PIP config list 2>/dev/null)

    for key in "${!value[@]}"; do
        val=${value[$key]}
        locals=()
        for item in $val; do
            path=${item#file://}
            case $path in
                /*) [ -e "$path" ] && locals+=("$path") ;;
            esac
        done
        if [ "${#locals[@]}" -gt 0 ] && [ "$engine" != podman ]; then
            echo "warning: pip setting $key=$val names a local path, not reachable from a" \
                "docker build: left out" >&2
            continue
        fi
        for path in "${locals[@]}"; do
            # a file:// index's files lie next to its simple/ folder (../../files/…)
            case $path in
                */simple | */simple/) path=$(dirname "${path%/}") ;;
            esac
            mounts+=(-v "$path:$path:ro")
        done
        var=PIP_$(echo "$key" | tr 'a-z-' 'A-Z_')
        args+=(--build-arg "$var=$val")
        echo "pip setting passed to the build: $var=$val" >&2
    done
fi

echo "+ $engine ${args[*]} ${mounts[*]} $* $ROOT" >&2
[ "${MEDSSL_DRY_RUN:-0}" = 1 ] && exit 0
start=$(date +%s)
if [ "${#mounts[@]}" -gt 0 ]; then
    # podman mounts -v folders into every RUN step and leaves their empty mount points in the
    # layer: the build stage (the only one that needs them) first, with them; then the whole
    # image without them, the build stage taken from the layer cache
    "$engine" "${args[@]}" --target build "${mounts[@]}" "$@" "$ROOT"
fi
"$engine" "${args[@]}" -t "$IMAGE" "$@" "$ROOT"
echo "built $IMAGE with $engine in $(($(date +%s) - start)) s" >&2
