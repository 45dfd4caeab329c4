// Package scheduler will hold the control plane: peer and task registration, parent selection
// from live peer state, FaaSNet-style balanced trees and multi-parent DAGs per task, seed
// triggering, failure handling, and the consistent-hash ring by which several schedulers share
// the tasks. It depends on package proto only.
//
// Nothing is implemented here yet; the design is in docs/architecture.md.
package scheduler
