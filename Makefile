# The two commands that matter are `make demo` and `make test` (see README).
GO ?= go

.PHONY: test build vet bench
test:
	$(GO) test -count=1 ./...

build:
	$(GO) build -o bin/treasure ./cmd/treasure

vet:
	gofmt -l . | (! grep .) && $(GO) vet ./...
