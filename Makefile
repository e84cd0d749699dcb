# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   - create .venv, install lfkit (editable) with its dependencies, run the offline demo
#   make test   - the same set-up if needed, then the whole test suite on the newest stack (.venv) and
#                 the tests marked both_stacks on the DCU stack (.venv-dtk: torch 2.1.2, LLaMA-Factory 0.9.3)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.lfkit-installed
# The dev/CI torch trio; the package itself never pins torch.
PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check -c constraints/dev.txt
# The DCU stack as CI stands it in (constraints/dtk-torch2.1.txt says what each pin stands for).
DTK_VENV  := .venv-dtk
DTK_BIN   := $(DTK_VENV)/bin
DTK_STAMP := $(DTK_VENV)/.lfkit-installed
DTK_CONSTRAINTS := constraints/dtk-torch2.1.txt

.PHONY: setup setup-dtk bytecode bytecode-dtk demo test bench lint clean

# uv installs the set-up (about 150 packages, torch's CUDA wheels among them) in about a minute where
# pip takes four to five. uv does not read pip's configuration: the index pip is set to use is handed
# on, the system's certificates are trusted as pip trusts them, and where uv fails pip does the install.
# --compile-bytecode as pip does: where PYTHONDONTWRITEBYTECODE is set (CI, this machine) every process
# would otherwise compile torch, transformers and LLaMA-Factory from source again.
UV_INDEX := $(or $(PIP_INDEX_URL),$(shell $(PYTHON) -m pip config get global.index-url 2>/dev/null))
UV_PIP := UV_SYSTEM_CERTS=1 $(BIN)/uv pip install --compile-bytecode $(if $(UV_INDEX),--default-index $(UV_INDEX))
UV_INSTALL := $(UV_PIP) --python $(BIN)/python -c constraints/dev.txt

$(STAMP): pyproject.toml setup.py constraints/dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --quiet uv
	$(UV_INSTALL) -e ".[test]" || $(PIP_INSTALL) -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

# The second stack installs with the first one's uv; its constraints pin what a DTK environment holds.
$(DTK_STAMP): pyproject.toml setup.py $(DTK_CONSTRAINTS) $(STAMP)
	test -x $(DTK_BIN)/python || $(PYTHON) -m venv $(DTK_VENV)
	$(UV_PIP) --python $(DTK_BIN)/python -c $(DTK_CONSTRAINTS) -e ".[test]" || \
		$(DTK_BIN)/python -m pip install --disable-pip-version-check -c $(DTK_CONSTRAINTS) -e ".[test]"
	touch $(DTK_STAMP)

setup-dtk: $(DTK_STAMP)

# lfkit's own modules as bytecode, as a regular install has them: where PYTHONDONTWRITEBYTECODE is
# set (CI, this machine) each process otherwise compiles them again (70 ms of a listing command; the
# suite starts hundreds of processes). A later edit only makes Python compile that file again.
SOURCES := lfkit dataset_registry evaluation launching llamaboard planning plugins recipes rocm_patches
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q $(SOURCES) > /dev/null

bytecode-dtk: $(DTK_STAMP)
	$(DTK_BIN)/python -m compileall -q $(SOURCES) > /dev/null

demo: bytecode
	HF_HUB_OFFLINE=1 $(BIN)/lfkit run demo

# The Debian packages the tests drive (Slurm, chromium) install while uv installs the Python set-up:
# on a fresh machine each waits mostly on downloads, so side by side they take the time of the longer one.
# Then the whole suite on the newest stack, and on the DCU stack the tests marked both_stacks (those that
# touch LLaMA-Factory, torch or pip); a failure in the first still runs the second, and fails the target.
test:
	bash scripts/install-test-tools.sh & tools=$$!; $(MAKE) --no-print-directory bytecode bytecode-dtk; status=$$?; \
		wait $$tools; exit $$status
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n 2 --dist loadgroup; newest=$$?; \
		echo "== the DCU stack: $$($(DTK_BIN)/python -c 'import importlib.metadata as m; print(*(n + " " + m.version(n) for n in ("torch", "llamafactory", "transformers")), sep=", ")')"; \
		HF_HUB_OFFLINE=1 $(DTK_BIN)/python -m pytest -n 2 --dist loadgroup -m both_stacks; dtk=$$?; \
		test $$newest -eq 0 -a $$dtk -eq 0

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/python scripts/lint_imports.py && bash scripts/check_py310.sh $(BIN)/vermin

bench: bytecode
	$(BIN)/python benchmarks/startup.py --max-ratio 1.3

clean:
	rm -rf $(VENV) $(DTK_VENV) build *.egg-info
