package pgstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	schemasql "treasure/schemas/sql"
)

// migrationLock is the first key of the advisory lock taken while migrating;
// the second key is a hash of the current schema, so that migrations of
// different schemas (parallel tests) do not wait for each other.
const migrationLock = 0x7472_6561 // "trea"

// Migrate brings the schema the pool's connections use (the first schema of
// their search_path) up to date with the migrations of schemas/sql: every
// file not yet recorded in schema_migrations is run, in name order, and
// recorded with its checksum. Everything runs in one transaction holding a
// transaction-level advisory lock, so that two processes starting at once
// apply each migration exactly once, and a failure applies nothing. Running
// it again is a no-op. It fails if an applied migration's file has changed.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	files, err := migrations(schemasql.FS)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext(coalesce(current_schema(), '')))`, migrationLock); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    text COLLATE "C" PRIMARY KEY,
			checksum   text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		rows, err := tx.Query(ctx, `SELECT version, checksum FROM schema_migrations`)
		if err != nil {
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		applied := map[string]string{}
		var version, sum string
		_, err = pgx.ForEachRow(rows, []any{&version, &sum}, func() error {
			applied[version] = sum
			return nil
		})
		if err != nil {
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		for _, m := range files {
			if sum, ok := applied[m.version]; ok {
				if sum != m.checksum {
					return fmt.Errorf("%s changed after it was applied (checksum %s, recorded %s)", m.version, m.checksum, sum)
				}
				continue
			}
			// No arguments: pgx uses the simple protocol, which runs a
			// file of several statements.
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("%s: %w", m.version, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)`, m.version, m.checksum); err != nil {
				return fmt.Errorf("record %s: %w", m.version, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

type migration struct {
	version  string // the file name, e.g. 0001_scores.sql
	checksum string // hex SHA-256 of the file
	sql      string
}

// migrations reads the *.sql files of fsys in name order.
func migrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	ms := make([]migration, 0, len(names))
	for _, name := range names {
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		if strings.TrimSpace(string(b)) == "" {
			return nil, fmt.Errorf("%s is empty", name)
		}
		h := sha256.Sum256(b)
		ms = append(ms, migration{version: name, checksum: hex.EncodeToString(h[:]), sql: string(b)})
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("no migrations found")
	}
	return ms, nil
}
