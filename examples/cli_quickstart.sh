#!/usr/bin/env bash
# CLI quickstart: run a CSV file through the built-in emulator, then read the run back.
#   bash examples/cli_quickstart.sh
set -euo pipefail
dir=$(mktemp -d)
cat > "$dir/reviews.csv" <<'CSV'
id,text
r1,Arrived broken and support never answered.
r2,Does exactly what it promises; I use it every day.
r3,It is fine.
CSV
export BATCHOR_STORE="sqlite:///$dir/batchor.db" BATCHOR_ARTIFACTS="$dir/artifacts"
uv run batchor run "$dir/reviews.csv" --id-field id \
    --prompt-template "Label the sentiment of this review: {text}" \
    --model gpt-4.1-mini --run-id cli-quickstart --output "$dir/results.jsonl" --emulate
uv run batchor status cli-quickstart
head -n 3 "$dir/results.jsonl"
