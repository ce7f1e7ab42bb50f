package graph

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Open loads the graph at path whatever its form, judged by its content,
// not its name: a compiled snapshot, or a DIMACS .gr, plain or gzipped, with
// the .co or .co.gz beside it when there is one (see LoadDIMACS). It is what
// TREASURE_GRAPH names.
//
// Open is for the graph a process serves for its whole life: a snapshot is
// mapped read-only (see MapSnapshot) and never unmapped. Its pages belong to
// the page cache, reclaimable and shared with other processes mapping the
// same file, but each call maps the file again: code that loads snapshots
// repeatedly (tools, tests) uses LoadSnapshot, or MapSnapshot and its
// release.
func Open(path string) (*Graph, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("graph: %w", err)
	}
	var head [len(snapMagic)]byte
	k, err := io.ReadFull(f, head[:])
	f.Close()
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("graph: read %s: %w", path, err)
	}
	// "TRSNAP" alone routes a file of another snapshot version or a damaged
	// magic to the snapshot reader, which names the problem.
	if k >= 6 && string(head[:6]) == snapMagic[:6] {
		g, _, err := MapSnapshot(path) // never released: see above
		return g, err
	}
	return LoadDIMACS(path)
}
