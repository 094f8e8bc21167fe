#!/bin/sh
# What never runs in production, out of the image's virtualenv: the test suites and build
# headers that numpy and scipy ship (about 30 MB). Run inside the image build.
set -eu
site=$(echo "$1"/lib/python3*/site-packages)
find "$site" -mindepth 2 -type d -name tests -prune -exec rm -rf {} +
find "$site" -type f \( -name '*.pyx' -o -name '*.pxd' -o -name '*.h' \) -delete
