package deploytest

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	treasurecli "treasure/internal/cli"
)

// loadCompose loads the repository's docker-compose.yml as `docker compose`
// would, with env as the only environment for interpolation (the test's own
// environment is not consulted, and no .env file is read).
func loadCompose(tb testing.TB, env map[string]string) (*types.Project, error) {
	tb.Helper()
	root := repoRoot(tb)
	var kv []string
	for k, v := range env {
		kv = append(kv, k+"="+v)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root), cli.WithEnv(kv))
	if err != nil {
		return nil, err
	}
	return opts.LoadProject(context.Background())
}

const composeSecret = "compose-test-secret"

func mustLoadCompose(tb testing.TB) *types.Project {
	tb.Helper()
	p, err := loadCompose(tb, map[string]string{"TREASURE_JWT_SECRET": composeSecret})
	if err != nil {
		tb.Fatalf("load docker-compose.yml: %v", err)
	}
	return p
}

func TestComposeNeedsJWTSecret(t *testing.T) {
	t.Parallel()
	for name, env := range map[string]map[string]string{
		"unset": {},
		"empty": {"TREASURE_JWT_SECRET": ""},
	} {
		_, err := loadCompose(t, env)
		if err == nil {
			t.Fatalf("TREASURE_JWT_SECRET %s: docker-compose.yml loads; want the required-value error", name)
		}
		if msg := err.Error(); !strings.Contains(msg, "TREASURE_JWT_SECRET") || !strings.Contains(msg, "set a secret") {
			t.Errorf("TREASURE_JWT_SECRET %s: %v; want the required-value error naming the variable and saying \"set a secret\"", name, err)
		}
	}
}

func TestComposeStack(t *testing.T) {
	t.Parallel()
	p := mustLoadCompose(t)
	want := append([]string{"nats", "postgres", "redis"}, appServices...)
	slices.Sort(want)
	if got := p.ServiceNames(); !slices.Equal(got, want) {
		t.Fatalf("services %v, want %v", got, want)
	}
	for _, name := range p.ServiceNames() {
		s := p.Services[name]
		hc := s.HealthCheck
		if hc == nil || hc.Disable || len(hc.Test) < 2 || hc.Test[0] == "NONE" {
			t.Errorf("%s: no healthcheck", name)
		}
		for dep, d := range s.DependsOn {
			if d.Condition != types.ServiceConditionHealthy {
				t.Errorf("%s depends on %s with condition %q, want %s", name, dep, d.Condition, types.ServiceConditionHealthy)
			}
		}
		if s.Image != "" && s.Build == nil {
			checkPinned(t, name, s.Image)
		}
	}
}

func TestComposeInfrastructure(t *testing.T) {
	t.Parallel()
	p := mustLoadCompose(t)

	nats := p.Services["nats"]
	_, tag, _ := imageRef(nats.Image)
	v, ok := parseVersion(tag)
	if !ok || versionLess(v, [3]int{2, 10, 0}) {
		t.Errorf("nats image %s: want nats-server 2.10 or later (multi-filter consumers)", nats.Image)
	}
	if embedded := goModRequire(t, "github.com/nats-io/nats-server/v2"); !strings.HasPrefix(tag, embedded+"-") && tag != embedded {
		t.Errorf("nats image %s: the tests embed nats-server %s (go.mod); deploy the release they ran against", nats.Image, embedded)
	}
	cmd := strings.Join(nats.Command, " ")
	if !slices.Contains(nats.Command, "-js") && !slices.Contains(nats.Command, "--jetstream") {
		t.Errorf("nats command %q does not enable JetStream (-js)", cmd)
	}
	if !strings.Contains(cmd, "-sd /data") {
		t.Errorf("nats command %q does not store JetStream in /data (-sd /data)", cmd)
	}
	checkNamedVolume(t, p, "nats", "/data")
	checkHealthTest(t, "nats", nats.HealthCheck, "http://127.0.0.1:8222/healthz")
	if !strings.Contains(cmd, "-m 8222") && !strings.Contains(cmd, "--http_port 8222") {
		t.Errorf("nats command %q does not serve monitoring on 8222, which its healthcheck needs", cmd)
	}

	redis := p.Services["redis"]
	if name, _, _ := imageRef(redis.Image); name != "redis" {
		t.Errorf("redis image %s, want the redis image", redis.Image)
	}
	checkHealthTest(t, "redis", redis.HealthCheck, "redis-cli", "ping")

	pg := p.Services["postgres"]
	name, tag, _ := imageRef(pg.Image)
	if v, ok := parseVersion(tag); name != "postgres" || !ok || (v[0] != 15 && v[0] != 16) {
		t.Errorf("postgres image %s, want postgres 15 or 16", pg.Image)
	}
	for k, want := range map[string]string{"POSTGRES_HOST_AUTH_METHOD": "trust", "POSTGRES_DB": "treasure"} {
		if got := pg.Environment[k]; got == nil || *got != want {
			t.Errorf("postgres: %s=%v, want %q", k, got, want)
		}
	}
	checkNamedVolume(t, p, "postgres", "/var/lib/postgresql/data")
	checkHealthTest(t, "postgres", pg.HealthCheck, "pg_isready")

	// Infrastructure publishes no port: a developer machine already runs
	// NATS, Redis and PostgreSQL on theirs.
	for _, n := range []string{"nats", "redis", "postgres"} {
		if ports := p.Services[n].Ports; len(ports) > 0 {
			t.Errorf("%s publishes %v: it would collide with the servers a development machine runs", n, ports)
		}
	}
}

func checkNamedVolume(tb testing.TB, p *types.Project, service, target string) {
	tb.Helper()
	for _, v := range p.Services[service].Volumes {
		if v.Target != target {
			continue
		}
		if v.Type != types.VolumeTypeVolume {
			tb.Errorf("%s: %s is a %s mount, want a named volume", service, target, v.Type)
		} else if _, ok := p.Volumes[v.Source]; !ok {
			tb.Errorf("%s: volume %q is not declared under volumes:", service, v.Source)
		}
		return
	}
	tb.Errorf("%s: no volume mounted at %s", service, target)
}

// checkHealthTest fails unless the healthcheck's command contains every want.
func checkHealthTest(tb testing.TB, service string, hc *types.HealthCheckConfig, want ...string) {
	tb.Helper()
	if hc == nil {
		tb.Errorf("%s: no healthcheck", service)
		return
	}
	for _, w := range want {
		if !slices.ContainsFunc(hc.Test, func(s string) bool { return strings.Contains(s, w) }) {
			tb.Errorf("%s: healthcheck %q does not contain %q", service, hc.Test, w)
		}
	}
}

func TestComposeServices(t *testing.T) {
	t.Parallel()
	p := mustLoadCompose(t)
	root := repoRoot(t)
	base := imageEnv(t)
	partitions := -1
	owners := map[string][]int{}
	for _, name := range appServices {
		s := p.Services[name]
		sa := serviceAddr[name]
		port := strconv.Itoa(sa.port)

		if s.Build == nil {
			t.Errorf("%s: not built", name)
		} else {
			if s.Build.Context != root {
				t.Errorf("%s: build context %s, want the repository root %s", name, s.Build.Context, root)
			}
			if df := s.Build.Dockerfile; df != "deploy/Dockerfile" && df != filepath.Join(root, "deploy", "Dockerfile") {
				t.Errorf("%s: dockerfile %s, want deploy/Dockerfile", name, df)
			}
		}
		if s.Image != "" {
			if _, tag, _ := imageRef(s.Image); tag == "latest" {
				t.Errorf("%s: image %s", name, s.Image)
			}
		}
		if len(s.Entrypoint) > 0 {
			t.Errorf("%s: overrides the image's entrypoint with %q", name, s.Entrypoint)
		}
		if len(s.Command) == 0 || s.Command[0] != name {
			t.Errorf("%s: command %q, want [%s …] (the subcommand)", name, s.Command, name)
		}

		if len(s.Ports) != 1 {
			t.Errorf("%s: ports %v, want one", name, s.Ports)
		} else if pc := s.Ports[0]; pc.Target != uint32(sa.port) || pc.Published != port || pc.Protocol != "tcp" {
			t.Errorf("%s: port %+v, want %s:%s/tcp", name, pc, port, port)
		}

		checkHealthTest(t, name, s.HealthCheck, "treasure", "healthcheck", "http://127.0.0.1:"+port+"/readyz")
		if hc := s.HealthCheck; hc != nil && hc.Test[0] != "CMD" {
			t.Errorf("%s: healthcheck %q: the image has no shell, want the CMD form", name, hc.Test)
		}

		needs := map[string][]string{
			"ingest":    {"nats", "redis"},
			"proximity": {"nats"},
			"ranker":    {"nats", "redis", "postgres"},
			"push":      {"nats", "redis", "postgres"},
		}[name]
		for _, dep := range needs {
			if _, ok := s.DependsOn[dep]; !ok {
				t.Errorf("%s does not depend on %s", name, dep)
			}
		}

		// The container's environment: the image's, then compose's.
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for k, v := range s.Environment {
			if v == nil {
				t.Errorf("%s: %s has no value", name, k)
				continue
			}
			env[k] = *v
		}
		cfg := checkServiceEnv(t, "docker-compose.yml "+name, name, s.Command, env)
		for _, u := range []struct{ what, raw, host, port string }{
			{"TREASURE_NATS_URL", cfg.NATSURL, "nats", "4222"},
			{"TREASURE_REDIS_URL", cfg.RedisURL, "redis", "6379"},
			{"TREASURE_DATABASE_URL", cfg.DatabaseURL, "postgres", "5432"},
		} {
			pu, err := url.Parse(u.raw)
			if err != nil || pu.Hostname() != u.host || pu.Port() != u.port {
				t.Errorf("%s: %s=%s, want host %s port %s", name, u.what, u.raw, u.host, u.port)
			}
		}
		if pu, err := url.Parse(cfg.DatabaseURL); err == nil && (pu.Path != "/treasure" || pu.User.Username() != "postgres") {
			t.Errorf("%s: TREASURE_DATABASE_URL=%s, want user postgres, database treasure (as the postgres service creates)", name, cfg.DatabaseURL)
		}
		if cfg.JWTSecret != composeSecret {
			t.Errorf("%s: TREASURE_JWT_SECRET is %q, not the caller's", name, cfg.JWTSecret)
		}
		if cfg.Graph != base["TREASURE_GRAPH"] {
			t.Errorf("%s: TREASURE_GRAPH=%s, want the graph the image carries, %s", name, cfg.Graph, base["TREASURE_GRAPH"])
		}
		if partitions >= 0 && cfg.Partitions != partitions {
			t.Errorf("%s: %d partitions, another service has %d: routing and ownership would disagree", name, cfg.Partitions, partitions)
		}
		partitions = cfg.Partitions

		if name == "proximity" {
			list, ok := partitionsFlag(s.Command)
			if !ok {
				list = env[envProximityPartitions]
			}
			parts, err := parsePartitions(list, cfg.Partitions)
			if err != nil {
				t.Fatalf("proximity: %v", err)
			}
			for r := range s.GetScale() {
				owners["proximity#"+strconv.Itoa(r)] = parts
			}
		}
	}
	checkCoverage(t, "docker-compose.yml", partitions, owners)
}

// TestDeployedCommandsExist runs `treasure ARGS… -h` in-process for every
// command line the deployment files start (the compose commands and health
// checks, the Kubernetes args, the image's default command): the subcommand
// must exist and its flags parse. A command the binary refuses would
// crash-loop every container that runs it.
func TestDeployedCommandsExist(t *testing.T) {
	t.Parallel()
	used := map[string][]string{} // args joined by NUL → where
	use := func(where string, args ...string) {
		k := strings.Join(args, "\x00")
		used[k] = append(used[k], where)
	}
	p := mustLoadCompose(t)
	for _, name := range p.ServiceNames() {
		s := p.Services[name]
		if s.Build == nil {
			continue
		}
		if len(s.Command) > 0 {
			use("docker-compose.yml "+name+" command", s.Command...)
		}
		if hc := s.HealthCheck; hc != nil && len(hc.Test) > 2 && hc.Test[1] == "treasure" {
			// Flags go before the URL: check the subcommand and its help.
			use("docker-compose.yml "+name+" healthcheck", hc.Test[2])
		}
	}
	m := loadManifests(t)
	for _, w := range m.workloads() {
		for _, c := range w.pod.Spec.Containers {
			if name, _, _ := imageRef(c.Image); name == "treasure" && len(c.Args) > 0 {
				use("deploy/k8s "+w.kind+" "+w.name, c.Args...)
			}
		}
	}
	df := parseDockerfile(t, string(readRepoFile(t, "deploy/Dockerfile")))
	for _, in := range df.stages[len(df.stages)-1].find("CMD") {
		var cmd []string
		if err := json.Unmarshal([]byte(in.args), &cmd); err != nil || len(cmd) == 0 {
			t.Errorf("Dockerfile:%d: CMD %s: want the exec form", in.line, in.args)
			continue
		}
		use("deploy/Dockerfile CMD", cmd...)
	}
	subs := map[string]bool{}
	for k := range used {
		sub, _, _ := strings.Cut(k, "\x00")
		subs[sub] = true
	}
	for _, want := range append([]string{"healthcheck"}, appServices...) {
		if !subs[want] {
			t.Errorf("the deployment never runs `treasure %s`", want)
		}
	}
	for _, k := range sortedKeys(used) {
		args := append(strings.Split(k, "\x00"), "-h")
		var stdout, stderr bytes.Buffer
		code := treasurecli.Run(context.Background(), args, func(string) string { return "" }, strings.NewReader(""), &stdout, &stderr)
		if code != 0 {
			t.Errorf("`treasure %s` exits %d (%s), run by %s: the binary lacks the subcommand (register it in internal/cli's command table) or refuses its flags",
				strings.Join(args, " "), code, firstLine(stderr.String()), strings.Join(used[k], ", "))
		}
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}
