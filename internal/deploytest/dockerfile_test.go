package deploytest

import (
	"encoding/json"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, COPY, ...
	args string
	line int
}

// stage is one FROM … up to the next FROM.
type stage struct {
	image, name string
	body        []instruction
}

type dockerfile struct {
	args   map[string]string // ARG defaults declared before the first FROM
	stages []stage
}

// parseDockerfile is a small Dockerfile reader: comments, blank lines and
// backslash continuations, global ARG defaults substituted into FROM. It is
// enough for deploy/Dockerfile (no heredocs, no escape directive).
func parseDockerfile(tb testing.TB, text string) dockerfile {
	tb.Helper()
	df := dockerfile{args: map[string]string{}}
	var cur strings.Builder
	start := 0
	flush := func() {
		s := strings.TrimSpace(cur.String())
		cur.Reset()
		if s == "" {
			return
		}
		cmd, args, _ := strings.Cut(s, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start}
		switch {
		case in.cmd == "FROM":
			f := strings.Fields(in.args)
			f = slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, "--") })
			st := stage{image: expandVars(f[0], df.args)}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			} else if len(f) != 1 {
				tb.Fatalf("Dockerfile:%d: FROM %s: want IMAGE [AS NAME]", in.line, in.args)
			}
			df.stages = append(df.stages, st)
		case len(df.stages) == 0 && in.cmd == "ARG":
			k, v, _ := strings.Cut(in.args, "=")
			df.args[k] = v
		case len(df.stages) == 0:
			tb.Fatalf("Dockerfile:%d: %s before the first FROM", in.line, in.cmd)
		default:
			df.stages[len(df.stages)-1].body = append(df.stages[len(df.stages)-1].body, in)
		}
	}
	for i, l := range strings.Split(text, "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "#") {
			continue // a comment, also inside a continued instruction
		}
		if cur.Len() == 0 {
			if t == "" {
				continue
			}
			start = i + 1
		}
		if cont, ok := strings.CutSuffix(t, "\\"); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(t)
		flush()
	}
	flush()
	return df
}

// expandVars substitutes ${NAME} and $NAME from vars.
func expandVars(s string, vars map[string]string) string {
	return regexp.MustCompile(`\$\{(\w+)\}|\$(\w+)`).ReplaceAllStringFunc(s, func(m string) string {
		return vars[strings.Trim(m, "${}")]
	})
}

// env returns the environment the stage's ENV instructions set, in order.
func (s stage) env(tb testing.TB) map[string]string {
	tb.Helper()
	env := map[string]string{}
	for _, in := range s.body {
		if in.cmd != "ENV" {
			continue
		}
		// ENV K=V K2="V 2" …  (the legacy "ENV K V" form is refused)
		re := regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S*)`)
		rest := re.ReplaceAllStringFunc(in.args, func(m string) string {
			kv := re.FindStringSubmatch(m)
			v := kv[2]
			if strings.HasPrefix(v, `"`) {
				v = strings.ReplaceAll(v[1:len(v)-1], `\"`, `"`)
			}
			env[kv[1]] = expandVars(v, env)
			return ""
		})
		if strings.TrimSpace(rest) != "" {
			tb.Errorf("Dockerfile:%d: ENV %s: want KEY=VALUE pairs", in.line, in.args)
		}
	}
	return env
}

// find returns the stage's instructions named cmd.
func (s stage) find(cmd string) []instruction {
	var out []instruction
	for _, in := range s.body {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// copyInstr is a parsed COPY: its --from stage, sources and destination.
type copyInstr struct {
	from      string
	srcs      []string
	dest      string
	line      int
	chownUser string
}

func (s stage) copies(tb testing.TB) []copyInstr {
	tb.Helper()
	var out []copyInstr
	for _, in := range s.find("COPY") {
		var c copyInstr
		c.line = in.line
		var rest []string
		for _, f := range strings.Fields(in.args) {
			switch {
			case strings.HasPrefix(f, "--from="):
				c.from = strings.TrimPrefix(f, "--from=")
			case strings.HasPrefix(f, "--chown="):
				c.chownUser = strings.TrimPrefix(f, "--chown=")
			case strings.HasPrefix(f, "--"):
			default:
				rest = append(rest, f)
			}
		}
		if len(rest) < 2 {
			tb.Fatalf("Dockerfile:%d: COPY %s: want SRC… DEST", in.line, in.args)
		}
		c.srcs, c.dest = rest[:len(rest)-1], rest[len(rest)-1]
		out = append(out, c)
	}
	return out
}

// imageEnv returns the environment deploy/Dockerfile's final stage sets.
func imageEnv(tb testing.TB) map[string]string {
	tb.Helper()
	df := parseDockerfile(tb, string(readRepoFile(tb, "deploy/Dockerfile")))
	return df.stages[len(df.stages)-1].env(tb)
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	df := parseDockerfile(t, string(readRepoFile(t, "deploy/Dockerfile")))
	if len(df.stages) < 2 {
		t.Fatalf("deploy/Dockerfile has %d stages, want a build stage and a runtime stage", len(df.stages))
	}
	names := map[string]int{}
	for i, st := range df.stages {
		if _, ok := names[st.image]; !ok {
			checkPinned(t, "deploy/Dockerfile FROM", st.image)
		}
		if st.name != "" {
			names[st.name] = i
		}
	}

	// The build stage: golang at least go.mod's version, building ./cmd/treasure statically.
	var build *stage
	var out string
	for i := range df.stages {
		st := &df.stages[i]
		for _, in := range st.find("RUN") {
			if strings.Contains(in.args, "go build") && strings.Contains(in.args, "./cmd/treasure") {
				m := regexp.MustCompile(`-o[= ](\S+)`).FindStringSubmatch(in.args)
				if m == nil {
					t.Fatalf("Dockerfile:%d: go build without -o", in.line)
				}
				build, out = st, m[1]
			}
		}
	}
	if build == nil {
		t.Fatal("deploy/Dockerfile: no stage RUNs go build … ./cmd/treasure")
	}
	name, tag, _ := imageRef(build.image)
	if name != "golang" {
		t.Errorf("build stage FROM %s, want the golang image", build.image)
	}
	if have, ok := parseVersion(tag); !ok {
		t.Errorf("build stage FROM %s: no Go version in the tag", build.image)
	} else if want, _ := parseVersion(goModGo(t)); versionLess(have, want) {
		t.Errorf("build stage FROM %s: Go %v is older than go.mod's go %s", build.image, have, goModGo(t))
	}
	if build.env(t)["CGO_ENABLED"] != "0" {
		t.Error("build stage: CGO_ENABLED=0 is not set: the runtime image has no C library")
	}
	if !slices.ContainsFunc(build.copies(t), func(c copyInstr) bool { return c.from == "" && slices.Equal(c.srcs, []string{"."}) }) {
		t.Error("build stage does not COPY . (the module's sources)")
	}

	// The runtime stage: the binary on PATH as the entrypoint, a non-root user, the graph.
	rt := df.stages[len(df.stages)-1]
	if rt.image == build.image {
		t.Errorf("runtime stage runs on the build image %s", rt.image)
	}
	var binary string
	for _, c := range rt.copies(t) {
		if c.from != "" && c.from == build.name && slices.Equal(c.srcs, []string{out}) {
			binary = c.dest
		}
	}
	if binary != "/usr/local/bin/treasure" {
		t.Errorf("runtime stage copies %s from the build stage to %q, want /usr/local/bin/treasure (on PATH)", out, binary)
	}
	eps := rt.find("ENTRYPOINT")
	if len(eps) != 1 {
		t.Fatalf("runtime stage has %d ENTRYPOINTs, want 1", len(eps))
	}
	var ep []string
	if err := json.Unmarshal([]byte(eps[0].args), &ep); err != nil || !slices.Equal(ep, []string{"treasure"}) {
		t.Errorf("ENTRYPOINT %s, want [\"treasure\"] in exec form", eps[0].args)
	}
	users := rt.find("USER")
	if len(users) == 0 {
		t.Error("runtime stage sets no USER: it would run as root")
	} else {
		u := users[len(users)-1].args
		uid, _, _ := strings.Cut(u, ":")
		if uid == "root" || uid == "0" || !regexp.MustCompile(`^\d+$`).MatchString(uid) {
			t.Errorf("USER %s: want a numeric non-root uid (Kubernetes' runAsNonRoot checks it)", u)
		}
	}

	// TREASURE_GRAPH names a graph copied into the image, with its coordinates
	// and its attribution; the sources exist in the repository.
	env := rt.env(t)
	graph := env["TREASURE_GRAPH"]
	if graph == "" {
		t.Fatal("runtime stage sets no TREASURE_GRAPH")
	}
	inImage := map[string]string{} // path in image → source in repo
	for _, c := range rt.copies(t) {
		if c.from != "" {
			continue
		}
		for _, s := range c.srcs {
			dst := c.dest
			if strings.HasSuffix(dst, "/") {
				dst = path.Join(dst, path.Base(s))
			}
			inImage[dst] = s
			readRepoFile(t, s) // exists
		}
	}
	dir := path.Dir(graph)
	for _, want := range []string{graph, strings.Replace(graph, ".gr", ".co", 1), path.Join(dir, "README.md")} {
		if _, ok := inImage[want]; !ok {
			t.Errorf("TREASURE_GRAPH=%s: the image has no %s (copied: %v)", graph, want, sortedKeys(inImage))
		}
	}
	if b := inImage[path.Join(dir, "README.md")]; b != "" && !strings.Contains(string(readRepoFile(t, b)), "OpenStreetMap contributors") {
		t.Errorf("%s copied beside the graph does not carry the OpenStreetMap attribution", b)
	}

	// The image's own environment is one the code accepts.
	for _, svc := range appServices {
		e := map[string]string{"TREASURE_JWT_SECRET": "dockerfile-test"}
		for k, v := range env {
			e[k] = v
		}
		checkServiceEnv(t, "deploy/Dockerfile ENV ("+svc+")", svc, nil, e)
	}
}

// TestDockerignoreKeepsSources checks that deploy/Dockerfile.dockerignore
// excludes none of the files `go build ./cmd/treasure` reads (Go files and
// embedded files of the module's packages), nor go.mod, go.sum or the graph.
func TestDockerignoreKeepsSources(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	var patterns []string
	for _, l := range lines(readRepoFile(t, "deploy/Dockerfile.dockerignore")) {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, "!") {
			t.Fatalf("Dockerfile.dockerignore: %q: exceptions are not checked here; keep the file a plain deny list", l)
		}
		patterns = append(patterns, strings.TrimPrefix(path.Clean(l), "/"))
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go is not on PATH: %v", err)
	}
	cmd := exec.Command(gobin, "list", "-deps", "-f", `{{if .Module}}{{if eq .Module.Path "treasure"}}{{.Dir}}|{{join .GoFiles ","}}|{{join .EmbedFiles ","}}{{end}}{{end}}`, "./cmd/treasure")
	cmd.Dir = root
	listed, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/treasure: %v", err)
	}
	files := []string{"go.mod", "go.sum", "data/amsterdam.gr.gz", "data/amsterdam.co.gz", "data/README.md"}
	for _, l := range lines(listed) {
		dir, rest, ok := strings.Cut(l, "|")
		if !ok {
			continue
		}
		rel, err := filepath.Rel(root, dir)
		if err != nil {
			t.Fatal(err)
		}
		gofiles, embeds, _ := strings.Cut(rest, "|")
		for _, f := range append(strings.Split(gofiles, ","), strings.Split(embeds, ",")...) {
			if f != "" {
				files = append(files, filepath.ToSlash(filepath.Join(rel, f)))
			}
		}
	}
	if !slices.Contains(files, "cmd/treasure/main.go") {
		t.Fatalf("go list found no cmd/treasure/main.go among %d files", len(files))
	}
	for _, f := range files {
		if p := ignoredBy(patterns, f); p != "" {
			t.Errorf("Dockerfile.dockerignore pattern %q drops %s, which the build reads", p, f)
		}
	}
	// The check itself: a pattern that drops sources is caught.
	if ignoredBy([]string{"internal"}, "internal/graph/graph.go") == "" || ignoredBy([]string{"**/*.go"}, "cmd/treasure/main.go") == "" {
		t.Error("ignoredBy misses patterns that drop sources")
	}
}

// ignoredBy returns the pattern that excludes file (or one of its parent
// directories), or "". "**/" matches any number of leading directories.
func ignoredBy(patterns []string, file string) string {
	for _, p := range patterns {
		for f := file; f != "." && f != "/"; f = path.Dir(f) {
			if ok, _ := path.Match(p, f); ok {
				return p
			}
			if sub, isAny := strings.CutPrefix(p, "**/"); isAny {
				parts := strings.Split(f, "/")
				for i := range parts {
					if ok, _ := path.Match(sub, strings.Join(parts[i:], "/")); ok {
						return p
					}
				}
			}
		}
	}
	return ""
}
