// Package archive keeps treasure's log (the IN and OUT streams) for ever
// as Parquet files, so that the streams themselves can be trimmed
// (docs/pipeline.md, "The archive"):
//
//   - Archiver consumes each stream with a durable consumer and writes its
//     messages, flattened by package eventrow, in segments: one segment is a
//     contiguous range of stream sequences, closed by time (its messages'
//     JetStream timestamps fall in one Options.Segment window) or size,
//     written as one Parquet file per subject (partition) and committed by
//     one manifest file; after each it records its progress in the
//     JetStream KV bucket <prefix>-archive (keys IN and OUT);
//   - Archive reads the segments back as the messages they came from, in
//     log order, from any sequence;
//   - ReplayAll is natsjs.Replay over archive and stream together: what the
//     stream no longer holds comes from the archive.
//
// # Layout
//
// Under the archive directory, per stream (its JetStream name):
//
//	<dir>/<stream>/part=<p>/<first>-<last>.parquet   one per subject of a segment
//	<dir>/<stream>/manifest/<first>-<last>.json      one per segment, written last
//
// <p> is the subject's last token (3 for treasure.in.3, rank for
// treasure.out.rank); <first> and <last> are the segment's sequence range,
// 20 digits with leading zeros, so that names sort as the log does. Every
// file is written under a temporary name starting with '.', fsynced, and
// renamed into place (and the directory fsynced); the manifest is written
// the same way after every file of its segment is in place. Readers list
// manifests only, so a file is part of the archive exactly when a manifest
// names it: a crash leaves at most temporary files and renamed files
// without a manifest, and the next start deletes both and writes the
// segment again from the last manifest, with the same content (segment
// boundaries come from the messages' sequences and timestamps, not from
// when the archiver ran).
package archive

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ManifestVersion is the version of the manifest format this package writes.
const ManifestVersion = 1

// Manifest describes one committed segment: a contiguous range of a
// stream's sequences, and the files that hold its messages. Every message
// the stream held in [FirstSeq, LastSeq] is in exactly one of Files
// (messages deleted from the stream before they were archived leave holes
// in sequence numbers, as they do in the stream).
type Manifest struct {
	Version int `json:"version"`
	// Stream is the JetStream stream's name (treasure_IN).
	Stream string `json:"stream"`
	// FirstSeq and LastSeq bound the segment, inclusive. FirstSeq is the
	// previous segment's LastSeq + 1, unless GapBefore says otherwise.
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	// GapBefore, when set, is a range of sequences right before FirstSeq
	// that the stream had already lost when the archiver came to it (it
	// was trimmed before it was archived): neither holds it.
	GapBefore *Range `json:"gap_before,omitempty"`
	// Messages and Rows count the segment's messages and rows
	// (eventrow.Row) over all files.
	Messages uint64 `json:"messages"`
	Rows     uint64 `json:"rows"`
	// FirstTime and LastTime are the JetStream timestamps of its first and
	// last message.
	FirstTime time.Time `json:"first_time"`
	LastTime  time.Time `json:"last_time"`
	// Window is the start of the time window the segment belongs to.
	Window time.Time `json:"window"`
	// Files are in subject order.
	Files []File `json:"files"`
}

// File describes one Parquet file of a segment: the rows of one subject.
type File struct {
	// Path is relative to the stream's directory (part=3/...parquet).
	Path      string `json:"path"`
	Subject   string `json:"subject"`
	Partition int32  `json:"partition"`
	// FirstSeq and LastSeq are the sequences of its first and last
	// message.
	FirstSeq  uint64    `json:"first_seq"`
	LastSeq   uint64    `json:"last_seq"`
	Messages  uint64    `json:"messages"`
	Rows      uint64    `json:"rows"`
	FirstTime time.Time `json:"first_time"`
	LastTime  time.Time `json:"last_time"`
	// Bytes is the file's size and CRC32C its Castagnoli checksum.
	Bytes  int64  `json:"bytes"`
	CRC32C uint32 `json:"crc32c"`
}

// Range is an inclusive range of stream sequences.
type Range struct {
	First uint64 `json:"first"`
	Last  uint64 `json:"last"`
}

func (r Range) String() string { return fmt.Sprintf("%d-%d", r.First, r.Last) }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const (
	manifestDir = "manifest"
	tmpPrefix   = "."
	tmpSuffix   = ".tmp"
)

// rangeName is the base name of a segment's files, without extension.
func rangeName(first, last uint64) string {
	return fmt.Sprintf("%020d-%020d", first, last)
}

// parseRangeName reads a rangeName back.
func parseRangeName(s string) (first, last uint64, ok bool) {
	a, b, found := strings.Cut(s, "-")
	if !found || len(a) != 20 || len(b) != 20 {
		return 0, 0, false
	}
	first, err1 := strconv.ParseUint(a, 10, 64)
	last, err2 := strconv.ParseUint(b, 10, 64)
	return first, last, err1 == nil && err2 == nil && first <= last
}

// partDir names the directory of a subject's files: part=<last token>, the
// token reduced to [A-Za-z0-9_-].
func partDir(subject string) string {
	tok := []byte(subject[strings.LastIndexByte(subject, '.')+1:])
	for i, c := range tok {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			tok[i] = '_'
		}
	}
	return "part=" + string(tok)
}

// ErrCorrupt marks an archive whose manifests or files do not agree.
var ErrCorrupt = errors.New("archive corrupt")

// readManifests returns the manifests of a stream's directory in sequence
// order, checking that each is what its name says and that none overlaps
// the one before. A directory that does not exist holds no manifest.
func readManifests(streamDir, stream string) ([]Manifest, error) {
	ents, err := os.ReadDir(filepath.Join(streamDir, manifestDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("archive %s: %w", stream, err)
	}
	var out []Manifest
	for _, e := range ents {
		name := e.Name()
		base, isJSON := strings.CutSuffix(name, ".json")
		if !isJSON || strings.HasPrefix(name, tmpPrefix) {
			continue
		}
		first, last, ok := parseRangeName(base)
		if !ok {
			continue
		}
		data, err := os.ReadFile(filepath.Join(streamDir, manifestDir, name))
		if err != nil {
			return nil, fmt.Errorf("archive %s: %w", stream, err)
		}
		var m Manifest
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("%w: %s manifest %s: %v", ErrCorrupt, stream, name, err)
		}
		if m.Version < 1 || m.Version > ManifestVersion || m.FirstSeq != first || m.LastSeq != last || m.Stream != stream {
			return nil, fmt.Errorf("%w: %s manifest %s: says version %d, stream %s, seqs %d-%d", ErrCorrupt, stream, name, m.Version, m.Stream, m.FirstSeq, m.LastSeq)
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Manifest) int { return cmpUint(a.FirstSeq, b.FirstSeq) })
	for i := 1; i < len(out); i++ {
		if out[i].FirstSeq <= out[i-1].LastSeq {
			return nil, fmt.Errorf("%w: %s segments %d-%d and %d-%d overlap", ErrCorrupt, stream, out[i-1].FirstSeq, out[i-1].LastSeq, out[i].FirstSeq, out[i].LastSeq)
		}
	}
	return out, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// removeUncommitted deletes what a crash can leave in a stream's directory:
// temporary files, and data files no manifest names. It returns how many
// it removed.
func removeUncommitted(streamDir string, ms []Manifest) (int, error) {
	keep := map[string]bool{}
	for _, m := range ms {
		for _, f := range m.Files {
			keep[filepath.FromSlash(f.Path)] = true
		}
	}
	removed := 0
	ents, err := os.ReadDir(streamDir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		sub := e.Name()
		files, err := os.ReadDir(filepath.Join(streamDir, sub))
		if err != nil {
			return removed, err
		}
		for _, f := range files {
			name := f.Name()
			rel := filepath.Join(sub, name)
			tmp := strings.HasPrefix(name, tmpPrefix) && strings.HasSuffix(name, tmpSuffix)
			orphan := sub != manifestDir && strings.HasSuffix(name, ".parquet") && !keep[rel]
			if !tmp && !orphan {
				continue
			}
			if err := os.Remove(filepath.Join(streamDir, rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return removed, err
			}
			removed++
		}
	}
	return removed, nil
}

// syncDir fsyncs a directory, making the renames in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory: write, fsync, rename, fsync the directory.
func writeFileAtomic(path string, data []byte, beforeRename func() error) error {
	dir, base := filepath.Split(path)
	tmp := filepath.Join(dir, tmpPrefix+base+tmpSuffix)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && beforeRename != nil {
		if err = beforeRename(); err != nil {
			return err // a simulated crash: leave the temporary file
		}
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}
