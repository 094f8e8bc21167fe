#!/usr/bin/env bash
# Makes build/wheelhouse, everything the image installs, fetched and checked outside the build
# (so that the build needs no network and installs only what the lock pins):
#   - the wheels of requirements.lock for the image's Python (3.11, Linux x86_64, glibc), each
#     checked by pip against its hash in the lock;
#   - the project's wheel, built by the pinned hatchling of the dev lock (no build isolation:
#     nothing unpinned is fetched), dated by the last commit so that it is reproducible;
#   - image-requirements.txt: the lock plus that wheel with its hash;
#   - Debian's libgomp1 (LightGBM's OpenMP runtime), which apt checks against the signed archive.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
out=build/wheelhouse
rm -rf "$out" && mkdir -p "$out/debs"

# The image's interpreter, whatever this machine's: CPython 3.11 on glibc 2.36 (bookworm), x86_64.
# pip does not widen a manylinux tag to older glibc versions by itself, so each is named.
platforms=()
for minor in $(seq 36 -1 17); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64)
$PY -m pip download -q --disable-pip-version-check --no-deps --require-hashes \
  --only-binary=:all: --implementation cp --python-version 3.11 \
  --abi cp311 --abi abi3 --abi none "${platforms[@]}" -r requirements.lock -d "$out"

epoch=$(git log -1 --format=%ct 2>/dev/null || date +%s)
SOURCE_DATE_EPOCH=$epoch $PY -m pip wheel -q --disable-pip-version-check --no-deps \
  --no-build-isolation -w "$out" .
wheel=$(cd "$out" && ls vpp_aggregator-*.whl)
{
  cat requirements.lock
  echo "/wheelhouse/$wheel --hash=sha256:$(sha256sum "$out/$wheel" | cut -d' ' -f1)"
} > "$out/image-requirements.txt"
cp scripts/trim-venv.sh "$out/"

# Debian's package for the image's release (bookworm, as the base image): apt verifies it.
(cd "$out/debs" && apt-get download -q libgomp1 >/dev/null 2>&1) \
  || { apt-get update -q >/dev/null 2>&1 && (cd "$out/debs" && apt-get download -q libgomp1 >/dev/null); }
echo "wheelhouse: $(ls "$out"/*.whl | wc -l) wheels, $(du -sm "$out" | cut -f1) MB in $out"
