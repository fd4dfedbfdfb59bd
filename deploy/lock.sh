#!/bin/sh
# Regenerate requirements.lock, the pinned dependencies the Docker image installs, from
# pyproject.toml with uv (https://docs.astral.sh/uv/; `pip install uv`). Run after changing the
# dependencies in pyproject.toml, then commit both files.
#
# torch is installed apart, as its CPU-only build (see the Dockerfile), so torch and the CUDA
# packages its PyPI wheel for Linux pulls in (triton, nvidia-*) are left out of the lock.
set -eu
cd "$(dirname "$0")/.."
target="--python-version 3.11 --python-platform x86_64-unknown-linux-gnu"
skip="--no-emit-package torch --no-emit-package triton"
# shellcheck disable=SC2086
for name in $(uv pip compile pyproject.toml $target --quiet \
    | grep -oE '^nvidia-[a-z0-9-]+'); do
    skip="$skip --no-emit-package $name"
done
# shellcheck disable=SC2086
uv pip compile pyproject.toml $target $skip --custom-compile-command "deploy/lock.sh" \
    --output-file requirements.lock
