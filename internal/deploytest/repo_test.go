package deploytest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	treasurecli "treasure/internal/cli"
	"treasure/internal/platform"
)

// repoRoot returns the repository's root: the nearest parent of the working
// directory whose go.mod declares module treasure.
func repoRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && regexp.MustCompile(`(?m)^module\s+treasure\s*$`).Match(b) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("no go.mod of module treasure above the working directory")
		}
		dir = parent
	}
}

// readRepoFile reads a file given relative to the repository root.
func readRepoFile(tb testing.TB, rel string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(tb), filepath.FromSlash(rel)))
	if err != nil {
		tb.Fatalf("read %s: %v", rel, err)
	}
	return b
}

// goModGo returns the version on go.mod's `go` line.
func goModGo(tb testing.TB) string {
	tb.Helper()
	m := regexp.MustCompile(`(?m)^go\s+(\S+)\s*$`).FindSubmatch(readRepoFile(tb, "go.mod"))
	if m == nil {
		tb.Fatal("go.mod has no go line")
	}
	return string(m[1])
}

// goModRequire returns the version go.mod requires of module, without the v.
func goModRequire(tb testing.TB, module string) string {
	tb.Helper()
	re := regexp.MustCompile(`(?m)^\s*(?:require\s+)?` + regexp.QuoteMeta(module) + `\s+v(\S+)`)
	m := re.FindSubmatch(readRepoFile(tb, "go.mod"))
	if m == nil {
		tb.Fatalf("go.mod does not require %s", module)
	}
	return string(m[1])
}

// parseVersion reads the leading "X.Y.Z" (or "X.Y", "X") of s, ignoring a
// leading "v" and any suffix such as "-alpine".
func parseVersion(s string) ([3]int, bool) {
	var v [3]int
	m := regexp.MustCompile(`^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?`).FindStringSubmatch(s)
	if m == nil {
		return v, false
	}
	for i := range 3 {
		if m[i+1] != "" {
			v[i], _ = strconv.Atoi(m[i+1])
		}
	}
	return v, true
}

func versionLess(a, b [3]int) bool { return slices.Compare(a[:], b[:]) < 0 }

// imageRef splits a container image reference into name, tag and digest.
func imageRef(ref string) (name, tag, digest string) {
	name = ref
	if i := strings.Index(name, "@"); i >= 0 {
		name, digest = name[:i], name[i+1:]
	}
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name, tag = name[:i], name[i+1:]
	}
	return name, tag, digest
}

// checkPinned fails unless ref names a fixed release: a digest, or a tag
// other than "latest" with a version number in the tag or, as distroless
// names its releases (static-debian12:nonroot), in the image's last name.
func checkPinned(tb testing.TB, where, ref string) {
	tb.Helper()
	name, tag, digest := imageRef(ref)
	if digest != "" {
		return
	}
	versioned := regexp.MustCompile(`\d`).MatchString(tag) || regexp.MustCompile(`\d`).MatchString(path.Base(name))
	if tag == "" || tag == "latest" || !versioned {
		tb.Errorf("%s: image %q is not pinned: give a version tag (not latest) or a digest", where, ref)
	}
}

// The listen address variable and port of every service, by subcommand.
var serviceAddr = map[string]struct {
	env  string
	port int
}{
	"ingest":    {platform.EnvIngestAddr, 8081},
	"push":      {platform.EnvPushAddr, 8082},
	"proximity": {platform.EnvProximityAddr, 8083},
	"ranker":    {platform.EnvRankerAddr, 8084},
}

// appServices are the four services' subcommands, sorted.
var appServices = []string{"ingest", "proximity", "push", "ranker"}

// envProximityLeaseTTL is read by `treasure proximity` (internal/cli), not
// by platform.FromEnv: the partition leases' TTL, as --lease-ttl.
const envProximityLeaseTTL = "TREASURE_PROXIMITY_LEASE_TTL"

// envProximityPartitions is read by `treasure proximity` (internal/cli), not
// by platform.FromEnv.
const envProximityPartitions = "TREASURE_PROXIMITY_PARTITIONS"

// checkServiceEnv runs platform.FromEnv over env, the whole environment a
// container of service gets (its command line args: the subcommand and
// flags; nil means the bare subcommand), and fails on an error, on a
// TREASURE_* variable that no code reads, on a value a service subcommand
// refuses, on a missing JWT secret or on a listen address that is not the
// service's port on every interface. It returns the configuration.
//
// "Read" means read by platform.FromEnv or by one of the four service
// subcommands (run in-process by subcommandReads): a ConfigMap shared by
// every service may carry a setting only one of them reads, such as
// proximity's TREASURE_PROXIMITY_LEASE_TTL, whose value the proximity
// subcommand then parses in every container's environment.
func checkServiceEnv(tb testing.TB, where, service string, args []string, env map[string]string) platform.Config {
	tb.Helper()
	read := map[string]bool{}
	cfg, err := platform.FromEnv(func(k string) string {
		read[k] = true
		return env[k]
	})
	if err != nil {
		tb.Fatalf("%s: platform.FromEnv rejects the environment: %v", where, err)
	}
	for _, svc := range appServices {
		a := []string{svc}
		if svc == service && len(args) > 0 {
			a = args
		}
		maps.Copy(read, subcommandReads(tb, where, a, env))
	}
	for _, k := range sortedKeys(env) {
		if strings.HasPrefix(k, "TREASURE_") && !read[k] {
			tb.Errorf("%s: sets %s, which no code reads (platform.FromEnv and the service subcommands, up to FromEnv, read %s)", where, k, strings.Join(sortedKeys(read), ", "))
		}
	}
	if err := cfg.RequireJWTSecret(); err != nil {
		tb.Errorf("%s: %v", where, err)
	}
	sa := serviceAddr[service]
	if env[sa.env] == "" {
		tb.Errorf("%s: %s unset: the service would listen on the default %s, unreachable from outside its container", where, sa.env, map[string]string{
			"ingest": platform.DefaultIngestAddr, "push": platform.DefaultPushAddr, "proximity": platform.DefaultProximityAddr, "ranker": platform.DefaultRankerAddr,
		}[service])
	}
	addr := map[string]string{"ingest": cfg.IngestAddr, "push": cfg.PushAddr, "proximity": cfg.ProximityAddr, "ranker": cfg.RankerAddr}[service]
	if want := net.JoinHostPort("0.0.0.0", strconv.Itoa(sa.port)); addr != want {
		tb.Errorf("%s: %s=%q, want %q (every interface, the service's port)", where, sa.env, addr, want)
	}
	return cfg
}

// stopNATSURL is the TREASURE_NATS_URL subcommandReads gives a service
// subcommand: platform.FromEnv refuses it, so the subcommand stops there,
// before it loads a graph or connects anywhere.
const stopNATSURL = "deploytest-stop://here"

// subcommandReads runs `treasure ARGS…` in-process over env, with
// TREASURE_NATS_URL replaced by stopNATSURL, and returns the variables it
// read: its own settings, which the service subcommands read and parse
// before the shared configuration (TREASURE_PROXIMITY_PARTITIONS,
// TREASURE_PROXIMITY_LEASE_TTL), and platform.FromEnv's. It fails when the
// subcommand stops before FromEnv, on a flag or a value of its own that it
// refuses: the container would crash-loop. A variable a subcommand reads
// only after FromEnv is not seen here.
func subcommandReads(tb testing.TB, where string, args []string, env map[string]string) map[string]bool {
	tb.Helper()
	read := map[string]bool{}
	// Cancelled: should the run ever get past FromEnv, it waits for nothing.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	code := treasurecli.Run(ctx, args, func(k string) string {
		read[k] = true
		if k == platform.EnvNATSURL {
			return stopNATSURL
		}
		return env[k]
	}, strings.NewReader(""), &stdout, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), stopNATSURL) || !read[platform.EnvNATSURL] {
		tb.Errorf("%s: `treasure %s` refuses its environment or flags (exit %d): %s", where, strings.Join(args, " "), code, firstLine(stderr.String()))
	}
	return read
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// parsePartitions parses `treasure proximity --partitions` lists: "0,1",
// "0-3", "0,2-3"; empty means all k.
func parsePartitions(s string, k int) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		all := make([]int, k)
		for i := range all {
			all[i] = i
		}
		return all, nil
	}
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		lo, hi, isRange := strings.Cut(f, "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a || b >= k {
			return nil, fmt.Errorf("partition list %q: bad item %q for %d partitions", s, f, k)
		}
		for p := a; p <= b; p++ {
			out = append(out, p)
		}
	}
	return out, nil
}

// partitionsFlag returns the value of --partitions (or -partitions, with a
// space or "=") in args, and whether it was there.
func partitionsFlag(args []string) (string, bool) { return flagValue(args, "partitions") }

// flagValue returns the value of the flag --flag (or -flag, with a space or
// "=") in args, and whether it was there.
func flagValue(args []string, flag string) (string, bool) {
	for i, a := range args {
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != flag {
			continue
		}
		if hasVal {
			return val, true
		}
		if i+1 < len(args) {
			return args[i+1], true
		}
		return "", true
	}
	return "", false
}

// checkCoverage fails unless owners (worker name → partitions it owns, one
// entry per running replica) own every partition of k exactly once.
func checkCoverage(tb testing.TB, where string, k int, owners map[string][]int) {
	tb.Helper()
	count := make([]int, k)
	by := make([][]string, k)
	for name, parts := range owners {
		for _, p := range parts {
			count[p]++
			by[p] = append(by[p], name)
		}
	}
	for p, c := range count {
		switch {
		case c == 0:
			tb.Errorf("%s: partition %d of %d has no proximity worker", where, p, k)
		case c > 1:
			slices.Sort(by[p])
			tb.Errorf("%s: partition %d of %d is owned %d times (%s): its log would be consumed out of order", where, p, k, c, strings.Join(by[p], ", "))
		}
	}
}

// lines returns s's lines.
func lines(b []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

func TestHelpers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ref            string
		name, tag, dig string
		pinned         bool
	}{
		{"nats:2.15.2-alpine", "nats", "2.15.2-alpine", "", true},
		{"nats", "nats", "", "", false},
		{"nats:latest", "nats", "latest", "", false},
		{"localhost:5000/treasure", "localhost:5000/treasure", "", "", false},
		{"localhost:5000/treasure:0.3.0", "localhost:5000/treasure", "0.3.0", "", true},
		{"gcr.io/distroless/static-debian12:nonroot", "gcr.io/distroless/static-debian12", "nonroot", "", true},
		{"redis@sha256:abc", "redis", "", "sha256:abc", true},
		{"gcr.io/distroless/static:nonroot", "gcr.io/distroless/static", "nonroot", "", false},
		{"gcr.io/distroless/static-debian12:latest", "gcr.io/distroless/static-debian12", "latest", "", false},
	} {
		name, tag, dig := imageRef(tc.ref)
		if name != tc.name || tag != tc.tag || dig != tc.dig {
			t.Errorf("imageRef(%q) = %q %q %q, want %q %q %q", tc.ref, name, tag, dig, tc.name, tc.tag, tc.dig)
		}
		rec := &recorder{TB: t}
		checkPinned(rec, "test", tc.ref)
		if rec.failed == tc.pinned {
			t.Errorf("checkPinned(%q) failed=%v, want pinned=%v", tc.ref, rec.failed, tc.pinned)
		}
	}

	for _, tc := range []struct {
		s    string
		k    int
		want []int
		bad  bool
	}{
		{"", 3, []int{0, 1, 2}, false},
		{"0,1", 4, []int{0, 1}, false},
		{"1-3", 4, []int{1, 2, 3}, false},
		{"0, 2-3", 4, []int{0, 2, 3}, false},
		{"4", 4, nil, true},
		{"3-1", 4, nil, true},
		{"x", 4, nil, true},
	} {
		got, err := parsePartitions(tc.s, tc.k)
		if (err != nil) != tc.bad || !slices.Equal(got, tc.want) {
			t.Errorf("parsePartitions(%q, %d) = %v, %v; want %v, bad=%v", tc.s, tc.k, got, err, tc.want, tc.bad)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
		ok   bool
	}{
		{[]string{"proximity", "--partitions", "0,1"}, "0,1", true},
		{[]string{"proximity", "-partitions=2-3"}, "2-3", true},
		{[]string{"proximity"}, "", false},
		{[]string{"proximity", "--lease-ttl", "5s"}, "", false},
	} {
		got, ok := partitionsFlag(tc.args)
		if got != tc.want || ok != tc.ok {
			t.Errorf("partitionsFlag(%q) = %q, %v; want %q, %v", tc.args, got, ok, tc.want, tc.ok)
		}
	}

	rec := &recorder{TB: t}
	checkCoverage(rec, "test", 4, map[string][]int{"a": {0, 1}, "b": {1, 2}})
	if !rec.failed {
		t.Error("checkCoverage accepted partition 1 twice and 3 never")
	}
	rec = &recorder{TB: t}
	checkCoverage(rec, "test", 4, map[string][]int{"a": {0, 1}, "b": {2, 3}})
	if rec.failed {
		t.Error("checkCoverage rejected an exact cover")
	}

	ingestEnv := func(kv ...string) map[string]string {
		env := map[string]string{"TREASURE_JWT_SECRET": "s", "TREASURE_INGEST_ADDR": "0.0.0.0:8081"}
		for i := 0; i+1 < len(kv); i += 2 {
			env[kv[i]] = kv[i+1]
		}
		return env
	}
	proximityEnv := func(kv ...string) map[string]string {
		env := map[string]string{"TREASURE_JWT_SECRET": "s", "TREASURE_PROXIMITY_ADDR": "0.0.0.0:8083"}
		for i := 0; i+1 < len(kv); i += 2 {
			env[kv[i]] = kv[i+1]
		}
		return env
	}
	for _, tc := range []struct {
		what    string
		service string
		args    []string
		env     map[string]string
		bad     bool
	}{
		{"a good environment", "ingest", nil, ingestEnv(), false},
		{"the misspelt TREASURE_NAT_URL", "ingest", nil, ingestEnv("TREASURE_NAT_URL", "nats://nats:4222"), true},
		{"proximity's lease TTL", "proximity", []string{"proximity", "--partitions", "0,1"}, proximityEnv("TREASURE_PROXIMITY_LEASE_TTL", "10s"), false},
		{"proximity's lease TTL in a shared environment", "ingest", nil, ingestEnv("TREASURE_PROXIMITY_LEASE_TTL", "10s"), false},
		{"a lease TTL without a unit", "proximity", nil, proximityEnv("TREASURE_PROXIMITY_LEASE_TTL", "10"), true},
		{"a lease TTL under the minimum", "proximity", nil, proximityEnv("TREASURE_PROXIMITY_LEASE_TTL", "500ms"), true},
		{"a bad lease TTL in a shared environment", "ingest", nil, ingestEnv("TREASURE_PROXIMITY_LEASE_TTL", "ten seconds"), true},
		{"the misspelt TREASURE_PROXIMITY_LEASE_TT", "proximity", nil, proximityEnv("TREASURE_PROXIMITY_LEASE_TT", "10s"), true},
		{"TREASURE_PROXIMITY_PARTITIONS", "proximity", nil, proximityEnv("TREASURE_PROXIMITY_PARTITIONS", "0-3"), false},
		{"a flag proximity does not have", "proximity", []string{"proximity", "--lease", "10s"}, proximityEnv(), true},
	} {
		rec := &recorder{TB: t}
		checkServiceEnv(rec, "test", tc.service, tc.args, tc.env)
		if rec.failed != tc.bad {
			t.Errorf("checkServiceEnv over %s (%s %q): failed=%v, want %v", tc.what, tc.service, tc.args, rec.failed, tc.bad)
		}
	}
}

// recorder is a testing.TB whose Error/Errorf record a failure instead of
// failing the test, for testing the checks themselves. Fatal is not
// intercepted: the checks above report with Errorf where a test of theirs
// needs it.
type recorder struct {
	testing.TB
	failed bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Error(args ...any)     { r.failed = true }
func (r *recorder) Errorf(string, ...any) { r.failed = true }
func (r *recorder) Failed() bool          { return r.failed || r.TB.Failed() }
