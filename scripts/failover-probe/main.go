// failover-probe: kills one process with SIGKILL, then times the first Put that succeeds
// through the given endpoints, with etcd's own Go client (clientv3). Used by
// scripts/bench-availability to measure Synod and etcd the same way.
//
// Built in GOPATH mode on Debian's golang-etcd-server-dev:
//   GO111MODULE=off GOPATH=<dir>:/usr/share/gocode go build -o failover-probe ./scripts/failover-probe
//
// Prints one line: `<milliseconds> <attempts>`. Exits 1 when no Put succeeds within -max.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/clientv3"
)

func main() {
	endpoints := flag.String("endpoints", "", "comma-separated host:port endpoints to write through (not the victim's)")
	victim := flag.Int("kill-pid", 0, "process to kill with SIGKILL once the client is connected")
	attemptTimeout := flag.Duration("attempt-timeout", 2*time.Second, "deadline of one Put")
	limit := flag.Duration("max", 30*time.Second, "give up after this long")
	flag.Parse()
	if *endpoints == "" || *victim <= 0 {
		fmt.Fprintln(os.Stderr, "failover-probe: -endpoints and -kill-pid are required")
		os.Exit(2)
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   strings.Split(*endpoints, ","),
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "failover-probe: connect: %v\n", err)
		os.Exit(1)
	}
	defer client.Close()
	// One Put before the kill: the connection is up and the cluster is writable.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err = client.Put(ctx, "failover-probe/warm", "1")
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "failover-probe: cluster not writable before the kill: %v\n", err)
		os.Exit(1)
	}
	if err := syscall.Kill(*victim, syscall.SIGKILL); err != nil {
		fmt.Fprintf(os.Stderr, "failover-probe: kill %d: %v\n", *victim, err)
		os.Exit(1)
	}
	start := time.Now()
	attempts := 0
	for time.Since(start) < *limit {
		attempts++
		ctx, cancel := context.WithTimeout(context.Background(), *attemptTimeout)
		_, err = client.Put(ctx, "failover-probe/after", fmt.Sprint(attempts))
		cancel()
		if err == nil {
			fmt.Printf("%d %d\n", time.Since(start).Milliseconds(), attempts)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "failover-probe: no Put succeeded within %v (%d attempts, last error: %v)\n", *limit, attempts, err)
	os.Exit(1)
}
