// Package server serves a scheduler.Scheduler over gRPC as the service
// p2pimage.scheduler.v1.Scheduler, beside the standard health service
// (google.golang.org/grpc/health) reporting SERVING for "" and for the scheduler's service
// name. It is a thin layer: each RPC calls the core's method of the same name, and the core's
// errdefs-classified errors become status codes here, once (NotFound, InvalidArgument,
// FailedPrecondition, Unavailable; Internal for anything unclassified).
//
// Streams. SyncProgress reads the first report in the handler, opens the peer's
// scheduler.Progress, then receives the rest in a goroutine that applies each report, while
// the handler sends the commands Progress.Next returns: the core never waits on the network.
// The stream ends when the peer closes its side (OK), when the core ends it (OK after
// LeaveTask, NOT_FOUND when the peer or its host was removed, UNAVAILABLE when the scheduler
// stops), or on a report the core refuses (its code). WatchHost sends what Watch.Next
// returns until the host goes away.
//
// Goroutines. Every receive goroutine is counted by the Server and ends with its stream;
// Wait waits for them after the grpc.Server stopped. Serve runs a whole server on a listener
// until its context ends; NewEmbedded runs one in-process, over an in-memory connection, for a
// node daemon with no scheduler configured.
package server
