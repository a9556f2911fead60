#!/bin/sh
# extract: snapshot the machine's memory counters (/proc/meminfo) as a CSV
# with a header "metric,value_kb". Usage: extract.sh --output PATH
set -eu
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --output) out="$2"; shift 2 ;;
    --input|--config) shift 2 ;;
    *) echo "extract: unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ -n "$out" ] || { echo "extract: --output PATH is required" >&2; exit 2; }
mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
{ echo "metric,value_kb"; awk -F'[: ]+' 'NF >= 2 { print $1 "," $2 }' /proc/meminfo; } > "$tmp"
mv "$tmp" "$out"   # atomic: a reader never sees half a file
echo "extract: wrote $(($(wc -l < "$out") - 1)) rows to $out (run ${ETL_RUN_ID:-manual})"
