package test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/agent"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// TestTwoReplicas: two `credgw serve` processes on one PostgreSQL and one
// SoftHSM CA token. 100 concurrent redemptions of one activation spread over
// both issue exactly once; 5 wrong passwords spread over both lock the
// activation.
func TestTwoReplicas(t *testing.T) {
	dsn := os.Getenv("CREDGW_TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CI: CREDGW_TEST_POSTGRES_DSN is not set (make test starts PostgreSQL)")
		}
		t.Skip("CREDGW_TEST_POSTGRES_DSN not set")
	}
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	schema := fmt.Sprintf("replicas_%d", os.Getpid())
	admin.Exec(`DROP SCHEMA IF EXISTS ` + schema + ` CASCADE`)
	if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
		t.Fatal(err)
	}
	defer admin.Exec(`DROP SCHEMA ` + schema + ` CASCADE`)
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	work := t.TempDir()
	dir := filepath.Join(work, "dev")
	devInit(t, dir)
	cfgPath := filepath.Join(dir, "credgw.yaml")
	cfg, _ := os.ReadFile(cfgPath)
	cfg = regexp.MustCompile(`(?m)^  driver: sqlite\n  dsn: credgw.db$`).ReplaceAll(cfg, []byte("  driver: postgres\n  dsn: \""+dsn+sep+"search_path="+schema+"\""))
	// The termination webhook, on both replicas with one key.
	webhookKey := bytes.Repeat([]byte{0x3c}, 32)
	if err := os.WriteFile(filepath.Join(dir, "webhook.key"), []byte(hex.EncodeToString(webhookKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg = append(cfg, []byte("\ntermination_webhook:\n  secret_file: webhook.key\n")...)
	os.WriteFile(cfgPath, cfg, 0o600)
	run(t, nil, true, credgwBin, "migrate", "--config", cfgPath)
	gwA := regexp.MustCompile(`grpc: (127\.0\.0\.1:\d+)`).FindStringSubmatch(string(cfg))[1]
	// Replica B: the same config (database, CA token, TLS, gateway address
	// in QR codes) on other listen ports.
	cfgBPath := filepath.Join(dir, "credgw-b.yaml")
	ports := bindSockets(t, cfgBPath, "grpc", "http", "portal", "management")
	cfgB := regexp.MustCompile(`(?m)^  grpc: 127\.0\.0\.1:\d+$`).ReplaceAll(cfg, []byte(fmt.Sprintf("  grpc: 127.0.0.1:%d", ports[0])))
	cfgB = regexp.MustCompile(`(?m)^  http: 127\.0\.0\.1:\d+$`).ReplaceAll(cfgB, []byte(fmt.Sprintf("  http: 127.0.0.1:%d", ports[1])))
	cfgB = regexp.MustCompile(`(?m)^  listen: 127\.0\.0\.1:\d+$`).ReplaceAll(cfgB, []byte(fmt.Sprintf("  listen: 127.0.0.1:%d", ports[2])))
	cfgB = regexp.MustCompile(`(?m)^  management: 127\.0\.0\.1:\d+$`).ReplaceAll(cfgB, []byte(fmt.Sprintf("  management: 127.0.0.1:%d", ports[3])))
	os.WriteFile(cfgBPath, cfgB, 0o600)
	gwB := fmt.Sprintf("127.0.0.1:%d", ports[0])

	startServe(t, filepath.Join(dir, "hsm"))
	startProcess(t, "credgw serving", credgwBin, "serve", "--config", cfgPath)
	startProcess(t, "credgw serving", credgwBin, "serve", "--config", cfgBPath)
	conf := "SOFTHSM2_CONF=" + filepath.Join(dir, "hsm", "softhsm2.conf")

	replicas := func(p code.Payload) []credgwv1.RedemptionClient {
		var out []credgwv1.RedemptionClient
		for _, addr := range []string{gwA, gwB} {
			q := p
			q.Gateway = addr
			conn, err := agent.Dial(q)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			out = append(out, credgwv1.NewRedemptionClient(conn))
		}
		return out
	}

	t.Run("100 redemptions over two replicas issue once", func(t *testing.T) {
		out := filepath.Join(work, "race")
		os.MkdirAll(out, 0o700)
		p, password := enrollWithCLI(t, dir, gwA, conf, out)
		clients := replicas(p)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var pkgs [][]byte
		bad := map[codes.Code]int{}
		for i := 0; i < 100; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pkg, _, _, err := fetch(clients[i%2], redeemReq(p, password))
				mu.Lock()
				defer mu.Unlock()
				switch c := status.Code(err); {
				case err == nil:
					pkgs = append(pkgs, pkg)
				// Each call is a device of its own (new keys): once one
				// has the package, the others are refused it.
				case c == codes.FailedPrecondition || c == codes.Unavailable || c == codes.PermissionDenied:
				default:
					bad[c]++
				}
			}()
		}
		wg.Wait()
		if len(bad) > 0 || len(pkgs) != 1 {
			t.Fatalf("outcomes %v, %d packages, want 1", bad, len(pkgs))
		}
		var n int
		admin.QueryRow(`SELECT COUNT(*) FROM ` + schema + `.certificates WHERE status <> 'lint_failed'`).Scan(&n)
		if n != 3 {
			t.Fatalf("%d certificates in the database, want 3", n)
		}
	})

	t.Run("one CRL rebuild for both replicas", func(t *testing.T) {
		httpA := regexp.MustCompile(`(?m)^  http: (127\.0\.0\.1:\d+)$`).FindSubmatch(cfg)[1]
		crlNumber := func(httpAddr string) int64 { return fetchCRLNumber(t, httpAddr).Int64() }
		first := crlNumber(string(httpA))
		if crlNumber(fmt.Sprintf("127.0.0.1:%d", ports[1])) != first {
			t.Fatal("the two replicas serve different CRLs")
		}
		var serial string
		admin.QueryRow(`SELECT serial FROM ` + schema + `.certificates WHERE status = 'issued' LIMIT 1`).Scan(&serial)
		adminConn := adminClient(t, dir, gwA)
		if _, err := adminConn.RevokeCertificate(context.Background(), &credgwv1.RevokeCertificateRequest{Serial: serial}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		seen := map[int64]int{}
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				addr := string(httpA)
				if i%2 == 1 {
					addr = fmt.Sprintf("127.0.0.1:%d", ports[1])
				}
				n := crlNumber(addr)
				mu.Lock()
				seen[n]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		// One rebuild: one number after the revocation, above the one
		// before (numbers follow the time, not +1), on both replicas.
		rebuilt := crlNumber(string(httpA))
		if rebuilt <= first || crlNumber(fmt.Sprintf("127.0.0.1:%d", ports[1])) != rebuilt {
			t.Fatalf("CRL numbers %v after one revocation (before: %d), now %d on the first replica: want one number above it everywhere", seen, first, rebuilt)
		}
		for n := range seen {
			if n != first && n != rebuilt {
				t.Fatalf("CRL numbers %v after one revocation (before: %d): rebuilt more than once", seen, first)
			}
		}
	})

	t.Run("a database copy and the QR text give nothing", func(t *testing.T) {
		out := filepath.Join(work, "copy")
		os.MkdirAll(out, 0o700)
		p, password := enrollWithCLI(t, dir, gwA, conf, out)
		var verifier []byte
		if err := admin.QueryRow(`SELECT verifier FROM `+schema+`.activations WHERE id = $1`, p.ID).Scan(&verifier); err != nil {
			t.Fatal(err)
		}
		if code.CheckPassword(p.Secret, password, verifier) {
			t.Fatal("the verifier in PostgreSQL tests the right password with the QR secret alone")
		}
		// Both replicas key it alike: the code redeems on the other one.
		if _, _, _, err := fetch(replicas(p)[1], redeemReq(p, password)); err != nil {
			t.Fatalf("redeem on replica B of a code made on A: %v", err)
		}
	})

	t.Run("a termination replayed to the other replica is refused", func(t *testing.T) {
		// The webhook is served on the management listeners.
		mgmtA := regexp.MustCompile(`management: (127\.0\.0\.1:\d+)`).FindSubmatch(cfg)[1]
		mgmtB := fmt.Sprintf("127.0.0.1:%d", ports[3])
		body := []byte(`{"person_id":"70999900000042","comment":"HR: separated"}`)
		at := time.Now()
		post := func(addr string) int {
			req, err := http.NewRequest("POST", "http://"+addr+"/v1/webhooks/termination", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Credgw-Timestamp", strconv.FormatInt(at.Unix(), 10))
			req.Header.Set("X-Credgw-Signature", server.WebhookSignature(webhookKey, at, body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		if code := post(string(mgmtA)); code != http.StatusOK {
			t.Fatalf("replica A: %d", code)
		}
		if code := post(mgmtB); code != http.StatusConflict {
			t.Fatalf("the same request to replica B: %d, want 409", code)
		}
		var n int
		if err := admin.QueryRow(`SELECT COUNT(*) FROM ` + schema + `.audit_events WHERE action = 'terminate' AND person_id = '70999900000042'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("%d termination events for one request sent to two replicas", n)
		}
	})

	t.Run("wrong passwords over two replicas lock", func(t *testing.T) {
		out := filepath.Join(work, "lock")
		os.MkdirAll(out, 0o700)
		p, password := enrollWithCLI(t, dir, gwA, conf, out)
		clients := replicas(p)
		wrong := "00000000"
		if wrong == password {
			wrong = "11111111"
		}
		for i := 0; i < 5; i++ {
			fetch(clients[i%2], redeemReq(p, wrong))
		}
		for _, c := range clients {
			if _, _, _, err := fetch(c, redeemReq(p, password)); status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("right password after 5 wrong ones over two replicas: %v", err)
			}
		}
	})

	t.Run("concurrent wrong passwords over two replicas are counted first", func(t *testing.T) {
		out := filepath.Join(work, "guesses")
		os.MkdirAll(out, 0o700)
		p, password := enrollWithCLI(t, dir, gwA, conf, out)
		clients := replicas(p)
		wrong := "00000000"
		if wrong == password {
			wrong = "11111111"
		}
		const guesses = 40
		reqs := make([]*credgwv1.RedeemRequest, guesses+1)
		for i := range reqs {
			pw := wrong
			if i == guesses {
				pw = password
			}
			reqs[i] = redeemReq(p, pw)
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		seen := map[codes.Code]int{}
		var correct error
		for i, req := range reqs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, _, _, err := fetch(clients[i%2], req)
				mu.Lock()
				defer mu.Unlock()
				if i == guesses {
					correct = err
					return
				}
				seen[status.Code(err)]++
			}()
		}
		close(start)
		wg.Wait()
		// The fifth wrong password locks: at most four answer "wrong".
		if seen[codes.PermissionDenied] > 4 || seen[codes.PermissionDenied]+seen[codes.ResourceExhausted] != guesses {
			t.Errorf("wrong passwords answered %v: want at most 4 PermissionDenied, the rest ResourceExhausted", seen)
		}
		if c := status.Code(correct); c != codes.OK && c != codes.ResourceExhausted {
			t.Errorf("the right password: %v, want OK or ResourceExhausted", correct)
		}
		var failed, live int
		admin.QueryRow(`SELECT failed_attempts FROM `+schema+`.activations WHERE id = $1`, p.ID).Scan(&failed)
		admin.QueryRow(`SELECT COUNT(*) FROM `+schema+`.certificates c JOIN `+schema+`.activations a ON a.credential_set_id = c.credential_set_id
			WHERE a.id = $1 AND c.status <> 'lint_failed' AND c.revoked_at IS NULL`, p.ID).Scan(&live)
		if failed > 5 {
			t.Errorf("%d failed attempts counted, at most 5", failed)
		}
		if correct != nil && live != 0 {
			t.Errorf("the right password was refused (%v) but %d certificates are live", correct, live)
		}
	})
}

// adminClient connects with the admin client certificate of a dev env.
func adminClient(t *testing.T, dir, gw string) credgwv1.AdminClient {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls", "admin.crt"), filepath.Join(dir, "tls", "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(dir, "tls", "ca.crt"))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	conn, err := grpc.NewClient(gw, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return credgwv1.NewAdminClient(conn)
}
