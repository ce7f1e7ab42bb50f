package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres returns a pool on the shared database (TREASURE_DATABASE_URL,
// default postgres://postgres@127.0.0.1:5432/treasure?sslmode=disable, created
// when missing) whose every connection has a fresh schema as its
// search_path, and that schema's name. Tables created without a schema name
// land in it. On cleanup the pool is closed (which waits for acquired
// connections to be released) and the schema dropped with everything in it.
// The pool holds at most 4 connections.
// The test fails at once, saying how to start the server, when PostgreSQL
// does not answer.
func Postgres(tb testing.TB) (*pgxpool.Pool, string) {
	tb.Helper()
	schema := newSchema(tb)
	cfg, err := pgxpool.ParseConfig(DatabaseURL())
	if err != nil {
		tb.Fatalf("testenv: %s: %v", EnvDatabaseURL, err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = 4
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		tb.Fatalf("testenv: postgres pool: %v", err)
	}
	// Registered after newSchema's cleanup, so it runs first: the pool's
	// connections are gone before the schema is dropped.
	tb.Cleanup(pool.Close)
	if err := pool.Ping(ctx); err != nil {
		tb.Fatalf("testenv: postgres pool: %v", err)
	}
	return pool, schema
}

// PostgresURL creates a fresh schema, as Postgres does, and returns a
// connection URL for the shared database whose search_path is that schema
// (carried in the "options" parameter, which pgx and libpq both honour), for
// tests that start services by URL. The schema is dropped on cleanup, after
// the cleanups registered later (such as a service's shutdown) have run.
func PostgresURL(tb testing.TB) string {
	tb.Helper()
	return SchemaURL(tb, newSchema(tb))
}

// SchemaURL returns the shared database's URL with schema as the search_path,
// for starting a service on the schema a Postgres pool uses.
func SchemaURL(tb testing.TB, schema string) string {
	tb.Helper()
	u, err := url.Parse(DatabaseURL())
	if err != nil || u.Scheme == "" {
		tb.Fatalf("testenv: %s must be a postgres:// URL to add a search_path: %q", EnvDatabaseURL, DatabaseURL())
	}
	q := u.Query()
	opt := "-c search_path=" + schema
	if old := q.Get("options"); old != "" {
		opt = old + " " + opt
	}
	q.Set("options", opt)
	// libpq decodes %20 but not "+" as a space; pgx decodes both.
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	return u.String()
}

// newSchema creates the database when missing, then a fresh schema in it,
// and registers the schema's drop as a cleanup.
func newSchema(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	conn := connectCreatingDB(ctx, tb)
	defer conn.Close(context.Background())
	schema := Prefix(tb)
	ident := pgx.Identifier{schema}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+ident); err != nil {
		tb.Fatalf("testenv: create schema %s: %v", schema, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		if err := dropSchema(ctx, schema); err != nil {
			tb.Errorf("testenv: cleanup: %v", err)
		}
	})
	return schema
}

func dropSchema(ctx context.Context, schema string) error {
	conn, err := pgx.Connect(ctx, DatabaseURL())
	if err != nil {
		return fmt.Errorf("drop schema %s: %w", schema, err)
	}
	defer conn.Close(context.Background())
	// A connection a test forgot to close must not wedge the suite: give up
	// on locks after a while and report it.
	if _, err := conn.Exec(ctx, "SET lock_timeout = '10s'"); err != nil {
		return fmt.Errorf("drop schema %s: %w", schema, err)
	}
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		return fmt.Errorf("drop schema %s: %w", schema, err)
	}
	return nil
}

// connectCreatingDB connects to DatabaseURL, creating the database through
// the "postgres" maintenance database when it does not exist yet.
func connectCreatingDB(ctx context.Context, tb testing.TB) *pgx.Conn {
	tb.Helper()
	cfg, err := pgx.ParseConfig(DatabaseURL())
	if err != nil {
		tb.Fatalf("testenv: %s: %v", EnvDatabaseURL, err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		return conn
	}
	if !isCode(err, "3D000") { // invalid_catalog_name: no such database
		tb.Fatalf("testenv: PostgreSQL at %s:%d does not answer: %v; "+hint, cfg.Host, cfg.Port, err, EnvDatabaseURL)
	}
	if err := createDatabase(ctx, cfg); err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	conn, err = pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		tb.Fatalf("testenv: PostgreSQL database %s: %v", cfg.Database, err)
	}
	return conn
}

func createDatabase(ctx context.Context, cfg *pgx.ConnConfig) error {
	admin := cfg.Copy()
	admin.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("create database %s: %w", cfg.Database, err)
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{cfg.Database}.Sanitize())
	// 42P04 duplicate_database: a parallel test created it first. Two
	// concurrent CREATE DATABASE may also collide on the catalog (23505).
	if err != nil && !isCode(err, "42P04") && !isCode(err, "23505") {
		return fmt.Errorf("create database %s: %w", cfg.Database, err)
	}
	return nil
}

func isCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && strings.EqualFold(pgErr.Code, code)
}
