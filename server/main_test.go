package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	hsmsim "github.com/credgw/credgw/hsm-sim"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/pkcs11"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/server"
	"github.com/credgw/credgw/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// One development environment, one running gateway and one simulated issuer
// for the whole test binary, as `credgw dev init` + `serve` make them.
var (
	dev     *hsmsim.DevEnv
	module  *pkcs11.Module
	gw      *server.Server
	cfg     *server.Config
	gwStore *store.DB
	// engine is the store the gateway runs on: "sqlite", or "postgres" when
	// CREDGW_TEST_STORE=postgres (make test runs this package on both).
	engine string
	mails  *mailbox

	// clockOffset shifts the gateway's clock (challenge expiry tests).
	clockOffset atomic.Int64

	// outage takes the simulated issuer's OCSP or CRL down.
	outage = struct {
		sync.Mutex
		ocsp, crl bool
	}{}

	// logs collects the gateway's log; secrets collects every secret the
	// tests handled, to prove none reached a log line.
	logs    syncBuffer
	secrets = struct {
		sync.Mutex
		list []string
	}{}

	// panicNext makes the store panic once (panic recovery test).
	panicNext atomic.Bool
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// rememberSecret records a secret in the forms a log could show it in.
func rememberSecret(b []byte) {
	if len(b) < 6 {
		return
	}
	secrets.Lock()
	defer secrets.Unlock()
	secrets.list = append(secrets.list, string(b), hex.EncodeToString(b),
		base64.StdEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b))
}

func now() time.Time { return time.Now().Add(time.Duration(clockOffset.Load())) }

// panicStore panics on demand, to test recovery.
type panicStore struct{ store.Store }

// CheckpointFailures, WALBytes, CheckpointLag and GroupCommits pass
// through, so the gateway exports the metrics.
func (p panicStore) CheckpointFailures() int64 {
	if c, ok := p.Store.(interface{ CheckpointFailures() int64 }); ok {
		return c.CheckpointFailures()
	}
	return 0
}

func (p panicStore) WALBytes() int64 {
	if c, ok := p.Store.(interface{ WALBytes() int64 }); ok {
		return c.WALBytes()
	}
	return 0
}

func (p panicStore) CheckpointLag() int64 {
	if c, ok := p.Store.(interface{ CheckpointLag() int64 }); ok {
		return c.CheckpointLag()
	}
	return 0
}

func (p panicStore) GroupCommits() (commits, writes int64) {
	if c, ok := p.Store.(interface{ GroupCommits() (int64, int64) }); ok {
		return c.GroupCommits()
	}
	return 0, 0
}

func (p panicStore) CreateChallenge(ctx context.Context, c store.Challenge) error {
	if panicNext.CompareAndSwap(true, false) {
		panic("test: store exploded")
	}
	return p.Store.CreateChallenge(ctx, c)
}

func TestMain(m *testing.M) { os.Exit(run(m)) }

// openTestStore opens the gateway's store: SQLite in dir, or, with
// CREDGW_TEST_STORE=postgres, a fresh schema of the server at
// CREDGW_TEST_POSTGRES_DSN (dropped by done).
func openTestStore(ctx context.Context, dir string) (*store.DB, func(), error) {
	engine = os.Getenv("CREDGW_TEST_STORE")
	switch engine {
	case "", "sqlite":
		engine = "sqlite"
		st, err := store.OpenSQLite(ctx, filepath.Join(dir, "test.db"))
		if err != nil {
			return nil, nil, err
		}
		return st, func() { st.Close() }, nil
	case "postgres":
	default:
		return nil, nil, fmt.Errorf("CREDGW_TEST_STORE=%q: want sqlite or postgres", engine)
	}
	dsn := os.Getenv("CREDGW_TEST_POSTGRES_DSN")
	if dsn == "" {
		return nil, nil, errors.New("CREDGW_TEST_STORE=postgres needs CREDGW_TEST_POSTGRES_DSN (test/with-postgres.sh sets it)")
	}
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, nil, err
	}
	schema := fmt.Sprintf("server_test_%d", os.Getpid())
	admin.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+schema+` CASCADE`)
	if _, err := admin.ExecContext(ctx, `CREATE SCHEMA `+schema); err != nil {
		admin.Close()
		return nil, nil, err
	}
	drop := func() {
		admin.ExecContext(context.Background(), `DROP SCHEMA `+schema+` CASCADE`)
		admin.Close()
	}
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	st, err := store.OpenPostgres(ctx, dsn+sep+"search_path="+schema, store.PostgresOptions{Migrate: true})
	if err != nil {
		drop()
		return nil, nil, err
	}
	return st, func() { st.Close(); drop() }, nil
}

func run(m *testing.M) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, err); return 1 }
	dir, err := os.MkdirTemp("", "credgw-server-test-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	hsmLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	ctx := context.Background()
	// The gateway's addresses go into the config and the certificates it
	// issues, so its listeners are bound first (in one step with their
	// ports) and handed to it.
	var lns [4]net.Listener
	var addrs [4]string
	for i := range lns {
		if lns[i], err = hsmsim.ListenFree(); err != nil {
			return fail(err)
		}
		addrs[i] = lns[i].Addr().String()
	}
	dev, err = hsmsim.DevInit(ctx, filepath.Join(dir, "dev"), hsmsim.DevOptions{
		HSMURL: "http://" + hsmLn.Addr().String(), GRPCAddr: addrs[0], HTTPAddr: addrs[1], PortalAddr: addrs[2], ManagementAddr: addrs[3],
	})
	if err != nil {
		return fail(err)
	}
	dev.Env.Clock = now // the issuer lives on the tests' clock too
	h := dev.Env.Handler(nil)
	hsm := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		outage.Lock()
		down := (outage.ocsp && strings.HasPrefix(r.URL.Path, "/ocsp")) || (outage.crl && strings.HasPrefix(r.URL.Path, "/crl"))
		outage.Unlock()
		if down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	})}
	go hsm.Serve(hsmLn)
	defer hsm.Close()
	if module, err = dev.Env.OpenModule(); err != nil {
		return fail(err)
	}
	defer module.Close()

	// The termination webhook, keyed by webhookKey.
	f, err := os.OpenFile(dev.Config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fail(err)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dev.Dir, "tls", "server.crt"), filepath.Join(dev.Dir, "tls", "server.key"))
	if err != nil {
		return fail(err)
	}
	if mails, err = startMailbox(cert); err != nil {
		return fail(err)
	}
	defer mails.ln.Close()
	if err := os.WriteFile(filepath.Join(dev.Dir, "smtp.pass"), []byte("relay password\n"), 0o600); err != nil {
		return fail(err)
	}
	rememberSecret([]byte("relay password"))
	fmt.Fprintf(f, "termination_webhook:\n  secret_file: webhook.key\n")
	// TestLinkage walks a week; its first check is the week's end.
	fmt.Fprintf(f, "linkage:\n  first_check: 168h\n")
	f.Close()
	// Notifications by mail, to the mailbox, instead of the development
	// config's file.
	b, err := os.ReadFile(dev.Config)
	if err != nil {
		return fail(err)
	}
	smtp := fmt.Sprintf("  smtp:\n    address: %s\n    from: credgw@example.com\n    username: credgw\n    password_file: smtp.pass\n    ca_file: tls/ca.crt\n",
		mails.ln.Addr())
	if !bytes.Contains(b, []byte("  file: notifications.jsonl\n")) {
		return fail(errors.New("the development config has no notifications file to replace"))
	}
	if err := os.WriteFile(dev.Config, bytes.Replace(b, []byte("  file: notifications.jsonl\n"), []byte(smtp), 1), 0o600); err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(dev.Dir, "webhook.key"), []byte(hex.EncodeToString(webhookKey)+"\n"), 0o600); err != nil {
		return fail(err)
	}
	if cfg, err = server.LoadConfig(dev.Config); err != nil {
		return fail(err)
	}
	if _, err := server.InitCA(ctx, cfg, server.InitCAOptions{Organization: "credgw test"}); err != nil {
		return fail(err)
	}
	// The environment's own database, as credgw dev init makes it (the
	// shared gateway runs on openTestStore's).
	devStore, _, err := server.CreateStore(ctx, cfg)
	if err != nil {
		return fail(err)
	}
	devStore.Close()
	st, done, err := openTestStore(ctx, dir)
	if err != nil {
		return fail(err)
	}
	defer done()
	gwStore = st
	gw, err = server.New(ctx, cfg, server.WithClock(now), server.WithStore(panicStore{st}),
		server.WithListeners(map[string]net.Listener{"listen.grpc": lns[0], "listen.http": lns[1], "portal.listen": lns[2],
			"listen.management": lns[3]}),
		server.WithLogger(server.NewLogger(&logs, "debug")))
	if err != nil {
		return fail(err)
	}
	if err := gw.Start(); err != nil {
		return fail(err)
	}
	code := m.Run()
	if err := gw.Shutdown(ctx); err != nil {
		return fail(err)
	}
	// No log line and no audit event may carry a PIN, challenge, signature
	// or session token; the audit chain the tests left is intact.
	out := logs.String()
	if evs, err := gwStore.AuditEvents(ctx, 0, 0, ""); err != nil {
		return fail(err)
	} else {
		b, _ := json.Marshal(evs)
		out += string(b)
	}
	mails.mu.Lock()
	for _, m := range mails.msgs {
		out += m.data
	}
	mails.mu.Unlock()
	if n, err := store.VerifyAudit(ctx, gwStore); err != nil {
		return fail(fmt.Errorf("audit chain after %d events: %w", n, err))
	}
	secrets.Lock()
	defer secrets.Unlock()
	for _, s := range secrets.list {
		if strings.Contains(out, s) {
			fmt.Fprintf(os.Stderr, "FAIL: the gateway log contains a secret (%d bytes)\n", len(s))
			return 1
		}
	}
	if len(secrets.list) == 0 && flag.Lookup("test.fuzz").Value.String() == "" {
		fmt.Fprintln(os.Stderr, "FAIL: no secrets were recorded: the log scan checked nothing")
		return 1
	}
	return code
}

// dial connects to the gateway with an optional client certificate.
func dial(t testing.TB, certs ...tls.Certificate) *grpc.ClientConn {
	t.Helper()
	pem, err := os.ReadFile(dev.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	conn, err := grpc.NewClient(gw.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12,
	})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func keyPair(t testing.TB, certFile, keyFile string) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func portalConn(t testing.TB) *grpc.ClientConn {
	return dial(t, keyPair(t, dev.PortalCert, dev.PortalKey))
}

// card is a simulated card opened with its PIN.
type card struct {
	name string
	tok  *pkcs11.Token
	auth *x509.Certificate
	key  *pkcs11.Signer
	info *hsmsim.CardInfo
}

var cardSeq atomic.Int64

const cardPIN = "24681357"

func newCard(t testing.TB, spec hsmsim.CardSpec) *card {
	t.Helper()
	spec.Name = fmt.Sprintf("c%d-%s", cardSeq.Add(1), spec.Variant)
	spec.PIN = []byte(cardPIN)
	rememberSecret(spec.PIN)
	info, err := dev.Env.NewCard(context.Background(), module, spec)
	if err != nil {
		t.Fatal(err)
	}
	return openCard(t, spec.Name, info)
}

func openCard(t testing.TB, name string, info *hsmsim.CardInfo) *card {
	t.Helper()
	pin := []byte(cardPIN)
	if info == nil { // the dev card
		b, err := os.ReadFile(dev.PINFile)
		if err != nil {
			t.Fatal(err)
		}
		pin = bytes.TrimSpace(b)
		rememberSecret(pin)
	}
	tok, err := module.OpenToken(context.Background(), pkcs11.TokenConfig{Label: name, PIN: pin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close() })
	auth, err := tok.Certificate(context.Background(), pkcs11.PIVAuthentication.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	key, err := tok.Signer(context.Background(), pkcs11.PIVAuthentication.PrivateKey())
	if err != nil {
		t.Fatal(err)
	}
	return &card{name: name, tok: tok, auth: auth, key: key, info: info}
}

// tlsCert is the card as a TLS client certificate.
func (c *card) tlsCert() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.auth.Raw}, PrivateKey: c.key, Leaf: c.auth}
}

// sign signs a BeginSession answer's challenge the way a card does.
func (c *card) sign(t testing.TB, b *credgwv1.BeginSessionResponse) []byte {
	t.Helper()
	rememberSecret(b.GetChallenge())
	sig, err := c.key.SignContext(context.Background(), piv.ChallengeDigest(b.GetGatewayId(), b.GetSessionId(), b.GetChallenge()), cryptoSHA256)
	if err != nil {
		t.Fatal(err)
	}
	rememberSecret(sig)
	return sig
}

func setOutage(t *testing.T, ocspDown, crlDown bool) {
	outage.Lock()
	outage.ocsp, outage.crl = ocspDown, crlDown
	outage.Unlock()
	t.Cleanup(func() {
		outage.Lock()
		outage.ocsp, outage.crl = false, false
		outage.Unlock()
	})
}

// createStore makes the SQLite database c names, as credgw migrate does
// (serve opens only one that is there).
func createStore(t *testing.T, c *server.Config) {
	t.Helper()
	st, _, err := server.CreateStore(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
}
