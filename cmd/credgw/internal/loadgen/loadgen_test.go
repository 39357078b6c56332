package loadgen

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/agent"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"golang.org/x/sys/unix"
)

// testPackage is a package as the gateway sends it, reduced to what the
// manifest check reads: two device certificates, the escrowed key with two
// of history, the chain.
func testPackage() *credgwv1.CredentialPackage {
	pkg := &credgwv1.CredentialPackage{Manifest: &credgwv1.Manifest{CredentialSetId: "set"}}
	add := func(m *credgwv1.ManifestItem, data []byte) {
		if m.Kind != credgwv1.ItemKind_ITEM_KIND_CHAIN {
			sum := sha256.Sum256(data)
			m.Size, m.Sha256 = int64(len(data)), sum[:]
		}
		pkg.Manifest.Items = append(pkg.Manifest.Items, m)
		pkg.Items = append(pkg.Items, &credgwv1.PackageItem{Name: m.Name, Data: data})
	}
	add(&credgwv1.ManifestItem{Name: "auth.crt", Kind: credgwv1.ItemKind_ITEM_KIND_CERTIFICATE, Serial: "0a"}, []byte("auth"))
	add(&credgwv1.ManifestItem{Name: "signature.crt", Kind: credgwv1.ItemKind_ITEM_KIND_CERTIFICATE, Serial: "0b"}, []byte("signature"))
	add(&credgwv1.ManifestItem{Name: "encryption.p12", Kind: credgwv1.ItemKind_ITEM_KIND_PKCS12, Serial: "0c", KeyCount: 3}, []byte("p12"))
	add(&credgwv1.ManifestItem{Name: "chain.der", Kind: credgwv1.ItemKind_ITEM_KIND_CHAIN}, nil)
	return pkg
}

// protocolOnly notes the current serials and the key count the manifest
// states once every item matches it, and refuses a package that does not.
func TestProtocolOnly(t *testing.T) {
	res := &agent.Result{}
	if err := protocolOnly(context.Background(), &agent.Package{CredentialPackage: testPackage(), Result: res}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Serials, ",") != "0a,0b,0c" || res.KeyHistory != 3 {
		t.Errorf("serials %v, key history %d", res.Serials, res.KeyHistory)
	}
	bad := testPackage()
	bad.Items[2].Data = []byte("another p12")
	if err := protocolOnly(context.Background(), &agent.Package{CredentialPackage: bad, Result: &agent.Result{}}); err == nil {
		t.Error("a package that does not match its manifest was taken")
	}
}

// Run refuses a configuration it cannot run before it sets anything up.
func TestRunRefuses(t *testing.T) {
	for _, c := range []Config{
		{Concurrency: 0, People: 1, Duration: time.Second},
		{Concurrency: 2, People: 1, Duration: time.Second},
		{Concurrency: 1, People: 1},
	} {
		if err := Run(context.Background(), c, io.Discard); err == nil || !strings.HasPrefix(err.Error(), "loadgen: ") {
			t.Errorf("%+v: %v", c, err)
		}
	}
	err := Run(context.Background(), Config{Concurrency: 1, People: 1, Duration: time.Second, Replicas: 2}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--replicas 2") {
		t.Errorf("two replicas on SQLite: %v", err)
	}
}

// TestParseProbe: the prober's line reads back as written, and anything
// else is an error, never a figure.
func TestParseProbe(t *testing.T) {
	want := probeResult{check: 2050 * time.Microsecond, nCheck: 1499, begin: 9 * time.Millisecond, complete: 3100 * time.Microsecond, nBegin: 119, failed: 1}
	got, err := parseProbe(formatProbe(want) + "\n")
	if err != nil || got != want {
		t.Fatalf("parsed %+v, %v; want %+v", got, err, want)
	}
	for _, bad := range []string{
		"",
		"check_p99_us 1 check_n 2",
		"p99_us 2050 n 1499 failed 1", // the old prober's line
		"check_p99_us x check_n 2 begin_p99_us 3 complete_p99_us 4 begin_n 5 failed 6",
		"check_p99_us 1 check_n 2 begin_p99_us 3 complete_p99_us 4 begin_n 5 failed 6 extra 7",
		"check_n 2 check_p99_us 1 begin_p99_us 3 complete_p99_us 4 begin_n 5 failed 6",
		"check_p99_us -1 check_n 2 begin_p99_us 3 complete_p99_us 4 begin_n 5 failed 6",
		"check_p99_us 0 check_n 0 begin_p99_us 0 complete_p99_us 0 begin_n 0 failed 5",
	} {
		if r, err := parseProbe(bad); err == nil {
			t.Errorf("%q: parsed as %+v", bad, r)
		}
	}
	check := func(r probeResult) time.Duration { return r.check }
	begin := func(r probeResult) time.Duration { return r.begin }
	ok := outsideProbe{probeResult: probeResult{check: 2 * time.Millisecond, nCheck: 10}}
	for _, c := range []struct {
		a, b outsideProbe
		p99  func(probeResult) time.Duration
		want string
	}{
		{ok, outsideProbe{probeResult: probeResult{check: time.Millisecond, nCheck: 10}}, check, "2.0x"},
		{outsideProbe{err: errors.New("x")}, ok, check, "unknown"},
		{ok, outsideProbe{err: errors.New("x")}, check, "unknown"},
		{ok, ok, begin, "unknown"}, // no sign-in timed
	} {
		if got := probeRatio(c.a, c.b, c.p99); got != c.want {
			t.Errorf("probeRatio(%+v, %+v) = %s, want %s", c.a, c.b, got, c.want)
		}
	}
}

// TestIdlePriority: setPolicy puts every thread of the process at idle
// priority, threads started afterwards inherit it, and leaveIdle brings
// them all back (what the prober does when bench slow starts it).
func TestIdlePriority(t *testing.T) {
	if !mayLeaveIdle() {
		t.Skip("needs root or RLIMIT_NICE 20 to return to normal priority")
	}
	policies := func() map[uint32]int {
		tids, err := threads()
		if err != nil {
			t.Fatal(err)
		}
		n := map[uint32]int{}
		for _, tid := range tids {
			if a, err := unix.SchedGetAttr(tid, 0); err == nil {
				n[a.Policy]++
			}
		}
		return n
	}
	// Afterwards, normal whatever happened.
	t.Cleanup(func() { setPolicy(unix.SCHED_NORMAL) })
	if err := leaveIdle(); err != nil { // normal already: nothing to do
		t.Fatal(err)
	}
	if err := setPolicy(unix.SCHED_IDLE); err != nil {
		t.Fatal(err)
	}
	// A new thread, started by one at idle priority.
	started := make(chan struct{})
	release := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		close(started)
		<-release
	}()
	<-started
	if p := policies(); len(p) != 1 || p[unix.SCHED_IDLE] == 0 {
		t.Errorf("after setPolicy(SCHED_IDLE): threads by policy %v, want all %d", p, unix.SCHED_IDLE)
	}
	if err := leaveIdle(); err != nil {
		t.Fatal(err)
	}
	if p := policies(); len(p) != 1 || p[unix.SCHED_NORMAL] == 0 {
		t.Errorf("after leaveIdle: threads by policy %v, want all %d", p, unix.SCHED_NORMAL)
	}
	close(release)
}

// TestSlowConnPhase: a slow connection delivers pieces of at most one
// segment or one second of its rate, holds everything until the gate
// opens, and then waits its phase before its first piece.
// TestReadersPhase: in step, no phase; by default, within one piece's
// interval; with a spread, within the spread, and beyond the interval.
func TestReadersPhase(t *testing.T) {
	const interval = time.Second
	for _, c := range []struct {
		together bool
		spread   time.Duration
		within   time.Duration // every phase is below it
		beyond   bool          // some phase passes the interval
	}{
		{true, 0, 1, false},
		{false, 0, interval, false},
		{false, 8 * time.Second, 8 * time.Second, true},
		{false, interval / 2, interval, false}, // the interval wins
	} {
		r := &readers{together: c.together, spread: c.spread}
		beyond := false
		for range 1000 {
			p := r.phase(interval)
			if p < 0 || p >= c.within {
				t.Fatalf("together %v, spread %s: phase %s, want in [0, %s)", c.together, c.spread, p, c.within)
			}
			beyond = beyond || p >= interval
		}
		if beyond != c.beyond {
			t.Errorf("together %v, spread %s: a phase beyond the interval: %v, want %v", c.together, c.spread, beyond, c.beyond)
		}
	}
}

func TestSlowConnPhase(t *testing.T) {
	for _, c := range []struct {
		rate     int
		piece    int
		interval time.Duration
	}{
		{1024, 1024, time.Second},
		{100, 100, time.Second},
		{4096, 1460, 1460 * time.Second / 4096},
		{1 << 20, 1460, 1460 * time.Second / (1 << 20)},
	} {
		sc := &slowConn{rate: c.rate}
		if sc.piece() != c.piece || sc.interval() != c.interval {
			t.Errorf("rate %d: piece %d, interval %s; want %d, %s", c.rate, sc.piece(), sc.interval(), c.piece, c.interval)
		}
	}

	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	gate := make(chan struct{})
	const phase = 20 * time.Millisecond
	sc := &slowConn{Conn: client, rate: 1024, phase: phase, gate: gate}
	sc.hold.Store(true)
	go server.Write(make([]byte, 4096))
	got := make(chan int)
	go func() {
		n, _ := sc.Read(make([]byte, 4096))
		got <- n
	}()
	select {
	case n := <-got:
		t.Fatalf("read %d bytes before the gate opened", n)
	case <-time.After(10 * time.Millisecond):
	}
	opened := time.Now()
	close(gate)
	if n := <-got; n != 1024 {
		t.Fatalf("first piece: %d bytes, want 1024", n)
	}
	// The next piece is due one interval after the phase, at the earliest.
	if earliest := opened.Add(phase + time.Second); sc.next.Before(earliest) {
		t.Fatalf("next piece due %s after the gate, want at least %s", sc.next.Sub(opened), phase+time.Second)
	}
	if sc.hold.Load() {
		t.Fatal("still held after the gate")
	}
}

// TestPercentile: the p-th percentile is the value at index n*p/100 of
// the sorted durations (the last for a short list), 0 for none.
func TestPercentile(t *testing.T) {
	ms := func(n int) []time.Duration {
		ds := make([]time.Duration, n)
		for i := range ds {
			ds[i] = time.Duration(n-i) * time.Millisecond // reversed: percentile sorts
		}
		return ds
	}
	for _, c := range []struct {
		n, p int
		want time.Duration
	}{
		{0, 99, 0},
		{1, 99, time.Millisecond},
		{10, 99, 10 * time.Millisecond},
		{100, 50, 51 * time.Millisecond},
		{100, 99, 100 * time.Millisecond},
		{750, 99, 743 * time.Millisecond},
	} {
		if got := percentile(ms(c.n), c.p); got != c.want {
			t.Errorf("p%d of %d: %s, want %s", c.p, c.n, got, c.want)
		}
	}
}

// TestPaceSchedule: an open run's arrivals are the schedule start,
// start+1/rate, … before the end, in order, all of them even when no one
// takes them as they come (the schedule does not wait for the workers),
// and the channel is closed after the last.
func TestPaceSchedule(t *testing.T) {
	start := time.Now()
	until := start.Add(50 * time.Millisecond)
	due := 0
	arrivals := pace(context.Background(), start, 200, until, func() { due++ }) // 10 arrivals, 5 ms apart
	if cap(arrivals) < 10 {
		t.Fatalf("the schedule holds %d arrivals: it would wait for a reader", cap(arrivals))
	}
	var got []time.Time
	for at := range arrivals {
		got = append(got, at)
	}
	if len(got) != 10 || due != 10 {
		t.Fatalf("%d arrivals (%d said due), want 10", len(got), due)
	}
	for i, at := range got {
		if want := start.Add(time.Duration(i) * 5 * time.Millisecond); !at.Equal(want) {
			t.Errorf("arrival %d at %v after the start, want %v", i, at.Sub(start), want.Sub(start))
		}
	}
	// A run that ends early stops the schedule.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n := 0
	for range pace(ctx, time.Now(), 1, time.Now().Add(time.Hour), func() {}) {
		n++
	}
	if n > 1 {
		t.Errorf("%d arrivals after the run ended, want at most the first", n)
	}
}
