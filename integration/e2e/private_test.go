package e2e

import (
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/p2pimage/p2p-snapshotter/integration/containerdenv"
)

// TestPrivateRegistry pulls from a registry that requires a bearer token issued for
// credentials (docker config.json, as `nerdctl login` writes it). containerd authenticates
// through the mirror, which passes the challenge through, and the daemon authenticates with
// the same credentials to seed the layers: they are mounted lazily and read right.
// containerd looks credentials up by the host it sends a request to, so the user's
// credentials are given for the mirror's address too (docs/containerd.md).
func TestPrivateRegistry(t *testing.T) {
	containerdenv.RequireRoot(t)
	reg, auth, err := containerdenv.StartTokenAuthRegistry(io.Discard, "alice", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	mirror := freeAddress(t)
	dockerConfig, err := auth.DockerConfig(t.TempDir(), reg.Host, mirror)
	if err != nil {
		t.Fatal(err)
	}
	env := setupMirrorFor(t, reg, mirror, containerdenv.Options{Env: []string{"DOCKER_CONFIG=" + dockerConfig}}, true)
	img := containerdenv.PushTestImage(t, reg, "team/private:v1")
	auth.Enable()

	resp, err := http.Get("http://" + reg.Host + "/v2/team/private/manifests/v1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("an anonymous pull got %s: the registry is not private", resp.Status)
	}

	checkFiles(t, env, "p2p", img)

	if lazy := len(lazyLayers(context.Background(), t, env.SnapshotterClient(t))); lazy != len(img.Layers) {
		t.Errorf("%d of %d layers mounted lazily from the private registry", lazy, len(img.Layers))
	}
	if auth.Issued() < 2 {
		t.Errorf("%d tokens issued; want containerd's and the daemon's", auth.Issued())
	}
}
