// Package proto holds the versioned protobuf APIs of the project and their generated Go; it
// has no code of its own. Today there is one API: the scheduler's, in scheduler/v1 (proto
// package p2pimage.scheduler.v1, Go package schedulerv1), between the node daemons and
// p2p-scheduler.
//
// # Layout
//
// proto/ is the import root: proto/scheduler/v1/scheduler.proto is imported, and named in
// descriptors, as "scheduler/v1/scheduler.proto". Each API version is its own directory and
// Go package (scheduler/v1 → schedulerv1); the generated scheduler.pb.go and
// scheduler_grpc.pb.go sit beside the .proto, and may sit beside small hand-written helpers
// of the wire format (schedulerv1.Bitmap).
//
// # Versioning
//
// A published version changes only additively: new fields, messages, enum values and RPCs,
// all optional to understand, so old clients and servers keep working with new ones. Field
// numbers and names are never reused or renumbered; a removed field is marked `reserved`.
// A change that would break an existing peer (removing or retyping a field, changing its
// meaning or units, renaming an RPC) goes into a new version, v2, beside v1, and servers
// serve both until every client moved.
//
// # Regenerating
//
// The generated Go is committed, so building needs no protoc. After editing a .proto run
//
//	make proto
//
// which installs the pinned protoc-gen-go and protoc-gen-go-grpc (versions in the Makefile;
// protoc-gen-go always equals google.golang.org/protobuf in go.mod) into bin/tools and runs
// protoc (Debian: apt-get install protobuf-compiler). `make proto-check` regenerates into a
// temporary directory and fails if the committed files differ; `make test` runs it when
// protoc is installed, and CI always does.
package proto
