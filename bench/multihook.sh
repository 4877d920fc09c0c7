#!/bin/bash
# One multi-hook harvest (resid.0-5 in one pass) against six single-hook harvests of the same
# tokens: seconds and CPU seconds of the harvest itself (metadata last_run), wall time with the
# model loads, and whether the stores are identical. Usage: bench/multihook.sh [TOKENS]
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENS=${1:-4000}
PY=${PYTHON:-.venv/bin/python}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
common=(--tokens "$TOKENS" --batch-size 16 --device cpu)
start=$(date +%s.%N)
"$PY" -m autointerp harvest --layers 0-5 "${common[@]}" --out "$OUT/multi" > /dev/null 2>&1
middle=$(date +%s.%N)
for L in 0 1 2 3 4 5; do
  "$PY" -m autointerp harvest --layer $L "${common[@]}" --out "$OUT/single.$L" > /dev/null 2>&1
done
end=$(date +%s.%N)
"$PY" - "$OUT" "$start" "$middle" "$end" <<'PY'
import json, sys
from pathlib import Path
out, start, middle, end = Path(sys.argv[1]), *map(float, sys.argv[2:])
multi = [json.loads((out / f"multi/resid.{L}/metadata.json").read_text())["last_run"] for L in range(6)]
single = [json.loads((out / f"single.{L}/metadata.json").read_text())["last_run"] for L in range(6)]
same = all(
    sorted(p.relative_to(out / f"multi/resid.{L}") for p in (out / f"multi/resid.{L}").rglob("*.npy"))
    == sorted(p.relative_to(out / f"single.{L}") for p in (out / f"single.{L}").rglob("*.npy"))
    and all(p.read_bytes() == (out / f"single.{L}" / p.relative_to(out / f"multi/resid.{L}")).read_bytes()
            for p in (out / f"multi/resid.{L}").rglob("*.npy"))
    for L in range(6))
cpu_s = sum(r["cpu_seconds"] for r in single)
print(f"one pass, resid.0-5: harvest {multi[0]['seconds']:.2f} s, {multi[0]['cpu_seconds']:.2f} CPU s; "
      f"wall with model load {middle - start:.1f} s")
print(f"six single-hook harvests: harvest {sum(r['seconds'] for r in single):.2f} s, {cpu_s:.2f} CPU s; "
      f"wall with model loads {end - middle:.1f} s")
print(f"CPU ratio {cpu_s / multi[0]['cpu_seconds']:.2f} (blocks computed: 21 / 6 = 3.5); "
      f"stores identical: {same}")
PY
