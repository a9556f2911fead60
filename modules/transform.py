#!/usr/bin/env python3
"""transform: apply a JSON config to a "metric,value_kb" CSV.

Config: {"keep": ["MemTotal", ...], "divide_by": 1024, "unit": "MiB", "round": 1}
Usage: transform.py --input IN.csv --output OUT.csv --config CONF.json
"""
import argparse, csv, json, os, sys

p = argparse.ArgumentParser(prog="transform")
p.add_argument("--input", required=True)
p.add_argument("--output", required=True)
p.add_argument("--config", required=True)
a = p.parse_args()

try:
    with open(a.config) as f:
        conf = json.load(f)
except (OSError, ValueError) as e:
    sys.exit(f"transform: cannot read config {a.config}: {e}")
keep = conf.get("keep")
divide_by = float(conf.get("divide_by", 1))
unit = conf.get("unit", "kB")
digits = int(conf.get("round", 1))

with open(a.input, newline="") as f:
    rows = list(csv.DictReader(f))
if not rows:
    sys.exit(f"transform: {a.input} has no rows")
out_rows = [
    {"metric": r["metric"], "value": round(int(r["value_kb"]) / divide_by, digits), "unit": unit}
    for r in rows
    if keep is None or r["metric"] in keep
]
missing = sorted(set(keep or []) - {r["metric"] for r in out_rows})
if missing:
    print(f"transform: warning: metrics not found: {', '.join(missing)}", file=sys.stderr)

os.makedirs(os.path.dirname(a.output) or ".", exist_ok=True)
tmp = f"{a.output}.tmp.{os.getpid()}"
with open(tmp, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["metric", "value", "unit"])
    w.writeheader()
    w.writerows(out_rows)
os.replace(tmp, a.output)
print(f"transform: kept {len(out_rows)} of {len(rows)} metrics, in {unit}, to {a.output}")
