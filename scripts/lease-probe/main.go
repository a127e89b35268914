// lease-probe: lease keep-alive throughput, as etcd's own `benchmark lease-keepalive` measures
// it: S LeaseKeepAlive streams (etcd's v3 gRPC API through clientv3's connections, spread over
// the endpoints), each with its own lease, each sending one keep-alive and waiting for its
// answer, again and again, for -duration. Used by scripts/bench-features for Synod and etcd.
//
// Built in GOPATH mode on Debian's golang-etcd-server-dev:
//   GO111MODULE=off GOPATH=<dir>:/usr/share/gocode go build -o lease-probe ./scripts/lease-probe
//
// Prints one JSON line: keep-alives answered, per second, latency p50/p99 (µs), errors.
// Exits 1 when no lease can be granted or a keep-alive answers TTL 0 (the lease is gone).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/clientv3"
	pb "go.etcd.io/etcd/etcdserver/etcdserverpb"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "lease-probe: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	endpoints := flag.String("endpoints", "", "comma-separated host:port endpoints")
	streams := flag.Int("streams", 16, "keep-alive streams (each with its own lease), spread over the endpoints")
	duration := flag.Duration("duration", 10*time.Second, "how long to send keep-alives")
	flag.Parse()
	if *endpoints == "" || *streams < 1 || *streams > 4096 {
		fail("-endpoints is required; -streams in 1...4096")
	}
	list := strings.Split(*endpoints, ",")
	clients := make([]*clientv3.Client, len(list))
	for i, endpoint := range list {
		client, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
		if err != nil {
			fail("connect to %s: %v", endpoint, err)
		}
		defer client.Close()
		clients[i] = client
	}
	var lock sync.Mutex
	var latencies []int64
	errors := 0
	var done sync.WaitGroup
	start := make(chan struct{})
	ready := make(chan error, *streams)
	for s := 0; s < *streams; s++ {
		done.Add(1)
		go func(s int) {
			defer done.Done()
			client := clients[s%len(clients)]
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			grant, err := client.Grant(ctx, 60)
			cancel()
			if err != nil {
				ready <- fmt.Errorf("grant: %v", err)
				return
			}
			streamCtx, stop := context.WithCancel(context.Background())
			defer stop()
			stream, err := pb.NewLeaseClient(client.ActiveConnection()).LeaseKeepAlive(streamCtx)
			if err != nil {
				ready <- fmt.Errorf("open stream: %v", err)
				return
			}
			ready <- nil
			<-start
			var own []int64
			failed := 0
			deadline := time.Now().Add(*duration)
			for time.Now().Before(deadline) {
				sent := time.Now()
				if err := stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(grant.ID)}); err != nil {
					failed++
					break
				}
				response, err := stream.Recv()
				if err != nil {
					failed++
					break
				}
				if response.TTL <= 0 {
					fail("lease %x answered TTL %d: it is gone", grant.ID, response.TTL)
				}
				own = append(own, time.Since(sent).Microseconds())
			}
			lock.Lock()
			latencies = append(latencies, own...)
			errors += failed
			lock.Unlock()
		}(s)
	}
	for s := 0; s < *streams; s++ {
		if err := <-ready; err != nil {
			fail("%v", err)
		}
	}
	began := time.Now()
	close(start)
	done.Wait()
	seconds := time.Since(began).Seconds()
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	at := func(p float64) int64 {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[int(p*float64(len(latencies)-1))]
	}
	line, _ := json.Marshal(map[string]interface{}{
		"streams": *streams, "keepAlives": len(latencies), "seconds": seconds,
		"throughput": float64(len(latencies)) / seconds, "errors": errors,
		"latencyMicroseconds": map[string]int64{"p50": at(0.5), "p99": at(0.99)},
	})
	fmt.Println(string(line))
}
