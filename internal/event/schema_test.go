package event_test

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	_ "treasure/internal/event/eventpb" // registers the generated descriptors
)

// schemaDir is the import root of the .proto files, relative to this
// package's directory (where go test runs).
const schemaDir = "../../schemas/proto"

// compileSchemas parses every .proto file under schemaDir with a pure-Go
// compiler and returns their descriptors keyed by import path.
func compileSchemas(tb testing.TB) map[string]*descriptorpb.FileDescriptorProto {
	tb.Helper()
	var paths []string
	err := filepath.WalkDir(schemaDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".proto") {
			rel, err := filepath.Rel(schemaDir, p)
			if err != nil {
				return err
			}
			paths = append(paths, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("list schemas: %v", err)
	}
	if len(paths) == 0 {
		tb.Fatalf("no .proto files under %s", schemaDir)
	}
	c := protocompile.Compiler{
		Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: []string{schemaDir}}),
	}
	files, err := c.Compile(context.Background(), paths...)
	if err != nil {
		tb.Fatalf("compile schemas: %v", err)
	}
	out := make(map[string]*descriptorpb.FileDescriptorProto, len(files))
	for _, f := range files {
		out[f.Path()] = normalize(protodesc.ToFileDescriptorProto(f))
	}
	return out
}

// normalize drops what legitimately differs between compilers: source
// positions and comments.
func normalize(fd *descriptorpb.FileDescriptorProto) *descriptorpb.FileDescriptorProto {
	fd = proto.Clone(fd).(*descriptorpb.FileDescriptorProto)
	fd.SourceCodeInfo = nil
	return fd
}

// TestGeneratedMatchesSchema proves that the generated Go types in eventpb
// are those of the .proto files: every schema file has a generated twin
// whose descriptor (messages, fields with names, numbers, types, labels,
// json names and oneofs, enums, options) is the one the schema compiles to.
func TestGeneratedMatchesSchema(t *testing.T) {
	for path, want := range compileSchemas(t) {
		gen, err := protoregistry.GlobalFiles.FindFileByPath(path)
		if err != nil {
			t.Errorf("%s: no generated Go code (run make gen): %v", path, err)
			continue
		}
		got := normalize(protodesc.ToFileDescriptorProto(gen))
		if d := diffFiles(want, got); d != "" {
			t.Errorf("%s: generated code differs from the schema (run make gen); - schema, + generated:\n%s", path, d)
		}
	}
}

// TestSchemaDiffCatchesChanges makes sure the comparison above can fail:
// a renumbered field, a changed type and a field moved out of a oneof all
// show up in the diff, named.
func TestSchemaDiffCatchesChanges(t *testing.T) {
	want := compileSchemas(t)["treasure/v1/events.proto"]
	if want == nil {
		t.Fatal("treasure/v1/events.proto not compiled")
	}
	mutations := map[string]func(*descriptorpb.FileDescriptorProto){
		"renumbered": func(fd *descriptorpb.FileDescriptorProto) {
			field(t, fd, "MoveAccepted", "seq").Number = proto.Int32(9)
		},
		"retyped": func(fd *descriptorpb.FileDescriptorProto) {
			field(t, fd, "MoveAccepted", "ingest_unix_nanos").Type = descriptorpb.FieldDescriptorProto_TYPE_INT64.Enum()
		},
		"out of oneof": func(fd *descriptorpb.FileDescriptorProto) {
			field(t, fd, "Event", "leaderboard").OneofIndex = nil
		},
	}
	for name, mutate := range mutations {
		got := proto.Clone(want).(*descriptorpb.FileDescriptorProto)
		mutate(got)
		d := diffFiles(want, got)
		if d == "" {
			t.Errorf("%s: diff is empty", name)
		} else if !strings.Contains(d, "message ") {
			t.Errorf("%s: diff does not name the message:\n%s", name, d)
		}
	}
	if d := diffFiles(want, want); d != "" {
		t.Errorf("diff of a file with itself is not empty:\n%s", d)
	}
}

func field(tb testing.TB, fd *descriptorpb.FileDescriptorProto, msg, name string) *descriptorpb.FieldDescriptorProto {
	tb.Helper()
	for _, m := range fd.MessageType {
		if m.GetName() != msg {
			continue
		}
		for _, f := range m.Field {
			if f.GetName() == name {
				return f
			}
		}
	}
	tb.Fatalf("no field %s.%s", msg, name)
	return nil
}

// diffFiles returns "" when the two descriptors are equal, else a line diff
// of their text form, message by message.
func diffFiles(want, got *descriptorpb.FileDescriptorProto) string {
	if proto.Equal(want, got) {
		return ""
	}
	var b strings.Builder
	msgs := func(fd *descriptorpb.FileDescriptorProto) map[string]*descriptorpb.DescriptorProto {
		m := make(map[string]*descriptorpb.DescriptorProto)
		for _, d := range fd.MessageType {
			m[d.GetName()] = d
		}
		return m
	}
	wm, gm := msgs(want), msgs(got)
	var names []string
	for n := range wm {
		names = append(names, n)
	}
	for n := range gm {
		if _, ok := wm[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		if w, g := wm[n], gm[n]; !proto.Equal(w, g) {
			fmt.Fprintf(&b, "message %s:\n%s", n, lineDiff(messageLines(w), messageLines(g)))
		}
	}
	// Everything but the messages: package, options, enums, syntax, ...
	wr, gr := proto.Clone(want).(*descriptorpb.FileDescriptorProto), proto.Clone(got).(*descriptorpb.FileDescriptorProto)
	wr.MessageType, gr.MessageType = nil, nil
	if !proto.Equal(wr, gr) {
		fmt.Fprintf(&b, "file:\n%s", lineDiff(text(wr), text(gr)))
	}
	return b.String()
}

// messageLines renders a message descriptor one field, oneof or nested
// declaration per line, so that a diff names what changed.
func messageLines(d *descriptorpb.DescriptorProto) []string {
	if d == nil {
		return nil
	}
	var lines []string
	for _, f := range d.Field {
		lines = append(lines, "field "+compact(f))
	}
	for _, o := range d.OneofDecl {
		lines = append(lines, "oneof "+compact(o))
	}
	for _, nd := range d.NestedType {
		for _, l := range messageLines(nd) {
			lines = append(lines, nd.GetName()+"."+l)
		}
	}
	rest := proto.Clone(d).(*descriptorpb.DescriptorProto)
	rest.Field, rest.OneofDecl, rest.NestedType = nil, nil, nil
	return append(lines, "message "+compact(rest))
}

func compact(m proto.Message) string {
	return "{" + strings.Join(strings.Fields(prototext.Format(m)), " ") + "}"
}

func text(m proto.Message) []string {
	if m == nil || !m.ProtoReflect().IsValid() {
		return nil
	}
	s := prototext.MarshalOptions{Multiline: true, Indent: "  "}.Format(m)
	return strings.Split(strings.TrimRight(s, "\n"), "\n")
}

// lineDiff is a longest-common-subsequence diff: "- " lines only in a,
// "+ " lines only in b, common lines omitted.
func lineDiff(a, b []string) string {
	l := make([][]int, len(a)+1)
	for i := range l {
		l[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				l[i][j] = l[i+1][j+1] + 1
			} else {
				l[i][j] = max(l[i+1][j], l[i][j+1])
			}
		}
	}
	var s strings.Builder
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			i, j = i+1, j+1
		case i < len(a) && (j == len(b) || l[i+1][j] >= l[i][j+1]):
			fmt.Fprintf(&s, "  - %s\n", a[i])
			i++
		default:
			fmt.Fprintf(&s, "  + %s\n", b[j])
			j++
		}
	}
	return s.String()
}
