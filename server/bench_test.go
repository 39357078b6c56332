package server_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/server"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// BenchmarkCompleteSession measures PKI-AUTH through the running gateway
// with a warm OCSP cache: BeginSession, the card (SoftHSM) signing the
// challenge, CompleteSession (signature check, path validation, cached
// status, SQLite writes). `make bench` reports sessions/s.
func BenchmarkCompleteSession(b *testing.B) {
	conn := portalConn(b)
	c := openCard(b, dev.Card.Name, nil)
	if _, err := login(b, conn, c); err != nil { // warms the OCSP cache
		b.Fatal(err)
	}
	client := credgwv1.NewPIVAuthClient(conn)
	ctx := context.Background()
	for b.Loop() {
		begin, err := client.BeginSession(ctx, &credgwv1.BeginSessionRequest{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := client.CompleteSession(ctx, &credgwv1.CompleteSessionRequest{
			SessionId: begin.GetSessionId(), PivAuthCertificate: c.auth.Raw, Signature: c.sign(b, begin),
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sessions/s")
}

// BenchmarkSlowDownloads holds CREDGW_SLOW_READERS (default 200) clients
// downloading the CRL from the plain-HTTP listener at 1 KiB/s, each on its
// own keep-alive connection and again when done, and reports the
// process's resident memory and the p99 latency of Health/Check over gRPC
// before and while they run (issue 15, point 5). The gateway runs in this
// process: vmrss-MiB includes the readers' side of every connection. The
// per-source limit is lifted: every reader comes from 127.0.0.1. One
// process has both ends of each connection, so the file-descriptor limit
// (ulimit -n) caps the readers at about half of it.
func BenchmarkSlowDownloads(b *testing.B) {
	n := 200
	if v := os.Getenv("CREDGW_SLOW_READERS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("CREDGW_SLOW_READERS=%q: want a positive number", v)
		}
	}
	s := limitedGateway(b, func(l *server.LimitsConfig) { l.MaxConnsPerSource = -1 })
	crl := "/crl/" + cfg.CA.Name + ".crl"
	check := healthpb.NewHealthClient(dialAddr(b, s.GRPCAddr()))
	p99 := func() time.Duration {
		var ds []time.Duration
		for range 500 {
			start := time.Now()
			if _, err := check.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(start))
		}
		slices.Sort(ds)
		return ds[len(ds)*99/100]
	}
	idle := p99()
	rssIdle := vmRSS(b)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var failed atomic.Int64
	started := make(chan struct{}, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := slowReader(s.HTTPAddr(), crl, stop, started); err != nil {
				failed.Add(1)
				started <- struct{}{}
			}
		}()
	}
	for range n {
		<-started
	}
	time.Sleep(3 * time.Second) // the readers are mid-download
	var during time.Duration
	for b.Loop() {
		during = p99()
	}
	rssDuring := vmRSS(b)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	goroutines := runtime.NumGoroutine()
	close(stop)
	wg.Wait()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d readers failed", f, n)
	}
	b.ReportMetric(float64(n), "readers")
	b.ReportMetric(rssIdle/(1<<20), "vmrss-idle-MiB")
	b.ReportMetric(rssDuring/(1<<20), "vmrss-MiB")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-inuse-MiB")
	b.ReportMetric(float64(goroutines), "goroutines")
	b.ReportMetric(float64(idle.Microseconds())/1000, "check-p99-idle-ms")
	b.ReportMetric(float64(during.Microseconds())/1000, "check-p99-ms")
}

// slowReader downloads path again and again on one keep-alive connection,
// reading 1 KiB a second, until stop; it signals started after its first
// KiB.
func slowReader(addr, path string, stop <-chan struct{}, started chan<- struct{}) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	r := bufio.NewReaderSize(c, 1024)
	buf := make([]byte, 1024)
	first := true
	for {
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: credgw\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return err
		}
		for {
			n, err := io.ReadFull(resp.Body, buf)
			if first && n > 0 {
				started <- struct{}{}
				first = false
			}
			if err != nil {
				break
			}
			select {
			case <-stop:
				return nil
			case <-time.After(time.Second):
			}
		}
		resp.Body.Close()
		select {
		case <-stop:
			return nil
		case <-time.After(time.Second):
		}
	}
}

// vmRSS is this process's resident set size in bytes.
func vmRSS(b *testing.B) float64 {
	f, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(f), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return float64(kb) * 1024
		}
	}
	b.Skip("no VmRSS")
	return 0
}
