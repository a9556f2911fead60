#!/bin/sh
# hello: the smallest module. Prints its context and writes it to --output.
set -eu
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --output) out="$2"; shift 2 ;;
    --input|--config) shift 2 ;;
    *) echo "hello: unknown argument: $1" >&2; exit 2 ;;
  esac
done
msg="hello from run ${ETL_RUN_ID:-manual}, sequence ${ETL_SEQUENCE:-?}, step ${ETL_STEP:-?}, attempt ${ETL_ATTEMPT:-?}"
echo "$msg"
if [ -n "$out" ]; then mkdir -p "$(dirname "$out")"; echo "$msg" > "$out"; fi
