#!/usr/bin/env bash
# lfkit runs on Python 3.10 (DTK's torch builds are made for it), and no 3.10 interpreter is needed to
# check that: vermin reads every source file and names each one that needs a newer Python (tomllib,
# ExceptionGroup / except*, typing.Self, datetime.UTC, ...). Exit 0 when none does, 1 otherwise.
#
# Usage: bash scripts/check_py310.sh [VERMIN]   (VERMIN: the vermin command, `vermin` on PATH by default)
#
# --eval-annotations: annotations count as evaluated (typer reads the commands' annotations at run
#   time), so `from __future__ import annotations` hides nothing that 3.10 could not evaluate;
# --backport typing_extensions: what it provides is there on 3.10 (torch requires it);
# --exclude file: Python 2's `file` builtin, which vermin also reads into an attribute named `file`
#   (`registered[name].file` in dataset_registry/telecom.py) and then calls the file Python 2 only.
set -eu
cd "$(dirname "$0")/.."
exec "${1:-vermin}" --no-config-file --target=3.10- --violations --no-tips --eval-annotations \
    --backport typing_extensions --exclude file --no-make-paths-absolute \
    lfkit dataset_registry evaluation launching llamaboard planning plugins recipes rocm_patches \
    tests benchmarks scripts
