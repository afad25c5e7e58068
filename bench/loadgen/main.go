// Command loadgen sends POST requests at a fixed rate (an open loop) and reports latency.
//
// bench.intake builds and runs it: a Python client on the same two cores would spend
// as much CPU generating the load as the server spends answering it, and its own event
// loop stalls would show up as server latency. Each request's latency is measured from
// the moment it was scheduled, not sent, so a stall anywhere is counted, never hidden
// (no coordinated omission). Bodies come from a file, one JSON document per line, sent
// in turn; every request gets a unique Idempotency-Key.
//
//	loadgen -url http://127.0.0.1:8080/orders -rate 1000 -seconds 8 -bodies bodies.jsonl
//
// It prints one JSON object: sent, accepted (202), statuses, errors, seconds, and the
// latency quantiles of accepted requests in milliseconds.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"
)

type result struct {
	status  int
	latency time.Duration
	err     error
}

type summary struct {
	Sent     int            `json:"sent"`
	Accepted int            `json:"accepted"`
	Statuses map[string]int `json:"statuses"`
	Errors   int            `json:"errors"`
	Seconds  float64        `json:"seconds"`
	P50      float64        `json:"p50_ms"`
	P99      float64        `json:"p99_ms"`
	P999     float64        `json:"p999_ms"`
	Max      float64        `json:"max_ms"`
}

func main() {
	url := flag.String("url", "", "where to POST")
	rate := flag.Float64("rate", 1000, "requests per second")
	seconds := flag.Float64("seconds", 8, "how long to send")
	bodiesPath := flag.String("bodies", "", "file of request bodies, one per line")
	keyPrefix := flag.String("key-prefix", "loadgen", "Idempotency-Key prefix (make it unique per run)")
	flag.Parse()
	if *url == "" || *bodiesPath == "" || *rate <= 0 || *seconds <= 0 {
		fmt.Fprintln(os.Stderr, "loadgen: -url and -bodies are required; -rate and -seconds must be positive")
		os.Exit(2)
	}
	bodies, err := readBodies(*bodiesPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		os.Exit(2)
	}
	out := run(*url, *rate, *seconds, bodies, *keyPrefix)
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}

func readBodies(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var bodies [][]byte
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	for scanner.Scan() {
		if line := bytes.TrimSpace(scanner.Bytes()); len(line) > 0 {
			bodies = append(bodies, append([]byte(nil), line...))
		}
	}
	if len(bodies) == 0 {
		return nil, fmt.Errorf("%s holds no bodies", path)
	}
	return bodies, scanner.Err()
}

func run(url string, rate, seconds float64, bodies [][]byte, keyPrefix string) summary {
	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 0},
	}
	total := int(rate * seconds)
	results := make(chan result, total)
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now().Add(50 * time.Millisecond)
	for i := 0; i < total; i++ {
		scheduled := start.Add(time.Duration(i) * interval)
		if wait := time.Until(scheduled); wait > 0 {
			time.Sleep(wait)
		}
		wg.Add(1)
		go func(i int, scheduled time.Time) {
			defer wg.Done()
			results <- post(client, url, bodies[i%len(bodies)], keyPrefix+"-"+strconv.Itoa(i), scheduled)
		}(i, scheduled)
	}
	wg.Wait()
	close(results)
	return summarize(results, total, time.Since(start).Seconds())
}

func post(client *http.Client, url string, body []byte, key string, scheduled time.Time) result {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return result{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := client.Do(req)
	if err != nil {
		return result{err: err}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return result{status: resp.StatusCode, latency: time.Since(scheduled)}
}

func summarize(results <-chan result, sent int, seconds float64) summary {
	out := summary{Sent: sent, Statuses: map[string]int{}, Seconds: seconds}
	var accepted []time.Duration
	for r := range results {
		if r.err != nil {
			out.Errors++
			continue
		}
		out.Statuses[strconv.Itoa(r.status)]++
		if r.status == http.StatusAccepted {
			accepted = append(accepted, r.latency)
		}
	}
	out.Accepted = len(accepted)
	sort.Slice(accepted, func(a, b int) bool { return accepted[a] < accepted[b] })
	out.P50, out.P99, out.P999 = quantile(accepted, 0.5), quantile(accepted, 0.99), quantile(accepted, 0.999)
	out.Max = quantile(accepted, 1)
	return out
}

func quantile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return -1
	}
	i := int(q * float64(len(sorted)))
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return float64(sorted[i].Microseconds()) / 1000
}
