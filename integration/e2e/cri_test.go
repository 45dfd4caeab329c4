package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/p2pimage/p2p-snapshotter/integration/containerdenv"
)

// criConfig is the containerd configuration of docs/containerd.md for Kubernetes, with the
// sandbox image and hosts directory of the test. With transfer, CRI pulls through the
// transfer service (containerd >= 2.1): disable_snapshot_annotations = false would turn it
// off, so the transfer service's unpack_config names the snapshotter instead, and the
// proxy plugin's enable_remote_snapshot_annotations (which containerdenv always sets) has
// it pass the layers' labels.
func criConfig(sandbox string, transfer bool) string {
	cfg := `[plugins."io.containerd.cri.v1.images"]
  snapshotter = "p2p"
`
	if !transfer {
		cfg += `  disable_snapshot_annotations = false
`
	}
	cfg += `  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "` + sandbox + `"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{{.HostsDir}}"

[plugins."io.containerd.transfer.v1.local"]
  config_path = "{{.HostsDir}}"
`
	if transfer {
		cfg += `  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = "linux/amd64"
    snapshotter = "p2p"
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = "linux/amd64"
    snapshotter = "overlayfs"
`
	}
	// Processes here may not lower their OOM score, which CRI does for the pod sandbox.
	cfg += `
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
`
	return cfg
}

// TestCRIPodFromLabels runs a pod through containerd's CRI plugin, as the kubelet does, with
// the CRI gRPC API: pull the image, run the pod sandbox, create and start a container, and
// read every file of the image in it. The daemon runs no registry mirror and containerd
// reaches the registry directly, so the only way the daemon can learn where each layer comes
// from is the containerd.io/snapshot/cri.* labels of the Prepare calls: every layer of the
// image and of the sandbox image must be mounted lazily from them. Twice: with CRI's own
// pull (disable_snapshot_annotations = false), and through the transfer service.
func TestCRIPodFromLabels(t *testing.T) {
	containerdenv.RequireRoot(t)
	for _, mode := range []struct {
		name     string
		transfer bool
	}{{"CRI pull", false}, {"transfer service", true}} {
		t.Run(mode.name, func(t *testing.T) {
			reg := startRegistry(t)
			layers, err := containerdenv.TestImageLayers()
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
			defer cancel()
			pause, err := reg.PushCommand(ctx, "test/pause:v1", []string{"/bin/sleep", "86400"}, layers[0])
			if err != nil {
				t.Fatal(err)
			}
			img, err := reg.Push(ctx, "test/cri:v1", layers...)
			if err != nil {
				t.Fatal(err)
			}
			env := containerdenv.New(t, containerdenv.Options{
				CRI:              true,
				ContainerdConfig: criConfig(pause.Ref, mode.transfer),
				// No mirror: what the daemon knows of a layer comes from its labels.
				SnapshotterArgs: []string{"--mirror-address=", "--insecure-registry", reg.Host},
			})
			if err := env.SetHostsTOML(reg.Host, fmt.Sprintf("server = %q\n", "http://"+reg.Host)); err != nil {
				t.Fatal(err)
			}
			conn, err := grpc.NewClient("unix://"+env.ContainerdAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() }) // after the pod's cleanup, registered later
			cri := runtime.NewRuntimeServiceClient(conn)
			images := runtime.NewImageServiceClient(conn)

			logDir := filepath.Join(env.Dir, "pods")
			if err := os.MkdirAll(logDir, 0o755); err != nil {
				t.Fatal(err)
			}
			podConfig := &runtime.PodSandboxConfig{
				Metadata:     &runtime.PodSandboxMetadata{Name: "lazy", Namespace: "e2e", Uid: "uid-" + strings.ReplaceAll(mode.name, " ", "-"), Attempt: 0},
				LogDirectory: logDir,
				Linux: &runtime.LinuxPodSandboxConfig{SecurityContext: &runtime.LinuxSandboxSecurityContext{
					NamespaceOptions: &runtime.NamespaceOption{Network: runtime.NamespaceMode_NODE}, // no CNI here
				}},
			}
			start := time.Now()
			if _, err := images.PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: img.Ref}, SandboxConfig: podConfig}); err != nil {
				env.DumpLogs(t, 40)
				t.Fatalf("pull %s: %v", img.Ref, err)
			}
			pulled := time.Since(start)
			pod, err := cri.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: podConfig})
			if err != nil {
				env.DumpLogs(t, 40)
				t.Fatalf("run the pod sandbox: %v", err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if _, err := cri.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: pod.PodSandboxId}); err != nil {
					t.Errorf("stop the pod sandbox: %v", err)
				}
				if _, err := cri.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: pod.PodSandboxId}); err != nil {
					t.Errorf("remove the pod sandbox: %v", err)
				}
			})
			created, err := cri.CreateContainer(ctx, &runtime.CreateContainerRequest{
				PodSandboxId: pod.PodSandboxId,
				Config: &runtime.ContainerConfig{
					Metadata: &runtime.ContainerMetadata{Name: "reader"},
					Image:    &runtime.ImageSpec{Image: img.Ref},
					Command:  []string{"/bin/sleep", "3600"},
					LogPath:  "reader.log",
				},
				SandboxConfig: podConfig,
			})
			if err != nil {
				env.DumpLogs(t, 40)
				t.Fatalf("create the container: %v", err)
			}
			if _, err := cri.StartContainer(ctx, &runtime.StartContainerRequest{ContainerId: created.ContainerId}); err != nil {
				env.DumpLogs(t, 40)
				t.Fatalf("start the container: %v", err)
			}
			t.Logf("%s: image pulled in %s, pod and container started %s later", mode.name, pulled.Round(time.Millisecond), (time.Since(start) - pulled).Round(time.Millisecond))

			paths := slices.Sorted(maps.Keys(img.Files))
			out, err := cri.ExecSync(ctx, &runtime.ExecSyncRequest{ContainerId: created.ContainerId, Cmd: append([]string{"sha256sum"}, paths...), Timeout: 60})
			if err != nil || out.ExitCode != 0 {
				t.Fatalf("read the files in the container: %v, exit %d: %s", err, out.GetExitCode(), out.GetStderr())
			}
			got := parseSums(string(out.Stdout))
			for _, p := range paths {
				if got[p] != img.Files[p] {
					t.Errorf("%s in the container: sha256 %q; want %q", p, got[p], img.Files[p])
				}
			}

			// Every layer of both images was mounted lazily, from its labels.
			want := map[string]bool{}
			for _, l := range append(slices.Clone(img.Layers), pause.Layers...) {
				want[l.DiffID] = true
			}
			lazy := lazyLayers(ctx, t, env.SnapshotterClient(t))
			for d := range want {
				if lazy[d] == 0 {
					t.Errorf("layer %s was not mounted lazily", d)
				}
			}
		})
	}
}
