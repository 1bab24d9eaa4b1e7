#!/usr/bin/env bash
# The quickstart, from nothing to a running app, on a machine with a Rust toolchain and a
# Docker engine (no registry needed). Each step is one you would run by hand:
#
#   rustc ... app/demo.rs                     # the demo app, a static binary
#   berth secrets init                        # this machine's age key (kept if it exists)
#   berth secrets set app_key --generate ...  # the app's secret, encrypted (made once)
#   berth secrets set backup_key --generate ...  # the key that authenticates backups
#   berth apply --yes                         # build the image, create, gate, done
#
# Then: curl http://127.0.0.1:8080/   and, to take it all down: berth destroy --yes
# (add --delete-volumes to drop the visit counter too).
set -euo pipefail
cd "$(dirname "$0")"

if [ -z "${BERTH:-}" ]; then
  # The first run compiles berth in release mode (5 to 10 minutes on 2 cores); cargo's own
  # progress shows what it is doing. Later runs take a second.
  echo "Building berth (release; the first build takes a few minutes)..." >&2
  cargo build --release
  BERTH=../../target/release/berth
fi

rustc -O -C target-feature=+crt-static -o app/demo app/demo.rs
"$BERTH" secrets init >/dev/null
"$BERTH" secrets set app_key --generate --if-missing
"$BERTH" secrets set backup_key --generate --if-missing
"$BERTH" apply --yes
echo
echo "Up: curl http://127.0.0.1:8080/"
