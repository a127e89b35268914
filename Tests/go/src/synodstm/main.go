// synodstm runs clientv3's software transactional memory (concurrency.NewSTM, default
// isolation: serializable snapshot) against a cluster: concurrent transfers between
// accounts from several goroutines, each with its own client on a different first
// endpoint. It exits 0 only when every transfer committed without an error and the total
// of all accounts is what it was at the start. A transfer refused as Unavailable (an
// election under way: "no leader", "leader changed") is retried, as applications retry
// transient errors, at most unavailableRetriesMax times; a retry of a commit whose answer was
// lost may move money twice, which keeps the total, so the check stays exact.
//
// Built by Tests/SynodServerTests/STMProcessTests.swift in GOPATH mode against Debian's
// golang-etcd-server-dev.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// How often one transfer is retried after Unavailable before the run fails.
const unavailableRetriesMax = 20

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "comma-separated client endpoints")
	accounts := flag.Int("accounts", 8, "number of accounts")
	workers := flag.Int("workers", 8, "concurrent goroutines")
	transfers := flag.Int("transfers", 50, "transfers per goroutine")
	seed := flag.Int64("seed", 1, "random seed (printed on failure)")
	timeout := flag.Duration("timeout", 90*time.Second, "bound on the whole run")
	flag.Parse()

	list := strings.Split(*endpoints, ",")
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	fail := func(format string, args ...interface{}) {
		fmt.Fprintf(os.Stderr, "synodstm (seed %d): "+format+"\n", append([]interface{}{*seed}, args...)...)
		os.Exit(1)
	}

	setup, err := clientv3.New(clientv3.Config{Endpoints: list, DialTimeout: 5 * time.Second})
	if err != nil {
		fail("connect: %v", err)
	}
	defer setup.Close()
	const initial = 100
	for i := 0; i < *accounts; i++ {
		if _, err := setup.Put(ctx, account(i), strconv.Itoa(initial)); err != nil {
			fail("set up %s: %v", account(i), err)
		}
	}

	var committed, attempts, unavailable int64
	var wg sync.WaitGroup
	errs := make(chan error, *workers)
	for w := 0; w < *workers; w++ {
		// Each goroutine's client prefers a different replica first.
		rotated := append(append([]string{}, list[w%len(list):]...), list[:w%len(list)]...)
		cli, err := clientv3.New(clientv3.Config{Endpoints: rotated, DialTimeout: 5 * time.Second})
		if err != nil {
			fail("connect worker %d: %v", w, err)
		}
		defer cli.Close()
		random := rand.New(rand.NewSource(*seed*1000 + int64(w)))
		wg.Add(1)
		go func(w int, cli *clientv3.Client, random *rand.Rand) {
			defer wg.Done()
			for t := 0; t < *transfers; t++ {
				from, to := random.Intn(*accounts), random.Intn(*accounts)
				if from == to {
					to = (to + 1) % *accounts
				}
				amount := 1 + random.Intn(10)
				var err error
				for retry := 0; retry <= unavailableRetriesMax; retry++ {
					if retry > 0 {
						atomic.AddInt64(&unavailable, 1)
						time.Sleep(100 * time.Millisecond)
					}
					_, err = concurrency.NewSTM(cli, func(stm concurrency.STM) error {
						atomic.AddInt64(&attempts, 1)
						fromValue, err := balance(stm, from)
						if err != nil {
							return err
						}
						toValue, err := balance(stm, to)
						if err != nil {
							return err
						}
						moved := amount
						if moved > fromValue {
							moved = fromValue
						}
						stm.Put(account(from), strconv.Itoa(fromValue-moved))
						stm.Put(account(to), strconv.Itoa(toValue+moved))
						return nil
					}, concurrency.WithAbortContext(ctx))
					if status.Code(err) != codes.Unavailable {
						break
					}
				}
				if err != nil {
					errs <- fmt.Errorf("worker %d transfer %d (%s -> %s): %v", w, t, account(from), account(to), err)
					return
				}
				atomic.AddInt64(&committed, 1)
			}
		}(w, cli, random)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		fail("%v", err)
	}

	// The total, read in one linearizable range (one revision).
	response, err := setup.Get(ctx, "stm/accounts/", clientv3.WithPrefix())
	if err != nil {
		fail("read totals: %v", err)
	}
	if len(response.Kvs) != *accounts {
		fail("%d accounts, expected %d", len(response.Kvs), *accounts)
	}
	total := 0
	for _, kv := range response.Kvs {
		value, err := strconv.Atoi(string(kv.Value))
		if err != nil || value < 0 {
			fail("account %s holds %q", kv.Key, kv.Value)
		}
		total += value
	}
	if total != initial**accounts {
		fail("total %d, expected %d: money was created or lost", total, initial**accounts)
	}
	fmt.Printf("synodstm: ok: %d transfers committed in %d attempts (%d retried after Unavailable), total %d at revision %d\n",
		committed, attempts, unavailable, total, response.Header.Revision)
}

func account(i int) string { return fmt.Sprintf("stm/accounts/%02d", i) }

func balance(stm concurrency.STM, i int) (int, error) {
	text := stm.Get(account(i))
	value, err := strconv.Atoi(text)
	if err != nil {
		return 0, fmt.Errorf("account %s holds %q", account(i), text)
	}
	return value, nil
}
