// Package sql holds treasure's PostgreSQL migrations, the single source of
// truth for the durable tables. Files are named NNNN_name.sql and are applied
// in name order, each exactly once, by pgstore.Migrate. An applied file must
// never change: add a new file instead.
package sql

import "embed"

// FS holds every migration file (*.sql) of this directory.
//
//go:embed *.sql
var FS embed.FS
