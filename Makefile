# The two commands (README): `make smoke` and `make test`. Both install what
# they need first (Debian packages, venv, image sets).
VENV := .venv
PY := $(VENV)/bin/python
XENLAB := $(VENV)/bin/xenlab
PYTEST := $(VENV)/bin/pytest

.PHONY: setup images smoke test bench clean

setup:
	scripts/setup-host

images: setup
	$(XENLAB) images build --arch arm64
	$(XENLAB) images build --arch arm32

# The smoke test on every board of farm.yaml (the QEMU virt boards and the real
# boards, emulated), two at a time (each QEMU takes a core): run records under
# results/, the Test Day table, and the dashboard (results/../dashboard/index.html).
# `make smoke XEN_SOURCE=PATH [XEN_CONFIG="debug ..."]`: the Xen under test built from a
# tree, a release tarball or `debian` (arm64: the recipe the manifests carry).
smoke: setup
ifdef XEN_SOURCE
	set=$$($(XENLAB) images build --arch arm64 --xen-source "$(XEN_SOURCE)" \
	    $(foreach c,$(XEN_CONFIG),--xen-config $(c)) | sed -n 's/^image set //p'); \
	test -n "$$set" || exit 2; \
	XENLAB_IMAGE_SET=$$set $(PYTEST) --lg-env farm.yaml testcases/ --xenlab-target qemu-arm64 \
	    -p no:cacheprovider; status=$$?; \
	$(XENLAB) dashboard --results results; exit $$status
else
	$(XENLAB) images build --arch arm64 >/dev/null
	$(XENLAB) images build --arch arm32 >/dev/null
	$(XENLAB) testday --farm farm.yaml --jobs 2 --health none --tester "make smoke" \
	    --results results; status=$$?; \
	$(XENLAB) dashboard --results results; exit $$status
endif

# Every test of the framework, including the end-to-end QEMU boot.
test: setup
	$(PYTEST) tests/ -p no:cacheprovider

bench: setup
	$(PY) bench/images.py
	$(PY) bench/smoke.py

clean:
	rm -rf build .pytest_cache
