package platform

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, h http.Handler, method, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestOpsMuxReadyzFollowsReadiness(t *testing.T) {
	t.Parallel()
	r := NewReadiness("nats", "graph")
	mux := OpsMux(prometheus.NewRegistry(), r.Check)

	if code, body := get(t, mux, "GET", "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("healthz while starting = %d %q, want 200 ok", code, body)
	}
	code, body := get(t, mux, "GET", "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "graph: starting") || !strings.Contains(body, "nats: starting") {
		t.Errorf("readyz while starting = %d %q, want 503 naming both conditions", code, body)
	}

	r.Ready("nats")
	r.Set("graph", errors.New("loading amsterdam"))
	code, body = get(t, mux, "GET", "/readyz")
	if code != 503 || !strings.Contains(body, "graph: loading amsterdam") || strings.Contains(body, "nats") {
		t.Errorf("readyz with graph loading = %d %q, want 503 naming only the graph", code, body)
	}

	r.Ready("graph")
	if code, body := get(t, mux, "GET", "/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("readyz when ready = %d %q, want 200 ready", code, body)
	}

	r.Set("nats", errors.New("connection lost"))
	if code, body := get(t, mux, "GET", "/readyz"); code != 503 || !strings.Contains(body, "nats: connection lost") {
		t.Errorf("readyz after losing nats = %d %q, want 503", code, body)
	}
	if code, _ := get(t, mux, "GET", "/healthz"); code != 200 {
		t.Errorf("healthz while not ready = %d, want 200 (alive)", code)
	}
}

func TestOpsMuxNilReadyIsAlwaysReady(t *testing.T) {
	t.Parallel()
	if code, _ := get(t, OpsMux(prometheus.NewRegistry(), nil), "GET", "/readyz"); code != 200 {
		t.Errorf("readyz with nil ready = %d, want 200", code)
	}
}

func TestOpsMuxServesMetricsOfTheRegistry(t *testing.T) {
	t.Parallel()
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_test_things_total", Help: "Things."})
	reg.MustRegister(c)
	c.Add(3)
	mux := OpsMux(reg, nil)
	code, body := get(t, mux, "GET", "/metrics")
	if code != 200 {
		t.Fatalf("metrics = %d", code)
	}
	for _, want := range []string{
		"treasure_test_things_total 3",
		"go_goroutines ",
		"process_resident_memory_bytes ",
		"go_cpu_classes_gc_total_cpu_seconds_total ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if code, _ := get(t, mux, "POST", "/healthz"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz = %d, want 405", code)
	}
	// Services add their own routes to the same mux.
	mux.HandleFunc("GET /v1/thing", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "thing") })
	if code, body := get(t, mux, "GET", "/v1/thing"); code != 200 || body != "thing" {
		t.Errorf("added route = %d %q", code, body)
	}
}

func TestReadinessUnknownConditionCanBeAddedLater(t *testing.T) {
	t.Parallel()
	r := NewReadiness()
	if err := r.Check(); err != nil {
		t.Fatalf("empty readiness: %v", err)
	}
	r.Set("consumer", errors.New("not created"))
	if err := r.Check(); err == nil || !strings.Contains(err.Error(), "consumer: not created") {
		t.Errorf("Check = %v", err)
	}
}
