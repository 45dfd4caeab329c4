// Package peer serves this node's blocks to other peers and asks other peers for theirs,
// over the framed protocol of package wire.
//
// Server answers block and digest requests from a Holder (the node's record of the tasks it
// holds or is receiving). A request for a block the node is itself still receiving waits
// for it, up to the wait the client allows, and is answered the moment it lands, so blocks
// stream down a tree of peers like a pipeline; the wait holds no upload slot. At most Slots
// answers are sent at once; a request that finds every slot sending is answered "busy" at
// once, so the client asks another parent. Every answer
// carries the server's live state: free upload slots, measured upload rate and load.
//
// Client keeps a small pool of connections per peer, one request in flight on each.
package peer
