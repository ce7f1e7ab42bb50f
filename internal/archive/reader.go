package archive

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"

	"treasure/internal/eventrow"
	"treasure/internal/natsjs"
)

// Archive reads an archive directory. It holds no open files between
// calls; every call sees the manifests committed when it starts. Safe for
// concurrent use.
type Archive struct {
	dir string
}

// Open returns the archive under dir. It does no I/O: a directory that does
// not exist is an empty archive.
func Open(dir string) *Archive { return &Archive{dir: dir} }

// Dir returns the archive's directory.
func (a *Archive) Dir() string { return a.dir }

// Manifests returns the committed segments of a stream (its JetStream
// name), in sequence order.
func (a *Archive) Manifests(stream string) ([]Manifest, error) {
	return readManifests(filepath.Join(a.dir, stream), stream)
}

// GapError says that a range of a stream's sequences is in neither the
// stream nor the archive.
type GapError struct {
	Stream string
	Range
	// Why: what holds what around it.
	Why string
}

func (e *GapError) Error() string {
	return fmt.Sprintf("%s seqs %d-%d are in neither the stream nor the archive: %s", e.Stream, e.First, e.Last, e.Why)
}

// ReadOptions selects what Read reads.
type ReadOptions struct {
	// From and To bound the sequences read, inclusive; To 0 means up to
	// the end of the archive.
	From, To uint64
	// Subjects filters by subject (NATS wildcards allowed); empty means
	// every subject.
	Subjects []string
	// Batch caps the messages of one handler call; default
	// natsjs.DefaultBatch.
	Batch int
	// pendingAfter is added to every message's Pending (ReplayAll: what
	// the stream holds after the archive).
	pendingAfter uint64
}

// Read hands the archived messages of stream with sequences in [From, To]
// to h, in log order and in batches, as natsjs.Replay would have from the
// stream: Subject, Seq, Time and Data as they were (Data rebuilt from the
// rows, byte for byte what the pipeline's writers publish), Delivered 1,
// Pending the messages after it in this read (an upper bound), no
// headers. It fails with a *GapError when part of [From, To] is in no
// segment (To 0: up to the last segment), before handing anything over;
// with h's error as soon as h fails; with ErrCorrupt when a file does not
// match its manifest.
func (a *Archive) Read(ctx context.Context, stream string, o ReadOptions, h natsjs.Handler) error {
	ms, err := a.Manifests(stream)
	if err != nil {
		return err
	}
	from := max(o.From, 1)
	to := o.To
	if to == 0 {
		if len(ms) == 0 {
			return nil
		}
		to = ms[len(ms)-1].LastSeq
	}
	if to < from {
		return nil
	}
	// The segments that cover [from, to], checking that nothing is
	// missing.
	var use []Manifest
	next := from
	for _, m := range ms {
		if m.LastSeq < from {
			continue
		}
		if m.FirstSeq > to {
			break
		}
		if m.FirstSeq > next {
			return &GapError{Stream: stream, Range: Range{next, min(m.FirstSeq-1, to)}, Why: gapWhy(m)}
		}
		use = append(use, m)
		next = m.LastSeq + 1
	}
	if next <= to {
		why := "the archive ends before them"
		if len(ms) == 0 {
			why = "the archive holds nothing of the stream"
		}
		if len(ms) > 0 {
			why = fmt.Sprintf("the archive ends at %d", ms[len(ms)-1].LastSeq)
		}
		return &GapError{Stream: stream, Range: Range{next, to}, Why: why}
	}
	batch := o.Batch
	if batch <= 0 {
		batch = natsjs.DefaultBatch
	}
	// Pending: the messages of the files read, not yet handed over.
	var pending uint64
	for _, m := range use {
		for _, f := range m.Files {
			if matchAny(o.Subjects, f.Subject) {
				pending += f.Messages
			}
		}
	}
	msgs := make([]natsjs.Msg, 0, batch)
	flush := func() error {
		if len(msgs) == 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		err := h(ctx, msgs)
		msgs = msgs[:0]
		return err
	}
	for _, m := range use {
		err := a.readSegment(stream, m, o.Subjects, func(msg natsjs.Msg) error {
			pending--
			if msg.Seq < from || msg.Seq > to {
				return nil
			}
			msg.Pending = pending + o.pendingAfter
			msgs = append(msgs, msg)
			if len(msgs) == batch {
				return flush()
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return flush()
}

func gapWhy(m Manifest) string {
	if m.GapBefore != nil {
		return fmt.Sprintf("the stream had lost seqs %s before they were archived", m.GapBefore)
	}
	return fmt.Sprintf("the next archived segment starts at %d", m.FirstSeq)
}

// readSegment hands the messages of one segment's files whose subjects
// match to fn, in sequence order.
func (a *Archive) readSegment(stream string, m Manifest, subjects []string, fn func(natsjs.Msg) error) error {
	var curs []*cursor
	defer func() {
		for _, c := range curs {
			c.close()
		}
	}()
	for _, f := range m.Files {
		if !matchAny(subjects, f.Subject) {
			continue
		}
		c, err := openCursor(filepath.Join(a.dir, stream, filepath.FromSlash(f.Path)), f)
		if err != nil {
			return fmt.Errorf("archive %s segment %d-%d: %w", stream, m.FirstSeq, m.LastSeq, err)
		}
		curs = append(curs, c)
	}
	var rows []eventrow.Row
	for {
		// The cursor whose next message comes first in the log.
		var best *cursor
		for _, c := range curs {
			if c.peek() != nil && (best == nil || c.peek().StreamSeq < best.peek().StreamSeq) {
				best = c
			}
		}
		if best == nil {
			for _, c := range curs {
				if c.err != nil && !errors.Is(c.err, io.EOF) {
					return fmt.Errorf("archive %s: read %s: %w", stream, c.file.Path, c.err)
				}
				if c.msgs != c.file.Messages {
					return fmt.Errorf("%w: %s %s holds %d messages, its manifest says %d", ErrCorrupt, stream, c.file.Path, c.msgs, c.file.Messages)
				}
			}
			return nil
		}
		seq := best.peek().StreamSeq
		rows = rows[:0]
		for r := best.peek(); r != nil && r.StreamSeq == seq; r = best.peek() {
			rows = append(rows, *r)
			best.advance()
		}
		best.msgs++
		data, err := eventrow.Data(rows)
		if err != nil {
			return fmt.Errorf("%w: %s %s: %v", ErrCorrupt, stream, best.file.Path, err)
		}
		h := &rows[0]
		msg := natsjs.Msg{Subject: h.Subject, Seq: seq, Delivered: 1, Time: time.Unix(0, h.Published), Data: data}
		if err := fn(msg); err != nil {
			return err
		}
	}
}

// cursor reads one file's rows in order.
type cursor struct {
	file File
	f    *os.File
	r    *parquet.GenericReader[eventrow.Row]
	buf  []eventrow.Row
	i, n int
	err  error
	msgs uint64 // messages handed over
}

func openCursor(path string, file File) (*cursor, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.Size() != file.Bytes {
		f.Close()
		return nil, fmt.Errorf("%w: %s is %d bytes, its manifest says %d", ErrCorrupt, file.Path, st.Size(), file.Bytes)
	}
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, file.Path, err)
	}
	c := &cursor{file: file, f: f, r: parquet.NewGenericReader[eventrow.Row](pf), buf: make([]eventrow.Row, 512)}
	c.fill()
	return c, nil
}

func (c *cursor) fill() {
	if c.err != nil {
		return
	}
	clear(c.buf)
	c.i = 0
	c.n, c.err = c.r.Read(c.buf)
	if c.n == 0 && c.err == nil {
		c.err = io.EOF
	}
}

func (c *cursor) peek() *eventrow.Row {
	if c.i >= c.n {
		c.fill()
		if c.i >= c.n {
			return nil
		}
	}
	return &c.buf[c.i]
}

func (c *cursor) advance() { c.i++ }

func (c *cursor) close() {
	if c.r != nil {
		c.r.Close()
	}
	c.f.Close()
}

// Verify checks every file of every committed segment of stream against
// its manifest: size and CRC32C. It returns the first mismatch
// (ErrCorrupt) or I/O error.
func (a *Archive) Verify(stream string) error {
	ms, err := a.Manifests(stream)
	if err != nil {
		return err
	}
	for _, m := range ms {
		for _, f := range m.Files {
			path := filepath.Join(a.dir, stream, filepath.FromSlash(f.Path))
			fh, err := os.Open(path)
			if err != nil {
				return fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
			}
			h := crc32.New(castagnoli)
			n, err := io.Copy(h, fh)
			fh.Close()
			if err != nil {
				return fmt.Errorf("archive: %s: %w", path, err)
			}
			if n != f.Bytes || h.Sum32() != f.CRC32C {
				return fmt.Errorf("%w: %s: %d bytes crc32c %08x, manifest says %d bytes %08x", ErrCorrupt, path, n, h.Sum32(), f.Bytes, f.CRC32C)
			}
		}
	}
	return nil
}

// matchAny reports whether subject matches one of the filters (every
// subject when there is none).
func matchAny(filters []string, subject string) bool {
	if len(filters) == 0 {
		return true
	}
	for _, f := range filters {
		if subjectMatch(f, subject) {
			return true
		}
	}
	return false
}

// subjectMatch applies NATS's wildcards: '*' matches one token, '>' the
// rest (one token or more).
func subjectMatch(filter, subject string) bool {
	ft := strings.Split(filter, ".")
	st := strings.Split(subject, ".")
	for i, t := range ft {
		if t == ">" {
			return len(st) > i
		}
		if i >= len(st) || (t != "*" && t != st[i]) {
			return false
		}
	}
	return len(ft) == len(st)
}
