#!/usr/bin/env bash
# The system tools the tests drive, from Debian's packages (one apt-get call: two would fight over
# dpkg's lock): slurm-wlm + munge for the one-node test cluster (tests/slurm_cluster.py) and chromium
# for the LlamaBoard browser test (tests/test_llamaboard.py).
# Never fails the build: where it cannot install, those tests skip (or fail under CI=true).
set -u
# The daemons live in sbin, which a login PATH may lack.
PATH="$PATH:/usr/sbin:/sbin"

missing=()
for cmd in sbatch slurmctld slurmd munged; do
    command -v "$cmd" >/dev/null 2>&1 || { missing+=(slurm-wlm munge); break; }
done
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-tools: not root, cannot install ${missing[*]}; the tests that need them will skip"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-tools: no apt-get here, cannot install ${missing[*]}; the tests that need them will skip"
    exit 0
fi

echo "install-test-tools: installing ${missing[*]} with apt-get ..."
export DEBIAN_FRONTEND=noninteractive
log=/tmp/install-test-tools.$$.log
install() { apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1; }
# Refresh the package lists only when the install needs it (a fresh image has none).
if ! install && ! { apt-get update -qq >>"$log" 2>&1 && install; }; then
    echo "install-test-tools: apt-get failed (log: $log); the tests that need ${missing[*]} will skip"
    exit 0
fi
rm -f "$log"
exit 0
