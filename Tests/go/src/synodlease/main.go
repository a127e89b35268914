// synodlease drives Synod with etcd's own clientv3 concurrency recipes, unchanged:
// Mutex (two contenders; the second waits until the first unlocks, or until the first
// one's session lease expires) and Election (two candidates; the second waits until the
// first resigns). It prints one "ok ..." line per check and exits 1 on the first failure.
//
// Usage: synodlease <endpoint-a> <endpoint-b>   (two different replicas, so that one
// contender's keep-alives go through a follower)
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
)

func fail(format string, args ...interface{}) {
	fmt.Printf("FAIL "+format+"\n", args...)
	os.Exit(1)
}

func client(endpoint string) *clientv3.Client {
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		fail("connect %s: %v", endpoint, err)
	}
	return c
}

func session(c *clientv3.Client, ttl int) *concurrency.Session {
	s, err := concurrency.NewSession(c, concurrency.WithTTL(ttl))
	if err != nil {
		fail("session: %v", err)
	}
	return s
}

func timeout(d time.Duration) context.Context {
	ctx, _ := context.WithTimeout(context.Background(), d)
	return ctx
}

// lockAsync starts m.Lock and reports its outcome on the returned channel.
func lockAsync(m *concurrency.Mutex) <-chan error {
	done := make(chan error, 1)
	go func() { done <- m.Lock(timeout(30 * time.Second)) }()
	return done
}

func mustWait(what string, done <-chan error, within time.Duration) {
	select {
	case err := <-done:
		if err != nil {
			fail("%s: %v", what, err)
		}
	case <-time.After(within):
		fail("%s: still waiting after %v", what, within)
	}
}

func mustBlock(what string, done <-chan error, during time.Duration) {
	select {
	case err := <-done:
		fail("%s returned (err %v) while the first holder still held it", what, err)
	case <-time.After(during):
	}
}

func lockRevision(c *clientv3.Client, key string) int64 {
	resp, err := c.Get(timeout(5*time.Second), key)
	if err != nil || len(resp.Kvs) != 1 {
		fail("get lock key %s: %v %v", key, err, resp)
	}
	return resp.Kvs[0].CreateRevision
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: synodlease <endpoint-a> <endpoint-b>")
	}
	a, b := client(os.Args[1]), client(os.Args[2])
	defer a.Close()
	defer b.Close()

	// Mutex: the second contender waits until the first unlocks.
	s1, s2 := session(a, 5), session(b, 5)
	m1, m2 := concurrency.NewMutex(s1, "/synod-test/lock"), concurrency.NewMutex(s2, "/synod-test/lock")
	if err := m1.Lock(timeout(10 * time.Second)); err != nil {
		fail("first lock: %v", err)
	}
	rev1 := lockRevision(a, m1.Key())
	if resp, err := a.Get(timeout(5*time.Second), m1.Key()); err != nil || resp.Kvs[0].Lease != int64(s1.Lease()) {
		fail("lock key %s is not on the session's lease %x: %v %v", m1.Key(), s1.Lease(), err, resp)
	}
	second := lockAsync(m2)
	mustBlock("second Lock", second, 2*time.Second)
	if err := m1.Unlock(timeout(5 * time.Second)); err != nil {
		fail("unlock: %v", err)
	}
	mustWait("second Lock after unlock", second, 10*time.Second)
	rev2 := lockRevision(b, m2.Key())
	if rev2 <= rev1 {
		fail("fencing token went back: %d then %d", rev1, rev2)
	}
	fmt.Printf("ok mutex handover rev %d -> %d\n", rev1, rev2)
	if err := m2.Unlock(timeout(5 * time.Second)); err != nil {
		fail("unlock 2: %v", err)
	}

	// Mutex: a holder whose session stops keeping its lease alive loses the lock when the
	// lease expires (TTL 2 s), and the next holder's fencing token is higher.
	s3, s4 := session(a, 2), session(b, 2)
	m3, m4 := concurrency.NewMutex(s3, "/synod-test/lock"), concurrency.NewMutex(s4, "/synod-test/lock")
	if err := m3.Lock(timeout(10 * time.Second)); err != nil {
		fail("lock 3: %v", err)
	}
	rev3 := lockRevision(a, m3.Key())
	fourth := lockAsync(m4)
	mustBlock("Lock behind a live session", fourth, 1500*time.Millisecond)
	start := time.Now()
	s3.Orphan() // stops the keep-alives, keeps the lease: only expiry can free the lock
	mustWait("Lock after the holder's lease expired", fourth, 10*time.Second)
	rev4 := lockRevision(b, m4.Key())
	if rev4 <= rev3 {
		fail("fencing token after expiry went back: %d then %d", rev3, rev4)
	}
	if _, err := b.Get(timeout(5*time.Second), m3.Key()); err != nil {
		fail("get: %v", err)
	}
	fmt.Printf("ok mutex after expiry rev %d -> %d in %v\n", rev3, rev4, time.Since(start).Round(100*time.Millisecond))
	m4.Unlock(timeout(5 * time.Second))

	// Election: the second candidate waits until the first resigns.
	e1, e2 := concurrency.NewElection(s1, "/synod-test/election"), concurrency.NewElection(s2, "/synod-test/election")
	if err := e1.Campaign(timeout(10*time.Second), "alpha"); err != nil {
		fail("campaign 1: %v", err)
	}
	campaign := make(chan error, 1)
	go func() { campaign <- e2.Campaign(timeout(30*time.Second), "beta") }()
	mustBlock("second Campaign", campaign, 2*time.Second)
	leader, err := e2.Leader(timeout(5 * time.Second))
	if err != nil || len(leader.Kvs) == 0 || string(leader.Kvs[0].Value) != "alpha" {
		fail("leader while alpha leads: %v %v", err, leader)
	}
	if err := e1.Proclaim(timeout(5*time.Second), "alpha-2"); err != nil {
		fail("proclaim: %v", err)
	}
	if err := e1.Resign(timeout(5 * time.Second)); err != nil {
		fail("resign: %v", err)
	}
	mustWait("second Campaign after resign", campaign, 10*time.Second)
	leader, err = e1.Leader(timeout(5 * time.Second))
	if err != nil || len(leader.Kvs) == 0 || string(leader.Kvs[0].Value) != "beta" {
		fail("leader after resign: %v %v", err, leader)
	}
	fmt.Printf("ok election alpha -> beta\n")
	e2.Resign(timeout(5 * time.Second))

	// Closing a session revokes its lease at once.
	id := s1.Lease()
	if err := s1.Close(); err != nil {
		fail("close session: %v", err)
	}
	ttl, err := a.TimeToLive(timeout(5*time.Second), id)
	if err != nil || ttl.TTL != -1 {
		fail("time-to-live of a revoked lease: %v %v", err, ttl)
	}
	s2.Close()
	fmt.Printf("ok done\n")
}
