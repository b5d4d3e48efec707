#!/usr/bin/env bash
# Verify that every option a config fragment requests made it into a final .config.
# usage: check-config.sh DOTCONFIG FRAGMENT...
# Later fragments override earlier ones, as in merge_config.sh. Prints each option that
# differs and exits 1 if any does; exits 2 on bad usage.
set -euo pipefail

if [ $# -lt 2 ]; then
	echo "usage: $0 DOTCONFIG FRAGMENT..." >&2
	exit 2
fi
dotconfig=$1
shift
for f in "$dotconfig" "$@"; do
	[ -r "$f" ] || { echo "check-config: cannot read '$f'" >&2; exit 2; }
done

awk '
	# Requested value per option, last fragment wins; "n" for "is not set".
	FILENAME != dotconfig && /^CONFIG_[A-Za-z0-9_]+=/ {
		eq = index($0, "="); want[substr($0, 1, eq - 1)] = substr($0, eq + 1); next
	}
	FILENAME != dotconfig && /^# CONFIG_[A-Za-z0-9_]+ is not set/ { want[$2] = "n"; next }
	END {
		while ((getline line < dotconfig) > 0) {
			if (line ~ /^CONFIG_[A-Za-z0-9_]+=/) {
				eq = index(line, "="); have[substr(line, 1, eq - 1)] = substr(line, eq + 1)
			}
		}
		bad = 0
		for (opt in want) {
			got = (opt in have) ? have[opt] : "n"
			if (got != want[opt]) {
				printf "%s: requested %s, final .config has %s\n", opt, want[opt], got
				bad = 1
			}
		}
		exit bad
	}
' dotconfig="$dotconfig" "$@" | sort
exit "${PIPESTATUS[0]}"
