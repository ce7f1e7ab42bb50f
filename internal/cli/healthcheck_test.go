package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func healthcheck(tb testing.TB, ctx context.Context, args ...string) error {
	tb.Helper()
	var stderr bytes.Buffer
	return runHealthcheck(ctx, args, func(string) string { return "" }, IO{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr})
}

func TestHealthcheckAnswers(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ready\n") })
	mux.HandleFunc("GET /notready", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "not ready: consumer: not created yet\nmore\n")
	})
	mux.HandleFunc("GET /empty500", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	mux.HandleFunc("GET /moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/readyz", http.StatusFound) })
	mux.HandleFunc("GET /hang", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close

	closed := httptest.NewServer(mux)
	closedURL := closed.URL
	closed.Close()

	canceled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name    string
		ctx     context.Context
		args    []string
		wantErr string // "" means success
	}{
		{"ok on 200", context.Background(), []string{srv.URL + "/readyz"}, ""},
		{"fails on 503 naming the reason", context.Background(), []string{srv.URL + "/notready"}, "503 Service Unavailable: not ready: consumer: not created yet"},
		{"fails on 500 without a body", context.Background(), []string{srv.URL + "/empty500"}, "500 Internal Server Error"},
		{"fails on 404", context.Background(), []string{srv.URL + "/nothing"}, "404"},
		{"fails on a redirect", context.Background(), []string{srv.URL + "/moved"}, "302"},
		{"fails when nothing listens", context.Background(), []string{closedURL + "/readyz"}, "get " + closedURL},
		{"fails on timeout", context.Background(), []string{"-timeout", "20ms", srv.URL + "/hang"}, "deadline exceeded"},
		{"fails when ctx is done", canceled, []string{srv.URL + "/readyz"}, "canceled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := healthcheck(t, tc.ctx, tc.args...)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("healthcheck %v: %v", tc.args, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("healthcheck %v: no error, want one containing %q", tc.args, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("healthcheck %v: %v, want it to contain %q", tc.args, err, tc.wantErr)
			}
			var ue *UsageError
			if errors.As(err, &ue) {
				t.Fatalf("healthcheck %v: %v is a usage error (exit 2), want a failure (exit 1)", tc.args, err)
			}
		})
	}
}

func TestHealthcheckUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		nil,
		{"http://127.0.0.1:1/a", "http://127.0.0.1:1/b"},
		{"127.0.0.1:8081/readyz"},
		{"ftp://127.0.0.1/readyz"},
		{"http:///readyz"},
		{"-timeout", "0s", "http://127.0.0.1:1/readyz"},
		{"-timeout", "soon", "http://127.0.0.1:1/readyz"},
	} {
		err := healthcheck(t, context.Background(), args...)
		var ue *UsageError
		if !errors.As(err, &ue) {
			t.Errorf("healthcheck %q: %v, want a usage error", args, err)
		}
	}
}
