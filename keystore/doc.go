// Package keystore owns Keygate's keys at rest: tenants, orgs, users
// (the user_id keys carry, with the limits all of a user's keys share) and
// key records in a Backend (a bbolt file by default, etcd for many
// replicas in keystore/etcdstore), the SHA-256 hash index the Check path
// looks keys up by, the cache in front of it, the key lifecycle (create,
// import, update, revoke, rotate, regenerate in a slot, delete) and
// prepaid credits (spent from leased slices, refilled on a schedule).
//
// Contracts:
//   - A raw key exists only in the result of CreateKey and RotateKey; the
//     store keeps its SHA-256 and a display prefix, and no error or log line
//     carries either.
//   - Every write invalidates the cache for the keys it touched after it
//     commits and before it returns, so the next lookup sees the change: on
//     this process (bbolt allows one process per file), and with a Shared
//     backend on every replica, which follows all writes and drops what
//     they touch (the backend's Update returns only once they have). See
//     cache for how a lookup racing a write cannot put the old record back.
//   - Last-used times are batched in memory and written every
//     Options.LastUsedFlush and on Close: a crash loses at most that much
//     of them and nothing else. Credits are spent from slices reserved in
//     a committed write before any of them is spent, so the total allowed
//     never exceeds the balance, across replicas and crashes; a crash
//     strands at most the unspent part of one slice per metered key per
//     process (see ledger). A due refill is applied in the transaction
//     that reads the balance, once per period. Every other write is a
//     committed, durable transaction when the call returns.
//   - Write closures may run more than once (Backend.Update), so they change
//     nothing but their transaction; the ledger and the cache follow after
//     the commit.
//   - Every operation runs under its caller's context, bounded further by
//     10 s (admin reads and writes) or by Options.LookupTimeout (the Check
//     path); background work (flushes, following a shared backend) has its
//     own. Cancelling the context ends an etcd read or write: a write
//     cancelled before its commit writes nothing, and its error wraps
//     ctx.Err(); one cancelled during the commit may have landed, as with
//     any failed commit; one cancelled while the other replicas confirm it
//     has committed, and fails with ErrUnconfirmed. bbolt does not look at
//     the context: a write there, once called, completes.
//   - Lookups fail with an error, never with "not found", when the backend
//     cannot be read, so the decision core fails closed.
//   - A bbolt file deleted, moved or replaced under the running server is
//     not the file a restart will read: writes (flushes included) fail with
//     ErrFileReplaced, an ErrUnavailable, rather than be acknowledged and
//     lost, and Ping fails; lookups go on answering from the file the server
//     holds, which has every write it acknowledged. See boltBackend.
package keystore
