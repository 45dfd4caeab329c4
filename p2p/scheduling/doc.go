// Package scheduling is this node's side of the scheduler: it announces the host and keeps
// it alive, registers the node on tasks, asks for candidate parents, reports progress, and,
// on a seed host, takes the layers the scheduler sends it to seed.
//
// Several schedulers share the work. Each task is routed to one of them by a consistent-hash
// ring over the scheduler list (Ring; names that resolve to several addresses count as
// several). A scheduler that fails a call is skipped for a cooldown and the next one on the
// ring takes the task: the node registers there again and reports what it holds, so the new
// scheduler rebuilds the task's state from its peers. After the cooldown the scheduler is
// tried again and kept on success; when every scheduler failed, the list is resolved again.
// No lock is held across a network call.
package scheduling
