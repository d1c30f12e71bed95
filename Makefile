# cocalc-kubernetes: build, test and local clusters.
#
# Every tool comes from a pinned Go module (ci/tools/*/go.mod) or from
# Debian packages (ci/install-deps.sh); nothing is downloaded from a website.
# `make help` lists the targets.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO      ?= go
BIN     := $(CURDIR)/bin
# kubectl from the pinned k8s.io/kubectl module (make bench, the kind tier).
BENCH_KUBECTL := $(BIN)/kubectl-bench
HELM    := $(BIN)/helm
HELM4   := $(BIN)/helm4
PROMTOOL := $(BIN)/promtool
CHART   := charts/cocalc
# Identical flags for every tool build, so Go's build cache is reused.
TOOL_BUILD := CGO_ENABLED=0 $(GO) build -trimpath

export PATH := $(BIN):$(PATH)

.PHONY: help
help: ## list targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

##@ Tools (built from pinned Go modules)

.PHONY: deps deps-kind
deps: ## install the Debian packages every developer needs: render, unit and api-tier suites, make images (idempotent)
	@ci/install-deps.sh dev

deps-kind: ## install what only the kind tier adds (docker, the node image's build); make cluster-kind runs it
	@ci/install-deps.sh kind

.PHONY: tools
tools: $(HELM) $(HELM4) $(PROMTOOL) ## build helm (v3), helm4, promtool and promql-names into bin/

# Helm's own Makefile stamps its version and the Kubernetes version it assumes for
# `helm template`/`helm lint` (1.<client-go minor>) with -X; without them helm
# reports v3.22 and Kubernetes v1.20, and the chart's kubeVersion check fails.
# Both are read from the pinned module graph, so bumping go.mod is all it takes.
$(HELM): ci/tools/helm3/go.mod ci/tools/helm3/go.sum
	cd ci/tools/helm3 && \
	v=$$($(GO) list -m -f '{{.Version}}' helm.sh/helm/v3) && \
	k=$$($(GO) list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2) && \
	$(TOOL_BUILD) -ldflags "-X helm.sh/helm/v3/internal/version.version=$$v \
	  -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$$k \
	  -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$$k" \
	  -o $@ helm.sh/helm/v3/cmd/helm

$(HELM4): ci/tools/helm4/go.mod ci/tools/helm4/go.sum
	cd ci/tools/helm4 && \
	v=$$($(GO) list -m -f '{{.Version}}' helm.sh/helm/v4) && \
	$(TOOL_BUILD) -ldflags "-X helm.sh/helm/v4/internal/version.version=$$v" -o $@ helm.sh/helm/v4/cmd/helm

# promtool (check rules, test rules) and promql-names (the same module's PromQL
# parser: the metric names of an expression) for the monitoring tests in test/chart.
$(PROMTOOL): ci/tools/promtool/go.mod ci/tools/promtool/go.sum ci/tools/promtool/promqlnames/main.go
	cd ci/tools/promtool && \
	v=$$($(GO) list -m -f '{{.Version}}' github.com/prometheus/prometheus) && \
	$(TOOL_BUILD) -ldflags "-X github.com/prometheus/common/version.Version=$$v" -o $@ github.com/prometheus/prometheus/cmd/promtool && \
	$(TOOL_BUILD) -o $(BIN)/promql-names ./promqlnames

.PHONY: build
build: ## build the orchestrator (static) into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/cocalc-k8s ./tools/cmd/cocalc-k8s

##@ Images and releases (docs/releasing.md)

# bin/imagebuild (ci/tools/imagebuild) builds images without a container
# daemon into OCI image layouts under out/images, and publishes them with the
# chart. Every time in an image is the last commit's time, so a commit always
# gives the same digests.
IMAGEBUILD   := $(BIN)/imagebuild
IMAGES_OUT   := out/images
VERSION      ?= $(shell sed -n 's/^appVersion: *"*\([^"]*\)"*$$/\1/p' $(CHART)/Chart.yaml)
REVISION     ?= $(shell git rev-parse HEAD 2>/dev/null)
IMAGE_SOURCE ?= https://gitlab.com/resurgo/cocalc-kubernetes
IMAGE_META    = -version $(VERSION) -revision $(REVISION) -source $(IMAGE_SOURCE)
export SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null)

$(IMAGEBUILD): ci/tools/imagebuild/go.mod ci/tools/imagebuild/go.sum $(wildcard ci/tools/imagebuild/*.go)
	cd ci/tools/imagebuild && $(TOOL_BUILD) -o $@ .

# ArgoCD's application controller and repo server for test/argocd, one
# multi-call binary (it picks the component by $ARGOCD_BINARY_NAME), and the
# CRDs of the same module. Not in `tools`: a 181 MB binary of ≈ 2,200
# packages, measured cold at 58 min wall (nice 19, 2 cores shared with other
# builds at load average 15–70; issue 14 reports ≈ 20 min), ≈ 2 min warm
# (the link). .ci/run builds it in its own phase within CI's budget, and
# without it test/argocd skips, saying so. See ci/tools/argocd/go.mod for the
# version.
ARGOCD := $(BIN)/argocd
.PHONY: argocd
argocd: $(ARGOCD) ## build ArgoCD (controller, repo server) and its CRDs into bin/ for test/argocd (≈ 20–60 min cold, ≈ 2 min warm)
$(ARGOCD): ci/tools/argocd/go.mod ci/tools/argocd/go.sum
	cd ci/tools/argocd && \
	v=$$($(GO) list -m -f '{{.Version}}' github.com/argoproj/argo-cd/v2) && \
	d=$$($(GO) list -m -f '{{.Dir}}' github.com/argoproj/argo-cd/v2) && \
	$(TOOL_BUILD) -ldflags "-X github.com/argoproj/argo-cd/v2/common.version=$${v#v}" -o $@.tmp github.com/argoproj/argo-cd/v2/cmd && \
	mkdir -p $(BIN)/argocd-crds && \
	install -m 0644 $$d/manifests/crds/application-crd.yaml $$d/manifests/crds/appproject-crd.yaml $(BIN)/argocd-crds/ && \
	mv $@.tmp $@

# The OCI registry test/registry starts on loopback (CNCF distribution).
$(BIN)/registry: ci/tools/registry/go.mod ci/tools/registry/go.sum
	cd ci/tools/registry && $(TOOL_BUILD) -o $@ github.com/distribution/distribution/v3/cmd/registry

# `make tools` builds these too (test/images and test/registry run them).
tools: $(IMAGEBUILD) $(BIN)/registry

.PHONY: images image-orchestrator image-nfs-server image-backup image-server image-project publish
images: image-orchestrator image-nfs-server ## build the orchestrator (amd64+arm64) and nfs-server (amd64) images into out/images (OCI layouts, no daemon)

image-orchestrator: $(IMAGEBUILD) ## cocalc-k8s on an empty base: out/images/orchestrator
	$(IMAGEBUILD) orchestrator -out $(IMAGES_OUT)/orchestrator $(IMAGE_META)

# Debian's nfs-ganesha by debootstrap (root; cached, see rootfs.sh), one layer.
image-nfs-server: $(IMAGEBUILD) ## NFS-Ganesha from Debian packages: out/images/nfs-server
	rootfs=$$(tools/images/nfs-server/rootfs.sh) && \
	$(IMAGEBUILD) rootfs -rootfs "$$rootfs" -config nfs-server -out $(IMAGES_OUT)/nfs-server $(IMAGE_META)

# Debian's restic and postgresql-client for backup.* (root; cached, see
# tools/images/backup/rootfs.sh). Not in `images`: a cold debootstrap costs
# 5-25 min; the kind tier's backup test (test/e2e) builds it when it runs.
image-backup: $(IMAGEBUILD) ## restic + pg_dump from Debian packages: out/images/backup
	rootfs=$$(tools/images/backup/rootfs.sh) && \
	$(IMAGEBUILD) rootfs -rootfs "$$rootfs" -config backup -out $(IMAGES_OUT)/backup $(IMAGE_META)

# Overlays on upstream CoCalc images: need docker buildx and a registry
# holding the upstream image; bases are digest references, never defaulted.
COCALC_SERVER_IMAGE  ?=
COCALC_PROJECT_IMAGE ?=
define require_digest
	@case "$($(1))" in *@sha256:????????????????????????????????????????????????????????????????) ;; \
	  *) echo "$(1) must be <repository>@sha256:<digest> (got '$($(1))')" >&2; exit 1;; esac
endef

image-server: ## server overlay on out/images/orchestrator (docker buildx; COCALC_SERVER_IMAGE=repo@sha256:…): out/images/server
	$(call require_digest,COCALC_SERVER_IMAGE)
	@test -f $(IMAGES_OUT)/orchestrator/index.json || { echo "image-server: run make image-orchestrator first" >&2; exit 1; }
	docker buildx build -f tools/images/server/Dockerfile \
	  --build-arg COCALC_SERVER_IMAGE=$(COCALC_SERVER_IMAGE) --build-arg ORCHESTRATOR_IMAGE=cocalc-orchestrator \
	  --build-context cocalc-orchestrator=oci-layout://$(abspath $(IMAGES_OUT))/orchestrator:$(VERSION) \
	  --output type=oci,tar=false,dest=$(IMAGES_OUT)/server tools/images/server

image-project: ## project overlay (docker buildx; COCALC_PROJECT_IMAGE=repo@sha256:…): out/images/project
	$(call require_digest,COCALC_PROJECT_IMAGE)
	docker buildx build -f tools/images/project/Dockerfile --build-arg COCALC_PROJECT_IMAGE=$(COCALC_PROJECT_IMAGE) \
	  --output type=oci,tar=false,dest=$(IMAGES_OUT)/project tools/images/project

# A release requires all four images (.gitlab-ci.yml sets PUBLISH_REQUIRE).
# PLAIN_HTTP=1: HTTP to a registry off loopback (the kind tier's node registry).
PUBLISH_REQUIRE ?=
publish: $(IMAGEBUILD) $(HELM) ## push out/images/* and the chart (REGISTRY=host[:port]/path VERSION=x.y.z); the chart's values get the digests
	@test -n "$(REGISTRY)" || { echo "publish: set REGISTRY=host[:port]/path" >&2; exit 1; }
	$(IMAGEBUILD) publish -registry $(REGISTRY) -version $(VERSION) -layouts $(IMAGES_OUT) -chart $(CHART) -helm $(HELM) -require "$(PUBLISH_REQUIRE)" $(if $(filter 1,$(PLAIN_HTTP)),-plain-http)

##@ Tests

# Test clusters: kube-bin, cluster-api, cluster-kind, up, down, test-kind.
include ci/cluster.mk

.PHONY: test
test: deps tools build kube-bin ## everything CI runs: gofmt, vet, unit (-race), render, api-tier suites (+ kind suites when a kind cluster is up)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); test -z "$$unformatted" || { echo "gofmt would change: $$unformatted" >&2; exit 1; }
	$(GO) vet ./...
	$(GO) test -race -count=1 ./tools/...
	$(GO) test -count=1 -timeout 60m ./test/...
	$(MAKE) --no-print-directory test-kind-if-up

.PHONY: test-fast
test-fast: tools ## unit and render suites only (no cluster)
	$(GO) test -short -count=1 ./tools/... ./test/...

# Benchmarks (issue 7): ours vs the original's kubectl method vs the
# cluster's floor, on a fresh api-tier cluster; ≈ 10 min. The baseline's
# kubectl is built from the pinned k8s.io/kubectl module, version-stamped
# like upstream. BENCH_FLAGS=-quick is a one-minute smoke run (numbers not
# meaningful); see `go run ./test/bench/cmd/cocalc-bench -h`.
BENCH_FLAGS   ?=

# Also the kubectl the kind tier's TestNotesCommandsRun runs NOTES.txt's
# commands with (when none is on PATH).
$(BENCH_KUBECTL): test/bench/tools/kubectl/go.mod test/bench/tools/kubectl/go.sum
	cd test/bench/tools/kubectl && \
	v=$$($(GO) list -m -f '{{.Version}}' k8s.io/kubectl | sed 's/^v0\./v1./') && \
	m=$$(echo $$v | cut -d. -f2) && \
	ld="-s -w" && for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do \
	  ld="$$ld -X $$p.gitVersion=$$v -X $$p.gitMajor=1 -X $$p.gitMinor=$$m -X $$p.gitTreeState=clean"; done && \
	$(TOOL_BUILD) -ldflags "$$ld" -o $(BENCH_KUBECTL) .

.PHONY: bench
bench: build $(BENCH_KUBECTL) ## benchmarks vs the original's method (needs make kube-bin); table in test/bench/results/latest.md
	@test -x $(BIN)/kube-cluster || { echo "bench: build the control plane first: make kube-bin" >&2; exit 1; }
	$(GO) build -o $(BIN)/cocalc-bench ./test/bench/cmd/cocalc-bench
	$(BIN)/cocalc-bench -orchestrator $(BIN)/cocalc-k8s -kubectl $(BENCH_KUBECTL) -kube-bin $(BIN)/kube-cluster $(BENCH_FLAGS)

.PHONY: lint
lint: tools ## gofmt, go vet and helm lint --strict (helm 3 and 4)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(HELM) lint --strict $(CHART)
	$(HELM4) lint --strict $(CHART)

.PHONY: golden
golden: tools ## regenerate the chart's golden files
	$(GO) test -count=1 ./test/chart -run Golden -update

.PHONY: docs
docs: ## regenerate charts/cocalc/README.md from values.yaml comments and values.schema.json descriptions
	$(GO) test -count=1 ./test/chart -run '^TestChartREADMEIsCurrent$$' -update

.PHONY: clean
clean: ## remove bin/ (caches stay)
	rm -rf $(BIN)
