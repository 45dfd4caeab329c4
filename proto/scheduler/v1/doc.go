// Package schedulerv1 is version 1 of the scheduler's gRPC API, service
// p2pimage.scheduler.v1.Scheduler: hosts announce themselves and their live state, peers
// register for tasks and report the blocks they hold, and the scheduler tells each peer which
// parents to fetch from, or to read the registry itself.
//
// The API and its terms (host, task, block, peer, parent, seed), units, error codes and the
// bit order of block bitmaps are documented once, in scheduler.proto; the Go in
// scheduler.pb.go and scheduler_grpc.pb.go is generated from it by `make proto` and must not
// be edited. Bitmap, in bitmap.go, is the one hand-written helper: the set of block indexes
// of the *_bitmap fields.
//
// Servers also register the standard health service from google.golang.org/grpc/health,
// reporting on the service name Scheduler_ServiceDesc.ServiceName and on "".
package schedulerv1
