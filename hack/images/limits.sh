#!/usr/bin/env bash
# The --ulimit flags every podman build and run here needs: the OCI runtime sets a container's rlimits, and the
# kernel refuses any above the caller's hard limits ("error setting rlimit type 6: operation not permitted").
# nofile is the hard limit itself; nproc is capped at 32768, the most runc was seen to set here (65536 failed with
# a hard limit of 96367), and far more threads than one container starts.
set -euo pipefail
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] && nofile=1048576
if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
echo "--ulimit nofile=${nofile}:${nofile} --ulimit nproc=${nproc}:${nproc}"
