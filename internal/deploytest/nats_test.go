package deploytest

import (
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	corev1 "k8s.io/api/core/v1"
)

// TestNATSCluster parses deploy/nats/nats.conf with nats-server's own config
// parser, as the pod nats-0 would, and checks it against the StatefulSet that
// runs it: the ConfigMap carries it verbatim, the routes name every pod, the
// ports and the JetStream store match the Services, probes and volumes.
// Not parallel: it sets SERVER_NAME, which nats.conf reads.
func TestNATSCluster(t *testing.T) {
	conf := readRepoFile(t, "deploy/nats/nats.conf")
	m := loadManifests(t)
	cm, ok := m.configMaps["nats-config"]
	if !ok {
		t.Fatal("deploy/k8s has no ConfigMap nats-config")
	}
	if cm.Data["nats.conf"] != string(conf) {
		t.Error("ConfigMap nats-config's nats.conf differs from deploy/nats/nats.conf: copy the file into deploy/k8s/nats.yaml")
	}
	sts, ok := m.statefulSets["nats"]
	if !ok {
		t.Fatal("deploy/k8s has no StatefulSet nats")
	}
	n := int(replicas(sts.Spec.Replicas))
	if n < 3 || n%2 == 0 {
		t.Errorf("StatefulSet nats has %d replicas, want an odd number of at least 3 (a JetStream quorum that survives a node)", n)
	}

	t.Setenv("SERVER_NAME", sts.Name+"-0")
	o, err := server.ProcessConfigFile(filepath.Join(repoRoot(t), "deploy", "nats", "nats.conf"))
	if err != nil {
		t.Fatalf("nats-server rejects deploy/nats/nats.conf: %v", err)
	}
	if o.ServerName != sts.Name+"-0" {
		t.Errorf("server_name %q, want the pod name from SERVER_NAME", o.ServerName)
	}
	if !o.JetStream {
		t.Error("nats.conf does not enable JetStream")
	}
	if o.Port != 4222 || o.HTTPPort != 8222 || o.Cluster.Port != 6222 {
		t.Errorf("ports client %d, monitor %d, cluster %d; want 4222, 8222, 6222", o.Port, o.HTTPPort, o.Cluster.Port)
	}
	if o.Cluster.Name == "" {
		t.Error("nats.conf names no cluster")
	}
	var routes []string
	for _, r := range o.Routes {
		routes = append(routes, r.Host)
	}
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("%s-%d.%s:6222", sts.Name, i, sts.Spec.ServiceName))
	}
	if !slices.Equal(routes, want) {
		t.Errorf("cluster routes %v, want one per pod: %v", routes, want)
	}
	if h, ok := m.services[sts.Spec.ServiceName]; !ok || h.Spec.ClusterIP != corev1.ClusterIPNone || !h.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s: want headless (clusterIP: None) and publishNotReadyAddresses, so that routes resolve while the cluster forms", sts.Spec.ServiceName)
	}

	// The container: pinned image, the config mounted, SERVER_NAME from the
	// pod name, the store and the pid file on writable volumes.
	if len(sts.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("StatefulSet nats has %d containers, want 1", len(sts.Spec.Template.Spec.Containers))
	}
	c := sts.Spec.Template.Spec.Containers[0]
	checkPinned(t, "StatefulSet nats", c.Image)
	if p, err := loadCompose(t, map[string]string{"TREASURE_JWT_SECRET": "x"}); err != nil {
		t.Errorf("load docker-compose.yml: %v", err)
	} else if ci := p.Services["nats"].Image; ci != c.Image {
		t.Errorf("StatefulSet nats runs %s, docker-compose.yml %s: deploy one release", c.Image, ci)
	}
	if !strings.Contains(strings.Join(c.Args, " "), "--config /etc/nats/nats.conf") {
		t.Errorf("nats args %q do not load /etc/nats/nats.conf", c.Args)
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "SERVER_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name"
	}) {
		t.Error("nats: SERVER_NAME does not come from metadata.name")
	}
	mounts := map[string]string{} // mount path → volume name
	for _, vm := range c.VolumeMounts {
		mounts[vm.MountPath] = vm.Name
	}
	if v := volumeByName(sts.Spec.Template.Spec.Volumes, mounts["/etc/nats"]); v == nil || v.ConfigMap == nil || v.ConfigMap.Name != cm.Name {
		t.Errorf("nats: /etc/nats is not the ConfigMap %s", cm.Name)
	}
	if !underMount(o.StoreDir, mounts, func(name string) bool {
		return slices.ContainsFunc(sts.Spec.VolumeClaimTemplates, func(p corev1.PersistentVolumeClaim) bool { return p.Name == name })
	}) {
		t.Errorf("JetStream store_dir %s is not on a volumeClaimTemplate", o.StoreDir)
	}
	if o.PidFile != "" && !underMount(path.Dir(o.PidFile), mounts, func(string) bool { return true }) {
		t.Errorf("pid_file %s is on the read-only root filesystem", o.PidFile)
	}
	for _, p := range sts.Spec.VolumeClaimTemplates {
		if q := p.Spec.Resources.Requests[corev1.ResourceStorage]; q.Value() < o.JetStreamMaxStore {
			t.Errorf("volumeClaimTemplate %s requests %s, below jetstream max_file_store %d bytes", p.Name, q.String(), o.JetStreamMaxStore)
		}
	}
	for what, pr := range map[string]*corev1.Probe{"readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
		if pr == nil || pr.HTTPGet == nil || !strings.HasPrefix(pr.HTTPGet.Path, "/healthz") || !podHasPort(&sts.Spec.Template, pr.HTTPGet.Port, 0) {
			t.Errorf("nats: %s does not GET /healthz on a container port", what)
		} else if slices.IndexFunc(c.Ports, func(p corev1.ContainerPort) bool {
			return (p.Name == pr.HTTPGet.Port.StrVal || p.ContainerPort == pr.HTTPGet.Port.IntVal) && int(p.ContainerPort) == o.HTTPPort
		}) < 0 {
			t.Errorf("nats: %s is not on the monitoring port %d", what, o.HTTPPort)
		}
	}
	if _, ok := m.pdbs["nats"]; !ok {
		t.Error("no PodDisruptionBudget keeps the NATS quorum through drains")
	}
}

func volumeByName(vs []corev1.Volume, name string) *corev1.Volume {
	for i := range vs {
		if vs[i].Name == name {
			return &vs[i]
		}
	}
	return nil
}

// underMount reports whether dir lies under a mount whose volume satisfies ok.
func underMount(dir string, mounts map[string]string, ok func(volume string) bool) bool {
	for mp, vol := range mounts {
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && ok(vol) {
			return true
		}
	}
	return false
}
