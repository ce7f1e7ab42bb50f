package archive

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/parquet-go/parquet-go"

	"treasure/internal/eventrow"
	"treasure/internal/natsjs"
)

// rowsPerGroup caps a Parquet row group: the writer holds one row group of
// each open file in memory.
const rowsPerGroup = 64 << 10

// rowsPerWrite is how many rows a file gathers before it hands them to the
// Parquet writer at once: a write call has a cost per column, whatever
// its rows (a message has 7 or so).
const rowsPerWrite = 1024

// segment is a segment being written: one Parquet file per subject, under
// temporary names until commit. Not safe for concurrent use.
type segment struct {
	streamDir string
	stream    string
	codec     *zstdCodec
	first     uint64 // nominal first sequence
	last      uint64 // last message's sequence
	window    time.Time
	gapBefore *Range

	files    map[string]*segFile // by subject
	parts    map[string]string   // part directory → subject, to refuse collisions
	messages uint64
	rows     uint64
	payload  int64 // bytes of message payloads added
	firstT   time.Time
	lastT    time.Time
}

// segFile is one file of a segment.
type segFile struct {
	tmp, final, rel string
	f               *os.File
	buf             *bufio.Writer
	crc             hash.Hash32
	n               int64
	w               *parquet.GenericWriter[eventrow.Row]
	entry           File
	// pending are rows flattened and not yet written; they point into
	// flat's buffers, reused once they are written.
	pending []eventrow.Row
	flat    eventrow.Flattener
}

func (f *segFile) Write(p []byte) (int, error) {
	n, err := f.buf.Write(p)
	f.crc.Write(p[:n])
	f.n += int64(n)
	return n, err
}

func newSegment(streamDir, stream string, codec *zstdCodec, first uint64, window time.Time) *segment {
	return &segment{streamDir: streamDir, stream: stream, codec: codec, first: first, window: window,
		files: map[string]*segFile{}, parts: map[string]string{}}
}

// add writes one message's rows into its subject's file. Messages must
// come in sequence order, at or after the segment's first sequence.
func (s *segment) add(m natsjs.Msg) error {
	if m.Seq < s.first || (s.messages > 0 && m.Seq <= s.last) {
		return fmt.Errorf("archive %s: seq %d out of order (segment from %d, last %d)", s.stream, m.Seq, s.first, s.last)
	}
	f, err := s.file(m.Subject)
	if err != nil {
		return err
	}
	had := len(f.pending)
	f.pending, err = f.flat.Flatten(f.pending, eventrow.Message{Stream: s.stream, Subject: m.Subject, Seq: m.Seq, Time: m.Time, Data: m.Data})
	if err != nil {
		return fmt.Errorf("archive %s: %w", s.stream, err)
	}
	rows := len(f.pending) - had
	if len(f.pending) >= rowsPerWrite {
		if err := f.write(); err != nil {
			return fmt.Errorf("archive %s: write %s: %w", s.stream, f.tmp, err)
		}
	}
	e := &f.entry
	if e.Messages == 0 {
		e.FirstSeq, e.FirstTime = m.Seq, m.Time.UTC()
	}
	e.LastSeq, e.LastTime = m.Seq, m.Time.UTC()
	e.Messages++
	e.Rows += uint64(rows)
	if s.messages == 0 {
		s.firstT = m.Time.UTC()
	}
	s.last, s.lastT = m.Seq, m.Time.UTC()
	s.messages++
	s.rows += uint64(rows)
	s.payload += int64(len(m.Data))
	return nil
}

// file returns the open file of a subject, creating it.
func (s *segment) file(subject string) (*segFile, error) {
	if f := s.files[subject]; f != nil {
		return f, nil
	}
	part := partDir(subject)
	if other, ok := s.parts[part]; ok {
		return nil, fmt.Errorf("archive %s: subjects %s and %s map to one directory %s", s.stream, other, subject, part)
	}
	dir := filepath.Join(s.streamDir, part)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("archive %s: %w", s.stream, err)
	}
	// The final name is known at commit; the temporary one only needs to be
	// unique among this segment's files and invisible to globs.
	tmp := filepath.Join(dir, fmt.Sprintf("%s%020d-open.parquet%s", tmpPrefix, s.first, tmpSuffix))
	fh, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("archive %s: %w", s.stream, err)
	}
	f := &segFile{tmp: tmp, f: fh, buf: bufio.NewWriterSize(fh, 256<<10), crc: crc32.New(castagnoli)}
	f.w = parquet.NewGenericWriter[eventrow.Row](f,
		parquet.Compression(s.codec),
		parquet.MaxRowsPerRowGroup(rowsPerGroup),
		parquet.CreatedBy("treasure archive", "1", ""),
	)
	f.entry = File{Subject: subject, Partition: eventrow.SubjectPartition(subject)}
	s.files[subject] = f
	s.parts[part] = subject
	return f, nil
}

// hookFunc is a test hook called at a stage of a commit ("rename": every
// file written and fsynced under its temporary name, none renamed;
// "manifest": files renamed, manifest not written). An error stops the
// commit there, leaving everything as a crash would.
type hookFunc func(stage string) error

// commit finishes the files, renames them into place and writes the
// manifest, in that order, each step durable before the next.
func (s *segment) commit(hook hookFunc) (Manifest, error) {
	if s.messages == 0 {
		return Manifest{}, errors.New("archive: commit of an empty segment")
	}
	name := rangeName(s.first, s.last)
	subjects := make([]string, 0, len(s.files))
	for subj := range s.files {
		subjects = append(subjects, subj)
	}
	slices.Sort(subjects)
	m := Manifest{Version: ManifestVersion, Stream: s.stream, FirstSeq: s.first, LastSeq: s.last, GapBefore: s.gapBefore,
		Messages: s.messages, Rows: s.rows, FirstTime: s.firstT, LastTime: s.lastT, Window: s.window.UTC()}
	for _, subj := range subjects {
		f := s.files[subj]
		if err := f.finish(); err != nil {
			return Manifest{}, fmt.Errorf("archive %s: finish %s: %w", s.stream, f.tmp, err)
		}
		part := partDir(subj)
		f.rel = part + "/" + name + ".parquet"
		f.final = filepath.Join(s.streamDir, part, name+".parquet")
		f.entry.Path, f.entry.Bytes, f.entry.CRC32C = f.rel, f.n, f.crc.Sum32()
		m.Files = append(m.Files, f.entry)
	}
	if hook != nil {
		if err := hook("rename"); err != nil {
			return Manifest{}, err
		}
	}
	dirs := map[string]bool{}
	for _, subj := range subjects {
		f := s.files[subj]
		if err := os.Rename(f.tmp, f.final); err != nil {
			return Manifest{}, fmt.Errorf("archive %s: %w", s.stream, err)
		}
		f.tmp = ""
		dirs[filepath.Dir(f.final)] = true
	}
	for d := range dirs {
		if err := syncDir(d); err != nil {
			return Manifest{}, fmt.Errorf("archive %s: %w", s.stream, err)
		}
	}
	if hook != nil {
		if err := hook("manifest"); err != nil {
			return Manifest{}, err
		}
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Manifest{}, fmt.Errorf("archive %s: manifest: %w", s.stream, err)
	}
	mdir := filepath.Join(s.streamDir, manifestDir)
	if err := os.MkdirAll(mdir, 0o755); err != nil {
		return Manifest{}, fmt.Errorf("archive %s: %w", s.stream, err)
	}
	if err := writeFileAtomic(filepath.Join(mdir, name+".json"), append(data, '\n'), nil); err != nil {
		return Manifest{}, fmt.Errorf("archive %s: manifest: %w", s.stream, err)
	}
	s.files = nil
	return m, nil
}

// write hands the pending rows to the Parquet writer (which copies them)
// and lets the Flattener reuse their memory.
func (f *segFile) write() error {
	_, err := f.w.Write(f.pending)
	clear(f.pending)
	f.pending = f.pending[:0]
	f.flat.Reset()
	return err
}

// finish writes the pending rows, closes the Parquet writer and the file,
// durably.
func (f *segFile) finish() error {
	err := f.write()
	if err == nil {
		err = f.w.Close()
	}
	if err == nil {
		err = f.buf.Flush()
	}
	if err == nil {
		err = f.f.Sync()
	}
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	f.f = nil
	return err
}

// closeFiles closes the segment's open files and leaves them where they
// are (a simulated kill).
func (s *segment) closeFiles() {
	for _, f := range s.files {
		if f.f != nil {
			_ = f.f.Close()
			f.f = nil
		}
	}
}

// abort closes and removes the segment's temporary files (a failure that
// is not a crash: the segment is written again from its first sequence).
func (s *segment) abort() {
	for _, f := range s.files {
		if f.f != nil {
			_ = f.f.Close()
		}
		if f.tmp != "" {
			_ = os.Remove(f.tmp)
		}
	}
	s.files = nil
}

var _ io.Writer = (*segFile)(nil)
