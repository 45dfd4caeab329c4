package docs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/snapshotter"
)

// manifests decodes every object of the YAML files in dir with the Kubernetes API types,
// strictly: a field the types do not have is an error.
type manifests struct {
	daemonSets  map[string]*appsv1.DaemonSet
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
}

func decodeManifests(t *testing.T, dir string) manifests {
	t.Helper()
	m := manifests{map[string]*appsv1.DaemonSet{}, map[string]*appsv1.Deployment{}, map[string]*corev1.Service{}, map[string]*corev1.ConfigMap{}}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range strings.Split(string(b), "\n---\n") {
			var meta struct{ Kind string }
			if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
				t.Fatalf("%s #%d: %v", f, i, err)
			}
			var obj interface{ GetName() string }
			switch meta.Kind {
			case "DaemonSet":
				obj = new(appsv1.DaemonSet)
			case "Deployment":
				obj = new(appsv1.Deployment)
			case "Service":
				obj = new(corev1.Service)
			case "ConfigMap":
				obj = new(corev1.ConfigMap)
			case "Namespace":
				obj = new(corev1.Namespace)
			default:
				t.Fatalf("%s #%d: kind %q", f, i, meta.Kind)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Fatalf("%s #%d (%s): %v", f, i, meta.Kind, err)
			}
			switch o := obj.(type) {
			case *appsv1.DaemonSet:
				m.daemonSets[o.Name] = o
			case *appsv1.Deployment:
				m.deployments[o.Name] = o
			case *corev1.Service:
				m.services[o.Name] = o
			case *corev1.ConfigMap:
				m.configMaps[o.Name] = o
			}
		}
	}
	return m
}

// TestKubernetesManifests decodes the manifests with the Kubernetes API types and checks
// what a node daemon and the schedulers need of them.
func TestKubernetesManifests(t *testing.T) {
	m := decodeManifests(t, "deploy/kubernetes")

	svc, dep := m.services["p2p-scheduler"], m.deployments["p2p-scheduler"]
	if svc == nil || dep == nil {
		t.Fatal("want a p2p-scheduler Service and Deployment")
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("the scheduler Service has clusterIP %q; want a headless one, whose name resolves to every scheduler", svc.Spec.ClusterIP)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
		t.Error("want at least 2 schedulers")
	}
	sc := dep.Spec.Template.Spec.Containers[0]
	if !slices.Contains(sc.Args, "--address=0.0.0.0:65003") || sc.ReadinessProbe == nil || sc.ReadinessProbe.GRPC == nil ||
		sc.ReadinessProbe.GRPC.Service == nil || *sc.ReadinessProbe.GRPC.Service != schedulerv1.Scheduler_ServiceDesc.ServiceName {
		t.Errorf("the scheduler container: args %v, readiness %+v; want it on :65003, ready by the gRPC health of %s", sc.Args, sc.ReadinessProbe, schedulerv1.Scheduler_ServiceDesc.ServiceName)
	}
	for k, v := range svc.Spec.Selector {
		if dep.Spec.Template.Labels[k] != v {
			t.Errorf("the Service selects %s=%s; the scheduler pods do not have it", k, v)
		}
	}

	ds, cm := m.daemonSets["p2p-snapshotter"], m.configMaps["p2p-snapshotter"]
	if ds == nil || cm == nil {
		t.Fatal("want a p2p-snapshotter DaemonSet and ConfigMap")
	}
	pod := ds.Spec.Template.Spec
	if !pod.HostNetwork {
		t.Error("the node daemon must be on the host network: its block service is the node's")
	}
	c := pod.Containers[0]
	if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
		t.Error("the node daemon must be privileged: it mounts FUSE filesystems for containerd")
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.MountPath] = vm
	}
	if fuse := volumes[mounts["/dev/fuse"].Name]; fuse.HostPath == nil || fuse.HostPath.Path != "/dev/fuse" || *fuse.HostPath.Type != corev1.HostPathCharDev {
		t.Error("want /dev/fuse from the host, a character device")
	}

	// The daemon's configuration loads, and everything it names agrees with the rest.
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(cm.Data["config.toml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := snapshotter.ReadConfig(path)
	if err != nil {
		t.Fatalf("the ConfigMap's config.toml: %v", err)
	}
	cfg.P2P.AdvertiseAddress = "10.0.0.7:65002" // what --advertise-address=$(HOST_IP):65002 gives
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the ConfigMap's config.toml with the DaemonSet's flags: %v", err)
	}
	root := mounts[cfg.Root]
	if root.MountPropagation == nil || *root.MountPropagation != corev1.MountPropagationBidirectional || volumes[root.Name].HostPath == nil {
		t.Errorf("root %s: want it from the host with bidirectional propagation, so containerd sees the FUSE mounts", cfg.Root)
	}
	if _, ok := mounts[filepath.Dir(cfg.Address)]; !ok {
		t.Errorf("the socket %s is in no directory shared with the host", cfg.Address)
	}
	wantSched := fmt.Sprintf("%s.%s.svc.cluster.local:%d", svc.Name, svc.Namespace, svc.Spec.Ports[0].Port)
	if len(cfg.P2P.Schedulers) != 1 || cfg.P2P.Schedulers[0] != wantSched {
		t.Errorf("p2p.schedulers = %v; want the headless Service's name, %s", cfg.P2P.Schedulers, wantSched)
	}
	if !slices.Contains(c.Args, "--advertise-address=$(HOST_IP):65002") || !strings.HasSuffix(cfg.P2P.Address, ":65002") {
		t.Errorf("args %v, p2p.address %s: want the block service on :65002, advertised at the node's IP", c.Args, cfg.P2P.Address)
	}
	var ctr struct {
		ProxyPlugins map[string]struct {
			Type, Address string
		} `toml:"proxy_plugins"`
	}
	if err := toml.Unmarshal([]byte(cm.Data["containerd-p2p.toml"]), &ctr); err != nil {
		t.Fatalf("the containerd configuration: %v", err)
	}
	if p := ctr.ProxyPlugins["p2p"]; p.Type != "snapshot" || p.Address != cfg.Address {
		t.Errorf("containerd's proxy_plugins.p2p = %+v; want a snapshot plugin at %s", p, cfg.Address)
	}
	if !strings.Contains(cm.Data["hosts.toml"], "http://"+cfg.Mirror.Address) {
		t.Errorf("hosts.toml does not name the mirror at %s", cfg.Mirror.Address)
	}
}

// unit reads a systemd unit file into section → key → values.
func unit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: %q is not key=value in a section", path, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

// TestSystemdUnits checks the units start the daemons with their configuration files, and
// that stopping the node daemon leaves its FUSE manager serving running containers.
func TestSystemdUnits(t *testing.T) {
	sn := unit(t, "deploy/systemd/p2p-snapshotter.service")
	if got := sn["Service"]["ExecStart"]; len(got) != 1 || got[0] != "/usr/local/bin/p2p-snapshotter --config /etc/p2p-snapshotter/config.toml" {
		t.Errorf("p2p-snapshotter ExecStart = %v", got)
	}
	if got := sn["Service"]["KillMode"]; len(got) != 1 || got[0] != "process" {
		t.Errorf("p2p-snapshotter KillMode = %v; want process, so a restart keeps the FUSE manager", got)
	}
	if got := sn["Unit"]["Before"]; len(got) != 1 || got[0] != "containerd.service" {
		t.Errorf("p2p-snapshotter Before = %v; want containerd.service", got)
	}
	sc := unit(t, "deploy/systemd/p2p-scheduler.service")
	if got := sc["Service"]["ExecStart"]; len(got) != 1 || got[0] != "/usr/local/bin/p2p-scheduler --config /etc/p2p-scheduler/config.toml" {
		t.Errorf("p2p-scheduler ExecStart = %v", got)
	}
	for name, u := range map[string]map[string]map[string][]string{"p2p-snapshotter": sn, "p2p-scheduler": sc} {
		if got := u["Install"]["WantedBy"]; len(got) != 1 || got[0] != "multi-user.target" {
			t.Errorf("%s WantedBy = %v", name, got)
		}
	}
}
