# The two commands that matter are `make demo` and `make test` (see README).
GO ?= go

.PHONY: test build vet bench demo
# demo runs the whole pipeline in one process: an embedded JetStream server,
# the four services, and PLAYERS simulated players walking GRAPH over real
# WebSockets, printing live figures every second. Redis and PostgreSQL come
# from the environment (scripts/services.sh finds or starts them).
GRAPH ?= data/amsterdam.gr.gz
PLAYERS ?= 2000
# The live page (a map of the game in a browser) is push's GET /: dev
# prints its URL, with a read-only spectator token, once the services are
# ready ("live page: …").
demo: build
	bash scripts/services.sh ensure redis postgres
	@echo "demo: the live page will be at http://$${TREASURE_PUSH_ADDR:-127.0.0.1:8082}/ (dev prints it with a spectator token on its 'live page:' line)"
	TREASURE_GRAPH=$(GRAPH) bin/treasure dev --players $(PLAYERS)

# burst replays the city-wide drop (issue 6): BURST_PLAYERS players (35,000)
# connect to the services running as separate processes (at least 2 ingest
# and 2 push), an admin drop is posted, and every player moves within 1 s,
# on the synthetic city (generated once into .cache/city.snap) or
# BURST_GRAPH. The last line of its output is the load generator's JSON
# summary; see scripts/burst.sh. burst-small is the same on amsterdam with
# 2,000 players. Both pass BURST_* set on the command line through.
.PHONY: burst burst-small
burst:
	GO="$(GO)" bash scripts/burst.sh
burst-small:
	GO="$(GO)" BURST_PLAYERS=$${BURST_PLAYERS:-2000} BURST_GRAPH=$${BURST_GRAPH:-data/amsterdam.gr.gz} bash scripts/burst.sh

# cluster runs the scale-out tests of issue 9 with their figures (-v): the
# pipeline on a three-node R3 JetStream cluster (embedded) losing a node,
# then the log's leader, under load; the same on three nats-server
# processes crashing (SIGKILL) the log's leader, then two nodes of three
# (no quorum); proximity workers going 1 → deploy/k8s's layout → 4 → 1
# under load; and two proximity processes on one partition taking turns
# through its lease (kill, freeze, stop). `make test` runs them too; this
# prints the figures BENCHMARKS.md and docs/operations.md quote.
.PHONY: cluster
cluster:
	bash scripts/services.sh ensure
	$(GO) test -count=1 -v -run 'TestClusterR3NodeLossUnderLoad|TestClusterCrashAndQuorumLossUnderLoad|TestProximityWorkersScaleByPartitionsUnderLoad|TestProximityLeaseTwoProcessesOnePartition' ./internal/e2e/

# test finds (or starts) NATS with JetStream, Redis and PostgreSQL, then runs
# every test against them; see scripts/services.sh. The packages with
# concurrency (RACE_PKGS: the services, the adapters, the load generator,
# the lifecycle and the test environment) run under the race detector,
# the others (pure domain code, whole-process and deploy tests) without
# it: RACE_PKGS=./... races everything (about twice the time; see
# docs/operations.md, "Tests and the race detector"). scripts/chromium.sh
# finds (or installs) the headless Chromium of the live page's browser test,
# which fails rather than skips without one.
RACE_PKGS ?= ./services/... ./internal/natsjs/... ./internal/pgstore/... ./internal/redisstore/... \
	./internal/loadgen/... ./internal/stack/... ./internal/platform/... ./internal/ratelimit/... \
	./internal/edgeref/... ./internal/cpustat/... ./internal/testenv/... ./internal/backoff/... \
	./internal/archive/... ./internal/retention/...
test:
	bash scripts/services.sh ensure
	bash scripts/chromium.sh >/dev/null
	race="$$($(GO) list $(RACE_PKGS))" && \
	rest="$$($(GO) list ./... | grep -vxF "$$race" || true)" && \
	if [ -n "$$rest" ]; then $(GO) test -count=1 $$rest; fi && \
	$(GO) test -race -count=1 $$race
	$(MAKE) fuzz-short

# fuzz-short runs every fuzz target for FUZZTIME (3s) each, one after the
# other (scripts/fuzz-short.sh); the seed corpora already ran as tests
# above. Longer runs: FUZZTIME=5m make fuzz-short, or one target with
# bash scripts/fuzz-short.sh FuzzVerify (figures in docs/operations.md,
# "Limits and access").
FUZZTIME ?= 3s
.PHONY: fuzz-short
fuzz-short:
	GO="$(GO)" FUZZTIME=$(FUZZTIME) bash scripts/fuzz-short.sh

build:
	$(GO) build -o bin/treasure ./cmd/treasure

vet:
	gofmt -l . | (! grep .) && $(GO) vet ./...

# gen regenerates the Go types of the event schemas (schemas/proto) into
# internal/event/eventpb. It needs protoc (Debian: apt-get install
# protobuf-compiler) and installs the pinned protoc-gen-go. The generated
# files are committed, so building never needs protoc; TestGeneratedMatchesSchema
# (internal/event) fails when they fall behind the .proto files.
PROTOC_GEN_GO_VERSION ?= v1.36.12
.PHONY: gen
gen:
	@command -v protoc >/dev/null || { echo "gen: protoc not found; install it: apt-get install protobuf-compiler" >&2; exit 1; }
	GOBIN="$(CURDIR)/bin" $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	PATH="$(CURDIR)/bin:$$PATH" protoc --proto_path=schemas/proto --go_out=. --go_opt=module=treasure \
		$$(cd schemas/proto && find . -name '*.proto' | sed 's|^\./||' | sort)

# soak (issue 9; not CI): SOAK_DURATION (default 30m) of steady open-loop
# load at SOAK_RATE moves/s (default 2000, half of what the box sustains on
# amsterdam) against `treasure dev --separate`, with the load generator's
# latency/CPU charts and `treasure sample`'s RSS, goroutines and open
# descriptors per process over time; see scripts/soak.sh and BENCHMARKS.md
# "Issue 9: soak". SOAK_* set on the command line pass through.
# faults-long runs the fault tests' longer variants (CI runs the short
# ones): every service killed three times, PostgreSQL down 30 s, 20 s
# slow-reader phases.
.PHONY: soak faults-long
soak:
	GO="$(GO)" bash scripts/soak.sh
faults-long:
	bash scripts/services.sh ensure
	TREASURE_FAULTS_LONG=1 TREASURE_FAULTS_PG_DOWN=30s TREASURE_FAULTS_SLOW_PHASE=20s \
		$(GO) test -count=1 -timeout 20m -v \
		-run 'TestProcessKillEachService|TestPostgresDownUnderLoad|TestSlowReadersUnderLoad|TestJetStreamStoreFullUnderLoad' \
		./internal/e2e/ ./internal/faults/
