// Package exclusion holds the multi-process tests that prove, from what
// the protected services themselves log, that HA groups never have two
// masters and locks never more holders than their limit, across crashes,
// freezes and partitions. It has no code of its own: its tests run in a
// test binary of their own, within go test's time limit.
package exclusion
