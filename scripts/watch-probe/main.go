// watch-probe: holds N watchers on a key prefix with etcd's own Go client (clientv3), spread over
// the given endpoints (one client per endpoint, watcher i on endpoint i mod n), and measures what
// they receive. Used by scripts/bench-availability to measure Synod and etcd the same way, with
// the watchers in a process of their own (not in the process that writes).
//
// Built in GOPATH mode on Debian's golang-etcd-server-dev:
//   GO111MODULE=off GOPATH=<dir>:/usr/share/gocode go build -o watch-probe ./scripts/watch-probe
//
// Two modes, each printing one JSON line on stdout:
//   -mode count    watch until SIGINT/SIGTERM or -duration; report the events each watcher got.
//                  Used while another process (synod bench) writes under the prefix.
//   -mode latency  also write: one put at a time, paced at -rate puts/s for -duration, and report
//                  the delay from each put's answer (at this process) to its event arriving at each
//                  watcher. A delay can be negative: a watcher may see the event before the writer
//                  sees the answer.
// Exits 1 when a watcher is not in place within 10 s, or (latency mode) when an event is missing.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/clientv3"
)

type arrival struct {
	seq int
	at  time.Time
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "watch-probe: "+format+"\n", args...)
	os.Exit(1)
}

func percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	index := int(p * float64(len(sorted)-1))
	return sorted[index]
}

func main() {
	endpoints := flag.String("endpoints", "", "comma-separated host:port endpoints")
	watchers := flag.Int("watchers", 100, "watchers on the prefix")
	prefix := flag.String("prefix", "", "key prefix to watch (and, in latency mode, to write under)")
	mode := flag.String("mode", "count", "count | latency")
	rate := flag.Int("rate", 200, "latency mode: puts per second")
	duration := flag.Duration("duration", 10*time.Second, "latency mode: how long to write; count mode: the longest watch")
	flag.Parse()
	if *endpoints == "" || *prefix == "" || *watchers < 1 || *watchers > 10000 || *rate < 1 || *rate > 100000 {
		fail("-endpoints and -prefix are required; -watchers in 1...10000, -rate in 1...100000")
	}
	if *mode != "count" && *mode != "latency" {
		fail("-mode must be count or latency, not %q", *mode)
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

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	counts := make([]int, *watchers)
	arrivals := make([][]arrival, *watchers)
	var lock sync.Mutex // guards counts and arrivals
	var done sync.WaitGroup
	created := make(chan int, *watchers)
	for w := 0; w < *watchers; w++ {
		done.Add(1)
		go func(w int) {
			defer done.Done()
			channel := clients[w%len(clients)].Watch(ctx, *prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
			for response := range channel {
				if response.Created {
					created <- w
					continue
				}
				if err := response.Err(); err != nil {
					fmt.Fprintf(os.Stderr, "watch-probe: watcher %d: %v\n", w, err)
					return
				}
				now := time.Now()
				lock.Lock()
				counts[w] += len(response.Events)
				if *mode == "latency" {
					for _, event := range response.Events {
						seq, err := strconv.Atoi(strings.TrimPrefix(string(event.Kv.Key), *prefix))
						if err == nil {
							arrivals[w] = append(arrivals[w], arrival{seq, now})
						}
					}
				}
				lock.Unlock()
			}
		}(w)
	}
	deadline := time.After(10 * time.Second)
	for ready := 0; ready < *watchers; ready++ {
		select {
		case <-created:
		case <-deadline:
			fail("only %d of %d watchers in place after 10 s", ready, *watchers)
		}
	}

	result := map[string]interface{}{"watchers": *watchers, "endpoints": len(list), "mode": *mode}
	if *mode == "count" {
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
		fmt.Fprintln(os.Stderr, "watch-probe: watching")
		select {
		case <-signals:
		case <-time.After(*duration):
		}
		// Let events already sent arrive before counting.
		time.Sleep(500 * time.Millisecond)
	} else {
		writer, err := clientv3.New(clientv3.Config{Endpoints: list, DialTimeout: 5 * time.Second})
		if err != nil {
			fail("connect writer: %v", err)
		}
		defer writer.Close()
		interval := time.Second / time.Duration(*rate)
		answered := map[int]time.Time{}
		start := time.Now()
		for seq := 0; time.Since(start) < *duration; seq++ {
			next := start.Add(time.Duration(seq) * interval)
			time.Sleep(time.Until(next))
			putCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := writer.Put(putCtx, *prefix+strconv.Itoa(seq), "v")
			cancel()
			if err != nil {
				fail("put %d: %v", seq, err)
			}
			answered[seq] = time.Now()
		}
		// Every event reaches every watcher within 5 s, or the run fails.
		wait := time.Now().Add(5 * time.Second)
		for time.Now().Before(wait) {
			lock.Lock()
			all := true
			for w := range counts {
				if counts[w] < len(answered) {
					all = false
				}
			}
			lock.Unlock()
			if all {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		lock.Lock()
		var delays []int64
		for w := range arrivals {
			for _, a := range arrivals[w] {
				if at, ok := answered[a.seq]; ok {
					delays = append(delays, a.at.Sub(at).Microseconds())
				}
			}
		}
		lock.Unlock()
		sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
		result["puts"] = len(answered)
		result["delayMicroseconds"] = map[string]int64{
			"p50": percentile(delays, 0.50), "p99": percentile(delays, 0.99), "max": percentile(delays, 1),
		}
		if len(delays) < len(answered)**watchers {
			stop()
			fail("%d of %d events arrived", len(delays), len(answered)**watchers)
		}
	}
	stop()
	done.Wait()
	total, least := 0, -1
	for _, count := range counts {
		total += count
		if least < 0 || count < least {
			least = count
		}
	}
	result["events"] = total
	result["fewestPerWatcher"] = least
	line, _ := json.Marshal(result)
	fmt.Println(string(line))
}
