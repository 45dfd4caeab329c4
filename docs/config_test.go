// Package docs holds the project's documentation; its test keeps config.md in step with the
// daemons' configuration types and defaults.
package docs

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"

	"github.com/p2pimage/p2p-snapshotter/scheduler"
	"github.com/p2pimage/p2p-snapshotter/snapshotter"
)

// TestConfigDocMatchesDefaults: config.md lists every key of each daemon's configuration,
// set to its default, and nothing else.
func TestConfigDocMatchesDefaults(t *testing.T) {
	for _, tc := range []struct {
		heading  string
		load     func(path string) (any, error)
		defaults any
	}{
		{"## p2p-snapshotter", func(p string) (any, error) { return snapshotter.LoadConfig(p) }, snapshotter.DefaultConfig()},
		{"## p2p-scheduler", func(p string) (any, error) { return scheduler.LoadConfig(p) }, scheduler.DefaultConfig()},
	} {
		t.Run(strings.TrimPrefix(tc.heading, "## "), func(t *testing.T) {
			doc := docBlock(t, "config.md", tc.heading)
			if tc.heading == "## p2p-snapshotter" && doc != string(snapshotter.DefaultTOML()) {
				t.Errorf("the block differs from snapshotter/default.toml (p2p-snapshotter config default); keep them equal")
			}
			path := filepath.Join(t.TempDir(), "config.toml")
			if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := tc.load(path) // unknown keys and bad values are errors
			if err != nil {
				t.Fatalf("the documented configuration does not load: %v", err)
			}
			if g, w := normalize(got), normalize(tc.defaults); !reflect.DeepEqual(g, w) {
				t.Errorf("the documented values differ from the defaults:\ndoc      %+v\ndefaults %+v", g, w)
			}
			if got, want := docKeys(t, doc), tomlKeys(reflect.TypeOf(tc.defaults), ""); !slices.Equal(got, want) {
				t.Errorf("documented keys %v;\nwant every key, %v", got, want)
			}
		})
	}
}

// docBlock returns the first TOML block after heading in the Markdown file at path.
func docBlock(t *testing.T, path, heading string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("%s has no heading %q", path, heading)
	}
	m := regexp.MustCompile("(?s)```toml\n(.*?)```").FindStringSubmatch(doc[i:])
	if m == nil {
		t.Fatalf("%s has no TOML block after %q", path, heading)
	}
	return m[1]
}

// tomlKeys returns the dotted paths of the keys typ reads: the leaves of its tables, and
// maps as themselves, sorted.
func tomlKeys(typ reflect.Type, prefix string) []string {
	var out []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type.NumField() > 0 && f.Type.Field(0).Tag.Get("toml") != "" {
			out = append(out, tomlKeys(f.Type, prefix+name+".")...)
			continue
		}
		out = append(out, prefix+name)
	}
	slices.Sort(out)
	return out
}

// docKeys returns the dotted paths of the keys a TOML document sets, empty tables as
// themselves, sorted.
func docKeys(t *testing.T, doc string) []string {
	t.Helper()
	var m map[string]any
	if err := toml.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(m map[string]any, prefix string)
	walk = func(m map[string]any, prefix string) {
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok && len(sub) > 0 {
				walk(sub, prefix+k+".")
				continue
			}
			out = append(out, prefix+k)
		}
	}
	walk(m, "")
	slices.Sort(out)
	return out
}

// normalize returns a copy of v with empty slices and maps made nil: the document writes
// `[]` and `[table]` where the defaults leave them nil, the same configuration.
func normalize(v any) any {
	rv := reflect.New(reflect.TypeOf(v)).Elem()
	rv.Set(reflect.ValueOf(v))
	var walk func(reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Struct:
			for i := range v.NumField() {
				if v.Field(i).CanSet() {
					walk(v.Field(i))
				}
			}
		case reflect.Slice, reflect.Map:
			if v.Len() == 0 && !v.IsNil() {
				v.Set(reflect.Zero(v.Type()))
			}
		}
	}
	walk(rv)
	return rv.Interface()
}
