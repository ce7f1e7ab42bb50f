package deploytest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// manifests is every object in deploy/k8s, decoded strictly (an unknown or
// misspelt field is an error) into its k8s.io/api type.
type manifests struct {
	configMaps   map[string]*corev1.ConfigMap
	services     map[string]*corev1.Service
	deployments  map[string]*appsv1.Deployment
	statefulSets map[string]*appsv1.StatefulSet
	pdbs         map[string]*policyv1.PodDisruptionBudget
	files        []string // the manifest files, kustomization.yaml excluded
}

// workload is a Deployment or a StatefulSet, seen through what the checks need.
type workload struct {
	kind, name string
	replicas   int32
	selector   *metav1.LabelSelector
	pod        *corev1.PodTemplateSpec
}

func (m *manifests) workloads() []workload {
	var out []workload
	for _, n := range sortedKeys(m.deployments) {
		d := m.deployments[n]
		out = append(out, workload{"Deployment", n, replicas(d.Spec.Replicas), d.Spec.Selector, &d.Spec.Template})
	}
	for _, n := range sortedKeys(m.statefulSets) {
		s := m.statefulSets[n]
		out = append(out, workload{"StatefulSet", n, replicas(s.Spec.Replicas), s.Spec.Selector, &s.Spec.Template})
	}
	return out
}

func replicas(r *int32) int32 {
	if r == nil {
		return 1 // the API's default
	}
	return *r
}

func loadManifests(tb testing.TB) *manifests {
	tb.Helper()
	dir := filepath.Join(repoRoot(tb), "deploy", "k8s")
	m := &manifests{
		configMaps:   map[string]*corev1.ConfigMap{},
		services:     map[string]*corev1.Service{},
		deployments:  map[string]*appsv1.Deployment{},
		statefulSets: map[string]*appsv1.StatefulSet{},
		pdbs:         map[string]*policyv1.PodDisruptionBudget{},
	}
	paths, err := filepath.Glob(filepath.Join(dir, "*.y*ml"))
	if err != nil {
		tb.Fatal(err)
	}
	for _, p := range paths {
		base := filepath.Base(p)
		if base == "kustomization.yaml" {
			continue
		}
		m.files = append(m.files, base)
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for i := 0; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				tb.Fatalf("%s: document %d: %v", base, i, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				tb.Fatalf("%s: document %d: %v", base, i, err)
			}
			where := base + ": " + tm.Kind
			var name string
			switch gvk := tm.APIVersion + " " + tm.Kind; gvk {
			case "v1 ConfigMap":
				name = decodeInto(tb, where, doc, m.configMaps)
			case "v1 Service":
				name = decodeInto(tb, where, doc, m.services)
			case "apps/v1 Deployment":
				name = decodeInto(tb, where, doc, m.deployments)
			case "apps/v1 StatefulSet":
				name = decodeInto(tb, where, doc, m.statefulSets)
			case "policy/v1 PodDisruptionBudget":
				name = decodeInto(tb, where, doc, m.pdbs)
			default:
				tb.Fatalf("%s: document %d is a %q: this test does not know it; decode it here", base, i, gvk)
			}
			if name == "" {
				tb.Errorf("%s: document %d has no metadata.name", base, i)
			}
		}
	}
	return m
}

// decodeInto decodes doc strictly into a new T, files it under its name in
// into and returns the name. A name used twice fails.
func decodeInto[T any, PT interface {
	*T
	GetName() string
}](tb testing.TB, where string, doc []byte, into map[string]PT) string {
	tb.Helper()
	// As kubectl does: YAML to JSON without knowing the target type (so a
	// ConfigMap value 4 stays a number and is refused), then JSON into the
	// API type, refusing unknown fields.
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		tb.Fatalf("%s: %v", where, err)
	}
	obj := PT(new(T))
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		tb.Fatalf("%s: %v", where, err)
	}
	name := obj.GetName()
	if _, dup := into[name]; dup {
		tb.Errorf("%s %q is defined twice", where, name)
	}
	into[name] = obj
	return name
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, l := range lines(doc) {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out = append(out, l...)
			out = append(out, '\n')
		}
	}
	return out
}

func TestK8sKustomizationListsEveryManifest(t *testing.T) {
	t.Parallel()
	m := loadManifests(t)
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	if err := yaml.Unmarshal(readRepoFile(t, "deploy/k8s/kustomization.yaml"), &k); err != nil {
		t.Fatal(err)
	}
	if k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml: kind %q", k.Kind)
	}
	got := slices.Clone(k.Resources)
	slices.Sort(got)
	want := slices.Clone(m.files)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml resources %v, want every manifest in deploy/k8s: %v", got, want)
	}
}

// k8sSecret stands in for values from Secrets, which the manifests reference
// but do not carry.
const k8sSecret = "k8s-test-secret"

// containerEnv returns the environment c gets: the image's ENV, then
// envFrom ConfigMaps, then env (secret references get k8sSecret; optional
// ones are left out).
func containerEnv(tb testing.TB, where string, m *manifests, c *corev1.Container, image map[string]string) map[string]string {
	tb.Helper()
	env := map[string]string{}
	for k, v := range image {
		env[k] = v
	}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil {
			tb.Errorf("%s: envFrom other than a ConfigMap", where)
			continue
		}
		cm, ok := m.configMaps[ef.ConfigMapRef.Name]
		if !ok {
			tb.Errorf("%s: envFrom ConfigMap %q is not in deploy/k8s", where, ef.ConfigMapRef.Name)
			continue
		}
		for k, v := range cm.Data {
			env[ef.Prefix+k] = v
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			if opt := e.ValueFrom.SecretKeyRef.Optional; opt == nil || !*opt {
				env[e.Name] = k8sSecret
			}
		case e.ValueFrom.FieldRef != nil, e.ValueFrom.ResourceFieldRef != nil:
			env[e.Name] = "from-the-downward-api"
		default:
			tb.Errorf("%s: env %s: a source this test does not know", where, e.Name)
		}
	}
	return env
}

func TestK8sServices(t *testing.T) {
	t.Parallel()
	m := loadManifests(t)
	base := imageEnv(t)
	seen := map[string]int{}
	partitions := -1
	owners := map[string][]int{}
	leaseTTLs := map[string][]string{} // TREASURE_PROXIMITY_LEASE_TTL → workloads
	image := ""
	for _, w := range m.workloads() {
		for i := range w.pod.Spec.Containers {
			c := &w.pod.Spec.Containers[i]
			if name, _, _ := imageRef(c.Image); name != "treasure" && !strings.HasSuffix(name, "/treasure") {
				continue
			}
			where := "deploy/k8s " + w.kind + " " + w.name
			checkPinned(t, where, c.Image)
			if image != "" && c.Image != image {
				t.Errorf("%s runs %s, another service %s: deploy one build", where, c.Image, image)
			}
			image = c.Image
			if len(c.Command) > 0 {
				t.Errorf("%s: command %q overrides the image's entrypoint; give args", where, c.Command)
			}
			if len(c.Args) == 0 || serviceAddr[c.Args[0]].port == 0 {
				t.Errorf("%s: args %q, want a service subcommand first", where, c.Args)
				continue
			}
			svc := c.Args[0]
			seen[svc]++
			sa := serviceAddr[svc]

			// Resources: the story's pod, requests = limits (Guaranteed QoS).
			for what, rl := range map[string]corev1.ResourceList{"requests": c.Resources.Requests, "limits": c.Resources.Limits} {
				for res, want := range map[corev1.ResourceName]string{corev1.ResourceCPU: "2", corev1.ResourceMemory: "4Gi"} {
					q, ok := rl[res]
					if !ok || q.Cmp(resource.MustParse(want)) != 0 {
						t.Errorf("%s: resources.%s.%s = %v, want %s", where, what, res, q.String(), want)
					}
				}
			}

			// Probes hit the service's own port.
			port := -1
			portName := ""
			for _, p := range c.Ports {
				if int(p.ContainerPort) == sa.port {
					port, portName = int(p.ContainerPort), p.Name
				}
			}
			if port < 0 {
				t.Errorf("%s: no containerPort %d", where, sa.port)
			}
			for what, pr := range map[string]struct {
				p    *corev1.Probe
				path string
			}{"readinessProbe": {c.ReadinessProbe, "/readyz"}, "livenessProbe": {c.LivenessProbe, "/healthz"}} {
				if pr.p == nil || pr.p.HTTPGet == nil {
					t.Errorf("%s: no HTTP %s", where, what)
					continue
				}
				g := pr.p.HTTPGet
				okPort := (g.Port.Type == intstr.Int && int(g.Port.IntVal) == sa.port) || (g.Port.Type == intstr.String && g.Port.StrVal == portName && portName != "")
				if g.Path != pr.path || !okPort {
					t.Errorf("%s: %s GET %s on port %s, want %s on %d", where, what, g.Path, g.Port.String(), pr.path, sa.port)
				}
			}
			if sp := c.StartupProbe; sp != nil && (sp.HTTPGet == nil || sp.HTTPGet.Path != "/healthz") {
				t.Errorf("%s: startupProbe does not GET /healthz", where)
			}

			// Runs as the image's non-root user.
			psc := w.pod.Spec.SecurityContext
			if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
				t.Errorf("%s: pod securityContext.runAsNonRoot is not true", where)
			}

			// The environment goes through platform.FromEnv.
			env := containerEnv(t, where, m, c, base)
			cfg := checkServiceEnv(t, where, svc, c.Args, env)
			if !strings.HasPrefix(cfg.NATSURL, "nats://nats:4222") {
				t.Errorf("%s: TREASURE_NATS_URL=%s, want the nats Service (nats://nats:4222)", where, cfg.NATSURL)
			} else if _, ok := m.services["nats"]; !ok {
				t.Errorf("%s: TREASURE_NATS_URL names Service nats, which deploy/k8s does not define", where)
			}
			if cfg.JWTSecret != k8sSecret {
				t.Errorf("%s: TREASURE_JWT_SECRET does not come from a Secret", where)
			}
			if partitions >= 0 && cfg.Partitions != partitions {
				t.Errorf("%s: %d partitions, another service has %d", where, cfg.Partitions, partitions)
			}
			partitions = cfg.Partitions

			switch svc {
			case "proximity":
				list, ok := partitionsFlag(c.Args)
				if !ok {
					list = env[envProximityPartitions]
				}
				parts, err := parsePartitions(list, cfg.Partitions)
				if err != nil {
					t.Fatalf("%s: %v", where, err)
				}
				for r := range w.replicas {
					owners[w.name+"#"+strconv.Itoa(int(r))] = parts
				}
				// The workers share one lease bucket, whose TTL is the one
				// its creator had: they all take it from the ConfigMap.
				if v, ok := flagValue(c.Args, "lease-ttl"); ok {
					t.Errorf("%s: --lease-ttl %s in args: set %s in configmap.yaml, for every worker", where, v, envProximityLeaseTTL)
				}
				if env[envProximityLeaseTTL] == "" {
					t.Errorf("%s: no %s: set it in configmap.yaml", where, envProximityLeaseTTL)
				}
				leaseTTLs[env[envProximityLeaseTTL]] = append(leaseTTLs[env[envProximityLeaseTTL]], w.name)
			case "ranker":
				d, ok := m.deployments[w.name]
				if w.replicas != 1 || !ok || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
					t.Errorf("%s: want a Deployment of 1 replica with the Recreate strategy: two rankers must never run at once", where)
				}
			default:
				if _, ok := m.deployments[w.name]; !ok || w.replicas < 1 {
					t.Errorf("%s: want a Deployment of at least 1 replica", where)
				}
			}
		}
	}
	for _, svc := range appServices {
		if seen[svc] == 0 {
			t.Errorf("deploy/k8s runs no %s", svc)
		}
		s, ok := m.services[svc]
		if !ok || !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return int(p.Port) == serviceAddr[svc].port }) {
			t.Errorf("deploy/k8s has no Service %s on port %d", svc, serviceAddr[svc].port)
		}
	}
	if seen["proximity"] < 2 {
		t.Errorf("deploy/k8s runs %d proximity workloads, want the partitions split over at least 2", seen["proximity"])
	}
	checkCoverage(t, "deploy/k8s", partitions, owners)
	if len(leaseTTLs) > 1 {
		t.Errorf("deploy/k8s: the proximity workers get different %s: %v; they share one lease bucket (one TTL)", envProximityLeaseTTL, leaseTTLs)
	}
}

// TestK8sServicesSelectPods checks that every Service selects the pods of
// some workload and targets a port those pods declare.
func TestK8sServicesSelectPods(t *testing.T) {
	t.Parallel()
	m := loadManifests(t)
	for _, w := range m.workloads() {
		sel, err := metav1.LabelSelectorAsSelector(w.selector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(w.pod.Labels)) {
			t.Errorf("%s %s: selector %v does not match its pod labels %v", w.kind, w.name, w.selector, w.pod.Labels)
		}
	}
	for _, name := range sortedKeys(m.services) {
		s := m.services[name]
		if len(s.Spec.Selector) == 0 {
			t.Errorf("Service %s selects nothing", name)
			continue
		}
		var pods []*corev1.PodTemplateSpec
		for _, w := range m.workloads() {
			if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(w.pod.Labels)) {
				pods = append(pods, w.pod)
			}
		}
		if len(pods) == 0 {
			t.Errorf("Service %s: selector %v matches no workload's pods", name, s.Spec.Selector)
			continue
		}
		for _, sp := range s.Spec.Ports {
			for _, pod := range pods {
				if !podHasPort(pod, sp.TargetPort, sp.Port) {
					t.Errorf("Service %s port %s: target %s is not a port of its pods", name, sp.Name, sp.TargetPort.String())
				}
			}
		}
	}
	for _, name := range sortedKeys(m.statefulSets) {
		if _, ok := m.services[m.statefulSets[name].Spec.ServiceName]; !ok {
			t.Errorf("StatefulSet %s: serviceName %q is not a Service in deploy/k8s", name, m.statefulSets[name].Spec.ServiceName)
		}
	}
}

func podHasPort(pod *corev1.PodTemplateSpec, target intstr.IntOrString, port int32) bool {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			switch {
			case target.Type == intstr.String && target.StrVal != "" && p.Name == target.StrVal,
				target.Type == intstr.Int && target.IntVal != 0 && p.ContainerPort == target.IntVal,
				target.Type == intstr.Int && target.IntVal == 0 && p.ContainerPort == port:
				return true
			}
		}
	}
	return false
}
