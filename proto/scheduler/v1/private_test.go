package schedulerv1

import (
	"strings"
	"testing"
)

func TestPrivateTaskID(t *testing.T) {
	src := &TaskSource{Registry: "registry.example.com", Repository: "team/app", DiffId: "sha256:" + strings.Repeat("a", 64)}
	other := &TaskSource{Registry: "registry.example.com", Repository: "team/other", DiffId: src.DiffId}
	blob := &TaskSource{Registry: src.Registry, Repository: src.Repository, DiffId: src.DiffId, BlobDigest: "sha256:" + strings.Repeat("b", 64), RandomAccess: true}
	ids := map[string]string{}
	for name, s := range map[string]*TaskSource{"layer": src, "other repository": other, "blob": blob} {
		id := PrivateTaskID(s)
		if len(id) != len("sha256:")+64 || id == StreamTaskID(s) {
			t.Errorf("%s: private task id %q", name, id)
		}
		for n, seen := range ids {
			if seen == id {
				t.Errorf("%s and %s share private task id %s", name, n, id)
			}
		}
		ids[name] = id
	}
	if PrivateTaskID(src) != PrivateTaskID(&TaskSource{Registry: src.Registry, Repository: src.Repository, DiffId: src.DiffId, BlobSize: 7}) {
		t.Error("the private task id depends on more than the registry, repository and stream")
	}
}
