#!/usr/bin/env python3
"""load: load a "metric,value,unit" CSV into a JSON-lines table, one line per
row, tagged with the run. Idempotent: loading the same run again replaces its
rows instead of duplicating them. Look at the result with `cat` or `jq`.

Usage: load.py --input IN.csv --output TABLE.jsonl
"""
import argparse, csv, datetime, json, os, sys

p = argparse.ArgumentParser(prog="load")
p.add_argument("--input", required=True)
p.add_argument("--output", required=True)
p.add_argument("--config")
a = p.parse_args()

run_id = os.environ.get("ETL_RUN_ID", "manual")
with open(a.input, newline="") as f:
    rows = list(csv.DictReader(f))

kept = []
if os.path.exists(a.output):
    with open(a.output) as f:
        kept = [line for line in f if line.strip() and json.loads(line).get("run_id") != run_id]

now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
new = [json.dumps({"run_id": run_id, "loaded_at": now, **r, "value": float(r["value"])}) + "\n" for r in rows]
os.makedirs(os.path.dirname(a.output) or ".", exist_ok=True)
tmp = f"{a.output}.tmp.{os.getpid()}"
with open(tmp, "w") as f:
    f.writelines(kept + new)
os.replace(tmp, a.output)
print(f"load: {len(new)} rows of run {run_id} loaded into {a.output} ({len(kept) + len(new)} rows in total)")
