# proxyrig — see README.md. Every target that needs system packages installs
# them first through ci/install-deps.sh (idempotent).

GO       ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BIN      := bin/proxyrig
OUT      ?= out
# Packages tested with plain `go test` (everything but the ginkgo suite,
# which has its own target so it can run in parallel and write JUnit).
UNIT_PKGS = $(shell $(GO) list ./... | grep -v '/conformance$$')

.PHONY: report all build deps test vet fmt-check unit fuzz conformance conformance-vm lint clean cleanup bench generate generate-check

all: build

deps:
	bash ci/install-deps.sh

# bin/proxyrig, the compiled conformance suite that 'proxyrig conformance'
# runs, and the ginkgo CLI it uses to run the suite in parallel.
build:
	$(GO) build -o $(BIN) ./cmd/proxyrig
	$(GO) test -c -o bin/proxyrig-conformance.test ./conformance
	$(GO) build -o bin/ginkgo github.com/onsi/ginkgo/v2/ginkgo

# Regenerate the eBPF datapath's committed BPF object and Go bindings
# (bpf2go, pinned as a tool in go.mod, with Debian's clang).
generate:
	$(GO) generate ./datapaths/ebpf/...

# The committed generated files must be exactly what the sources produce.
generate-check: generate
	@git diff --exit-code -- datapaths/ebpf/ || { echo "generated eBPF files are stale: run 'make generate' and commit"; exit 1; }

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

lint: fmt-check vet

# Unit tests (no root) and privileged integration tests (each in its own
# namespaces). -p 2 matches this 2-core machine.
unit: build
	$(GO) test -p 2 -count=1 -timeout 30m $(UNIT_PKGS)

# Whether this kernel has IPVS (ip_vs is loaded: its sysctls exist). When
# it does not, the IPVS spec tree runs in the VM runner (conformance-vm)
# and the native run leaves it out.
IPVS_NATIVE := $(shell test -d /proc/sys/net/ipv4/vs && echo yes)
NATIVE_FILTER := $(if $(IPVS_NATIVE),,--label-filter='!datapath:ipvs')
VM_FILTER := $(if $(IPVS_NATIVE),proto:SCTP,proto:SCTP || datapath:ipvs)

# The conformance suite: real packets through a lab, once per datapath this
# machine can run. Writes JUnit to $(OUT)/conformance-junit.xml.
conformance: build
	mkdir -p $(OUT)
	$(GO) tool ginkgo -p --procs=2 --fail-on-pending --fail-on-empty --timeout=90m $(NATIVE_FILTER) \
		--junit-report=conformance-junit.xml --output-dir=$(OUT) ./conformance \
		-- -matrix-out=$(abspath $(OUT))/conformance-matrix.json

# What this kernel lacks runs in the VM runner (Debian's kernel under qemu),
# in one boot: the SCTP cases of every native datapath and, without IPVS
# here, the whole IPVS tree. Results: $(OUT)/vm/.
conformance-vm: build
	./$(BIN) conformance --vm --label-filter '$(VM_FILTER)' --out $(OUT)/vm

# Every go test -fuzz target (parser and renderers) for FUZZTIME each: a
# short run in make test, a long one in the nightly job.
FUZZTIME ?= 10s
fuzz:
	bash ci/fuzz.sh $(FUZZTIME)

# The whole suite. The root namespace is snapshotted before and compared
# after (ci/test.sh): any change fails the run and names what changed.
test: deps lint generate-check build
	bash ci/test.sh unit fuzz conformance conformance-vm
	@echo "make test: all green"

# The main job: doctor, conformance for every datapath this machine supports
# (what the kernel lacks through the VM), the benchmark matrix at the default
# scale, and the HTML report. Everything lands in $(OUT)/report/; the path of
# report.html is printed at the end.
report: deps build
	./$(BIN) run --out $(OUT)/report

# A benchmark run at a moderate scale; see loadgen/README.md and
# 'proxyrig bench -h' for the full matrix (100 … 30000 Services).
bench: deps build
	./$(BIN) bench --datapaths $(or $(DATAPATHS),iptables,nftables) --services $(or $(SERVICES),100,1000) --endpoints 5 --out $(OUT)/bench

cleanup: build
	./$(BIN) cleanup

clean:
	rm -rf bin $(OUT)
