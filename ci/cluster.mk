# Test clusters (issue 4), included by the Makefile.
#
#   make kube-bin       control plane for the api tier (bin/kube-cluster)
#   make cluster-api    start the api tier in the background, print KUBECONFIG
#   make cluster-kind   build the offline kind node image (cached) and create the kind cluster
#   make up             cluster-$(TIER) + helm install of the chart into it
#   make down           stop whatever `make cluster-*` started
#   make test-kind      the test suites against the kind cluster

KUBE_BIN     := $(BIN)/kube-cluster
TEST_CLUSTER := $(BIN)/test-cluster
TIER         ?= api

.PHONY: kube-bin
kube-bin: ## build the api tier's control plane into bin/kube-cluster (≈13 min cold, seconds warm)
	ci/tools/kube/build.sh $(KUBE_BIN) .
	@v=$$(cd ci/tools/kube && $(GO) list -m -f '{{.Version}}' k8s.io/kubernetes); \
	test "$$($(KUBE_BIN) version)" = "$$v" || { echo "kube-bin: $(KUBE_BIN) does not report $$v" >&2; exit 1; }

.PHONY: test-cluster
test-cluster:
	$(TOOL_BUILD) -o $(TEST_CLUSTER) ./test/cluster/cmd/test-cluster

.PHONY: cluster-api
cluster-api: kube-bin test-cluster ## start the api tier (real control plane, kwok nodes) in the background
	$(TEST_CLUSTER) up -tier=api

.PHONY: cluster-kind
cluster-kind: deps-kind test-cluster ## build the offline kind node image (cached) and create the kind cluster (NODES=3: the multi-node one)
	NODES=$(NODES) ci/kind/cluster-up.sh

# The multi-node kind tier (issue 15): `make cluster-kind NODES=3` creates
# the kind cluster cocalc-multi (a control plane, two workers) beside the
# one-node "cocalc"; these run its suites and delete it. On demand only:
# see .ci/run and ci/kind/README.md for the time it takes.
NODES           ?= 1
KIND_MULTI_STATE := .cache/cluster/kind-cocalc-multi

.PHONY: test-kind-multi
test-kind-multi: tools test-cluster ## the multi-node suites (make cluster-kind NODES=3 first)
	$(TEST_CLUSTER) load-images -name=cocalc-multi
	COCALC_TEST_TIER=kind COCALC_KIND_STATE=$(KIND_MULTI_STATE) $(GO) test -count=1 -timeout 45m -run 'MultiNode|KindNode' ./test/cluster/... ./test/e2e/...

.PHONY: down-kind-multi
down-kind-multi: test-cluster ## delete the multi-node kind cluster
	$(TEST_CLUSTER) down -tier=kind -name=cocalc-multi

.PHONY: up
up: cluster-$(TIER) tools test-cluster ## start the local cluster (TIER=api|kind) and install the chart into it
	export KUBECONFIG=$$($(TEST_CLUSTER) env -tier=$(TIER) | sed 's/^export KUBECONFIG=//') && \
	$(HELM) upgrade --install cocalc $(CHART) --namespace cocalc --create-namespace --wait --timeout 5m $(if $(filter kind,$(TIER)),-f values/kind.yaml,--set 'networkPolicy.nfs.nodeCIDRs={172.31.250.0/24}') && \
	echo "export KUBECONFIG=$$KUBECONFIG"

.PHONY: down
down: test-cluster ## stop the clusters `make cluster-*` started
	$(TEST_CLUSTER) down -tier=api
	@if [ -x ci/kind/cluster-down.sh ]; then ci/kind/cluster-down.sh; fi

.PHONY: test-kind
test-kind: tools test-cluster $(BENCH_KUBECTL) ## the test suites against the kind cluster (make cluster-kind first)
	$(TEST_CLUSTER) load-images
	COCALC_TEST_TIER=kind $(GO) test -count=1 -timeout 45m ./test/cluster/... ./test/e2e/...

# make test runs the kind suites too when a kind cluster is up (make
# cluster-kind or make up TIER=kind); on a machine without one (CI's clean
# clone where .ci/run could not bring the tier up) they are skipped,
# and the api-tier run above already reported each kind test's skip reason.
.PHONY: test-kind-if-up
test-kind-if-up: test-cluster
	@if docker info >/dev/null 2>&1 && $(TEST_CLUSTER) status -tier=kind >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory test-kind; \
	else \
	  echo "kind tier: no kind cluster is up (make cluster-kind builds one offline: ≈ 30–35 min cold, ≈ 1 min cached); its suites were skipped"; \
	fi
