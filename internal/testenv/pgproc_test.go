package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// TestPrivatePostgresStopStart: a private server answers on its URL, is
// unreachable while stopped (a fast shutdown, then a SIGKILL of the whole
// group), and comes back on the same address with its data.
func TestPrivatePostgresStopStart(t *testing.T) {
	t.Parallel()
	pg := PrivatePostgres(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pg.URL+"&connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	for _, down := range []func(){pg.Stop, pg.Kill} {
		down()
		// A backend of a killed postmaster may finish a query in the
		// moment before it notices; then every query fails.
		deadline := time.Now().Add(10 * time.Second)
		for {
			qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := pool.QueryRow(qctx, "SELECT 1").Scan(new(int))
			cancel()
			if err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%v answers 10 s after it was stopped", pg)
			}
			time.Sleep(20 * time.Millisecond)
		}
		pg.Start()
		var v int
		if err := pool.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != 42 {
			t.Fatalf("after restart: %d %v, want 42", v, err)
		}
	}
}
