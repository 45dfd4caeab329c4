package ingest

import (
	"errors"
	"testing"
)

func TestCheckMediaType(t *testing.T) {
	for _, tt := range []struct {
		mt string
		ok bool
	}{
		{"", true},
		{"application/vnd.oci.image.layer.v1.tar", true},
		{"application/vnd.oci.image.layer.v1.tar+gzip", true},
		{"application/vnd.oci.image.layer.v1.tar+zstd", true},
		{"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", true},
		{"application/vnd.docker.image.rootfs.diff.tar.gzip", true},
		{"application/vnd.docker.image.rootfs.diff.tar", true},
		{"application/vnd.docker.image.rootfs.diff.tar.zstd", true},
		{"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", true},
		{"Application/VND.OCI.Image.Layer.v1.tar+gzip; charset=binary", true},
		{"application/vnd.oci.image.layer.v1.tar+gzip+encrypted", false},
		{"application/vnd.oci.image.layer.v1.tar+bzip2", false},
		{"application/vnd.cncf.helm.chart.content.v1.tar+gzip", false},
		{"application/octet-stream", false},
	} {
		t.Run(tt.mt, func(t *testing.T) {
			err := CheckMediaType(tt.mt)
			if got := err == nil; got != tt.ok {
				t.Fatalf("got %v; want readable: %v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrUnsupportedMediaType) {
				t.Fatalf("got %v; want it to wrap ErrUnsupportedMediaType", err)
			}
		})
	}
}
