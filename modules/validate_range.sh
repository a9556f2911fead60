#!/bin/sh
# validate_range: a quality gate that always finds a problem, to show what a
# failing step looks like (the run fails here; later steps never run).
echo "validate_range: checking $2"
echo "validate_range: 3 rows outside the allowed range (MemFree > MemTotal); refusing to load" >&2
exit 3
