package server_test

import (
	"bufio"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	hsmsim "github.com/credgw/credgw/hsm-sim"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// limitedGateway starts a replica of the test gateway on fresh local
// ports, on the shared store, with its limits changed by set.
func limitedGateway(t testing.TB, set func(*server.LimitsConfig)) *server.Server {
	t.Helper()
	c := *cfg
	c.Listen.GRPC, c.Listen.HTTP, c.Listen.Management, c.Portal.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	set(&c.Limits)
	s, err := server.New(context.Background(), &c, server.WithClock(now), server.WithStore(gwStore))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return s
}

// untilClosed reads c until the server closes it; a deadline long past
// the configured timeouts fails the test instead.
func untilClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: still open after 20s", what)
	}
}

// get sends one keep-alive request on c and reads its response.
func get(t *testing.T, c net.Conn, r *bufio.Reader) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: credgw\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.SetDeadline(time.Time{})
}

// TestIdleKeepAliveClosed: a keep-alive connection left idle after a
// request is closed by the server after limits.http_idle_timeout, on the
// plain-HTTP listener and on the portal (issue 15, point 5).
func TestIdleKeepAliveClosed(t *testing.T) {
	s := limitedGateway(t, func(l *server.LimitsConfig) { l.HTTPIdleTimeout.Duration = 300 * time.Millisecond })
	plain, err := net.Dial("tcp", s.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	get(t, plain, bufio.NewReader(plain))
	untilClosed(t, plain, "idle plain-HTTP keep-alive")

	pem, err := os.ReadFile(dev.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	portal, err := tls.Dial("tcp", s.PortalAddr(), &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer portal.Close()
	get(t, portal, bufio.NewReader(portal))
	untilClosed(t, portal, "idle portal keep-alive")
}

// TestConnectionsPerSource: past limits.max_conns_per_source, a new
// connection from the same address is closed at once, on the plain-HTTP
// and the gRPC listener, and the ones already open are still served.
func TestConnectionsPerSource(t *testing.T) {
	const limit = 3
	s := limitedGateway(t, func(l *server.LimitsConfig) { l.MaxConnsPerSource = limit })
	var held []net.Conn
	var readers []*bufio.Reader
	for range limit {
		c, err := net.Dial("tcp", s.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		r := bufio.NewReader(c)
		get(t, c, r) // accepted and counted before the next
		held, readers = append(held, c), append(readers, r)
	}
	extra, err := net.Dial("tcp", s.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	io.WriteString(extra, "GET /healthz HTTP/1.1\r\nHost: credgw\r\n\r\n")
	extra.SetReadDeadline(time.Now().Add(20 * time.Second))
	if b, err := io.ReadAll(extra); len(b) > 0 || isTimeout(err) {
		t.Fatalf("connection %d from one address: read %q, %v; want it closed unanswered", limit+1, b, err)
	}
	for i, c := range held {
		get(t, c, readers[i])
	}

	// gRPC: three connections held by clients that made a call, the
	// fourth refused.
	var conns []*grpc.ClientConn
	for range limit {
		conn := dialAddr(t, s.GRPCAddr())
		if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(dialAddr(t, s.GRPCAddr())).Check(ctx, &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("gRPC connection %d from one address: %v, want Unavailable", limit+1, err)
	}
	for _, conn := range conns {
		if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("a connection within the limit: %v", err)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// dialAddr is dial for another gateway's address.
func dialAddr(t testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	pem, err := os.ReadFile(dev.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: roots, MinVersion: tls.VersionTLS12,
	}))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// stallingConn is a device's connection that stops reading when told:
// from then on gRPC sees no byte, while the test drains the socket to
// see when the gateway closes it.
type stallingConn struct {
	net.Conn
	stall  chan struct{}
	closed chan struct{}
	once   sync.Once
}

func (c *stallingConn) Read(p []byte) (int, error) {
	select {
	case <-c.stall:
	default:
		return c.Conn.Read(p)
	}
	c.once.Do(func() {
		io.Copy(io.Discard, c.Conn)
		close(c.closed)
	})
	<-c.closed
	return 0, io.EOF
}

// TestStalledRedeemCut: a Redeem stream whose device stops reading is
// cut at limits.stream_timeout: the gateway closes its connection.
func TestStalledRedeemCut(t *testing.T) {
	s := limitedGateway(t, func(l *server.LimitsConfig) { l.StreamTimeout.Duration = time.Second })
	e := enrollCard(t)
	sc := &stallingConn{stall: make(chan struct{}), closed: make(chan struct{})}
	conn := dialAddr(t, s.GRPCAddr(), grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		sc.Conn = c
		return sc, err
	}))
	stream, err := credgwv1.NewRedemptionClient(conn).Redeem(context.Background(), redeemRequest(t, e, e.resp.GetPassword()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // the redemption is under way
		t.Fatal(err)
	}
	close(sc.stall)
	select {
	case <-sc.closed:
	case <-time.After(30 * time.Second):
		t.Fatal("the stalled device's connection is still open after 30s")
	}
}

// TestWatchLimit: Health/Watch streams beyond limits.max_watch_streams get
// ResourceExhausted; those open keep their answers.
func TestWatchLimit(t *testing.T) {
	const limit = 2
	s := limitedGateway(t, func(l *server.LimitsConfig) { l.MaxWatchStreams = limit })
	client := healthpb.NewHealthClient(dialAddr(t, s.GRPCAddr()))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range limit {
		w, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if r, err := w.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("watch within the limit: %v %v", r, err)
		}
	}
	w, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.Recv()
	wantCode(t, err, codes.ResourceExhausted)
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("Check beside the watches: %v", err)
	}
}

// TestWatchLimitPerSource: one address holds at most
// server.DefaultMaxWatchStreamsPerSource health watches, however many the gateway
// serves, so that one client cannot take every slot; a slot it gives back
// is its own again.
func TestWatchLimitPerSource(t *testing.T) {
	s := limitedGateway(t, func(*server.LimitsConfig) {}) // 64 watches
	client := healthpb.NewHealthClient(dialAddr(t, s.GRPCAddr()))
	ctx := context.Background()
	watch := func(ctx context.Context) error {
		w, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		_, err = w.Recv()
		return err
	}
	var cancels []context.CancelFunc
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	for range server.DefaultMaxWatchStreamsPerSource {
		wctx, cancel := context.WithCancel(ctx)
		cancels = append(cancels, cancel)
		if err := watch(wctx); err != nil {
			t.Fatalf("watch within the address's share: %v", err)
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	err := watch(wctx)
	cancel()
	wantCode(t, err, codes.ResourceExhausted)
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "from one address") {
		t.Errorf("refusal %q does not say the limit is per address", msg)
	}
	// One given back: the address may watch again (the gateway sees the
	// cancellation a little later).
	cancels[0]()
	deadline := time.Now().Add(30 * time.Second)
	for {
		wctx, cancel := context.WithCancel(ctx)
		err := watch(wctx)
		cancels = append(cancels, cancel)
		if err == nil {
			break
		}
		if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("after a watch ended: %v", err)
		}
		runtime.Gosched()
	}
}

// TestFailedRedeemsHoldOneCut: Redeem calls that fail at once, many on one
// connection, leave that connection one stream-deadline cut, not one per
// call: what a connection keeps does not grow with the calls it makes.
func TestFailedRedeemsHoldOneCut(t *testing.T) {
	s := limitedGateway(t, func(*server.LimitsConfig) {})
	client := credgwv1.NewRedemptionClient(dialAddr(t, s.GRPCAddr()))
	const calls = 100
	for range calls {
		stream, err := client.Redeem(context.Background(), &credgwv1.RedeemRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err == nil {
			t.Fatal("an empty RedeemRequest was accepted")
		}
	}
	if n := s.PendingCuts(); n != 1 {
		t.Fatalf("%d failed Redeem calls on one connection hold %d deadline cuts, want 1", calls, n)
	}
}

// typingSigner is a card whose holder takes wait to type the PIN: the
// browser asks for it when the card signs the handshake.
type typingSigner struct {
	crypto.Signer
	wait time.Duration
}

func (p typingSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	time.Sleep(p.wait) // the person typing, not a synchronisation
	return p.Signer.Sign(r, d, o)
}

// TestPortalHandshakeWaitsForThePIN: a browser asks for the card's PIN in
// the middle of the TLS handshake (Firefox's chooser and token prompt;
// Windows and macOS when the card signs CertificateVerify). Go's server
// bounds a handshake by the smallest of its read timeouts, so the portal
// cut a person off after limits.http_read_header_timeout (10 s by
// default) with a bare TLS error. The handshake now has
// portal.handshake_timeout (2 minutes by default); requests keep theirs.
func TestPortalHandshakeWaitsForThePIN(t *testing.T) {
	const header = 300 * time.Millisecond
	s := limitedGateway(t, func(l *server.LimitsConfig) { l.HTTPReadHeaderTimeout.Duration = header })
	c := newCard(t, hsmsim.CardSpec{Email: "slow.typist@example.com"})
	cert := c.tlsCert()
	cert.PrivateKey = typingSigner{Signer: c.key, wait: 4 * header}
	b := newBrowser(t, &cert)
	b.base = "https://" + s.PortalAddr()
	req, err := http.NewRequest("GET", b.base+"/signin", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatalf("a person who takes %s to type the PIN (headers: %s) cannot sign in: %v", 4*header, header, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("sign-in: %d, want 303", resp.StatusCode)
	}
}
