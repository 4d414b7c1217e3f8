#!/usr/bin/env bash
# Regenerates the Spark 4 golden files in this folder with PySpark.
#
#   bash testdata/golden/regenerate.sh [--families GLOB ...]
#
# Needs Java 17 and Python 3.11 (PySpark downloads nothing else). The
# versions below are the ones every params.json records; change them only
# on purpose, then rerun `cargo test -p kiln-transformers --test golden`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/golden-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    'pyspark==4.3.0' 'pyarrow==26.0.1' 'numpy==2.4.6'
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$venv/bin/python" "$here/make_golden.py" --out "$out" --seed 42 "$@"
# Replace only the case folders and the manifest; this script, the generator
# and the README stay.
for case in "$out"/*/; do
  name="$(basename "$case")"
  rm -rf "${here:?}/$name"
  cp -r "$case" "$here/$name"
done
[ -f "$out/MANIFEST.json" ] && cp "$out/MANIFEST.json" "$here/MANIFEST.json"
echo "golden files regenerated in $here"
