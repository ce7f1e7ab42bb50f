package testenv

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

func schemaExists(t *testing.T, pool *pgxpool.Pool, schema string) bool {
	t.Helper()
	var n int
	err := pool.QueryRow(context.Background(),
		"SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", schema).Scan(&n)
	if err != nil {
		t.Fatalf("look up schema %s: %v", schema, err)
	}
	return n == 1
}

// fillPostgres creates the same unqualified table any test would, holding
// name, and checks that it landed in schema.
func fillPostgres(t *testing.T, pool *pgxpool.Pool, schema, name string) {
	t.Helper()
	ctx := context.Background()
	if _, err := pool.Exec(ctx, "CREATE TABLE scores (player text PRIMARY KEY, score bigint)"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "INSERT INTO scores VALUES ($1, 1)", name); err != nil {
		t.Fatal(err)
	}
	var where string
	if err := pool.QueryRow(ctx, "SELECT table_schema FROM information_schema.tables WHERE table_name = 'scores' AND table_schema = current_schema()").Scan(&where); err != nil || where != schema {
		t.Errorf("table landed in %q (%v), want %q", where, err, schema)
	}
}

// checkPostgres checks that the pool's scores table holds only name.
func checkPostgres(t *testing.T, pool *pgxpool.Pool, name string) {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT player FROM scores")
	var players []string
	if err == nil {
		players, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil || len(players) != 1 || players[0] != name {
		t.Errorf("scores = %v, %v; want only %q", players, err, name)
	}
}

// TestPostgresSchemasIsolateAndCleanUp runs test b inside test a, both
// creating the same table: each sees only its own, b's cleanup leaves a's
// schema alone, and after both no schema is left.
func TestPostgresSchemasIsolateAndCleanUp(t *testing.T) {
	t.Parallel()
	observer, _ := Postgres(t)
	var sa, sb string
	t.Run("a", func(t *testing.T) {
		pool, schema := Postgres(t)
		sa = schema
		fillPostgres(t, pool, schema, "a")
		t.Run("b", func(t *testing.T) {
			pool, schema := Postgres(t)
			sb = schema
			fillPostgres(t, pool, schema, "b")
			checkPostgres(t, pool, "b")
		})
		if schemaExists(t, observer, sb) {
			t.Errorf("schema %s left after its test ended", sb)
		}
		checkPostgres(t, pool, "a")
	})
	if sa == "" || sb == "" || sa == sb {
		t.Fatalf("schemas %q and %q, want two distinct", sa, sb)
	}
	if schemaExists(t, observer, sa) {
		t.Errorf("schema %s left after cleanup", sa)
	}
}

func TestPostgresURLSetsTheSearchPath(t *testing.T) {
	t.Parallel()
	observer, _ := Postgres(t)
	var schema string
	t.Run("inner", func(t *testing.T) {
		url := PostgresURL(t)
		if strings.Contains(url, "+") {
			t.Errorf("URL %q has a '+', which libpq does not read as a space", url)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		if err := pool.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(schema, "t") || !schemaExists(t, observer, schema) {
			t.Fatalf("pgx on %s: current_schema() = %q, want the fresh schema", url, schema)
		}
		if _, err := pool.Exec(ctx, "CREATE TABLE claims (id text)"); err != nil {
			t.Fatal(err)
		}
		t.Run("psql honours it too", func(t *testing.T) {
			if _, err := exec.LookPath("psql"); err != nil {
				t.Skip("psql not installed")
			}
			out, err := exec.CommandContext(ctx, "psql", url, "-Atqc", "SELECT current_schema()").CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != schema {
				t.Errorf("psql current_schema() = %q, %v; want %q", out, err, schema)
			}
		})
	})
	if schema == "" {
		t.Fatal("inner test found no schema")
	}
	if schemaExists(t, observer, schema) {
		t.Errorf("schema %s left after cleanup", schema)
	}
}

func TestPostgresCreatesAMissingDatabase(t *testing.T) {
	// Not parallel: it changes the environment.
	base := DatabaseURL()
	cfg, err := pgx.ParseConfig(base)
	if err != nil {
		t.Fatal(err)
	}
	db := "treasure_testenv_" + Prefix(t)
	url := strings.Replace(base, "/"+cfg.Database+"?", "/"+db+"?", 1)
	if url == base {
		t.Skipf("cannot rewrite the database name in %s", base)
	}
	admin, err := pgx.Connect(context.Background(), base)
	if err != nil {
		t.Fatal(err)
	}
	// Registered first, so it runs after the helper's own cleanups.
	t.Cleanup(func() {
		defer admin.Close(context.Background())
		if _, err := admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop test database: %v", err)
		}
	})
	t.Setenv(EnvDatabaseURL, url)

	pool, schema := Postgres(t)
	var got string
	if err := pool.QueryRow(context.Background(), "SELECT current_database() || '.' || current_schema()").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != db+"."+schema {
		t.Errorf("connected to %q, want %q", got, db+"."+schema)
	}
}
